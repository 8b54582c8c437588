"""pwlq4 (#14): PWLQ's piecewise grid, a centre and a tail region of 4-bit codes each, run as two
int4 dot-kernel accumulations. The grid and the Linear are checked against NumPy written out here."""

from dataclasses import replace

import numpy as np
import pytest
import tvm
from tvm import relax

from test_dot_kernels import _host_has, _x86_preset_on
from test_int4 import WideLinear, _constants, _wide_linear_inputs
from tvmcomp.errors import TvmcompError
from tvmcomp.quant.dot_kernels import dot_kernels_for, pack_int4_weight
from tvmcomp.quant.gptq import gptq_round
from tvmcomp.quant.grids import BREAKPOINTS, quantize_weight
from tvmcomp.quant.realize import Realize
from tvmcomp.quant.schemes import get_scheme, register_scheme

PWLQ4 = replace(get_scheme("pwlq4"), weight_rounding="nearest")


def _piecewise(rows, ratio):
    """PWLQ on one group's column: breakpoint p = ratio * max|w|, 7 centre steps of p / 7 up to p,
    then 7 tail steps of (max|w| - p) / 7 from p outwards. Returns centre codes, tail codes, steps."""
    bound = np.abs(rows).max()
    centre_step, tail_step = np.float32(ratio * bound / 7), np.float32((1 - ratio) * bound / 7)
    p = 7 * np.float64(centre_step)
    centre = np.clip(np.round(rows / centre_step), -7, 7)
    tail = np.zeros_like(centre)
    for i, w in enumerate(rows):
        if abs(w) > p:
            centre[i] = 7 * np.sign(w)
            tail[i] = np.clip(np.round((w - np.sign(w) * p) / tail_step), -7, 7) if tail_step > 0 else 0
    return centre, tail, centre_step, tail_step


def _best_piecewise(rows):
    """The breakpoint among BREAKPOINTS with the least squared error of the group's weights."""
    best = None
    for ratio in BREAKPOINTS:
        centre, tail, centre_step, tail_step = _piecewise(rows.astype(np.float64), ratio)
        error = np.square(rows - (centre * np.float64(centre_step) + tail * np.float64(tail_step))).sum()
        if best is None or error < best[0]:
            best = (error, centre, tail, centre_step, tail_step)
    return best[1:]


def _weights(k=64, n=8, seed=3):
    """Heavy-tailed, as trained Linear weights are: a few large values per group."""
    return (np.random.default_rng(seed).standard_t(3, (k, n)) * 0.05).astype(np.float32)


def test_each_group_takes_the_breakpoint_with_the_least_error_and_codes_on_both_sides_of_it():
    weight = _weights()
    codes, scales = quantize_weight(weight, PWLQ4.weight)
    assert codes.shape == (2, 64, 8) and scales.shape == (2, 2, 8) and codes.dtype == np.int8
    tails = 0
    for g, n in np.ndindex(2, 8):
        rows = weight[g * 32:(g + 1) * 32, n]
        centre, tail, centre_step, tail_step = _best_piecewise(rows)
        assert scales[:, g, n] == pytest.approx([centre_step, tail_step], rel=1e-6)
        np.testing.assert_array_equal(codes[0, g * 32:(g + 1) * 32, n], centre)
        np.testing.assert_array_equal(codes[1, g * 32:(g + 1) * 32, n], tail)
        tails += tail_step > 0
    assert tails >= 8  # heavy tails: most groups split (the test would not see the tail plane otherwise)


def test_the_piecewise_grid_is_more_accurate_than_the_uniform_one_on_heavy_tailed_weights():
    weight = _weights(k=256, n=64)
    codes, scales = quantize_weight(weight, PWLQ4.weight)
    piecewise = (codes.reshape(2, 8, 32, 64) * scales[:, :, None, :]).sum(axis=0).reshape(256, 64)
    uniform_codes, uniform_scales = quantize_weight(weight, get_scheme("w4a8").weight)
    uniform = (uniform_codes.reshape(8, 32, 64) * uniform_scales[:, None, :]).reshape(256, 64)
    assert np.square(piecewise - weight).mean() < 0.4 * np.square(uniform - weight).mean()


def test_gptq_on_the_piecewise_grid_with_uncorrelated_unit_inputs_is_nearest_rounding():
    weight = _weights(k=256, n=24)
    codes, scales = gptq_round(weight, np.eye(256), PWLQ4.weight)
    nearest, nearest_scales = quantize_weight(weight, PWLQ4.weight)
    np.testing.assert_array_equal(codes, nearest)
    np.testing.assert_array_equal(scales, nearest_scales)


def _pwlq4_reference(x, weight_nk, bias, scale, zero_point):
    """uint8 codes of x; per group of 32 and output, the centre and tail codes of the best breakpoint;
    two integer dot products per group, each scaled by s_x and its region's step; summed; plus bias."""
    xq = np.clip(np.round(x / np.float32(scale)) + zero_point, 0, 255).astype(np.int64)
    weight = weight_nk.T.astype(np.float32)
    k, n = weight.shape
    y = np.zeros((x.shape[0], n))
    for g, col in np.ndindex(k // 32, n):
        centre, tail, centre_step, tail_step = _best_piecewise(weight[g * 32:(g + 1) * 32, col])
        xs = xq[:, g * 32:(g + 1) * 32] - zero_point
        y[:, col] += (xs @ centre.astype(np.int64)) * (np.float64(np.float32(scale)) * centre_step)
        y[:, col] += (xs @ tail.astype(np.int64)) * (np.float64(np.float32(scale)) * tail_step)
    return y + bias


def _int4_accumulations(func):
    found = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e) if isinstance(e, relax.Call) else None)
    return [c for c in found if isinstance(c.op, tvm.ir.Op) and c.op.name == "relax.call_tir"
            and "int4_group_matmul" in c.args[0].name_hint], [
        c for c in found if isinstance(c.op, tvm.ir.Op) and c.op.name == "relax.matmul"]


def test_a_pwlq4_linear_is_two_int4_accumulations_of_the_same_codes_and_nothing_float():
    params, ranges, _ = _wide_linear_inputs()
    kernels = dot_kernels_for(_x86_preset_on("znver3"))
    realized = Realize(params, ranges, PWLQ4, kernels)(WideLinear)
    accumulations, matmuls = _int4_accumulations(realized["main"])
    assert len(accumulations) == 2 and not matmuls
    assert accumulations[0].args[1][0].same_as(accumulations[1].args[1][0])  # both read the same input codes
    constants = [c.value.numpy() for c in _constants(realized["main"]) if isinstance(c.value, tvm.runtime.Tensor)]
    planes = [c for c in constants if c.size >= 32 * 64 // 2]
    codes, _ = quantize_weight(np.ascontiguousarray(params["w"].T), PWLQ4.weight)
    assert len(planes) == 2
    for plane, plane_codes in zip(planes, codes):  # each plane packed two codes per byte, no other copy
        np.testing.assert_array_equal(plane, pack_int4_weight(plane_codes, kernels.int4.weight_block))


@pytest.mark.parametrize("mcpu, feature", [("znver3", "avx2"), ("znver4", "avx512vnni")])
def test_pwlq4_linear_on_the_int4_dot_kernel_matches_the_integer_reference(mcpu, feature, empty_schedules):
    if not _host_has(feature):
        pytest.skip(f"the host has no {feature} (the w4a8 assembly tests cover the kernel)")
    from tvmcomp.build import compile_with_database
    from tvmcomp.lowering import fuse_for_tuning
    from tvmcomp.tune import open_database

    target = _x86_preset_on(mcpu)
    params, ranges, x = _wide_linear_inputs()
    realized = Realize(params, ranges, PWLQ4, dot_kernels_for(target))(WideLinear)
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized)
    executable = compile_with_database(fuse_for_tuning(bound, target.tvm_target()), target, open_database(target))
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = _pwlq4_reference(x, params["w"], params["b"], 0.021, 120)
    _, scales = quantize_weight(np.ascontiguousarray(params["w"].T), PWLQ4.weight)
    unit = 0.021 * scales[scales > 0].min()  # one unit of the finest accumulation in the output
    assert np.abs(got - want).max() < unit / 100


def test_two_regions_without_quantized_activations_are_refused():
    w4 = get_scheme("w4")
    with pytest.raises(TvmcompError, match="two regions are for 4-bit weights in groups with quantized activations"):
        register_scheme(replace(w4, name="pwlq4-weight-only", weight=replace(w4.weight, regions=2)))
