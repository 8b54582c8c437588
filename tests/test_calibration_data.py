"""--calib-data: a user's own model file quantized on the user's own data; each bad form is one line."""

import re

import numpy as np
import pytest
import torch

import tvmcomp
from models_for_tests import mlp_source, save_mlp_pt2
from test_cli import assert_user_error, run_cli
from tvmcomp.calibration_data import read_calibration_data
from tvmcomp.frontend import TensorSpec


@pytest.fixture
def mlp_file(tmp_path):
    return save_mlp_pt2(tmp_path / "mlp.pt2")


def _samples(count: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, 64)).astype(np.float32)


def test_a_model_file_quantizes_on_the_users_npz_to_integer_kernels(mlp_file, tmp_path, capsys, empty_schedules):
    np.savez(tmp_path / "calib.npz", x=_samples(64))  # 64 samples = 8 batches of the model's 8 rows
    code, out, err = run_cli(capsys, "build", "--model", str(mlp_file), "--quant", "int8", "--calib-data",
                             str(tmp_path / "calib.npz"), "--dump-code", "tir", "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    assert "calibrating int8 on 8 batches of --calib-data" in err
    kernels = (tmp_path / "pkg" / "code" / "kernels.tir.py").read_text()
    assert re.search(r'param_0: T.Buffer\(\(.*?\), "int8"\)', kernels)  # the packed 8-bit weight
    assert re.search(r'packed_int8_matmul_intermediate = T.sblock_alloc_buffer\(\(.*?\), "int32"\)', kernels)
    x = _samples(8, seed=2)
    (got,) = tvmcomp.load(tmp_path / "pkg").run(x=x)
    with torch.no_grad():
        want = mlp_source().torch_module(torch.from_numpy(x)).numpy()
    cosine = float(np.sum(got * want) / np.linalg.norm(got) / np.linalg.norm(want))
    assert cosine > 0.999 and np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_a_model_file_without_calibration_data_says_what_to_give(mlp_file, tmp_path, capsys):
    assert_user_error(capsys, ["build", "--model", str(mlp_file), "--quant", "int8", "-o", str(tmp_path / "pkg")],
                      "needs calibration data: give --calib-data FILE.npz (one array per model input, named as the "
                      "input, first axis = samples; inputs: x[8, 64])")


@pytest.mark.parametrize("name, write, message", [
    ("c.npz", lambda p: np.savez(p, y=_samples(16)), "the model's inputs are ['x']; missing ['x'], unexpected ['y']"),
    ("c.npz", lambda p: np.savez(p, x=_samples(16)[:, :32]), "'x' has shape [16, 32]; the model takes [8, 64], "
                                                             "so samples must be [N, 64]"),
    ("c.npz", lambda p: np.savez(p, x=np.zeros((16, 64), np.complex64)), "'x' is complex64; the model takes float32"),
    ("c.npz", lambda p: np.savez(p, x=_samples(4)), "4 samples, fewer than one batch of 8"),
    ("c.npz", lambda p: p.write_text("not a zip"), "is not a readable .npz"),
    ("c.txt", lambda p: p.write_text("a sentence\n"), "text needs the model's tokenizer, and this model has none"),
    ("c.csv", lambda p: p.write_text("1,2\n"), "give an .npz (one array per model input"),
    ("images", lambda p: p.mkdir(), "give an .npz (one array per model input"),
    ("none.npz", lambda p: None, "calibration data not found"),
])
def test_bad_calibration_data_is_one_line_before_calibration(mlp_file, tmp_path, capsys, name, write, message):
    write(tmp_path / name)
    assert_user_error(capsys, ["build", "--model", str(mlp_file), "--quant", "int8", "--calib-data",
                               str(tmp_path / name), "-o", str(tmp_path / "pkg")], message)
    assert not (tmp_path / "pkg").exists()


def test_calibration_data_needs_a_quantized_build(tmp_path, capsys):
    np.savez(tmp_path / "c.npz", x=_samples(8))
    assert_user_error(capsys, ["build", "--calib-data", str(tmp_path / "c.npz"), "-o", str(tmp_path / "pkg")],
                      "--calib-data calibrates quantization: add --quant int8")


def test_text_is_tokenized_by_the_models_tokenizer_into_batches(tmp_path):
    from tvmcomp.models.minilm import tokenize

    (tmp_path / "c.txt").write_text("The first sentence.\n\nA second one, after a blank line.\nThird.\n")
    specs = [TensorSpec("input_ids", (1, 16), "int64"), TensorSpec("attention_mask", (1, 16), "int64")]
    batches = read_calibration_data(tmp_path / "c.txt", specs, lambda lines: tokenize(lines, 16))
    assert len(batches) == 3 and all(b["input_ids"].shape == (1, 16) for b in batches)
    assert all(b["input_ids"][0, 0] == 101 for b in batches)  # [CLS]: each line is one sample
    assert batches[2]["attention_mask"].sum() < batches[1]["attention_mask"].sum()  # "Third." is shorter
