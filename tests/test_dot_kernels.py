"""Int8 dot-product kernels: the packed weight layout, which preset gets which instruction, and the
instructions in the built libraries (disassembled: this machine may lack them, so nothing here runs
them; candidates are compiled for real and given dummy timings)."""

import re
import shutil
import subprocess

import numpy as np
import pytest
from tvm.s_tir.meta_schedule.testing.dummy_object import DummyRunner

from models_for_tests import mlp_source
from tvmcomp.build import build
from tvmcomp.quant.dot_kernels import dot_kernel_for, pack_weight
from tvmcomp.targets import resolve_target


def test_pack_weight_puts_each_block_of_outputs_and_reductions_together():
    weight = np.arange(8 * 32).reshape(8, 32)  # [K, N]
    packed = pack_weight(weight, (16, 4))
    assert packed.shape == (2, 2, 16, 4)
    for i, j, c, r in np.ndindex(packed.shape):
        assert packed[i, j, c, r] == weight[j * 4 + r, i * 16 + c]


@pytest.mark.parametrize("preset, intrinsic", [
    ("x86-znver4", "dot_16x4_vnni"),
    ({"kind": "llvm", "mcpu": "znver3"}, None),  # AVX2 only: plain int8 matmul
    ("arm", "dot_4x4_i8i8s32_sdot"),
    ("rpi4", "dot_4x4_i8i8s32_neon"),  # Cortex-A72 has no dotprod
])
def test_each_target_gets_the_dot_instruction_its_cpu_has(preset, intrinsic):
    if isinstance(preset, dict):
        preset = resolve_target("x86").tvm_config | preset
        spec = resolve_target({"tvm": preset, "int8_dot": resolve_target("x86").extra["int8_dot"]})
    else:
        spec = resolve_target(preset)
    kernel = dot_kernel_for(spec)
    assert (kernel and kernel.intrinsic) == intrinsic


def _disassemble(objdump: str, library) -> str:
    if shutil.which(objdump) is None:
        pytest.skip(f"{objdump} is not installed (make test installs it)")
    return subprocess.run([objdump, "-d", str(library)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("preset, objdump, instruction", [
    ("x86-znver4", "objdump", r"\bvpdpbusd\b"),
    ("arm", "aarch64-linux-gnu-objdump", r"\bsdot\b"),
])
def test_int8_library_uses_the_dot_product_instruction(preset, objdump, instruction, empty_schedules, tmp_path):
    target = resolve_target(preset)
    package = build(mlp_source(), target, tmp_path / "pkg", quant="int8", calibration_samples=4, trials=6,
                    runner=DummyRunner())
    assert package.metadata["untuned_kernels"] == 0
    assembly = _disassemble(objdump, tmp_path / "pkg" / "model.so")
    assert len(re.findall(instruction, assembly)) >= 8
