"""--wide-inputs: Linears whose int8 output is estimated too noisy get 12-bit input codes on the int16
dot kernel; exact against a NumPy integer reference, the estimate against the measured noise."""

import re

import numpy as np
import pytest
import tvm
from tvm import relax

from test_cli import assert_user_error
from test_quant_passes import INT8, LinearAnnotated, _linear_params
from tvmcomp.quant.calibrate import SiteRange
from tvmcomp.quant.dot_kernels import DotKernel, DotKernels
from tvmcomp.quant.precision import output_sqnr_db

AVX2_I16 = DotKernel("avx2", "dot_8x2_i16_avx2", (8, 2), "int16")


def _outlier_inputs(seed: int = 4) -> np.ndarray:
    """Channel 3 spikes to 40x the others on a few rows, as an FFN's GELU output does."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    x[::16, 3] *= 40
    return x


def _site_range(x: np.ndarray) -> SiteRange:
    lo, hi = x.min(axis=0), x.max(axis=0)
    scale, zero = INT8.activation.scale_zero_point(lo.min(), hi.max())
    return SiteRange(float(scale), int(zero), float(lo.min()), float(hi.max()), channel_lo=lo.tolist(),
                     channel_hi=hi.tolist(), channel_rms=np.sqrt((x.astype(np.float64) ** 2).mean(axis=0)).tolist())


def _run(realized, params, x):
    """test_quant_passes' Linear takes 2 rows: run ``x`` 2 rows at a time."""
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized)
    vm = relax.VirtualMachine(tvm.compile(bound, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    return np.concatenate([vm["main"](tvm.runtime.tensor(x[i:i + 2])).numpy() for i in range(0, len(x), 2)])


def _wide_reference(x, params):
    """12-bit asymmetric codes in int16 over the calibrated [lo, hi] (0 included), round half to
    even; int8 weights per output channel; the integer dot product, scaled, plus the bias."""
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    step64 = (hi - lo) / 4095
    z = int(np.clip(np.round(-2048 - lo / step64), -2048, 2047))
    s = np.float32(step64)
    xq = np.clip(np.round(x / s) + z, -2048, 2047).astype(np.int64)
    w_kn = params["w"].T
    s_w = (np.abs(w_kn).max(axis=0).astype(np.float64) / 127).astype(np.float32)  # int8 weights, as for int8 inputs
    wq = np.clip(np.round(w_kn / s_w), -127, 127).astype(np.int64)
    acc = xq @ wq - z * wq.sum(axis=0)
    return acc.astype(np.float32) * (s * s_w) + params["b"]


@pytest.mark.parametrize("kernel", [None, AVX2_I16], ids=["plain", "int16-dot-layout"])
def test_a_noisy_linear_runs_12_bit_codes_and_matches_the_numpy_integer_reference_exactly(kernel):
    params, x = _linear_params(3), _outlier_inputs()
    ranges = {0: _site_range(x)}
    realized = realize_linear(LinearAnnotated, params, ranges, kernel, wide_below_db=100.0)  # every Linear is "noisy"
    text = realized.script()
    assert 'R.quantize(' in text and 'out_dtype="int16"' in text and "R.clip(" in text
    if kernel is not None:
        # the weight packed in vpmaddwd's [N/8, K/2, 8, 2] blocks, as int16
        assert "packed_int16_matmul" in text
        assert 'T.Buffer((T.int64(2), T.int64(4), T.int64(8), T.int64(2)), "int16")' in text
    got = _run(realized, params, x)
    np.testing.assert_array_equal(got, _wide_reference(x, params))

    exact = x @ params["w"].T + params["b"]
    int8 = _run(realize_linear(LinearAnnotated, params, ranges, None, wide_below_db=None), params, x)
    # 16x finer input steps: what is left is mostly the int8 weights' rounding
    assert ((got - exact) ** 2).sum() < ((int8 - exact) ** 2).sum() / 4, (((got - exact) ** 2).sum(), ((int8 - exact) ** 2).sum())


@pytest.mark.parametrize("scheme", ["w4a8", "pwlq4"])
def test_a_noisy_linear_of_a_4_bit_scheme_takes_int8_weights_and_12_bit_inputs(scheme):
    """Its 4-bit groups would hold the outliers balancing moves into the weights worst: the Linear
    --wide-inputs picks runs as int8's wide one does, with no 4-bit code left."""
    from dataclasses import replace

    from test_int4 import WideLinear
    from test_dot_kernels import _x86_preset_on
    from tvmcomp.quant.dot_kernels import dot_kernels_for
    from tvmcomp.quant.realize import Realize
    from tvmcomp.quant.schemes import get_scheme

    rng = np.random.default_rng(5)
    params = {"w": rng.standard_normal((32, 64)).astype(np.float32), "b": rng.standard_normal(32).astype(np.float32)}
    x = rng.standard_normal((6, 64)).astype(np.float32)
    x[::3, 10] *= 40
    four_bit, kernels = replace(get_scheme(scheme), weight_rounding="nearest"), dot_kernels_for(_x86_preset_on("znver4"))
    assert "int4_group_matmul" in Realize(params, {0: _site_range(x)}, four_bit, kernels)(WideLinear).script()
    realized = Realize(params, {0: _site_range(x)}, four_bit, kernels, wide_below_db=100.0)(WideLinear)
    text = realized.script()
    assert "packed_int16_matmul" in text and "int4_group_matmul" not in text
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized)
    vm = relax.VirtualMachine(tvm.compile(bound, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    np.testing.assert_array_equal(vm["main"](tvm.runtime.tensor(x)).numpy(), _wide_reference(x, params))


def test_a_quiet_linear_stays_int8():
    params, x = _linear_params(3), _outlier_inputs()
    realized = realize_linear(LinearAnnotated, params, {0: _site_range(x)}, AVX2_I16, wide_below_db=1.0)
    text = realized.script()
    assert 'out_dtype="uint8"' in text and "int16" not in text


def test_the_estimated_sqnr_is_the_measured_one_within_3_db():
    """The choice rests on the estimate: check it against the int8 Linear's measured output noise,
    for even channels and for an outlier channel (which costs int8 about 12 dB here)."""
    params = _linear_params(3)
    w_kn = params["w"].T
    estimates = []
    for x in (np.random.default_rng(6).standard_normal((64, 8)).astype(np.float32), _outlier_inputs()):
        ranges = {0: _site_range(x)}
        got = _run(realize_linear(LinearAnnotated, params, ranges, None, wide_below_db=None), params, x)
        exact = x.astype(np.float64) @ w_kn + params["b"]
        signal = ((exact - params["b"]) ** 2).sum()
        measured = 10 * np.log10(signal / ((got - exact) ** 2).sum())
        estimate = output_sqnr_db(ranges[0], w_kn, INT8.activation, 127, np.ones(8, np.float32))
        assert abs(estimate - measured) <= 3.0, (estimate, measured)
        estimates.append(estimate)
    assert estimates[1] < estimates[0] - 6


def realize_linear(annotated, params, ranges, kernel, wide_below_db):
    from tvmcomp.quant.realize import Realize

    return Realize(params, ranges, INT8, DotKernels(batched=kernel), wide_below_db=wide_below_db)(annotated)


def test_wide_inputs_need_a_quantized_build_and_a_plausible_sqnr(tmp_path, capsys):
    assert_user_error(capsys, ["build", "--wide-inputs", "-o", str(tmp_path / "p")],
                      "--wide-inputs widens quantized inputs: add --quant int8")
    assert_user_error(capsys, ["build", "--quant", "int8", "--wide-inputs", "150", "-o", str(tmp_path / "p")],
                      "--wide-inputs takes an output SQNR in dB (0 to 100; default 28), not 150")


def _with_ffn_outlier_channels(folder):
    """Make two GELU output channels of each FFN ~30x the others, as trained base-size encoders have,
    and scale the FFN output's weight columns down to match."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(folder).eval()
    with torch.no_grad():
        for layer in model.encoder.layer:
            layer.intermediate.dense.weight[:2] *= 30
            layer.intermediate.dense.bias[:2] *= 30
            layer.output.dense.weight[:, :2] /= 30
    model.save_pretrained(folder)
    return folder


def test_a_model_built_with_wide_inputs_runs_them_on_vpmaddwd_and_is_closer_to_float(tmp_path, capsys,
                                                                                     empty_schedules):
    from test_cli import run_cli
    from test_hf_folder import SEQ_LEN, _save_tiny_encoder
    from test_shapes import _transformers_output

    import tvmcomp

    folder = _with_ffn_outlier_channels(_save_tiny_encoder(tmp_path / "bert", "bert"))
    errors = {}
    for name, flags in (("int8", []), ("wide", ["--wide-inputs", "99"])):  # 99 dB: every Linear
        code, _, err = run_cli(capsys, "build", "--model", str(folder), "--seq-len", str(SEQ_LEN), "--quant", "int8",
                               "--calibration-samples", "4", *flags, "--dump-code", "tir",
                               # against plain int8: its default balancing evens these channels out as well
                               "--balance", "off", "--observer", "minmax",
                               "--keep-float", "bmm_*", "--keep-float", "*embeddings*",  # only Linears' noise left
                               "-o", str(tmp_path / name))
        assert code == 0, err
        if flags:
            assert "[quant] --wide-inputs 99: 12 Linears estimated below 99 dB in int8 take 12-bit inputs" in err
        package = tvmcomp.load(tmp_path / name)
        inputs = package.example_inputs()
        want = _transformers_output(folder, inputs["input_ids"], inputs["attention_mask"])
        errors[name] = float(((package.run(**inputs)[0] - want) ** 2).sum())
    kernels = re.split(r"\n(?=# \w+\n# from)", (tmp_path / "wide" / "code" / "kernels.tir.py").read_text())
    linears = [kernel for kernel in kernels if kernel.startswith("# fused_packed_matmul")]
    # 32 -> 32 (Q, K, V), 32 -> 32 plus the residual add (O), 32 -> 64 with the GELU, 64 -> 32 plus the
    # residual add: the layers share kernels; attention kept float
    assert len(linears) == 4, [k.splitlines()[0] for k in linears]
    assert all("packed_int16_matmul" in k and "llvm.x86.avx2.pmadd.wd" in k for k in linears)  # int16 on vpmaddwd
    assert errors["wide"] < errors["int8"] / 4, errors
