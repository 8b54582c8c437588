"""run, report, bench --profile, build --dump-code and --json: what each writes, on a small MLP package."""

import json
import re

import numpy as np
import pytest

import tvmcomp
from models_for_tests import mlp_source
from test_cli import assert_user_error, run_cli
from tvmcomp.build import build
from tvmcomp.targets import resolve_target

EXPECTED_DOCUMENT_KEYS = {"tvmcomp_version", "command", "host_cpu", "timestamp"}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """An MLP package (x: [8, 64] -> output_0: [8, 64]), built once with its code dumped."""
    path = tmp_path_factory.mktemp("pkg") / "mlp"
    build(mlp_source(), resolve_target("x86"), path, dump=["relax", "tir", "ll", "asm"])
    return path


def _inputs(seed: int = 0) -> dict:
    return {"x": np.random.default_rng(seed).standard_normal((8, 64)).astype(np.float32)}


def test_run_writes_the_outputs_of_load_run_by_name(package, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", **_inputs())
    code, out, _ = run_cli(capsys, "run", str(package), "--inputs", str(tmp_path / "in.npz"),
                           "-o", str(tmp_path / "out.npz"), "--print-time", "--repeat", "5")
    assert code == 0 and "outputs written to" in out and re.search(r"time: p50 [\d.]+ ms.*over 5 runs", out)
    with np.load(tmp_path / "out.npz") as written:
        assert written.files == ["output_0"]
        np.testing.assert_array_equal(written["output_0"], tvmcomp.load(package).run(**_inputs())[0])


@pytest.mark.parametrize("inputs, message", [
    ({"x": np.zeros((8, 32), np.float32)}, "inputs of shape x [8, 32] fit no shape this package was built for (x [8, 64]"),
    ({"y": np.zeros((8, 64), np.float32)}, "missing ['x'], unexpected ['y']"),
    ({"x": np.zeros((8, 64), np.complex64)}, "input 'x' has dtype complex64, expected float32"),
])
def test_run_checks_inputs_and_writes_nothing_on_error(package, tmp_path, capsys, inputs, message):
    np.savez(tmp_path / "in.npz", **inputs)
    assert_user_error(capsys, ["run", str(package), "--inputs", str(tmp_path / "in.npz"), "-o",
                               str(tmp_path / "out.npz")], message)
    assert not (tmp_path / "out.npz").exists()


def test_run_input_file_errors(package, tmp_path, capsys):
    assert_user_error(capsys, ["run", str(package), "--inputs", str(tmp_path / "none.npz")], "inputs file not found")
    (tmp_path / "text.npz").write_text("not a zip")
    assert_user_error(capsys, ["run", str(package), "--inputs", str(tmp_path / "text.npz")],
                      "is not an .npz of named arrays")
    assert_user_error(capsys, ["run", str(package), "-o", str(tmp_path / "no" / "such" / "out.npz")],
                      "its folder does not exist")


def test_every_result_command_writes_a_json_document(package, tmp_path, capsys):
    code, out, _ = run_cli(capsys, "bench", str(package), "--repeat", "5", "--json", "-")
    document = json.loads(out)  # with '-', standard output holds only the JSON
    assert code == 0 and EXPECTED_DOCUMENT_KEYS <= set(document) and document["command"] == "bench"
    latency = document["tvmcomp"]
    assert latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["throughput_per_s"] == pytest.approx(8 * 1e3 / latency["p50_ms"])  # batch of 8 rows
    for argv in (["targets"], ["models"], ["run", str(package)]):
        code, out, _ = run_cli(capsys, *argv, "--json", str(tmp_path / "r.json"))
        written = json.loads((tmp_path / "r.json").read_text())
        assert code == 0 and EXPECTED_DOCUMENT_KEYS <= set(written) and written["command"] == argv[0]
    assert_user_error(capsys, ["models", "--json", str(tmp_path / "no" / "r.json")], "its folder does not exist")


def test_bench_profile_times_each_kernel_and_the_package_keeps_the_result(package, capsys):
    code, out, _ = run_cli(capsys, "bench", str(package), "--repeat", "5", "--profile")
    assert code == 0 and "per-kernel time over 20 runs" in out
    kept = json.loads((package / "bench.json").read_text())
    kernels = kept["profile"]["kernels"]
    assert len([k for k in kernels if "matmul" in k["name"]]) == 2  # the MLP's two Linear layers
    assert sum(k["share"] for k in kernels) == pytest.approx(1.0)
    assert all(k["calls_per_run"] >= 1 and k["ms_per_run"] > 0 for k in kernels)


def test_dump_code_writes_each_form(package):
    assert tvmcomp.load(package).metadata["code"] == ["code/model.relax.py", "code/kernels.tir.py",
                                                      "code/kernels.ll", "code/kernels.s"]
    code = package / "code"
    assert "R.call_tir" in (code / "model.relax.py").read_text()
    assert "T.parallel" in (code / "kernels.tir.py").read_text() and "T.vectorized" in (code / "kernels.tir.py").read_text()
    assert "define " in (code / "kernels.ll").read_text()
    assert re.search(r"\bvfmadd\w*ps\b", (code / "kernels.s").read_text())  # the matmul's vector FMAs


def test_dump_code_rejects_an_unknown_form_before_any_work(capsys, tmp_path):
    assert_user_error(capsys, ["build", "--model", "minilm", "--dump-code", "tir,bytecode", "-o", str(tmp_path / "o")],
                      "--dump-code takes relax, tir, ll, asm, not bytecode")


def test_report_writes_markdown_json_and_plots_a_person_can_read(package, tmp_path, capsys):
    from matplotlib.image import imread

    assert run_cli(capsys, "bench", str(package), "--repeat", "5", "--profile")[0] == 0
    (package / "eval.json").write_text(json.dumps({"embedding_cosine_mean": 0.995, "probe_accuracy_drop_pt": 1.0,
                                                   "wordsim_spearman_float_vs_package": 0.99}))
    code, out, _ = run_cli(capsys, "report", str(package), "-o", str(tmp_path / "report"))
    assert code == 0 and "report written to" in out
    report = tmp_path / "report"
    markdown = (report / "report.md").read_text()
    assert "| fp32 (mlp) | x86-" in markdown and "0.9950" in markdown and "![Latency vs accuracy]" in markdown
    rows = json.loads((report / "report.json").read_text())["packages"]
    assert rows[0]["cosine_vs_float"] == 0.995 and rows[0]["p50_ms"] > 0
    assert imread(report / "latency_accuracy.png").shape[:2] == (550, 880)  # 8 x 5 inches at 110 dpi
    height, width = imread(report / "kernels.png").shape[:2]
    assert width == 990 and height > 200


def test_report_shows_what_pruning_kept(tmp_path, capsys):
    path = tmp_path / "pruned"
    build(mlp_source(), resolve_target("x86"), path)
    metadata = json.loads((path / "metadata.json").read_text())
    metadata["pruning"] = {"flops_kept": 0.4962, "params_kept": 0.7731, "heads": [3, 12], "neurons": [736, 496]}
    (path / "metadata.json").write_text(json.dumps(metadata))
    tokens = tmp_path / "tokens"
    build(mlp_source(), resolve_target("x86"), tokens)
    metadata["pruning"]["tokens"] = {"flops_kept": 0.5, "fractions": [0.5], "tokens": [32, 16]}  # of the 0.4962 left
    (tokens / "metadata.json").write_text(json.dumps(metadata))
    assert run_cli(capsys, "report", str(path), str(tokens), "-o", str(tmp_path / "report"))[0] == 0
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Pruning" in markdown and "| fp32 (pruned) | 0.496 | 0.773 | 3 12 | 736 496 | all |" in markdown
    assert "| fp32 (tokens) | 0.248 | 0.773 | 3 12 | 736 496 | 32 16 |" in markdown


def test_report_says_what_is_not_measured(tmp_path, capsys):
    path = tmp_path / "fresh"
    build(mlp_source(), resolve_target("x86"), path)
    code, _, _ = run_cli(capsys, "report", str(path), "-o", str(tmp_path / "report"))
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert code == 0 and "no bench result" in markdown and "no accuracy result" in markdown
    assert not (tmp_path / "report" / "latency_accuracy.png").exists()
    assert_user_error(capsys, ["report", str(tmp_path / "none"), "-o", str(tmp_path / "r")], "package not found")
