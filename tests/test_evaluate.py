"""eval for any package: output cosine and SQNR against the float model (PyTorch or ONNX Runtime)."""

import json

import numpy as np
import pytest
import torch

from models_for_tests import mlp_source, save_mlp_pt2
from test_cli import run_cli
from tvmcomp.evaluate import output_agreement


def test_output_agreement_by_hand():
    want = np.array([[[3.0, 4.0], [100.0, 100.0]]])  # one sample, two positions; the second is padding
    got = np.array([[[3.0, 4.5], [0.0, 0.0]]])
    mask = np.array([[1, 0]])
    result = output_agreement(lambda _: want, lambda _: got, [{"attention_mask": mask}])
    # padding left out: signal 3^2 + 4^2 = 25, error 0.5^2 = 0.25 -> 10 log10(100) = 20 dB
    assert result["sqnr_db"] == pytest.approx(20.0)
    assert result["output_cosine_mean"] == pytest.approx((9 + 18) / (5 * np.hypot(3, 4.5)))
    assert result["samples"] == 1


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
