"""--seq-len / --batch lists: one package holds a function per shape, shares one copy of the weights,
and `run` picks the smallest shape the inputs fit, pads them (masked) and cuts the outputs back."""

import json

import numpy as np
import pytest
import torch

import tvmcomp
from test_cli import assert_user_error, run_cli
from test_hf_folder import _save_tiny_encoder
from tvmcomp.errors import TvmcompError


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return _save_tiny_encoder(tmp_path_factory.mktemp("bert") / "model", "bert")


def _transformers_output(folder, ids, mask):
    from transformers import AutoModel

    with torch.no_grad():
        return AutoModel.from_pretrained(folder).eval()(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state.numpy()


def cosine_to_transformers(package_dir, folder) -> np.ndarray:
    """Per-token cosine between a text package's outputs on its example inputs and transformers'."""
    package = tvmcomp.load(package_dir)
    inputs = package.example_inputs()
    got = package.run(**inputs)[0]
    want = _transformers_output(folder, inputs["input_ids"], inputs["attention_mask"])
    return np.sum(got * want, -1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))


def _tokens(rows: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(length).integers(1000, 5000, (rows, length)).astype("int64")
    ids[:, 0], ids[:, -1] = 101, 102
    return ids, np.ones_like(ids)


def test_one_package_serves_every_shape_with_one_copy_of_the_weights(bert_dir, tmp_path, capsys, empty_schedules):
    code, _, err = run_cli(capsys, "build", "--model", str(bert_dir), "--seq-len", "16", "-o", str(tmp_path / "one"))
    assert code == 0, err
    code, _, err = run_cli(capsys, "build", "--model", str(bert_dir), "--seq-len", "16,8", "--batch", "1,2",
                           "-o", str(tmp_path / "all"))
    assert code == 0, err
    one, package = (json.loads((tmp_path / name / "metadata.json").read_text()) for name in ("one", "all"))
    assert [shape["inputs"]["input_ids"] for shape in package["shapes"]] == [[1, 8], [1, 16], [2, 8], [2, 16]]
    assert [shape["outputs"] for shape in package["shapes"]][0] == [[1, 8, 32]]
    # the float weights (3.9 MB, the embedding table most of it) once; each shape adds only its kernels
    assert package["float_weight_bytes"] > 3.9e6
    assert package["library_bytes"] - one["library_bytes"] < 0.3 * package["float_weight_bytes"]

    loaded = tvmcomp.load(tmp_path / "all")
    for rows, length, function in ((1, 6, "b1_s8"), (1, 8, "b1_s8"), (1, 12, "b1_s16"), (2, 5, "b2_s8"), (2, 16, "main")):
        ids, mask = _tokens(rows, length)
        assert loaded.choose({"input_ids": ids, "attention_mask": mask}).function == function
        got = loaded.run(input_ids=ids, attention_mask=mask)[0]
        assert got.shape == (rows, length, 32)  # padded tokens and rows cut off again
        assert np.abs(got - _transformers_output(bert_dir, ids, mask)).max() <= 1e-4

    ids, mask = _tokens(1, 17)
    with pytest.raises(TvmcompError, match=r"fit no shape this package was built for \(input_ids \[1, 8\], \[1, 16\], "):
        loaded.run(input_ids=ids, attention_mask=mask)


def test_int8_shapes_share_the_calibration_and_padding_does_not_change_real_tokens(bert_dir, tmp_path, capsys,
                                                                                   empty_schedules):
    code, _, err = run_cli(capsys, "build", "--model", str(bert_dir), "--seq-len", "8,16", "--quant", "int8",
                           "--calibration-samples", "4", "-o", str(tmp_path / "int8"))
    assert code == 0, err
    assert err.count("calibrating") == 1  # once, at the largest shape
    package = tvmcomp.load(tmp_path / "int8")
    ids, mask = _tokens(1, 6)
    short = package.run(input_ids=ids, attention_mask=mask)[0]  # the 8-token function
    padded = {"input_ids": np.pad(ids, [(0, 0), (0, 10)]), "attention_mask": np.pad(mask, [(0, 0), (0, 10)])}
    assert package.choose(padded).function == "main"
    long = package.run(**padded)[0][:, :6]  # the 16-token function, padding masked by the caller
    # integer kernels on the same codes: only the float softmax sums another number of exact zeros
    assert np.abs(short - long).max() <= 1e-4 * np.abs(long).max()
    float_out = _transformers_output(bert_dir, ids, mask)
    cosine = np.sum(short * float_out, -1) / (np.linalg.norm(short, axis=-1) * np.linalg.norm(float_out, axis=-1))
    assert cosine.min() > 0.9


def test_texts_run_at_the_smallest_shape_that_holds_them(bert_dir, tmp_path, capsys, empty_schedules):
    from tvmcomp.models.hf_text import _tokenize

    code, _, err = run_cli(capsys, "build", "--model", str(bert_dir), "--seq-len", "8,32", "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    (tmp_path / "texts.txt").write_text("a short one\n")
    code, _, err = run_cli(capsys, "run", str(tmp_path / "pkg"), "--inputs", str(tmp_path / "texts.txt"),
                           "-o", str(tmp_path / "out.npz"))
    assert code == 0, err
    got = np.load(tmp_path / "out.npz")["last_hidden_state"]
    tokens = _tokenize(str(bert_dir), ["a short one"], 32)
    length = int(tokens["attention_mask"].sum())  # [CLS] a short one [SEP]
    assert got.shape == (1, length, 32) and length == 5
    want = _transformers_output(bert_dir, tokens["input_ids"][:, :length], tokens["attention_mask"][:, :length])
    assert np.abs(got - want).max() <= 1e-4


def test_bench_times_every_shape(bert_dir, tmp_path, capsys, empty_schedules):
    code, _, err = run_cli(capsys, "build", "--model", str(bert_dir), "--seq-len", "8,16", "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "bench", str(tmp_path / "pkg"), "--repeat", "3")
    assert code == 0, err
    assert "input_ids 1x8" in out and "input_ids 1x16" in out
    result = json.loads((tmp_path / "pkg" / "bench.json").read_text())
    assert [shape["function"] for shape in result["shapes"]] == ["b1_s8", "main"]


def test_a_list_longer_than_the_models_positions_is_a_one_line_error(tmp_path, capsys):
    # (malformed lists: test_cli's bad build flags)
    assert_user_error(capsys, ["build", "--model", "minilm", "--seq-len", "64,600", "-o", str(tmp_path / "o")],
                      "--seq-len 600 is longer than minilm's 512 positions")
