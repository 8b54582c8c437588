"""--model DIR: a Hugging Face text-encoder folder builds, matches transformers, quantizes on the
bundled real text through its own tokenizer, and evaluates, with no other flag."""

import json

import numpy as np
import pytest
import torch

import tvmcomp
from test_cli import assert_user_error, run_cli

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


def test_a_folder_quantizes_on_bundled_text_and_evaluates_with_no_other_flag(encoder_dir, tmp_path, capsys,
                                                                             empty_schedules):
    code, _, err = run_cli(capsys, "build", "--model", str(encoder_dir), "--seq-len", str(SEQ_LEN), "--quant", "int8",
                           "--calibration-samples", "4", "-o", str(tmp_path / "int8"))
    assert code == 0, err
    assert "calibrating int8 on 4 batches of the bundled data" in err
    code, out, err = run_cli(capsys, "eval", str(tmp_path / "int8"))
    assert code == 0, err
    result = json.loads((tmp_path / "int8" / "eval.json").read_text())
    assert result["sentences"] == 200 and 0.9 < result["embedding_cosine_mean"] <= 1.0


def test_folders_that_are_not_text_encoders_say_what_they_lack(tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    assert_user_error(capsys, ["build", "--model", str(tmp_path / "plain"), "-o", str(tmp_path / "o")],
                      "is a folder but not a Hugging Face model: it has no config.json")
    image = tmp_path / "vit"
    image.mkdir()
    (image / "config.json").write_text(json.dumps({"model_type": "vit"}))
    (image / "preprocessor_config.json").write_text("{}")
    assert_user_error(capsys, ["build", "--model", str(image), "-o", str(tmp_path / "o")],
                      "is an image model (it has an image processor); tvmcomp takes text encoders from a folder today")
