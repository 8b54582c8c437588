"""--model DIR: a Hugging Face text- or image-encoder folder builds, matches transformers, quantizes
on the bundled real text or images through its own tokenizer or image processor, and evaluates,
with no other flag."""

import json
import re

import numpy as np
import pytest
import torch

import tvmcomp
from models_for_tests import save_tiny_vit
from test_cli import assert_user_error, run_cli
from tvmcomp.models.hf_text import EXAMPLE_SENTENCES

SEQ_LEN = 16


def _save_tiny_encoder(folder, kind: str):
    """A randomly initialised 2-layer encoder with MiniLM's tokenizer (vocabulary 30522) beside it."""
    from transformers import BertConfig, BertModel, DistilBertConfig, DistilBertModel

    from tvmcomp.models.hf_text import _tokenizer
    from tvmcomp.models.minilm import _model_dir

    torch.manual_seed(0)
    if kind == "bert":
        model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=64))
    else:
        model = DistilBertModel(DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                 max_position_embeddings=64))
    from transformers.utils import logging

    logging.disable_progress_bar()  # its bar on stderr would read as a second line of a one-line error
    model.eval().save_pretrained(folder)
    _tokenizer(_model_dir()).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["bert", "distilbert"])
def encoder_dir(request, tmp_path_factory):
    return _save_tiny_encoder(tmp_path_factory.mktemp(request.param) / "model", request.param)


def test_a_folder_builds_and_matches_transformers(encoder_dir, tmp_path, capsys, empty_schedules):
    from transformers import AutoModel

    code, _, err = run_cli(capsys, "build", "--model", str(encoder_dir), "--seq-len", str(SEQ_LEN),
                           "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    package = tvmcomp.load(tmp_path / "pkg")
    inputs = package.example_inputs()
    assert inputs["input_ids"].shape == (1, SEQ_LEN) and inputs["input_ids"][0, 0] == 101  # real tokenized text
    with torch.no_grad():
        want = AutoModel.from_pretrained(encoder_dir).eval()(
            **{k: torch.from_numpy(v) for k, v in inputs.items()}).last_hidden_state.numpy()
    assert np.abs(package.run(**inputs)[0] - want).max() <= 1e-4
    # the package carries the tokenizer: a deployed package tokenizes text as the source model does
    assert (tmp_path / "pkg" / "preprocessing" / "tokenizer_config.json").is_file()
    (tmp_path / "texts.txt").write_text(f"{EXAMPLE_SENTENCES[0]}\n")
    code, _, err = run_cli(capsys, "run", str(tmp_path / "pkg"), "--inputs", str(tmp_path / "texts.txt"),
                           "-o", str(tmp_path / "out.npz"))
    assert code == 0, err
    length = int(inputs["attention_mask"].sum())  # the output stops at the text's last token
    np.testing.assert_array_equal(np.load(tmp_path / "out.npz")["last_hidden_state"],
                                  package.run(**inputs)[0][:, :length])


def test_a_folder_quantizes_on_bundled_text_and_evaluates_with_no_other_flag(encoder_dir, tmp_path, capsys,
                                                                             empty_schedules):
    code, _, err = run_cli(capsys, "build", "--model", str(encoder_dir), "--seq-len", str(SEQ_LEN), "--quant", "int8",
                           "--calibration-samples", "4", "--dump-code", "relax", "-o", str(tmp_path / "int8"))
    assert code == 0, err
    assert "calibrating int8 on 4 batches of the bundled data" in err
    # Q, K and V read one LayerNorm output on the same calibrated step: one quantize kernel call, not three
    quantized = re.findall(r"R\.call_tir\((\w*quantize\w*), \((\w+),",
                           (tmp_path / "int8" / "code" / "model.relax.py").read_text())
    assert len(quantized) >= 6 and len({tensor for _, tensor in quantized}) == len(quantized), quantized
    code, out, err = run_cli(capsys, "eval", str(tmp_path / "int8"))
    assert code == 0, err
    result = json.loads((tmp_path / "int8" / "eval.json").read_text())
    assert result["sentences"] == 200 and 0.9 < result["embedding_cosine_mean"] <= 1.0


def test_folders_without_a_config_or_a_way_to_make_inputs_say_what_they_lack(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert_user_error(capsys, ["build", "--model", str(tmp_path / "plain"), "-o", str(tmp_path / "o")],
                      "is a folder but not a Hugging Face model: it has no config.json")
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"model_type": "vit"}))
    assert_user_error(capsys, ["build", "--model", str(bare), "-o", str(tmp_path / "o")],
                      "has neither a tokenizer nor an image processor")


@pytest.fixture(scope="module", params=["vit", "deit", "dinov2", "swin"])
def image_encoder_dir(request, tmp_path_factory):
    return save_tiny_vit(tmp_path_factory.mktemp(request.param) / "model", request.param)


def test_an_image_folder_builds_and_matches_transformers(image_encoder_dir, tmp_path, capsys, empty_schedules):
    from transformers import AutoModel

    code, _, err = run_cli(capsys, "build", "--model", str(image_encoder_dir), "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    package = tvmcomp.load(tmp_path / "pkg")
    pixels = package.example_inputs()["pixel_values"]
    # a real digit through the folder's processor: 32 px, mean and std 0.5, so the background is -1
    assert pixels.shape == (1, 3, 32, 32) and pixels.min() == -1.0 and pixels.max() > 0.5
    with torch.no_grad():
        want = AutoModel.from_pretrained(image_encoder_dir).eval()(
            pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    assert np.abs(package.run(pixel_values=pixels)[0] - want).max() <= 1e-4
    # the package carries the image processor: `run` takes a folder of images
    assert (tmp_path / "pkg" / "preprocessing" / "preprocessor_config.json").is_file()
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.fromarray(np.full((50, 40, 3), 255, np.uint8)).save(tmp_path / "images" / "white.png")
    code, _, err = run_cli(capsys, "run", str(tmp_path / "pkg"), "--inputs", str(tmp_path / "images"),
                           "-o", str(tmp_path / "out.npz"))
    assert code == 0, err
    white = np.ones((1, 3, 32, 32), np.float32)  # (1 - 0.5) / 0.5
    np.testing.assert_allclose(np.load(tmp_path / "out.npz")["last_hidden_state"],
                               package.run(pixel_values=white)[0], rtol=1e-6, atol=1e-6)


def test_an_image_folder_quantizes_its_patch_conv_and_linears_on_bundled_digits_and_evaluates(tmp_path, capsys,
                                                                                            empty_schedules):
    model = save_tiny_vit(tmp_path / "vit")
    code, _, err = run_cli(capsys, "build", "--model", str(model), "--quant", "int8", "--calibration-samples", "8",
                           "--dump-code", "tir", "-o", str(tmp_path / "int8"))
    assert code == 0, err
    assert "calibrating int8 on 8 batches of the bundled data" in err
    kernels = (tmp_path / "int8" / "code" / "kernels.tir.py").read_text()
    assert "conv2d" not in kernels  # the patch embedding runs as a Linear over the patches
    assert len(re.findall(r"^# fused_packed_matmul", kernels, re.M)) >= 3
    code, out, err = run_cli(capsys, "eval", str(tmp_path / "int8"))
    assert code == 0, err
    result = json.loads((tmp_path / "int8" / "eval.json").read_text())
    assert result["data"] == "64 held-out MNIST digits" and result["reference"] == "pytorch"
    assert result["output_cosine_mean"] > 0.99
    assert result["images"] == 1000 and abs(result["probe_accuracy_drop_pt"]) <= 5
