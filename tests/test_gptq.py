"""GPTQ rounding (tvmcomp/quant/gptq.py) against a plain NumPy GPTQ written here, and what it buys."""

from dataclasses import replace

import numpy as np

from test_int4 import clipped_step
from tvmcomp.quant.gptq import gptq_round
from tvmcomp.quant.grids import quantize_weight
from tvmcomp.quant.schemes import get_scheme

W4 = get_scheme("w4a8").weight  # 4-bit, groups of 32


def _inputs(rows=600, channels=256, seed=0):
    """Correlated inputs with a few loud channels, as a LayerNorm output has."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, channels)) @ (np.eye(channels) + 0.3 * rng.standard_normal((channels, channels)))
    x[:, :4] *= 8
    return x, rng.standard_normal((channels, 24)).astype(np.float32)


def _gptq_one_row_at_a_time(weight, gram, group, qmax):
    """GPTQ as the paper states it, no lazy blocks: round row k, push its error onto all later rows."""
    w = weight.astype(np.float64).copy()
    k_total = len(w)
    h = gram + 0.01 * np.mean(np.diag(gram)) * np.eye(k_total)
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    codes = np.zeros_like(w)
    for k in range(k_total):
        if k % group == 0:
            step = clipped_step(w[k:k + group], qmax)
        codes[k] = np.clip(np.round(w[k] / step), -qmax, qmax)
        w[k + 1:] -= np.outer(u[k, k + 1:], (w[k] - codes[k] * step) / u[k, k])
    return codes


def test_gptq_codes_match_the_row_by_row_algorithm_across_lazy_blocks():
    x, weight = _inputs()  # 256 rows: two lazy blocks of 128
    codes, scales = gptq_round(weight, x.T @ x, W4)
    want = _gptq_one_row_at_a_time(weight, x.T @ x, 32, 7)
    # the lazy updates add the same terms in another order: a code may flip where a value sits on a
    # rounding boundary, nowhere else
    assert (codes != want).mean() < 0.002
    assert scales.shape == (8, 24) and codes.dtype == np.int8


def test_with_uncorrelated_unit_inputs_gptq_is_nearest_rounding():
    _, weight = _inputs()
    codes, scales = gptq_round(weight, np.eye(256), W4)
    nearest, nearest_scales = quantize_weight(weight, W4)
    np.testing.assert_array_equal(codes, nearest)
    np.testing.assert_array_equal(scales, nearest_scales)


def test_gptq_lowers_the_linear_output_error_on_its_inputs():
    rows, weight = _inputs(rows=1200)
    x, held_out = rows[:600], rows[600:]  # calibrated on one half, measured on the other

    def output_error(codes, scales, rows):
        dequantized = codes.reshape(8, 32, 24) * scales[:, None, :]
        return np.sum((rows @ dequantized.reshape(256, 24) - rows @ weight) ** 2)

    nearest = output_error(*quantize_weight(weight, W4), held_out)
    gptq = output_error(*gptq_round(weight, x.T @ x, W4), held_out)
    assert gptq < 0.7 * nearest


def test_per_channel_gptq_returns_one_scale_per_output_as_nearest_rounding_does():
    x, weight = _inputs()
    int8 = get_scheme("int8").weight
    codes, scales = gptq_round(weight, x.T @ x, int8)
    assert scales.shape == quantize_weight(weight, int8)[1].shape == (24,)
    assert np.abs(codes).max() <= 127


def test_inputs_that_never_move_leave_their_weights_out():
    x, weight = _inputs()
    x[:, 10] = 0.0  # a channel the calibration never saw
    codes, _ = gptq_round(weight, x.T @ x, replace(W4, group_size=32))
    assert not codes[10].any()
