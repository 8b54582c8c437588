"""Step search (tvmcomp.quant.step_search, ``--observer search``): Linear inputs' steps chosen by the
error of the integer Linear's output on calibration rows."""

from dataclasses import replace

import numpy as np
import pytest

from test_cli import run_cli
from test_int4 import clipped_step
from tvmcomp.quant.balance import AUTO, OFF
from tvmcomp.quant.calibrate import SiteRange
from tvmcomp.quant.schemes import get_scheme
from tvmcomp.quant.step_search import ROWS, RowSample, output_error, search_step, shrunk

RNG = np.random.default_rng(21)
INT8, POT8 = get_scheme("int8"), get_scheme("pot8")


def _wide_channel_linear():
    """Rows whose range is set by one wide channel (channel 0, up to ~30) whose weight row is nearly
    zero, so that clipping it costs the output little; the other channels stay within ~1."""
    rows = RNG.laplace(0.0, 0.2, (512, 64)).astype(np.float32)
    rows[:, 0] = RNG.standard_normal(512) * 10
    weight = RNG.standard_normal((64, 32)).astype(np.float32) * 0.1
    weight[0] *= 0.01
    return rows, weight, SiteRange(scale=0.0, zero_point=0, lo=float(rows.min()), hi=float(rows.max()))


def _uint8_restored(rows, site):
    """uint8 asymmetric per tensor: x ~ (clip(round(x / s) + z, 0, 255) - z) * s."""
    s = np.float32((max(site.hi, 0) - min(site.lo, 0)) / 255)
    z = np.clip(np.round(-min(site.lo, 0) / s), 0, 255)
    return (np.clip(np.round(rows / s) + z, 0, 255) - z) * s


def test_output_error_is_the_integer_linears_error_spelled_out():
    rows, weight, site = _wide_channel_linear()
    scale, zero = INT8.activation.scale_zero_point(np.float64(site.lo), np.float64(site.hi))
    site = SiteRange(float(scale), int(zero), site.lo, site.hi)
    got = output_error(rows, weight, site, INT8.activation, INT8.weight, balance=None)
    x_hat = _uint8_restored(rows, site)
    # int8 symmetric per output channel: W ~ clip(round(W / s_w), -127, 127) * s_w, s_w = max|W[:, n]| / 127
    s_w = np.abs(weight).max(axis=0) / np.float32(127)
    w_hat = np.clip(np.round(weight / s_w), -127, 127) * s_w
    want = np.sum((x_hat @ w_hat - rows @ weight).astype(np.float64) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-3)


def test_balanced_output_error_cancels_the_factors_as_the_realized_linear_does():
    """Balanced, the codes are x / f and the weight f * W: their product is the Linear's output, and on
    an input with one wide channel it is closer than the unbalanced one."""
    rows, weight, site = _wide_channel_linear()
    lo, hi = rows.min(axis=0), rows.max(axis=0)
    scale, zero = INT8.activation.scale_zero_point(np.float64(site.lo), np.float64(site.hi))
    site = SiteRange(float(scale), int(zero), site.lo, site.hi, lo.tolist(), hi.tolist(),
                     np.sqrt((rows ** 2).mean(axis=0)).tolist())
    signal = float(np.sum((rows @ weight).astype(np.float64) ** 2))
    balanced = output_error(rows, weight, site, INT8.activation, INT8.weight, balance=0.5)
    assert balanced < 1e-3 * signal
    assert balanced < output_error(rows, weight, site, INT8.activation, INT8.weight, balance=None)


def test_search_clips_a_range_whose_width_the_output_does_not_need():
    rows, weight, site = _wide_channel_linear()
    scale, zero = INT8.activation.scale_zero_point(np.float64(site.lo), np.float64(site.hi))
    full = SiteRange(float(scale), int(zero), site.lo, site.hi)
    found = search_step(rows, weight, full, INT8.activation, INT8.weight, balance=None)
    assert found.hi < 0.5 * full.hi  # clipped: channel 0 hardly reaches the output
    error = output_error(rows, weight, found, INT8.activation, INT8.weight, None)
    assert error < 0.5 * output_error(rows, weight, full, INT8.activation, INT8.weight, None)


def test_power_of_two_search_keeps_the_full_range():
    """Where a uniform step clips (the test above), the power-of-two step stays the full range's,
    rounded up: the step below it would clip the widest channel at half its range."""
    rows, weight, site = _wide_channel_linear()
    scale, zero = POT8.activation.scale_zero_point(np.float64(site.lo), np.float64(site.hi))
    assert scale == 2.0 ** np.ceil(np.log2((site.hi - site.lo) / 255))
    full = SiteRange(float(scale), int(zero), site.lo, site.hi)
    found = search_step(rows, weight, full, POT8.activation, POT8.weight, None)
    assert (found.scale, found.zero_point, found.lo, found.hi) == (full.scale, full.zero_point, full.lo, full.hi)
    half = shrunk(full, 0.5, POT8.activation)
    assert half.scale == scale / 2
    assert output_error(rows, weight, half, POT8.activation, POT8.weight, None) < \
        output_error(rows, weight, full, POT8.activation, POT8.weight, None)  # the sample alone would clip


def _channel_site(rows):
    """A Linear site calibrated on ``rows`` with channel ranges: min and max per tensor and per channel."""
    lo, hi = rows.min(axis=0), rows.max(axis=0)
    scale, zero = INT8.activation.scale_zero_point(np.float64(lo.min()), np.float64(hi.max()))
    return SiteRange(float(scale), int(zero), float(lo.min()), float(hi.max()), lo.tolist(), hi.tolist(),
                     np.sqrt((rows.astype(np.float64) ** 2).mean(axis=0)).tolist())


@pytest.mark.parametrize("outlier, count", [(False, 32), (True, 512)], ids=["even-channels", "a-channel-30x-wider"])
def test_search_balances_only_what_holds_on_rows_its_ranges_did_not_see(outlier, count):
    """Balanced, each channel's calibrated range is its edge (its zero point puts its minimum at code
    0), and new rows past it clip: on 32 rows of even channels the search leaves balancing off (on
    the rows that made the ranges it chose alpha 0.8). A channel 30x wider in every row is worth
    balancing. Either way the choice is the better one on 4096 new rows."""
    rng = np.random.default_rng(5)
    rows = rng.standard_normal((count + 4096, 64)).astype(np.float32)
    if outlier:
        rows[:, 3] *= 30
    weight = rng.standard_normal((64, 128)).astype(np.float32) * 0.1
    calibration, new = rows[:count], rows[count:]
    found = search_step(calibration, weight, _channel_site(calibration), INT8.activation, INT8.weight, AUTO)
    assert (found.balance != OFF) == outlier
    other = replace(found, balance=0.5 if found.balance == OFF else OFF)
    assert output_error(new, weight, found, INT8.activation, INT8.weight, AUTO) < \
        output_error(new, weight, other, INT8.activation, INT8.weight, AUTO)


def test_row_sample_spreads_its_rows_over_the_batches():
    sample = RowSample(batches=4)
    for b in range(4):
        sample.observe(np.full((1, ROWS, 8), b, np.float32))
    rows = sample.array()
    assert rows.shape == (ROWS, 8) and [int((rows[:, 0] == b).sum()) for b in range(4)] == [ROWS // 4] * 4


def test_step_search_builds_a_tiny_encoder_close_to_float(tmp_path, capsys, empty_schedules):
    from test_hf_folder import SEQ_LEN, _save_tiny_encoder
    from test_shapes import cosine_to_transformers

    folder = _save_tiny_encoder(tmp_path / "bert", "bert")
    code, _, err = run_cli(capsys, "build", "--model", str(folder), "--seq-len", str(SEQ_LEN), "--quant", "int8",
                           "--observer", "search", "--calibration-samples", "4", "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    # 2 layers x (the input Q, K and V share, output, FFN in, FFN out)
    assert "[calibrate] step search, Linear input 8/8" in err
    assert cosine_to_transformers(tmp_path / "pkg", folder).min() > 0.99


def test_an_observer_is_checked_before_any_work(tmp_path, capsys):
    from test_cli import assert_user_error

    assert_user_error(capsys, ["build", "--observer", "search", "-o", str(tmp_path / "p")],
                      "--observer chooses quantization ranges: add --quant int8")
    assert_user_error(capsys, ["build", "--quant", "int8", "--observer", "serch", "-o", str(tmp_path / "p")],
                      "unknown observer 'serch'; available: minmax, percentile, mse, kl, search")


def test_the_search_models_the_weights_realize_builds_on_the_targets_kernels():
    from tvmcomp.quant.dot_kernels import DotKernel, DotKernels
    from tvmcomp.quant.ops.linear import weight_quant_of

    avx2 = DotKernels(linear=DotKernel("avx2", "dot_8x4_avx2", (8, 4), "uint8", weight_bits=7),
                      int4=DotKernel("avx2", "dot_8x8_w4_avx2", (8, 8), "uint8", weight_bits=4))
    w4a8 = get_scheme("w4a8")
    assert weight_quant_of(INT8, avx2, 64, 32).bits == 7  # AVX2's vpmaddubsw pairs: 7-bit weights
    assert weight_quant_of(INT8, DotKernels(), 64, 32) == INT8.weight  # no kernel: a plain int8 matmul
    assert weight_quant_of(w4a8, avx2, 64, 32) == w4a8.weight  # 4-bit groups on the int4 kernel
    assert weight_quant_of(w4a8, avx2, 48, 32).bits == 7  # 48 input channels: not whole groups of 32

    rows, weight, site = _wide_channel_linear()
    scale, zero = w4a8.activation.scale_zero_point(np.float64(site.lo), np.float64(site.hi))
    site = SiteRange(float(scale), int(zero), site.lo, site.hi)
    got = output_error(rows, weight, site, w4a8.activation, w4a8.weight, balance=None)
    x_hat = _uint8_restored(rows, site)
    # 4-bit symmetric, a scale per output channel and group of 32 input channels, clipped (test_int4.clipped_step)
    groups = weight.reshape(2, 32, 32)
    s_g = np.stack([clipped_step(rows) for rows in groups])[:, None, :]
    w_hat = (np.clip(np.round(groups / s_g), -7, 7) * s_g).reshape(64, 32)
    want = np.sum((x_hat @ w_hat - rows @ weight).astype(np.float64) ** 2)
    np.testing.assert_allclose(got, want, rtol=1e-3)
