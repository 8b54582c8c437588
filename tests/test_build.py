"""Build -> package on disk -> tvmcomp.load -> outputs equal PyTorch's; records are reused."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import tvmcomp
from conftest import max_abs_diff
from models_for_tests import mlp_source
from tvmcomp import build as build_module
from tvmcomp.quant.pipeline import QuantOptions
from tvmcomp.build import build
from tvmcomp.errors import TvmcompError
from tvmcomp.quant.dot_kernels import dot_kernel_for, pack_weight
from tvmcomp.quant.grids import quantize_weight
from tvmcomp.quant.ops.linear import weight_quant_for
from tvmcomp.quant.schemes import get_scheme
from tvmcomp.frontend.torch_frontend import torch_reference
from tvmcomp.targets import resolve_target
from tvmcomp.tune import database_dir


def _record_count(target):
    path = database_dir(target) / "database_tuning_record.json"
    return sum(1 for _ in path.open()) if path.exists() else 0


def test_build_tunes_missing_kernels_then_reuses_records(empty_schedules, tmp_path):
    source, target = mlp_source(), resolve_target("x86")
    first = build(source, target, tmp_path / "first", trials=12)
    assert first.tuned_now == first.metadata["kernels"] >= 2
    assert first.metadata["default_scheduled_kernels"] == 0
    records = _record_count(target)
    assert records >= first.metadata["kernels"]

    second = build(source, target, tmp_path / "second", trials=12)
    assert second.tuned_now == 0 and second.metadata["default_scheduled_kernels"] == 0
    assert _record_count(target) == records  # nothing was measured again

    package = tvmcomp.load(tmp_path / "second")
    (out,) = package.run(**source.example_inputs)
    assert max_abs_diff([out], torch_reference(source.torch_module, source.example_inputs)) <= 1e-4


def test_package_contents_and_metadata(empty_schedules, tmp_path):
    result = build(mlp_source(), resolve_target("x86"), tmp_path / "pkg")
    files = sorted(p.name for p in (tmp_path / "pkg").iterdir())
    assert files == ["example_inputs.npz", "metadata.json", "model.so"]
    meta = json.loads((tmp_path / "pkg" / "metadata.json").read_text())
    assert meta == result.metadata
    assert meta["inputs"] == [{"name": "x", "shape": [8, 64], "dtype": "float32"}]
    assert meta["outputs"] == ["output_0"] and meta["variant"] == "fp32"
    assert meta["target"]["tvm"]["kind"] == "llvm" and meta["tvm_version"].startswith("0.27")
    assert meta["library_bytes"] == (tmp_path / "pkg" / "model.so").stat().st_size
    # the weights (64x512 + 512x64 float32 = 256 KiB) are inside the library
    assert meta["library_bytes"] > meta["float_weight_bytes"] == (64 * 512 + 512 + 512 * 64 + 64) * 4
    assert len(meta["model_hash"]) == 16


def test_no_records_builds_default_schedules_that_match_pytorch_and_says_how_to_tune(empty_schedules, tmp_path):
    import io

    source, log = mlp_source(), io.StringIO()
    result = build(source, resolve_target("x86"), tmp_path / "pkg", stream=log)
    assert result.tuned_now == 0
    assert result.metadata["default_scheduled_kernels"] == result.metadata["kernels"] >= 2
    assert re.search(r"\d+ of \d+ kernels have no tuning record .*: default schedules.*"
                     r"`tvmcomp tune --model mlp --target x86`", log.getvalue())
    (out,) = tvmcomp.load(tmp_path / "pkg").run(**source.example_inputs)
    assert max_abs_diff([out], torch_reference(source.torch_module, source.example_inputs)) <= 1e-4


def test_failed_build_leaves_nothing_behind(empty_schedules, tmp_path, monkeypatch):
    def broken_export(*_args, **_kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(build_module, "export_library", broken_export)
    with pytest.raises(RuntimeError, match="disk full"):
        build(mlp_source(), resolve_target("x86"), tmp_path / "pkg")
    assert list(tmp_path.iterdir()) == []  # no staging folder, and no record folder from a read


def test_build_refuses_to_overwrite_a_non_package(empty_schedules, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(TvmcompError, match="not a tvmcomp package"):
        build(mlp_source(), resolve_target("x86"), tmp_path / "precious")


def test_runtime_checks_input_names_shapes_dtypes(empty_schedules, tmp_path):
    build(mlp_source(), resolve_target("x86"), tmp_path / "pkg")
    package = tvmcomp.load(tmp_path / "pkg")
    # no attention mask: only the batch may be smaller (padded with zero rows), never a feature axis
    with pytest.raises(TvmcompError, match=r"inputs of shape x \[8, 32\] fit no shape this package was built for "
                                           r"\(x \[8, 64\]; smaller batch sizes are padded\)"):
        package.run(x=np.zeros((8, 32), np.float32))
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    np.testing.assert_array_equal(package.run(x=x[:3])[0], package.run(x=x)[0][:3])
    with pytest.raises(TvmcompError, match=r"missing \['x'\], unexpected \['y'\]"):
        package.run(y=np.zeros((8, 64), np.float32))
    with pytest.raises(TvmcompError, match="dtype complex64"):
        package.run(x=np.zeros((8, 64), np.complex64))
    (out,) = package.run(x=np.ones((8, 64), np.float64))  # safe cast to float32
    assert out.shape == (8, 64) and out.dtype == np.float32


def _fresh_process(script: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)


def test_set_num_threads_sizes_the_pool_beyond_tvms_default():
    # TVM's default on x86 is half the logical CPUs: 1 on a 2-vCPU machine, whatever is asked later
    default = _fresh_process("import tvm; from tvmcomp.runtime import num_threads; "
                             "tvm.get_global_func('runtime.config_threadpool')(1, 3); print(num_threads())")
    assert int(default.stdout) == min(3, max(1, (os.cpu_count() or 2) // 2))
    sized = _fresh_process("from tvmcomp.runtime import num_threads, set_num_threads; "
                           "set_num_threads(3); print(num_threads())")
    assert int(sized.stdout) == 3


def test_set_num_threads_says_when_the_pool_cannot_grow():
    late = _fresh_process("from tvmcomp.runtime import set_num_threads; set_num_threads(1); set_num_threads(3)")
    assert late.returncode != 0
    assert "already has 1 threads and cannot grow to 3: set TVM_NUM_THREADS=3" in late.stderr


def test_load_errors(tmp_path):
    with pytest.raises(TvmcompError, match="package not found"):
        tvmcomp.load(tmp_path / "nope")
    with pytest.raises(TvmcompError, match="has no metadata.json"):
        tvmcomp.load(tmp_path)


def test_int8_build_calibrates_once_and_stores_int8_weights(empty_schedules, tmp_path, capsys):
    target = resolve_target("x86")
    fp32 = build(mlp_source(), target, tmp_path / "fp32")
    int8 = build(mlp_source(), target, tmp_path / "int8", QuantOptions("int8", samples=8))
    assert "[quant] calibrating int8 on 8 batches of the bundled data" in capsys.readouterr().err
    assert int8.metadata["variant"] == "int8" and (tmp_path / "int8" / "calibration.json").is_file()
    assert fp32.metadata["library_bytes"] > int8.metadata["library_bytes"]
    # the weights themselves: float bytes in the fp32 library only, int8 bytes in the int8 library
    weight_kn = mlp_source().imported.params["p_net_0_weight"].T  # [K, N] as the matmul reads it
    kernel = dot_kernel_for(target)  # with one, the library holds the weight packed in its layout
    wq, _ = quantize_weight(np.ascontiguousarray(weight_kn), weight_quant_for(get_scheme("int8"), kernel))
    float_row = np.ascontiguousarray(weight_kn)[0, :32].tobytes()
    int8_row = (wq if kernel is None else pack_weight(wq, kernel.weight_block)).reshape(-1)[:32].tobytes()
    fp32_lib = (tmp_path / "fp32" / "model.so").read_bytes()
    int8_lib = (tmp_path / "int8" / "model.so").read_bytes()
    assert float_row in fp32_lib and float_row not in int8_lib
    assert int8_row in int8_lib

    source = mlp_source()
    (got,) = tvmcomp.load(tmp_path / "int8").run(**source.example_inputs)
    (want,) = torch_reference(source.torch_module, source.example_inputs)
    assert np.abs(got - want).max() <= 0.05 * np.abs(want).max()
    assert (got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want) > 0.999  # cosine

    build(mlp_source(), target, tmp_path / "int8", QuantOptions("int8", samples=8))
    assert "[quant] reusing the calibration" in capsys.readouterr().err


def test_int8_needs_calibration_data(empty_schedules, tmp_path):
    source = mlp_source()
    source.entry = None  # a user's file: no bundled calibration data
    with pytest.raises(TvmcompError, match=r"needs calibration data: give --calib-data FILE.npz"):
        build(source, resolve_target("x86"), tmp_path / "pkg", QuantOptions("int8"))


def test_a_loaded_package_runs_on_the_physical_cores_unless_the_user_chose(empty_schedules, tmp_path):
    from tvmcomp.targets import host_cores

    build(mlp_source(), resolve_target("x86"), tmp_path / "pkg")
    script = (f"import tvmcomp; from tvmcomp.runtime import num_threads; "
              f"tvmcomp.load({str(tmp_path / 'pkg')!r}); print(num_threads())")
    assert int(_fresh_process(script).stdout) == host_cores()
    chosen = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, TVM_NUM_THREADS="1"),
                            capture_output=True, text=True)
    assert int(chosen.stdout) == 1


def test_bench_output_agreement_is_cosine_and_relative_error():
    from tvmcomp.bench import output_agreement

    want = [np.array([[3.0, 4.0]])]
    same = output_agreement([np.array([[3.0, 4.0]])], want)
    assert same == {"cosine_vs_torch": 1.0, "relative_err_vs_torch": 0.0}
    # got = (4, 3): cosine = (12 + 12) / 25, |got - want| / |want| = sqrt(2) / 5
    other = output_agreement([np.array([[4.0, 3.0]])], want)
    assert other["cosine_vs_torch"] == pytest.approx(24 / 25)
    assert other["relative_err_vs_torch"] == pytest.approx(np.sqrt(2) / 5)
