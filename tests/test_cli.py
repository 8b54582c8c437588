"""Every user error: one line on stderr naming the problem, exit status 2."""

import subprocess
import sys

import onnx
import pytest
from onnx import TensorProto, helper

from tvmcomp.cli import main


def relu_onnx(path):
    """A one-node ONNX model, y = relu(x) with x of shape [1, 4]."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(capsys, argv, pattern):
    code, _out, err = run_cli(capsys, *argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tvmcomp: error: "), err
    assert pattern in lines[0], lines[0]


def test_missing_model_file(capsys, tmp_path):
    assert_user_error(capsys, ["build", "--model", str(tmp_path / "bert.onnx"), "-o", str(tmp_path / "o")],
                      f"model file not found: {tmp_path / 'bert.onnx'}")


def test_model_path_is_a_folder(capsys, tmp_path):
    (tmp_path / "dir.onnx").mkdir()
    assert_user_error(capsys, ["build", "--model", str(tmp_path / "dir.onnx"), "-o", str(tmp_path / "o")], "is not a file")


def test_corrupt_onnx_file(capsys, tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    assert_user_error(capsys, ["build", "--model", str(tmp_path / "bad.onnx"), "-o", str(tmp_path / "o")], "is not a readable ONNX file")


def test_unsupported_onnx_operator_is_named(capsys, tmp_path):
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"], domain="ai.example")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.example", 1)]),
              str(tmp_path / "m.onnx"))
    assert_user_error(capsys, ["build", "--model", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "o")], "NoSuchOp")


def test_unknown_target_lists_presets(capsys, tmp_path):
    assert_user_error(capsys, ["build", "--target", "riscv", "-o", str(tmp_path / "o")],
                      "unknown target 'riscv'; presets: arm, cuda, cuda-sm80, cuda-sm90, rpi4, x86, x86-znver4")


def test_unknown_model_lists_registry(capsys, tmp_path):
    assert_user_error(capsys, ["build", "--model", "gpt5", "-o", str(tmp_path / "o")], "unknown model 'gpt5'; bundled models: minilm")


def test_input_shape_names_an_unknown_input(capsys, tmp_path):
    relu_onnx(tmp_path / "r.onnx")
    assert_user_error(capsys, ["build", "--model", str(tmp_path / "r.onnx"), "--input-shape", "input_ids=1,128",
                               "-o", str(tmp_path / "o")], "the ONNX inputs are ['x']")
    assert_user_error(capsys, ["build", "--model", str(tmp_path / "r.onnx"), "--input-shape", "x=1,four",
                               "-o", str(tmp_path / "o")], "is not NAME=D1,D2")


def test_no_tuning_records_builds_on_default_schedules_and_says_how_to_tune(capsys, tmp_path, empty_schedules):
    relu_onnx(tmp_path / "r.onnx")
    code, out, err = run_cli(capsys, "build", "--model", str(tmp_path / "r.onnx"), "-o", str(tmp_path / "o"))
    assert code == 0 and "(1 on default schedules)" in out
    assert "1 of 1 kernels have no tuning record" in err and f"`tvmcomp tune --model {tmp_path / 'r.onnx'}" in err


@pytest.mark.parametrize("command", ["build", "tune"])
def test_unknown_quant_scheme(capsys, tmp_path, command):
    relu_onnx(tmp_path / "r.onnx")
    # the package in tmp_path: `make demo` leaves a folder out/ in the repository, which a build refuses to overwrite
    output = ["-o", str(tmp_path / "out")] if command == "build" else []
    assert_user_error(capsys, [command, *output, "--model", str(tmp_path / "r.onnx"), "--quant", "int3"],
                      "unknown quantization scheme 'int3'")


def test_bench_missing_package(capsys, tmp_path):
    assert_user_error(capsys, ["bench", str(tmp_path / "nothing")], "package not found")


def test_eval_errors(capsys, tmp_path, empty_schedules):
    assert_user_error(capsys, ["eval", str(tmp_path / "nothing")], "package not found")
    relu_onnx(tmp_path / "r.onnx")
    package = str(tmp_path / "relu")
    assert main(["build", "--model", str(tmp_path / "r.onnx"), "-o", package]) == 0
    capsys.readouterr()
    assert_user_error(capsys, ["eval", package, "--data", str(tmp_path / "none.npz")], "none.npz: not found")
    (tmp_path / "r.onnx").unlink()
    assert_user_error(capsys, ["eval", package], f"the package's source model {tmp_path / 'r.onnx'} is not on this machine")


def test_cross_target_tuning_needs_the_device(capsys, tmp_path):
    relu_onnx(tmp_path / "r.onnx")
    model = ["--model", str(tmp_path / "r.onnx"), "--target", "arm"]
    assert_user_error(capsys, ["build", *model, "--trials", "8", "-o", str(tmp_path / "o")],
                      "--trials for 'arm' measures candidates on the device: add --rpc-tracker HOST:PORT --rpc-key KEY")
    assert_user_error(capsys, ["tune", *model], "target 'arm' runs on another machine: tune it there over RPC")


@pytest.mark.parametrize("flags, pattern", [
    (["--rpc-key", "rasp4"], "--rpc-key needs --rpc-tracker HOST:PORT"),
    (["--rpc-tracker", "127.0.0.1:9190"], "--rpc-tracker needs --rpc-key"),
    (["--rpc", "127.0.0.1:1", "--rpc-tracker", "127.0.0.1:2", "--rpc-key", "k"], "either --rpc or --rpc-tracker"),
    (["--rpc", "localhost"], "--rpc takes HOST:PORT (e.g. 127.0.0.1:9090), not 'localhost'"),
])
def test_rpc_flag_errors(capsys, tmp_path, flags, pattern):
    assert_user_error(capsys, ["bench", str(tmp_path / "pkg"), *flags], pattern)


def test_console_script_exit_code_and_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tvmcomp.cli", "build", "--target", "tpu", "-o", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "unknown target 'tpu'" in proc.stderr


@pytest.mark.parametrize("name, content, pattern", [
    ("bad.pt2", b"garbage", "is not a loadable torch.export .pt2 file: not a zip archive"),
    ("zero.onnx", b"", "is not a readable ONNX file: it holds no graph"),
])
def test_corrupt_model_files_are_one_line_from_a_fresh_process(tmp_path, name, content, pattern):
    """In a fresh process, so that nothing torch logs on its own (a whole traceback, for a bad .pt2) hides."""
    (tmp_path / name).write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "tvmcomp.cli", "build", "--model", str(tmp_path / name),
                           "-o", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and pattern in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()


def test_an_onnx_graph_with_no_outputs_is_an_error(capsys, tmp_path):
    onnx.save(helper.make_model(helper.make_graph([], "empty", [], []), opset_imports=[helper.make_opsetid("", 17)]),
              str(tmp_path / "empty.onnx"))
    assert_user_error(capsys, ["build", "--model", str(tmp_path / "empty.onnx"), "-o", str(tmp_path / "o")],
                      "it holds no graph (no nodes or no outputs)")


@pytest.mark.parametrize("command", ["build", "tune", "bench", "run", "eval", "report", "board", "targets", "models"])
def test_help_teaches_each_command(capsys, command):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tvmcomp " + command)
    if command in ("build", "tune", "bench", "run", "eval", "report", "board"):
        assert "example: tvmcomp " + command in out


@pytest.mark.parametrize("flags, pattern", [
    (["--batch", "-1"], "--batch must be a positive number or a comma list of them, not '-1'"),
    (["--batch", "0"], "--batch must be a positive number or a comma list of them, not '0'"),
    (["--seq-len", "0"], "--seq-len must be a positive number or a comma list of them, not '0'"),
    (["--seq-len", "8,x"], "--seq-len must be a positive number or a comma list of them, not '8,x'"),
    (["--batch", "1,-2"], "--batch must be a positive number or a comma list of them, not '1,-2'"),
    (["--seq-len", "4096"], "--seq-len 4096 is longer than minilm's 512 positions"),
    (["--input-shape", "x=1,2"], "--input-shape applies to model files; for a bundled model use --batch/--seq-len"),
    (["--target", '{"kind": "llvm", "mcpu": "bogus"}'], "LLVM knows no CPU 'bogus'"),
])
def test_bad_build_flags_are_one_line_and_write_nothing(capsys, tmp_path, empty_schedules, flags, pattern):
    assert_user_error(capsys, ["build", "--model", "minilm", "-o", str(tmp_path / "out"), *flags], pattern)
    assert not (tmp_path / "out").exists()
    assert not empty_schedules.exists()  # no empty record folder left behind either


def test_bad_input_shape_size(capsys, tmp_path):
    relu_onnx(tmp_path / "relu.onnx")
    assert_user_error(capsys, ["build", "--model", str(tmp_path / "relu.onnx"), "--input-shape", "x=1,0",
                               "-o", str(tmp_path / "out")], "with positive sizes")


def test_output_that_cannot_be_written_fails_before_any_work(capsys, tmp_path):
    (tmp_path / "file").write_text("")
    assert_user_error(capsys, ["build", "--model", "minilm", "-o", str(tmp_path / "file" / "sub" / "pkg")],
                      f"cannot write the package {tmp_path / 'file' / 'sub' / 'pkg'}: {tmp_path / 'file'} is a file")


def test_quiet_build_prints_no_progress(capsys, tmp_path, empty_schedules):
    relu_onnx(tmp_path / "relu.onnx")
    code, out, err = run_cli(capsys, "build", "--model", str(tmp_path / "relu.onnx"), "-q",
                             "-o", str(tmp_path / "pkg"))
    assert code == 0 and err == "" and out.startswith("built ")


def test_progress_in_a_log_is_a_line_per_printed_step():
    import io

    from tvmcomp.console import progress_step

    log = io.StringIO()
    for i in range(1, 33):
        progress_step(log, "[calibrate] sample", i, 32)
    assert log.getvalue() == "[calibrate] sample 1/32\n[calibrate] sample 32/32\n"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == "tvmcomp 0.1.0"


def test_targets_shows_this_cpu_and_which_records_serve(capsys, empty_schedules):
    code, out, _err = run_cli(capsys, "targets")
    assert code == 0 and out.startswith("this machine: ")
    assert "no records for arm: builds use default schedules (within ~2x of tuned); tune for the rest (on the device:" in out
