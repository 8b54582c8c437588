"""Dense-and-sparse int8 Linears (tvmcomp.quant.outliers): the weights past 8x their column's rms
leave the int8 weight and are added in the integer Linear as int16 codes on the column's step."""

from dataclasses import replace

import numpy as np
import pytest
import tvm
import tvm_ffi
from tvm import relax
from tvm.script import relax as R

from tvmcomp.errors import TvmcompError
from tvmcomp.quant.calibrate import SiteRange
from tvmcomp.quant.dot_kernels import DotKernel, DotKernels, pack_weight
from tvmcomp.quant.outliers import outlier_codes, split_outliers
from tvmcomp.quant.realize import Realize
from tvmcomp.quant.schemes import get_scheme, register_scheme

INT8 = get_scheme("int8")
VNNI = DotKernel("avx512vnni", "dot_16x4_vnni", (16, 4), "uint8")
SDOT = DotKernel("dotprod", "dot_4x4_i8i8s32_sdot", (4, 4), "int8")
K, N = 128, 16
OUTLIER = (40, 3)  # (input channel, output column) of the one weight far past its column's rms


@tvm.script.ir_module
class LinearAnnotated:
    @R.function
    def main(x: R.Tensor((2, 128), "float32"), w: R.Tensor((16, 128), "float32"), b: R.Tensor((16,), "float32")):
        R.func_attr({"num_input": 1, "tvmcomp.quant_sites": ["w:T"]})
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            xs = R.call_pure_packed("tvmcomp.quant_site", x, R.prim_value(0),
                                    ty_args=(R.Tensor((2, 128), dtype="float32"),))
            y = R.matmul(xs, wt, out_dtype="float32")
            z = R.add(b, y)
            R.output(z)
        return z


def _params():
    """A [N, K] weight of small values with one 7.7 (as MiniLM's layer-0 FFN down-projection, column 99)."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((N, K)) * 0.05).astype(np.float32)
    w[OUTLIER[1], OUTLIER[0]] = 7.7
    return {"w": w, "b": rng.standard_normal(N).astype(np.float32)}


RANGES = {0: SiteRange(scale=0.02, zero_point=128, lo=-2.56, hi=2.54)}


def test_split_takes_the_weights_past_the_threshold_times_their_columns_rms():
    w_kn = _params()["w"].T
    split = split_outliers(w_kn, 8.0)
    assert split.outliers == 1 and split.sparse[OUTLIER] == np.float32(7.7) and split.dense[OUTLIER] == 0
    np.testing.assert_array_equal(split.dense + split.sparse, w_kn)
    assert split_outliers(w_kn, None).outliers == 0
    # 64 weights cannot hold one past 8x their rms (at most sqrt(64) = 8x): small Linears never split
    assert split_outliers(w_kn[:64], 8.0).outliers == 0


def test_outlier_codes_are_the_outliers_on_their_columns_int8_steps():
    split = split_outliers(_params()["w"].T, 8.0)
    factors = np.full(K, 2.0, np.float32)
    w_scale = np.abs(factors[:, None] * split.dense).max(axis=0) / 127
    channels, codes = outlier_codes(split.sparse, factors, w_scale, 127, 255)
    assert channels == (40,) and codes.dtype == np.int16 and codes.shape == (1, N)
    want = np.zeros(N)
    want[3] = np.round(2.0 * 7.7 / np.float64(w_scale[3]))
    np.testing.assert_array_equal(codes[0], want)
    # a code past int16, or an accumulator that could pass int32, keeps the weight in the int8 weight
    assert outlier_codes(split.sparse * 100, factors, w_scale, 127, 255) is None
    assert outlier_codes(split.sparse, factors, w_scale, 127, 2**31 // (K * 127)) is None


def _compiled(mod, params):
    """``mod`` with ``params`` bound, compiled: x -> its output as a NumPy array."""
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(mod)
    main = relax.VirtualMachine(tvm.compile(bound, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())["main"]
    return lambda x: main(tvm.runtime.tensor(x)).numpy()


def _calls(mod):
    return [b.value for b in mod["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]


def _bound_to(mod, call):
    return next(b.var for b in mod["main"].body.blocks[0].bindings if b.value.same_as(call))


def test_realize_leaves_the_outlier_out_of_the_int8_weight_and_adds_its_code_in_the_matmul_kernel():
    params = _params()
    realized = Realize(params, RANGES, INT8, DotKernels(VNNI))(LinearAnnotated)
    calls = _calls(realized)
    # an int8 Linear's ops, and a take of the input codes on the outlier channels before the matmul
    assert [c.op.name for c in calls] == ["relax.quantize", "relax.take", "relax.call_tir", "relax.subtract",
                                          "relax.astype", "relax.multiply", "relax.add"]
    _, (codes, packed, gathered, outlier_codes_) = calls[2].args
    assert gathered.same_as(_bound_to(realized, calls[1])) and calls[1].args[0].same_as(codes)
    channels = calls[1].args[1]
    dense = params["w"].T.copy()
    dense[OUTLIER] = 0
    s_w = (np.abs(dense).max(axis=0).astype(np.float64) / 127).astype(np.float32)
    dq = np.clip(np.round(dense / s_w), -127, 127).astype(np.int8)
    np.testing.assert_array_equal(packed.value.numpy(), pack_weight(dq, VNNI.weight_block))
    b = np.zeros(N, np.int64)
    b[3] = np.round(np.float64(7.7) * 1.0 / np.float64(s_w[3]))  # f = 1: unbalanced
    # one outlier channel, padded to 8 rows with zero codes (on the same channel)
    np.testing.assert_array_equal(channels.value.numpy(), np.full(8, 40, np.int32))
    np.testing.assert_array_equal(outlier_codes_.value.numpy(), np.concatenate([b[None], np.zeros((7, N))]).astype(np.int16))
    assert 1000 < b[3] < 32767  # the 7.7 on its column's fine step: no int8 code could hold it
    weight = dq.astype(np.int64)
    weight[40] += b
    np.testing.assert_array_equal(calls[3].args[1].value.numpy(), 128 * weight.sum(axis=0))
    # one kernel: the matmul's reduction, then a block that adds the gathered codes times B
    assert 'T.sblock("packed_int8_matmul_outliers")' in realized.script()


def _params_with_outliers(channels: list[int]):
    """_params' weight with one outlier on each of ``channels`` (in columns 0, 1, ...)."""
    params = _params()
    params["w"][OUTLIER[1], OUTLIER[0]] = 0.05
    for column, channel in enumerate(channels):
        params["w"][column, channel] = 6.0 + column
    return params


def _matmul_kernel(params):
    realized = Realize(params, RANGES, INT8, DotKernels(VNNI))(LinearAnnotated)
    return realized[_calls(realized)[2].args[0]]


def test_linears_whose_outliers_pad_to_the_same_count_share_one_kernel():
    one, eight, nine = (_matmul_kernel(_params_with_outliers(c)) for c in ([40], [*range(0, 120, 15)], [*range(9)]))
    # 1 and 8 outlier channels both pad to 8 rows: the same TIR function, so one tuning record serves both
    assert tvm_ffi.structural_equal(one, eight)
    assert not tvm_ffi.structural_equal(eight, nine)  # 9 pad to 16


def test_the_linear_with_outliers_fuses_with_its_dequantize_into_one_kernel():
    from tvmcomp.lowering import fuse_for_tuning

    params = _params_with_outliers([5, 40, 90])
    realized = Realize(params, RANGES, INT8, DotKernels(VNNI))(LinearAnnotated)
    fused = fuse_for_tuning(relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(
        realized), tvm.target.Target({"kind": "llvm"}))
    kernels = [gv.name_hint for gv, f in fused.functions_items() if isinstance(f, tvm.tirx.PrimFunc)]
    # the gather of the outlier channels' codes is a small kernel of its own; the matmul with its outlier
    # rows, the zero-point subtract, the dequantize and the bias add are one function
    assert sorted(kernels) == ["fused_packed_matmul_subtract_cast_multiply_add", "quantize", "take"]


@pytest.mark.parametrize("kernel", [None, VNNI, SDOT], ids=["plain", "vnni-layout", "sdot-layout"])
def test_a_linear_with_an_outlier_matches_the_numpy_integer_reference_exactly(kernel):
    params = _params()
    x = np.random.default_rng(1).standard_normal((2, K)).astype(np.float32)
    got = _compiled(Realize(params, RANGES, INT8, DotKernels(kernel))(LinearAnnotated), params)(x)

    dense = params["w"].T.copy()
    dense[OUTLIER] = 0
    s_w = (np.abs(dense).max(axis=0).astype(np.float64) / 127).astype(np.float32)
    dq = np.clip(np.round(dense / s_w), -127, 127).astype(np.int64)
    b = np.round(np.float64(7.7) / np.float64(s_w[3]))
    xq = np.clip(np.round(x / np.float32(0.02)) + 128, 0, 255).astype(np.int64)
    acc = xq @ dq - 128 * dq.sum(axis=0)
    acc[:, 3] += (xq[:, 40] - 128) * int(b)  # the outlier: sum_k (xq_k - z) B[k, n]
    want = acc.astype(np.float32) * (np.float32(0.02) * s_w) + params["b"]
    np.testing.assert_array_equal(got, want)


def test_three_outliers_padded_to_eight_rows_match_the_numpy_integer_reference_exactly():
    channels = [5, 40, 90]
    params = _params_with_outliers(channels)
    x = np.random.default_rng(3).standard_normal((2, K)).astype(np.float32)
    got = _compiled(Realize(params, RANGES, INT8, DotKernels(VNNI))(LinearAnnotated), params)(x)

    w_kn = params["w"].T
    dense = w_kn.copy()
    for column, channel in enumerate(channels):
        dense[channel, column] = 0
    s_w = (np.abs(dense).max(axis=0).astype(np.float64) / 127).astype(np.float32)
    dq = np.clip(np.round(dense / s_w), -127, 127).astype(np.int64)
    xq = np.clip(np.round(x / np.float32(0.02)) + 128, 0, 255).astype(np.int64)
    acc = xq @ dq - 128 * dq.sum(axis=0)
    for column, channel in enumerate(channels):  # each outlier: (xq_k - z) * round(w / s_w[n])
        acc[:, column] += (xq[:, channel] - 128) * int(np.round(np.float64(w_kn[channel, column]) / np.float64(s_w[column])))
    want = acc.astype(np.float32) * (np.float32(0.02) * s_w) + params["b"]
    np.testing.assert_array_equal(got, want)


def test_the_split_brings_the_linear_closer_to_float_than_int8_with_the_outlier_in_the_weight():
    params = _params()
    x = np.clip(np.random.default_rng(2).standard_normal((32, 2, K)), -2.5, 2.5).astype(np.float32)  # none clip
    exact = x @ params["w"].T + params["b"]

    def rms_error(scheme):
        run = _compiled(Realize(params, RANGES, scheme)(LinearAnnotated), params)
        got = np.stack([run(rows) for rows in x])
        return np.sqrt(np.mean((got - exact)[..., OUTLIER[1]] ** 2))

    # column 3's other weights (about 0.05) round to 0 or 0.06 on the step the 7.7 sets
    assert rms_error(INT8) < 0.3 * rms_error(replace(INT8, weight_outliers=None))


def test_only_schemes_with_integer_inputs_and_int8_weights_per_channel_split_outliers():
    with pytest.raises(TvmcompError, match="outlier weights"):
        register_scheme(replace(get_scheme("w4"), name="w4-outliers", weight_outliers=8.0))
    with pytest.raises(TvmcompError, match="outlier weights"):
        register_scheme(replace(get_scheme("w4a8"), name="w4a8-outliers", weight_outliers=8.0))


def test_calibration_searches_the_step_for_the_weight_without_its_outliers():
    from tvmcomp.quant.annotate import quant_sites
    from tvmcomp.quant.ops.linear import balance_weight

    params = _params()
    sites = {site.index: site for site in quant_sites(LinearAnnotated)}
    searched = balance_weight(params, sites, (0,), INT8.weight_outliers)
    want = params["w"].T.copy()
    want[OUTLIER] = 0
    np.testing.assert_array_equal(searched, want)
