"""Int8 dot-product kernels: the packed weight layout, which preset gets which instruction, the
instructions in the built libraries (disassembled: the test machine may lack them; candidates are
compiled for real and given dummy timings), and, where the host has AVX2, exact results of the
tensorized AVX2 kernel run here."""

import dataclasses
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tvm
from tvm.s_tir.meta_schedule.testing.dummy_object import DummyRunner

from models_for_tests import int8_linear_reference, mlp_source
from tvmcomp.build import build
from tvmcomp.quant.pipeline import QuantOptions
from tvmcomp.errors import TvmcompError
from tvmcomp.quant.dot_kernels import DotKernels, dot_kernel_for, dot_kernels_for, pack_weight
from tvmcomp.targets import resolve_target


def test_pack_weight_puts_each_block_of_outputs_and_reductions_together():
    weight = np.arange(8 * 32).reshape(8, 32)  # [K, N]
    packed = pack_weight(weight, (16, 4))
    assert packed.shape == (2, 2, 16, 4)
    for i, j, c, r in np.ndindex(packed.shape):
        assert packed[i, j, c, r] == weight[j * 4 + r, i * 16 + c]


def _x86_document_on(mcpu: str) -> dict:
    """The x86 preset as it resolves on a host with this CPU."""
    preset = resolve_target("x86")
    return preset.extra | {"tvm": preset.tvm_config | {"mcpu": mcpu}, "tensor_intrinsics": ["x86"]}


def _x86_preset_on(mcpu: str):
    return resolve_target(_x86_document_on(mcpu))


@pytest.mark.parametrize("preset, intrinsic, weight_bits, attention_intrinsic", [
    ("x86-znver4", "dot_16x4_vnni", 8, "dot_8x2_i16_avx2"),
    ("x86@znver3", "dot_8x4_avx2", 7, "dot_8x2_i16_avx2"),  # AVX2, no VNNI: vpmaddubsw saturates 8-bit weights
    ("x86@x86-64", None, None, None),  # baseline x86-64 (SSE2): plain integer matmuls
    ("arm", "dot_4x4_i8i8s32_sdot", 8, None),
    ("rpi4", "dot_4x4_i8i8s32_neon", 8, None),  # Cortex-A72 has no dotprod
])
def test_each_target_gets_the_dot_instruction_its_cpu_has(preset, intrinsic, weight_bits, attention_intrinsic):
    name, _, mcpu = preset.partition("@")
    kernels = dot_kernels_for(_x86_preset_on(mcpu) if mcpu else resolve_target(name))
    assert (kernels.linear and kernels.linear.intrinsic) == intrinsic
    assert (kernels.linear and kernels.linear.weight_bits) == weight_bits
    assert (kernels.batched and kernels.batched.intrinsic) == attention_intrinsic


def test_an_incomplete_int8_dot_entry_is_a_one_line_error():
    spec = resolve_target({"tvm": {"kind": "llvm"}, "int8_dot": [{"feature": "avx2", "intrinsic": "dot_8x4_avx2"}]})
    with pytest.raises(TvmcompError, match=r"lacks weight_block, activation_dtype \(each needs feature"):
        dot_kernel_for(spec)


def _disassemble(objdump: str, library) -> str:
    if shutil.which(objdump) is None:
        pytest.skip(f"{objdump} is not installed (make test installs it)")
    return subprocess.run([objdump, "-d", str(library)], capture_output=True, text=True, check=True).stdout


@pytest.mark.parametrize("preset, objdump, instruction", [
    ("x86-znver4", "objdump", r"\bvpdpbusd\b"),
    ("x86@znver3", "objdump", r"\bvpmaddubsw\b"),
    ("arm", "aarch64-linux-gnu-objdump", r"\bsdot\b"),
])
def test_int8_library_uses_the_dot_product_instruction_with_no_records(preset, objdump, instruction, empty_schedules,
                                                                       tmp_path):
    """No board, no records: the default schedules alone tensorize with the target's instruction."""
    name, _, mcpu = preset.partition("@")
    target = _x86_preset_on(mcpu) if mcpu else resolve_target(name)
    package = build(mlp_source(), target, tmp_path / "pkg", QuantOptions("int8", samples=4))
    assert package.metadata["default_scheduled_kernels"] == package.metadata["kernels"]
    assembly = _disassemble(objdump, tmp_path / "pkg" / "model.so")
    assert len(re.findall(instruction, assembly)) >= 8


def _host_has(feature: str) -> bool:
    import tvm
    from tvm.target import codegen

    return bool(codegen.target_has_features(feature, tvm.target.Target({"kind": "llvm", "mcpu": _host_mcpu()})))


def _host_mcpu() -> str:
    return resolve_target("x86").tvm_config["mcpu"]


# Compiled for an AVX2 CPU without VNNI, so the search space tensorizes with the AVX2 kernels under
# test even on an AVX-512 VNNI host (which would pick dot_16x4_vnni); the code runs on any AVX2 host.
AVX2_CPU = "znver3"


def _schedule(fused, target, how: str):
    """``tuned``: records from a (dummy-timed) tune, read back from disk; ``default``: no records."""
    from tvmcomp import tune as tuning

    if how == "tuned":
        tuning.tune(fused, target, total_trials=2, runner=DummyRunner())
    return tuning.open_database(target)


@pytest.mark.skipif(not _host_has("avx2"), reason="the host has no AVX2 to run the kernel on")
# the saturation is a property of the instruction, so 8-bit weights are checked on the default schedule only
@pytest.mark.parametrize("weight_bits, exact, schedules", [(7, True, "tuned"), (7, True, "default"),
                                                           (8, False, "default")],
                         ids=["7-bit-tuned", "7-bit-default", "8-bit-saturates-default"])
def test_tensorized_avx2_linear_matches_the_integer_reference_only_with_7_bit_weights(weight_bits, exact, schedules,
                                                                                      empty_schedules):
    """The kernel really runs vpmaddubsw here. With the weights narrowed to 7 bits its integers are exact; with
    8-bit weights a pair of products (255 x 127 x 2 = 64770) overflows int16 and the result is wrong:
    the reason the AVX2 entry says ``"weight_bits": 7``."""
    from tvm import relax

    from test_quant_passes import INT8, LinearAnnotated
    from tvmcomp.build import compile_with_database
    from tvmcomp.lowering import fuse_for_tuning
    from tvmcomp.quant.calibrate import SiteRange
    from tvmcomp.quant.grids import quantize_weight
    from tvmcomp.quant.ops.linear import weight_quant_for
    from tvmcomp.quant.realize import Realize

    target = _x86_preset_on(AVX2_CPU)
    kernel = dataclasses.replace(dot_kernel_for(_x86_preset_on("znver3")), weight_bits=weight_bits)
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((16, 8)).astype(np.float32), "b": rng.standard_normal(16).astype(np.float32)}
    params["w"][:4] = 1.0  # output channels whose every weight is the channel maximum
    x = rng.standard_normal((2, 8)).astype(np.float32) * 1.5
    x[0] = 3.0  # every activation code 255: the worst case for the int16 pair sums
    realized = Realize(params, {0: SiteRange(0.021, 120, -2.5, 2.8)}, INT8, DotKernels(kernel))(LinearAnnotated)
    fused = fuse_for_tuning(relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized),
                            target.tvm_target())
    database = _schedule(fused, target, schedules)
    if schedules == "tuned":
        # the next build, a new process, reads these records: it must register dot_8x4_avx2 to parse them
        count = "len(open_write_database(resolve_target(sys.argv[1])).get_all_tuning_records())"
        loaded = subprocess.run([sys.executable, "-c", "import sys; from tvmcomp.targets import resolve_target; "
                                 f"from tvmcomp.tune import open_write_database; print({count})",
                                 json.dumps(_x86_document_on(AVX2_CPU))], capture_output=True, text=True)
        assert loaded.returncode == 0 and int(loaded.stdout) >= 1, loaded.stderr[-2000:]
    executable = compile_with_database(fused, target, database)
    assert "vpmaddubsw" in executable.mod.imports[0].inspect_source("asm")
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()

    weight_quant = weight_quant_for(INT8, kernel)
    want = int8_linear_reference(x, params["w"], params["b"], 0.021, 120, INT8.activation, weight_quant)
    # One unit of the int32 accumulator is worth 0.021 * s_w in the output. The float epilogue may be
    # FMA-contracted on this CPU (last-bit differences), so "exact" means far below one unit.
    unit = 0.021 * quantize_weight(np.ascontiguousarray(params["w"].T), weight_quant)[1].min()
    error = np.abs(got - want).max()
    assert (error < unit / 100) if exact else (error > unit)


@pytest.mark.skipif(not _host_has("avx2"), reason="the host has no AVX2 to run the kernel on")
@pytest.mark.parametrize("schedules", ["tuned", "default"])
def test_tensorized_int16_attention_matmul_matches_the_integer_reference_exactly(schedules, empty_schedules):
    """The attention matmul of centered int16 codes really runs vpmaddwd here, on its operand packed at
    run time, and its integers are exact: s16 x s16 pair sums of 9-bit values cannot overflow s32."""
    from tvm import relax

    from test_quant_passes import ATTENTION_RANGES, INT8, AttentionAnnotated, attention_inputs, attention_reference
    from tvmcomp import tune as tuning
    from tvmcomp.build import compile_with_database
    from tvmcomp.lowering import fuse_for_tuning
    from tvmcomp.quant.realize import Realize

    target = _x86_preset_on(AVX2_CPU)
    kernels = dot_kernels_for(target)
    assert kernels.batched.intrinsic == "dot_8x2_i16_avx2"
    fused = fuse_for_tuning(Realize({}, ATTENTION_RANGES, INT8, kernels)(AttentionAnnotated), target.tvm_target())
    database = _schedule(fused, target, schedules)
    if schedules == "tuned":  # the exact CPU's records: where tune wrote them
        records = tuning.open_write_database(target).get_all_tuning_records()
        assert any("dot_8x2_i16_avx2" in str(record.trace) for record in records)
    executable = compile_with_database(fused, target, database)
    assert "vpmaddwd" in executable.mod.imports[0].inspect_source("asm")
    q, k = attention_inputs()
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(q), tvm.runtime.tensor(k)).numpy()
    np.testing.assert_array_equal(got, attention_reference(q, k))
