"""Annotate -> calibrate -> realize on small graphs: structure, exact integer numerics, errors."""

import numpy as np
import pytest
import torch
import tvm
from tvm import relax
from tvm.script import relax as R

from conftest import run_imported
from models_for_tests import int8_linear_reference
from tvmcomp.errors import TvmcompError
from tvmcomp.frontend import TensorSpec, import_torch
from tvmcomp.quant.annotate import QUANT_SITE, Annotate, quant_sites
from tvmcomp.quant.ops import is_op
from tvmcomp.quant.calibrate import SiteRange, calibrate
from tvmcomp.quant.dot_kernels import DotKernel, DotKernels, pack_weight
from tvmcomp.quant.grids import quantize_weight
from tvmcomp.quant.realize import Realize
from tvmcomp.quant.schemes import get_scheme

INT8 = get_scheme("int8")


@tvm.script.ir_module
class Linear:
    @R.function
    def main(x: R.Tensor((2, 8), "float32"), w: R.Tensor((16, 8), "float32"), b: R.Tensor((16,), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            y = R.matmul(x, wt, out_dtype="float32")
            z = R.add(b, y)
            R.output(z)
        return z


@tvm.script.ir_module
class LinearAnnotated:
    @R.function
    def main(x: R.Tensor((2, 8), "float32"), w: R.Tensor((16, 8), "float32"), b: R.Tensor((16,), "float32")):
        R.func_attr({"num_input": 1, "tvmcomp.quant_sites": ["w:T"]})
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            xs = R.call_pure_packed("tvmcomp.quant_site", x, R.prim_value(0), ty_args=(R.Tensor((2, 8), dtype="float32"),))
            y = R.matmul(xs, wt, out_dtype="float32")
            z = R.add(b, y)
            R.output(z)
        return z


def test_annotate_marks_the_linear_activation():
    tvm.ir.assert_structural_equal(Annotate(["w", "b"])(Linear), LinearAnnotated)
    assert [(s.name, s.transposed) for s in quant_sites(LinearAnnotated)] == [("w", True)]


def test_annotate_skips_by_weight_name_and_ignores_activation_matmuls():
    assert quant_sites(Annotate(["w", "b"], skip=["w"])(Linear)) == []
    assert quant_sites(Annotate([])(Linear)) == []  # w is not a weight: x @ w.T is left in float


@tvm.script.ir_module
class Attention:
    @R.function
    def main(q: R.Tensor((2, 4, 8), "float32"), k: R.Tensor((2, 8, 16), "float32")):
        R.func_attr({"num_input": 2})
        with R.dataflow():
            s = R.matmul(q, k, out_dtype="float32")
            R.output(s)
        return s


@tvm.script.ir_module
class AttentionAnnotated:
    @R.function
    def main(q: R.Tensor((2, 4, 8), "float32"), k: R.Tensor((2, 8, 16), "float32")):
        R.func_attr({"num_input": 2, "tvmcomp.quant_sites": ["bmm_0:lhs", "bmm_0:rhs"]})
        with R.dataflow():
            qs = R.call_pure_packed("tvmcomp.quant_site", q, R.prim_value(0), ty_args=(R.Tensor((2, 4, 8), dtype="float32"),))
            ks = R.call_pure_packed("tvmcomp.quant_site", k, R.prim_value(1), ty_args=(R.Tensor((2, 8, 16), dtype="float32"),))
            s = R.matmul(qs, ks, out_dtype="float32")
            R.output(s)
        return s


def test_annotate_marks_both_operands_of_a_batched_activation_matmul():
    tvm.ir.assert_structural_equal(Annotate([])(Attention), AttentionAnnotated)
    assert quant_sites(Annotate([], skip=["bmm_*"])(Attention)) == []


ATTENTION_RANGES = {0: SiteRange(scale=0.017, zero_point=117, lo=-2.0, hi=2.3),
                    1: SiteRange(scale=0.013, zero_point=140, lo=-1.8, hi=1.5)}


def test_realize_batched_matmul_subtracts_zero_points_in_int16():
    realized = Realize({}, ATTENTION_RANGES, INT8)(AttentionAnnotated)
    calls = [b.value for b in realized["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    assert [c.op.name for c in calls] == ["relax.quantize", "relax.astype", "relax.subtract"] * 2 + [
        "relax.matmul", "relax.astype", "relax.multiply"]
    matmul = calls[6]
    assert [str(a.ty.dtype) for a in matmul.args] == ["int16", "int16"] and str(matmul.attrs.out_dtype) == "int32"
    np.testing.assert_array_equal(calls[2].args[1].value.numpy(), np.full(8, 117, np.int16))
    np.testing.assert_array_equal(calls[5].args[1].value.numpy(), np.full(16, 140, np.int16))
    np.testing.assert_array_equal(calls[8].args[1].value.numpy(), np.full(16, np.float32(0.017) * np.float32(0.013)))


AVX2_I16 = DotKernel("avx2", "dot_8x2_i16_avx2", (8, 2), "int16")


def test_realize_batched_matmul_packs_the_rhs_for_an_int16_dot_kernel():
    realized = Realize({}, ATTENTION_RANGES, INT8, DotKernels(batched=AVX2_I16))(AttentionAnnotated)
    calls = [b.value for b in realized["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    assert [c.op.name for c in calls] == ["relax.quantize", "relax.astype", "relax.subtract"] * 2 + [
        "relax.reshape", "relax.permute_dims", "relax.call_tir", "relax.astype", "relax.multiply"]
    packed = calls[7]
    assert [int(d) for d in packed.ty.shape.values] == [2, 2, 4, 8, 2] and str(packed.ty.dtype) == "int16"
    assert [int(a) for a in packed.attrs.axes] == [0, 3, 1, 4, 2]  # [B, K/2, 2, N/8, 8] -> [B, N/8, K/2, 8, 2]
    matmul = realized[calls[8].args[0]]
    assert "packed_int16_matmul" in matmul.script()


def attention_reference(q, k):
    """The realized attention matmul in NumPy integers: centered codes multiplied in int32."""
    act = INT8.activation
    qc = act.quantize(q, np.float32(0.017), 117).astype(np.int32) - 117
    kc = act.quantize(k, np.float32(0.013), 140).astype(np.int32) - 140
    return (qc @ kc).astype(np.float32) * (np.float32(0.017) * np.float32(0.013))


def attention_inputs():
    rng = np.random.default_rng(4)
    q = rng.standard_normal((2, 4, 8)).astype(np.float32) * 1.2  # some values clip
    k = rng.standard_normal((2, 8, 16)).astype(np.float32) * 1.2
    q[0, 0], k[0, :, 0] = 3.0, -3.0  # codes at both ends: the largest products
    return q, k


@pytest.mark.parametrize("kernels", [DotKernels(), DotKernels(batched=AVX2_I16)], ids=["plain", "packed"])
def test_realized_batched_matmul_matches_the_numpy_integer_reference_exactly(kernels):
    q, k = attention_inputs()
    realized = Realize({}, ATTENTION_RANGES, INT8, kernels)(AttentionAnnotated)
    executable = tvm.compile(realized, target=tvm.target.Target({"kind": "llvm"}))
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(q), tvm.runtime.tensor(k)).numpy()
    np.testing.assert_array_equal(got, attention_reference(q, k))
    # and it is the float product of the inputs clipped to the ranges their codes cover, within rounding error
    clipped = np.clip(q, -117 * 0.017, 138 * 0.017) @ np.clip(k, -140 * 0.013, 115 * 0.013)
    assert np.abs(got - clipped).max() < 8 * (0.017 + 0.013)


def test_attention_shapes_off_the_int16_block_are_zero_padded_onto_the_packed_kernel():
    """ViT's 257 tokens fit no (8, 2) block, as K = 9 and N = 13 here: both operands are padded with
    zeros along K (which add nothing), the right one along N and the left one's 5 rows to whole tiles
    of 4, and the extra rows and columns cut off."""
    rng = np.random.default_rng(5)
    q, k = rng.standard_normal((2, 5, 9)).astype(np.float32), rng.standard_normal((2, 9, 13)).astype(np.float32)
    bb = relax.BlockBuilder()
    operands = [relax.Var("q", relax.TensorType((2, 5, 9), "float32")), relax.Var("k", relax.TensorType((2, 9, 13), "float32"))]
    with bb.function("main", operands, attrs={"num_input": 2}):
        with bb.dataflow():
            scores = bb.emit_output(relax.op.matmul(*operands, out_dtype="float32"))
        bb.emit_func_output(scores)
    realized = Realize({}, ATTENTION_RANGES, INT8, DotKernels(batched=AVX2_I16))(Annotate([])(bb.get()))
    ops = [b.value.op.name for b in realized["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    assert ops.count("relax.nn.pad") == 2 and ops.count("relax.strided_slice") == 2 and "relax.matmul" not in ops
    assert "packed_int16_matmul" in realized.script()
    executable = tvm.compile(realized, target=tvm.target.Target({"kind": "llvm"}))
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(q), tvm.runtime.tensor(k)).numpy()
    np.testing.assert_array_equal(got, attention_reference(q, k))


@tvm.script.ir_module
class Conv:
    @R.function
    def main(x: R.Tensor((1, 3, 6, 6), "float32"), w: R.Tensor((4, 3, 3, 3), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            y = R.nn.conv2d(x, w, strides=[1, 1], padding=[1, 1, 1, 1], out_dtype="float32")
            R.output(y)
        return y


@tvm.script.ir_module
class ConvAnnotated:
    @R.function
    def main(x: R.Tensor((1, 3, 6, 6), "float32"), w: R.Tensor((4, 3, 3, 3), "float32")):
        R.func_attr({"num_input": 1, "tvmcomp.quant_sites": ["w:conv"]})
        with R.dataflow():
            xs = R.call_pure_packed("tvmcomp.quant_site", x, R.prim_value(0), ty_args=(R.Tensor((1, 3, 6, 6), dtype="float32"),))
            y = R.nn.conv2d(xs, w, strides=[1, 1], padding=[1, 1, 1, 1], out_dtype="float32")
            R.output(y)
        return y


def test_annotate_marks_a_conv2d_with_a_weight_parameter():
    tvm.ir.assert_structural_equal(Annotate(["w"])(Conv), ConvAnnotated)
    assert quant_sites(Annotate([])(Conv)) == []  # a conv of two activations stays float


def _conv_reference(x, weight, scale, zero_point):
    """NumPy integer conv2d (stride 1, padding 1) of the centered codes, then the same rescale."""
    xc = INT8.activation.quantize(x, np.float32(scale), zero_point).astype(np.int64) - zero_point
    wq, w_scale = quantize_weight(weight, INT8.weight, channel_axis=0)
    padded = np.pad(xc, ((0, 0), (0, 0), (1, 1), (1, 1)))  # centered codes pad with real zeros
    out_h, out_w = x.shape[2], x.shape[3]
    acc = np.zeros((1, weight.shape[0], out_h, out_w), np.int64)
    for i, j in np.ndindex(out_h, out_w):
        acc[0, :, i, j] = np.tensordot(wq.astype(np.int64), padded[0, :, i:i + 3, j:j + 3], axes=3)
    return acc.astype(np.float32) * (np.float32(scale) * w_scale).astype(np.float32).reshape(-1, 1, 1)


def test_realized_conv2d_matches_the_numpy_integer_reference_exactly():
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32) + 0.5
    realized = Realize({"w": weight}, {0: SiteRange(0.014, 110, -1.5, 2.0)}, INT8)(ConvAnnotated)
    conv = [b.value for b in realized["main"].body.blocks[0].bindings if is_op(b.value, "relax.nn.conv2d")][0]
    assert [str(a.ty.dtype) for a in conv.args] == ["int16", "int16"] and str(conv.attrs.out_dtype) == "int32"
    bound = relax.transform.BindParams("main", {"w": tvm.runtime.tensor(weight)})(realized)
    executable = tvm.compile(bound, target=tvm.target.Target({"kind": "llvm"}))
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    np.testing.assert_array_equal(got, _conv_reference(x, weight, 0.014, 110))
    want_float = torch.nn.functional.conv2d(torch.from_numpy(np.clip(x, -1.5, 2.0)), torch.from_numpy(weight), padding=1)
    assert np.abs(got - want_float.numpy()).max() < 0.2  # and within rounding error of the float conv


def test_a_patch_embedding_runs_as_a_linear_over_the_patches_on_the_int8_dot_kernel():
    """stride = kernel, no padding (ViT's patch embedding): im2col by reshape and permute, then the
    packed int8 matmul of a Linear, checked against the integer formula written out here."""
    rng = np.random.default_rng(6)
    weight = rng.standard_normal((16, 3, 4, 4)).astype(np.float32)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    bb = relax.BlockBuilder()
    data, w = relax.Var("x", relax.TensorType(x.shape, "float32")), relax.Var("w", relax.TensorType(weight.shape, "float32"))
    with bb.function("main", [data, w], attrs={"num_input": 1}):
        with bb.dataflow():
            y = bb.emit_output(relax.op.nn.conv2d(data, w, strides=[4, 4], out_dtype="float32"))
        bb.emit_func_output(y)
    realized = Realize({"w": weight}, {0: SiteRange(0.014, 110, -1.5, 2.0)}, INT8,
                       DotKernels(linear=VNNI))(Annotate(["w"])(bb.get()))
    assert not any(is_op(b.value, "relax.nn.conv2d") for b in realized["main"].body.blocks[0].bindings)
    assert "packed_int8_matmul" in realized.script()
    bound = relax.transform.BindParams("main", {"w": tvm.runtime.tensor(weight)})(realized)
    got = relax.VirtualMachine(tvm.compile(bound, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())["main"](
        tvm.runtime.tensor(x)).numpy()

    xq = np.clip(np.round(x / np.float32(0.014)) + 110, 0, 255).astype(np.int64)  # uint8 codes
    w_scale = (np.abs(weight).reshape(16, -1).max(axis=1) / 127).astype(np.float32)  # per output channel
    wq = np.clip(np.round(weight / w_scale[:, None, None, None]), -127, 127).astype(np.int64)
    acc = np.zeros((1, 16, 2, 2), np.int64)
    for i, j in np.ndindex(2, 2):  # each 4 x 4 patch, all channels
        acc[0, :, i, j] = np.tensordot(wq, xq[0, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4] - 110, axes=3)
    np.testing.assert_array_equal(got, acc.astype(np.float32) * (np.float32(0.014) * w_scale).reshape(-1, 1, 1))


def _linear_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((16, 8)).astype(np.float32), "b": rng.standard_normal(16).astype(np.float32)}


def test_realize_emits_u8_s8_s32_integer_matmul():
    params, ranges = _linear_params(), {0: SiteRange(scale=0.02, zero_point=131, lo=-2.6, hi=2.5)}
    realized = Realize(params, ranges, INT8)(LinearAnnotated)
    text = realized["main"].script()
    assert "call_pure_packed" not in text and "tvmcomp.quant_sites" not in text
    calls = [b.value for b in realized["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    ops = [c.op.name for c in calls]
    assert ops == ["relax.quantize", "relax.matmul", "relax.subtract", "relax.astype", "relax.multiply", "relax.add"]
    matmul = calls[1]
    assert str(matmul.args[0].ty.dtype) == "uint8" and str(matmul.args[1].value.dtype) == "int8"
    assert str(matmul.attrs.out_dtype) == "int32"
    wq, w_scale = quantize_weight(params["w"].T, INT8.weight)
    np.testing.assert_array_equal(matmul.args[1].value.numpy(), wq)
    np.testing.assert_array_equal(calls[2].args[1].value.numpy(), 131 * wq.astype(np.int32).sum(axis=0))
    np.testing.assert_array_equal(calls[4].args[1].value.numpy(), (np.float32(0.02) * w_scale).astype(np.float32))


VNNI = DotKernel("avx512vnni", "dot_16x4_vnni", (16, 4), "uint8")
SDOT = DotKernel("dotprod", "dot_4x4_i8i8s32_sdot", (4, 4), "int8")


def test_realize_packs_weights_for_the_targets_dot_kernel():
    params, ranges = _linear_params(), {0: SiteRange(scale=0.02, zero_point=131, lo=-2.6, hi=2.5)}
    realized = Realize(params, ranges, INT8, DotKernels(SDOT))(LinearAnnotated)
    calls = [b.value for b in realized["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    assert [c.op.name for c in calls] == ["relax.quantize", "relax.call_tir", "relax.subtract", "relax.astype",
                                          "relax.multiply", "relax.add"]
    quantize, matmul = calls[0], calls[1]
    # sdot multiplies s8 x s8: the uint8 codes and zero point move down by 128 together
    assert str(quantize.attrs.out_dtype) == "int8"
    np.testing.assert_array_equal(quantize.args[2].value.numpy(), np.full(8, 131 - 128))
    wq, _ = quantize_weight(params["w"].T, INT8.weight)
    packed = matmul.args[1].fields[1].value.numpy()
    assert packed.shape == (4, 2, 4, 4) and packed.dtype == np.int8
    np.testing.assert_array_equal(packed, pack_weight(wq, (4, 4)))
    np.testing.assert_array_equal(calls[2].args[1].value.numpy(), 3 * wq.astype(np.int32).sum(axis=0))


@pytest.mark.parametrize("kernel", [None, VNNI, SDOT], ids=["plain", "vnni-layout", "sdot-layout"])
def test_realized_linear_matches_the_numpy_integer_reference_exactly(kernel):
    params, ranges = _linear_params(1), {0: SiteRange(scale=0.021, zero_point=120, lo=-2.5, hi=2.8)}
    x = np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32) * 1.5  # some values clip
    realized = Realize(params, ranges, INT8, DotKernels(kernel))(LinearAnnotated)
    target = tvm.target.Target({"kind": "llvm"})
    executable = tvm.compile(relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized), target=target)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()

    want = int8_linear_reference(x, params["w"], params["b"], 0.021, 120, INT8.activation, INT8.weight)
    np.testing.assert_array_equal(got, want)


@tvm.script.ir_module
class TwoLinearsOnOneInputAnnotated:  # as Q and K: each Linear reshapes the one input for itself
    @R.function
    def main(x: R.Tensor((1, 2, 8), "float32"), w: R.Tensor((16, 8), "float32"), v: R.Tensor((16, 8), "float32")):
        R.func_attr({"num_input": 1, "tvmcomp.quant_sites": ["w:T", "v:T"]})
        with R.dataflow():
            x_w = R.reshape(x, R.shape([2, 8]))
            xs_w = R.call_pure_packed("tvmcomp.quant_site", x_w, R.prim_value(0), ty_args=(R.Tensor((2, 8), dtype="float32"),))
            y_w = R.matmul(xs_w, R.permute_dims(w, axes=[1, 0]), out_dtype="float32")
            x_v = R.reshape(x, R.shape([2, 8]))
            xs_v = R.call_pure_packed("tvmcomp.quant_site", x_v, R.prim_value(1), ty_args=(R.Tensor((2, 8), dtype="float32"),))
            y_v = R.matmul(xs_v, R.permute_dims(v, axes=[1, 0]), out_dtype="float32")
            z = R.add(y_w, y_v)
            R.output(z)
        return z


@pytest.mark.parametrize("v_zero_point", [120, 121], ids=["same-step", "other-step"])
def test_linears_reading_one_tensor_on_one_step_share_its_codes(v_zero_point):
    rng = np.random.default_rng(3)
    params = {"w": rng.standard_normal((16, 8)).astype(np.float32), "v": rng.standard_normal((16, 8)).astype(np.float32)}
    ranges = {0: SiteRange(scale=0.021, zero_point=120, lo=-2.5, hi=2.8),
              1: SiteRange(scale=0.021, zero_point=v_zero_point, lo=-2.5, hi=2.8)}
    realized = Realize(params, ranges, INT8)(TwoLinearsOnOneInputAnnotated)
    assert _op_names(realized).count("relax.quantize") == (1 if v_zero_point == 120 else 2)
    x = rng.standard_normal((1, 2, 8)).astype(np.float32)
    target = tvm.target.Target({"kind": "llvm"})
    executable = tvm.compile(relax.transform.BindParams("main", {k: tvm.runtime.tensor(a) for k, a in params.items()})(realized), target=target)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    zero = np.zeros(16, np.float32)
    want = (int8_linear_reference(x[0], params["w"], zero, 0.021, 120, INT8.activation, INT8.weight) +
            int8_linear_reference(x[0], params["v"], zero, 0.021, v_zero_point, INT8.activation, INT8.weight))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_linears_reading_one_tensor_are_balanced_with_one_set_of_factors():
    """SmoothQuant's factors for Q, K and V: from their weights side by side, so one quantize serves them."""
    rng = np.random.default_rng(4)
    params = {"w": rng.standard_normal((16, 8)).astype(np.float32),
              "v": (rng.standard_normal((16, 8)) * np.geomspace(0.05, 4, 8)).astype(np.float32)}
    lo, hi = -np.geomspace(0.2, 9, 8), np.geomspace(0.3, 8, 8)[::-1]
    site = SiteRange(scale=0.07, zero_point=128, lo=float(lo.min()), hi=float(hi.max()), channel_lo=lo.tolist(),
                     channel_hi=hi.tolist(), channel_rms=(hi / 3).tolist())
    realized = Realize(params, {0: site, 1: site}, INT8, balance=0.5)(TwoLinearsOnOneInputAnnotated)
    quantizes = [b.value for b in realized["main"].body.blocks[0].bindings
                 if isinstance(b.value, relax.Call) and b.value.op == tvm.ir.Op.get("relax.quantize")]
    assert len(quantizes) == 1
    # f_j = max|x_j|^0.5 / max_n |W_nj|^0.5 over both weights' rows; the steps are one step times f
    x_max = np.maximum(-lo, hi)
    x_max = np.maximum(x_max, np.median(x_max))  # no channel below the median channel's range
    w_max = np.maximum(np.abs(params["w"]).max(axis=0), np.abs(params["v"]).max(axis=0))
    steps_per_factor = quantizes[0].args[1].value.numpy() / (np.sqrt(x_max) / np.sqrt(w_max))
    np.testing.assert_allclose(steps_per_factor, steps_per_factor[0], rtol=1e-5)
    x = (rng.uniform(lo, hi, (1, 2, 8))).astype(np.float32)
    target = tvm.target.Target({"kind": "llvm"})
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(a) for k, a in params.items()})(realized)
    got = relax.VirtualMachine(tvm.compile(bound, target=target), tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    want = x[0] @ params["w"].T + x[0] @ params["v"].T
    assert np.abs(got - want).max() < 0.02 * np.abs(want).max()


class TwoLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(32, 64), torch.nn.Linear(64, 16)

    def forward(self, x):
        return self.b(torch.nn.functional.gelu(self.a(x)))


def _samples(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(n)]


def test_calibrated_int8_model_stays_close_to_float():
    torch.manual_seed(0)
    model, calibration, held_out = TwoLayer().eval(), _samples(16), _samples(4, seed=99)
    imported = import_torch(model, calibration[0])
    annotated = Annotate(imported.params)(imported.mod)
    ranges = calibrate(annotated, imported.params, imported.inputs, calibration, INT8)
    assert sorted(ranges) == [0, 1] and ranges[1].lo >= -0.2  # GELU output: nearly non-negative
    assert tvm.get_global_func(QUANT_SITE, allow_missing=True) is None  # nothing registered outside the graph
    imported.mod = Realize(imported.params, ranges, INT8)(annotated)
    for sample in held_out:
        (got,) = run_imported(imported, sample)
        want = model(torch.from_numpy(sample["x"])).detach().numpy()
        assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()
        cosine = (got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)
        assert cosine > 0.999


@tvm.script.ir_module
class LinearObserved:
    @R.function
    def main(x: R.Tensor((2, 8), "float32"), w: R.Tensor((16, 8), "float32"), b: R.Tensor((16,), "float32")
             ) -> R.Tuple(R.Tensor((2, 16), "float32"), R.Tuple(R.Tensor((2, 8), "float32"))):
        R.func_attr({"num_input": 1, "tvmcomp.quant_sites": ["w:T"]})
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            y = R.matmul(x, wt, out_dtype="float32")
            z = R.add(b, y)
            R.output(z)
        return (z, (x,))


def test_calibration_observes_each_site_as_an_output_of_the_graph():
    from tvmcomp.quant.calibrate import SitesAsOutputs

    tvm.ir.assert_structural_equal(SitesAsOutputs()(LinearAnnotated), LinearObserved)


def test_calibration_errors():
    specs = [TensorSpec("x", (2, 8), "float32")]
    params = _linear_params()
    with pytest.raises(TvmcompError, match=r"input 'x' is float64\[2, 8\], the model takes float32\[2, 8\]"):
        calibrate(LinearAnnotated, params, specs, [{"x": np.zeros((2, 8))}], INT8)
    with pytest.raises(TvmcompError, match=r"input 'x' is float32\[3, 8\]"):
        calibrate(LinearAnnotated, params, specs, [{"x": np.zeros((3, 8), np.float32)}], INT8)
    with pytest.raises(TvmcompError, match="has no input 'x'"):
        calibrate(LinearAnnotated, params, specs, [{"y": np.zeros((2, 8), np.float32)}], INT8)
    with pytest.raises(TvmcompError, match="nothing to quantize"):
        calibrate(Linear, params, specs, [{"x": np.zeros((2, 8), np.float32)}], INT8)


def test_calibrated_ranges_are_the_float_models_activations():
    """Each Linear site's min-max range equals the min and max of that layer's input in PyTorch on
    the same sentences. (The observer once returned its own argument, which the memory planner then
    reused while it was still read: every activation after the first layers was corrupted.)"""
    import torch

    from tvmcomp.quant.annotate import Annotate, quant_sites
    from tvmcomp.quant.calibrate import calibrate
    from tvmcomp.source import load_source

    source = load_source("minilm")  # 128 tokens: at 16 the planner happened not to reuse the buffer
    annotated = Annotate(source.imported.params)(source.imported.mod)
    samples = source.calibration_samples(2)
    ranges = calibrate(annotated, source.imported.params, source.imported.inputs, samples, INT8, "minmax")

    seen = {}
    modules = dict(source.torch_module.named_modules())
    hooks = [module.register_forward_hook(lambda m, args, _out, name=name: seen.setdefault(name, []).append(
        args[0].detach().numpy())) for name, module in modules.items() if isinstance(module, torch.nn.Linear)]
    with torch.no_grad():
        for sample in samples:
            source.torch_module(**{k: torch.from_numpy(v) for k, v in sample.items()})
    for hook in hooks:
        hook.remove()
    linear_sites = [s for s in quant_sites(annotated) if s.name.startswith("p_")]
    assert len(linear_sites) == 36  # 6 layers x (query, key, value, output, intermediate, output)
    for site in linear_sites:
        name = next(n for n in seen if "p_" + n.replace(".", "_") + "_weight" == site.name)
        inputs = np.concatenate([a.ravel() for a in seen[name]])
        got = ranges[site.index]
        assert got.lo == pytest.approx(inputs.min(), rel=1e-4, abs=1e-5), site.name
        assert got.hi == pytest.approx(inputs.max(), rel=1e-4, abs=1e-5), site.name


@pytest.mark.parametrize("kernel", [None, VNNI], ids=["plain", "vnni-layout"])
def test_a_balanced_linear_matches_the_numpy_integer_reference_exactly(kernel):
    """SmoothQuant balancing: input channel 3 is an outlier (range 40x the others); the steps become a
    vector a * f over input channels, each with its zero point, and the weight rows are multiplied by
    f before quantizing."""
    params = _linear_params(3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    x[:, 3] *= 40
    channel_lo, channel_hi = np.minimum(x.min(axis=0), 0) * 1.1, np.maximum(x.max(axis=0), 0) * 1.1
    ranges = {0: SiteRange(scale=0.5, zero_point=100, lo=float(channel_lo.min()), hi=float(channel_hi.max()),
                           channel_lo=channel_lo.tolist(), channel_hi=channel_hi.tolist())}
    realized = Realize(params, ranges, INT8, DotKernels(kernel), balance=0.5)(LinearAnnotated)
    # folded into the quantize's step vector and the weight: not one op more than the unbalanced Linear
    unbalanced = Realize(params, ranges, INT8, DotKernels(kernel))(LinearAnnotated)
    assert _op_names(realized) == _op_names(unbalanced)
    target = tvm.target.Target({"kind": "llvm"})
    executable = tvm.compile(relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized), target=target)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()

    w_kn = params["w"].T.astype(np.float64)  # [K=8, N=16]
    x_max = np.maximum(-channel_lo, channel_hi).astype(np.float64)
    x_max = np.maximum(x_max, np.median(x_max))  # no channel below the median channel's range
    f = x_max ** 0.5 / np.abs(w_kn).max(axis=1) ** 0.5
    f = f.astype(np.float32)
    # one common step for the widest balanced channel, a zero point per channel
    lo_f, hi_f = np.minimum(channel_lo, 0) / f.astype(np.float64), np.maximum(channel_hi, 0) / f.astype(np.float64)
    a = np.float32((np.float32((hi_f - lo_f) / 255)).max())
    z = np.clip(np.round(-lo_f / np.float64(a)), 0, 255).astype(np.int64)
    xq = np.clip(np.round(x / (a * f)) + z, 0, 255).astype(np.int64)
    w_balanced = f[:, None] * params["w"].T
    s_w = (np.abs(w_balanced).max(axis=0).astype(np.float64) / 127).astype(np.float32)
    wq = np.clip(np.round(w_balanced / s_w), -127, 127).astype(np.int64)
    acc = xq @ wq - z @ wq
    want = acc.astype(np.float32) * (a * s_w) + params["b"]
    np.testing.assert_array_equal(got, want)
    # and it is closer to the float Linear than the unbalanced per-tensor step
    exact = x @ params["w"].T + params["b"]
    plain = int8_linear_reference(x, params["w"], params["b"], *_per_tensor(channel_lo, channel_hi), INT8.activation,
                                  INT8.weight)
    assert np.abs(got - exact).max() < 0.5 * np.abs(plain - exact).max()


def _op_names(mod) -> list[str]:
    return [b.value.op.name if isinstance(b.value.op, tvm.ir.Op) else str(b.value.args[0].name_hint)
            for block in mod["main"].body.blocks for b in block.bindings if isinstance(b.value, relax.Call)]


def _per_tensor(channel_lo, channel_hi):
    scale, zero = INT8.activation.scale_zero_point(channel_lo.min(), channel_hi.max())
    return float(scale), int(zero)


def test_auto_balancing_balances_an_outlier_channel_and_leaves_even_channels_alone():
    from tvmcomp.quant.balance import choose_factors, noise_estimate

    rng = np.random.default_rng(5)
    weight = rng.standard_normal((8, 16)).astype(np.float32)
    even = SiteRange(scale=0.02, zero_point=128, lo=-2.0, hi=2.0, channel_lo=[-2.0] * 8, channel_hi=[2.0] * 8,
                     channel_rms=[0.7] * 8)
    outlier = SiteRange(scale=0.3, zero_point=128, lo=-40.0, hi=40.0, channel_lo=[-2.0] * 3 + [-40.0] + [-2.0] * 4,
                        channel_hi=[2.0] * 3 + [40.0] + [2.0] * 4, channel_rms=[0.7] * 3 + [14.0] + [0.7] * 4)
    activation, levels = INT8.activation, INT8.weight.qmax
    np.testing.assert_array_equal(choose_factors(even, weight, activation, levels, None), np.ones(8, np.float32))
    factors = choose_factors(outlier, weight, activation, levels, None)
    assert factors[3] > 2 * np.delete(factors, 3).max()  # the outlier channel is scaled down the most

    def noise(f):
        return noise_estimate(outlier.channel_lo, outlier.channel_hi, outlier.channel_rms, weight, activation, levels, f)

    assert noise(factors) < 0.5 * noise(np.ones(8, np.float32))


def _outlier_linear():
    """A Linear's weight [8, 16], its input channels' max |x| (channel 3 an outlier) and its site."""
    weight = np.random.default_rng(6).standard_normal((8, 16)).astype(np.float32)
    absmax = np.array([2.0, 1.5, 3.0, 40.0, 2.0, 0.5, 2.5, 6.0])
    return weight, absmax, SiteRange(scale=0.25, zero_point=0, lo=-40.0, hi=40.0, channel_lo=list(-absmax),
                                     channel_hi=list(absmax), channel_rms=list(absmax / 3))


def test_a_channel_calibration_saw_quiet_keeps_the_median_channels_step():
    """A GELU neuron no calibration sentence fired, which a short input fires: balanced on its own
    range (0.01), its step was 1/14 of the others' and clipped the first value of theirs it saw."""
    from tvmcomp.quant.balance import linear_input_steps

    weight = np.ones((8, 16), np.float32)
    absmax = np.array([2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 40.0, 0.01])
    site = SiteRange(scale=0.5, zero_point=0, lo=-40.0, hi=40.0, channel_lo=list(-absmax), channel_hi=list(absmax))
    _, steps, zeros, _ = linear_input_steps(site, weight, 127, INT8.activation, 0.5, calibrated=True)
    assert steps[7] == steps[0] and steps[6] > 4 * steps[0]  # the outlier still balanced
    assert np.round(1.0 / steps[7]) + zeros[7] <= 255  # 1.0 in the quiet channel: not clipped


def test_power_of_two_activations_balance_by_power_of_two_factors_and_keep_power_of_two_steps():
    """pot8 (FQ-ViT's factors, H-ViT's use): f_j = 2^round(log2(max|x_j|^a / max|W_j|^(1-a))), and the
    steps a * f_j of the balanced input stay powers of two."""
    from tvmcomp.quant.balance import balanced_steps, choose_factors

    weight, absmax, outlier = _outlier_linear()
    activation = get_scheme("pot8").activation
    factors = choose_factors(outlier, weight, activation, 127, 0.5)
    smooth = np.sqrt(np.maximum(absmax, np.median(absmax))) / np.sqrt(np.abs(weight.astype(np.float64)).max(axis=1))
    np.testing.assert_array_equal(factors, np.float32(2.0 ** np.round(np.log2(smooth))))
    step, zeros = balanced_steps(outlier.channel_lo, outlier.channel_hi, factors, activation)
    widest = (2 * absmax / factors).max() / 255  # uint8 codes: the widest balanced span over 255 steps
    assert step == 2.0 ** np.ceil(np.log2(widest))
    np.testing.assert_array_equal(zeros, np.round(absmax / factors / step))  # each channel's -lo on the codes
    assert np.all(np.log2(step * factors) == np.round(np.log2(step * factors)))


def test_pot8_inputs_quantized_from_float_take_int8s_steps_and_a_power_of_two_common_step():
    """A LayerNorm's or GELU's output (float): steps a * f_j as int8's (real factors, real step); the
    accumulator's step 2^e = the power of two above a, the factors f_j a / 2^e taken by the weight rows.
    Codes that arrive from another quantized op (integer_input) keep powers of two throughout."""
    from tvmcomp.quant.balance import linear_input_steps

    weight, absmax, site = _outlier_linear()
    activation = get_scheme("pot8").activation
    common, steps, zeros, factors = linear_input_steps(site, weight, 127, activation, 0.5, calibrated=True)
    f = np.sqrt(np.maximum(absmax, np.median(absmax))) / np.sqrt(np.abs(weight.astype(np.float64)).max(axis=1))
    a = (2 * absmax / f).max() / 255  # uint8 codes: the widest balanced span over 255 steps
    np.testing.assert_allclose(steps, a * f, rtol=1e-6)
    assert common == 2.0 ** np.ceil(np.log2(a))
    np.testing.assert_allclose(factors, f * a / common, rtol=1e-6)
    np.testing.assert_array_equal(zeros, np.round(absmax / f / a))  # each channel's -lo on the codes
    common, steps, _, factors = linear_input_steps(site, weight, 127, activation, 0.5, calibrated=True,
                                                   integer_input=True)
    assert np.all(np.log2(factors) == np.round(np.log2(factors))) and np.log2(common) == np.round(np.log2(common))


@tvm.script.ir_module
class AttentionThenLinears:
    @R.function
    def main(p: R.Tensor((2, 4, 4), "float32"), v: R.Tensor((2, 4, 8), "float32"), w: R.Tensor((16, 16), "float32"),
             u: R.Tensor((16, 16), "float32")):
        R.func_attr({"num_input": 2})
        with R.dataflow():
            c = R.matmul(p, v, out_dtype="float32")  # P @ V, heads first
            t = R.permute_dims(c, axes=[1, 0, 2])
            r = R.reshape(t, R.shape([4, 16]))
            o = R.matmul(r, R.permute_dims(w, axes=[1, 0]), out_dtype="float32")  # the output projection
            g = R.nn.gelu(o)
            y = R.matmul(g, R.permute_dims(u, axes=[1, 0]), out_dtype="float32")  # fed by a float op
            R.output(y)
        return y


def test_the_linear_inputs_that_arrive_as_integer_codes_are_those_a_quantized_op_feeds():
    from tvmcomp.quant.annotate import integer_inputs

    annotated = Annotate(["w", "u"])(AttentionThenLinears)
    index = {site.name: site.index for site in quant_sites(annotated)}
    assert integer_inputs(annotated) == {index["w"]}  # through the permute and the reshape
    assert integer_inputs(annotated, integer_only=True) == {index["w"], index["u"]}  # the GELU is integer too
    assert integer_inputs(Annotate(["w", "u"], skip=["bmm_*"])(AttentionThenLinears)) == set()  # P @ V float


def test_balance_off_turns_off_a_schemes_default_balancing():
    from tvmcomp.quant.pipeline import QuantOptions

    for name in ("int8", "pot8", "w4a8", "pwlq4"):  # balanced by default, the choice searched on held-out rows
        scheme = get_scheme(name)
        assert QuantOptions(name).balancing(scheme) == "auto" and QuantOptions(name).channel_ranges(scheme)
        assert scheme.observer == "search"
        off = QuantOptions(name, balance="off")
        assert off.balancing(scheme) is None and not off.channel_ranges(scheme)
    assert QuantOptions("int8", balance=0.5).balancing(INT8) == 0.5
    assert QuantOptions("w4").balancing(get_scheme("w4")) is None  # float activations: nothing to balance


def test_balance_needs_a_quantized_build_and_an_alpha_between_0_and_1(tmp_path, capsys):
    from test_cli import assert_user_error

    assert_user_error(capsys, ["build", "--balance", "-o", str(tmp_path / "p")],
                      "--balance balances channels for quantization: add --quant int8")
    assert_user_error(capsys, ["build", "--quant", "int8", "--balance", "2", "-o", str(tmp_path / "p")],
                      "--balance ALPHA is an exponent between 0 and 1")
