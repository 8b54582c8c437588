"""eval for any package: output cosine and SQNR against the float model (PyTorch or ONNX Runtime)."""

import io
import json

import numpy as np
import pytest
import torch

from models_for_tests import mlp_source, save_mlp_pt2
from test_cli import run_cli
from tvmcomp.evaluate import output_agreement, probe_scores


def test_output_agreement_by_hand():
    want = np.array([[[3.0, 4.0], [100.0, 100.0]]])  # one sample, two positions; the second is padding
    got = np.array([[[3.0, 4.5], [0.0, 0.0]]])
    mask = np.array([[1, 0]])
    result = output_agreement(lambda _: want, lambda _: got, [{"attention_mask": mask}])
    # padding left out: signal 3^2 + 4^2 = 25, error 0.5^2 = 0.25 -> 10 log10(100) = 20 dB
    assert result["sqnr_db"] == pytest.approx(20.0)
    assert result["output_cosine_mean"] == pytest.approx((9 + 18) / (5 * np.hypot(3, 4.5)))
    assert result["samples"] == 1


def test_probe_agreement_counts_flipped_predictions_that_accuracy_hides():
    class SignProbe:
        def predict(self, x):
            return (x[:, 0] > 0).astype(int)

    labels = np.array([1, 1, 0, 0])
    float_x = np.array([[1.0], [1.0], [-1.0], [1.0]])  # right, right, right, wrong
    other_x = np.array([[1.0], [-1.0], [-1.0], [-1.0]])  # right, wrong, right, right: two flips
    float_acc, other_acc, agreement = probe_scores(SignProbe(), float_x, other_x, labels)
    assert (float_acc, other_acc, agreement) == (0.75, 0.75, 0.5)


def test_a_pt2_int8_package_against_its_torch_program(tmp_path, capsys, empty_schedules):
    save_mlp_pt2(tmp_path / "mlp.pt2")
    samples = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=samples[:32])
    np.savez(tmp_path / "held_out.npz", x=samples[32:])
    assert run_cli(capsys, "build", "--model", str(tmp_path / "mlp.pt2"), "--quant", "int8", "--calib-data",
                   str(tmp_path / "calib.npz"), "-o", str(tmp_path / "pkg"))[0] == 0
    code, out, err = run_cli(capsys, "eval", str(tmp_path / "pkg"), "--data", str(tmp_path / "held_out.npz"))
    assert code == 0, err
    result = json.loads((tmp_path / "pkg" / "eval.json").read_text())
    assert result["reference"] == "pytorch" and result["samples"] == 32  # 4 batches of the model's 8 rows
    assert result["output_cosine_min"] > 0.995 and 25 < result["sqnr_db"] < 80  # int8: close, not exact
    assert "vs the float model in pytorch" in out and "SQNR" in out


def test_a_pt2_exported_with_positional_arguments_is_called_with_them(tmp_path, capsys, empty_schedules):
    # export(model, (x,)): the program takes its input positionally, named by the forward's parameter
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU()).eval()
    torch.export.save(torch.export.export(model, (torch.zeros(4, 16),)), str(tmp_path / "seq.pt2"))
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float32)
    np.savez(tmp_path / "held_out.npz", input=x)
    assert run_cli(capsys, "build", "--model", str(tmp_path / "seq.pt2"), "-o", str(tmp_path / "pkg"))[0] == 0
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "pkg"), "--data", str(tmp_path / "held_out.npz"))
    assert code == 0, err
    result = json.loads((tmp_path / "pkg" / "eval.json").read_text())
    assert result["reference"] == "pytorch" and result["samples"] == 8
    assert result["output_cosine_min"] > 0.99999


def test_an_onnx_fp32_package_against_onnx_runtime(tmp_path, capsys, empty_schedules):
    source = mlp_source()
    torch.onnx.export(source.torch_module, (torch.from_numpy(source.example_inputs["x"]),), str(tmp_path / "m.onnx"),
                      input_names=["x"], output_names=["y"], dynamo=True, verbose=False)
    assert run_cli(capsys, "build", "--model", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "pkg"))[0] == 0
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "pkg"))
    assert code == 0, err
    result = json.loads((tmp_path / "pkg" / "eval.json").read_text())
    assert result["reference"] == "onnxruntime" and result["data"].startswith("the example inputs")
    assert result["output_cosine_min"] > 0.99999 and result["sqnr_db"] > 90  # fp32: summation order only


def test_eval_with_labelled_texts_scores_the_users_task_with_a_probe_on_float_embeddings(tmp_path, capsys):
    from test_hf_folder import _save_tiny_encoder

    folder = _save_tiny_encoder(tmp_path / "model", "bert")
    assert run_cli(capsys, "build", "--model", str(folder), "--seq-len", "16", "-o", str(tmp_path / "pkg"))[0] == 0
    words = ["good", "fine", "great", "bad", "dull", "poor"]
    texts = tmp_path / "reviews.tsv"
    texts.write_text("".join(f"{'pos' if i % 6 < 3 else 'neg'}\ta {words[i % 6]} film, take {i}\n" for i in range(24)))
    code, out, err = run_cli(capsys, "eval", str(tmp_path / "pkg"), "--data", str(texts))
    assert code == 0, err
    result = json.loads((tmp_path / "pkg" / "eval.json").read_text())
    assert result["task_probe_samples"] == 24
    # fp32: the package's embeddings are the float model's up to summation order, so the probe agrees
    assert result["task_probe_package"] == result["task_probe_float"] and result["task_probe_drop_pt"] == 0.0
    assert result["task_probe_agreement"] == 1.0
    assert "your task (24 labelled samples; a linear probe fitted on the float embeddings of every other one of each class" in out
    assert run_cli(capsys, "report", str(tmp_path / "pkg"), "-o", str(tmp_path / "report"))[0] == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## Your task (eval --data, labelled samples)" in report
    assert f"| 24 | {result['task_probe_float']:.3f} | {result['task_probe_package']:.3f} | 0.0 | 100.0% |" in report

    texts.write_text("pos\ta good film\nneg\ta bad film\n")  # the fitted half takes both: none left to score
    code, _, err = run_cli(capsys, "eval", str(tmp_path / "pkg"), "--data", str(texts))
    assert code != 0 and "a task probe needs two classes among the samples it is fitted on (every other one of " \
        "each class) and samples left to score it" in err


def test_the_image_probe_reads_the_class_token_or_the_token_mean_as_the_model_is_read():
    """probe_task on the bundled digits with a stand-in encoder: token 0 holds the pixels, token 1 is
    zeros for float and noise for the package. Read at the class token the two agree exactly; read at
    the token mean, the noise reaches the features."""
    from tvmcomp.models.images import probe_task

    def preprocess(images):
        return {"x": np.stack([image[:, :, 0].ravel() for image in images]).astype(np.float32) / 255}

    def encoder(noise):
        def run(inputs):
            pixels = inputs["x"]
            second = np.random.default_rng(len(pixels)).normal(0, 3, pixels.shape) if noise else np.zeros_like(pixels)
            return np.stack([pixels, second], axis=1)  # [batch, 2 tokens, 784]
        return run

    first = probe_task(preprocess, "first")(encoder(False), encoder(True), 10, stream=io.StringIO())
    assert first["images"] == 1000 and first["probe_accuracy_float"] > 0.8
    assert first["probe_accuracy_drop_pt"] == 0.0 and first["probe_agreement"] == 1.0
    mean = probe_task(preprocess, "mean")(encoder(False), encoder(True), 10, stream=io.StringIO())
    assert mean["probe_accuracy_float"] > 0.8  # float's token mean is the pixels halved
    assert mean["probe_agreement"] < 0.9
