import json

import pytest

from tvmcomp.errors import TvmcompError
from tvmcomp.targets import host_cpu, preset_names, resolve_target


def test_presets_are_valid_tvm_targets():
    assert {"x86", "arm", "cuda", "cuda-sm80", "cuda-sm90"} <= set(preset_names())
    for name in preset_names():
        target = resolve_target(name).tvm_target()
        assert target.kind.name in ("llvm", "cuda")


def test_x86_preset_is_filled_with_this_host():
    spec = resolve_target("x86")
    assert spec.tvm_config["mcpu"] == host_cpu()
    assert isinstance(spec.tvm_config["num-cores"], int) and spec.tvm_config["num-cores"] >= 1
    assert spec.schedule_key == f"x86-{host_cpu()}"


def test_arm_preset_is_cross_compiled_aarch64_with_dotprod():
    spec = resolve_target("arm")
    assert spec.cross_compiler == "aarch64-linux-gnu-g++"
    target = spec.tvm_target()
    assert str(target.attrs["mtriple"]).startswith("aarch64")
    assert bool(target.attrs["feature.has_dotprod"])


def test_cuda_presets_name_their_arch():
    assert resolve_target("cuda-sm90").tvm_target().attrs["arch"] == "sm_90"
    assert resolve_target("cuda-sm80").schedule_key == "cuda-sm80"


def test_inline_json_and_file(tmp_path):
    inline = resolve_target('{"kind": "llvm", "mcpu": "znver4"}')
    assert inline.tvm_config == {"kind": "llvm", "mcpu": "znver4"}
    assert inline.name.startswith("custom-") and inline.schedule_key.endswith("-znver4")
    path = tmp_path / "board.json"
    path.write_text(json.dumps({"description": "my board", "tvm": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}}))
    spec = resolve_target(str(path))
    assert spec.name == "board" and spec.description == "my board"


def test_unknown_target_lists_presets():
    with pytest.raises(TvmcompError, match=r"unknown target 'tpu'; presets: arm, cuda"):
        resolve_target("tpu")


def test_bad_target_kind_is_a_user_error():
    with pytest.raises(TvmcompError, match="not a valid TVM target"):
        resolve_target('{"kind": "llvmx"}').tvm_target()


def test_missing_cross_compiler_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TvmcompError, match="apt-get install g\\+\\+-aarch64-linux-gnu"):
        resolve_target("arm").check_toolchain()
