"""--integer-only (I-BERT): softmax by i-exp, GELU by i-erf, LayerNorm with an integer square root
(tvmcomp.quant.integer_kernels), and the pass that puts them between an encoder's quantized ops
(tvmcomp.quant.integer_only). Each kernel against NumPy integer formulas written out here, and
against the float op it replaces."""

import math

import numpy as np
import pytest
import torch
import tvm
from tvm import relax, te

from test_cli import run_cli
from tvmcomp.quant.integer_chain import IntegerChain
from tvmcomp.quant.integer_kernels import integer_gelu, integer_layer_norm, integer_softmax, integer_sqrt
from tvmcomp.quant.integer_only import IntegerOnly

RNG = np.random.default_rng(5)


def _run_te(build, inputs: list[np.ndarray]):
    """Compile the TE kernel ``build(*placeholders)`` and run it on ``inputs``."""
    placeholders = [te.placeholder(x.shape, str(x.dtype)) for x in inputs]
    out = build(*placeholders)
    func = te.create_prim_func([*placeholders, out]).with_attr("global_symbol", "main")
    lib = tvm.compile(tvm.IRModule({"main": func}), target=tvm.target.Target({"kind": "llvm"}))
    result = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], str(out.dtype)))
    lib["main"](*[tvm.runtime.tensor(x) for x in inputs], result)
    return result.numpy()


def test_integer_sqrt_is_the_floor_of_the_root():
    values = np.concatenate([np.arange(1, 2000), RNG.integers(1, 2**62, 3000), [2**62 - 1, 2**31 * 2**31 - 1],
                             np.arange(1, 3000) ** 2, np.arange(2, 3000) ** 2 - 1]).astype(np.int64)
    got = _run_te(integer_sqrt, [values])
    np.testing.assert_array_equal(got, [math.isqrt(int(v)) for v in values])


def _i_softmax_reference(scores, keep, step, out_bits, bias=None):
    """I-BERT's integer softmax (Algorithm 2 with i-exp's polynomial 0.3585 (p + 1.353)^2 + 0.344),
    the scores (plus ``bias``) first shifted left until their step is 2^-12 or finer."""
    up = max(0, math.ceil(math.log2(step * 2**12)))
    fine = step / 2**up
    q_ln2, q_b, q_c = math.floor(math.log(2) / fine), math.floor(1.353 / fine), math.floor(0.344 / (0.3585 * fine**2))
    s = scores.astype(np.int64) + (0 if bias is None else bias)
    top = np.where(keep, s, np.iinfo(np.int32).min).max(axis=-1, keepdims=True)
    d = (s - top) << up
    z = (-d) // q_ln2
    p = d + z * q_ln2
    e = np.where(keep, ((p + q_b) ** 2 + q_c) >> np.minimum(z, 62), 0)
    reciprocal = 2**62 // np.maximum(e.sum(axis=-1, keepdims=True), 1)  # one division a row
    return ((e * reciprocal + 2 ** (61 - out_bits)) >> (62 - out_bits)).astype(np.int32)


@pytest.mark.parametrize("step, with_bias", [(2.0**-9, False), (0.0371, False), (2.0**-22, False), (2.0**-9, True)])
def test_integer_softmax_matches_i_bert_and_the_float_softmax(step, with_bias):
    scores = RNG.integers(-int(8 / step), int(8 / step), (2, 3, 6, 40)).astype(np.int32)
    keep = np.ones((2, 1, 6, 40), bool)
    keep[0, 0, :, 30:] = False  # padding
    keep[1, 0, 2, :] = False  # a row with nothing kept
    bias = RNG.integers(-int(2 / step), int(2 / step), (1, 3, 6, 40)).astype(np.int32) if with_bias else None
    got = _run_te(lambda *t: integer_softmax(*t[:2], step, 15, *t[2:]), [scores, keep, *([bias] if with_bias else [])])
    np.testing.assert_array_equal(got, _i_softmax_reference(scores, keep, step, 15, bias))

    logits = np.where(keep, (scores + (0 if bias is None else bias)) * step, -np.inf)
    with np.errstate(invalid="ignore"):
        exact = np.exp(logits - logits.max(axis=-1, keepdims=True))
        exact = np.nan_to_num(exact / exact.sum(axis=-1, keepdims=True))
    assert np.abs(got * 2.0**-15 - exact).max() < 0.01  # I-BERT's polynomial: ~1e-3 of exp on (-ln 2, 0]
    assert np.all(got[1, :, 2] == 0) and np.all(got[0, :, :, 30:] == 0)


def _i_gelu_reference(acc, bias, ratio_m, ratio_k, step):
    """I-BERT's i-GELU: x on ``step`` (acc + bias rescaled by m 2^-k, rounded half up; m None: by
    2^-k, k = 0 for none), clipped to +-2^24, erf(x / sqrt 2) ~ sgn (-0.2888 (min(|x|, 1.769) - 1.769)^2 + 1)
    on the grid step / sqrt 2, GELU = x (erf + 1) / 2, brought back to ``step`` by a shift and a
    15-bit multiplier."""
    biased = acc.astype(np.int64) + bias
    if ratio_m is None:
        x = (biased + np.where(ratio_k > 0, 1 << np.maximum(ratio_k - 1, 0), 0)) >> ratio_k
    else:
        x = (biased * ratio_m + (1 << (ratio_k - 1))) >> ratio_k
    q = np.clip(x, -(2**24), 2**24)
    grid = step / math.sqrt(2)
    erf_step = -0.2888 * grid**2
    q_b, q_c, one = math.floor(-1.769 / grid), math.floor(1 / erf_step), math.floor(1 / erf_step)
    erf = np.sign(q) * ((np.minimum(np.abs(q), -q_b) + q_b) ** 2 + q_c)
    pre = max(0, 24 + (2 * abs(one)).bit_length() - 46)
    product = (-(q * (erf + one))) >> pre
    ratio = -erf_step / 2 * 2**pre  # = mantissa 2^exponent, mantissa in [0.5, 1)
    mantissa, exponent = math.frexp(ratio)
    m, k = round(mantissa * 2**15), 15 - exponent
    return ((product * m + (1 << (k - 1))) >> k).astype(np.int32)


@pytest.mark.parametrize("step, multiplied", [(2.0**-11, True), (2.0**-11, False), (2.0**-16, True)])
def test_integer_gelu_matches_i_bert_and_the_float_gelu(step, multiplied):
    """int32 polynomial at 2^-11, int64 at 2^-16; channels rescaled by a dyadic multiplier or by shifts."""
    acc = RNG.integers(-40000, 40000, (5, 8)).astype(np.int32) << (5 if step < 2**-12 else 0)
    bias = RNG.integers(-500, 500, 8).astype(np.int32)
    if multiplied:  # the channels' steps over ``step``: m 2^-k
        ratio_m, ratio_k = np.array([1, 1, 3, 5, 1, 7, 1, 1], np.int64), np.array([1, 2, 2, 3, 4, 3, 1, 2], np.int64)
    else:  # powers of two: 2^-k
        ratio_m, ratio_k = None, np.array([0, 1, 2, 0, 3, 1, 0, 4], np.int32)
    got = _run_te(lambda *t: integer_gelu(t[0], t[1], *([t[2]] if multiplied else [None]), t[-1], step),
                  [acc, bias, *([ratio_m] if multiplied else []), ratio_k])
    np.testing.assert_array_equal(got, _i_gelu_reference(acc, bias, ratio_m, ratio_k, step))

    x = (acc + bias.astype(np.float64)) * (1 if ratio_m is None else ratio_m) * 2.0 ** -ratio_k.astype(float) * step
    exact = x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    assert np.abs(got * step - exact).max() < 0.02 * np.abs(x).max()  # i-erf's error, ~1e-2


def test_integer_layer_norm_matches_the_formula_and_the_float_layer_norm():
    width = 48
    x = (RNG.standard_normal((6, width)) * 3e4 + RNG.standard_normal(width) * 2e4).astype(np.int32)
    gamma = RNG.uniform(0.5, 2, width)
    beta = RNG.uniform(-1, 1, width)
    out_step = 2.0**-14
    g, b = np.round(gamma / out_step).astype(np.int64), np.round(beta / out_step).astype(np.int64)
    got = _run_te(integer_layer_norm, [x, g, b])

    wide = x.astype(np.int64)
    mean = (2 * wide.sum(axis=-1, keepdims=True) + width) // (2 * width)
    centred = wide - mean
    std = np.array([[max(math.isqrt(max(int(v), 1)), 1)] for v in (centred**2).sum(axis=-1) // width])
    normalized = (centred * (2**56 // std)) >> 40  # (x - mean) / std on a 2^-16 grid, one division a row
    np.testing.assert_array_equal(got, (((normalized * g + 2**15) >> 16) + b).astype(np.int32))

    xf = x.astype(np.float64)
    exact = (xf - xf.mean(-1, keepdims=True)) / xf.std(-1, keepdims=True) * gamma + beta
    assert np.abs(got * out_step - exact).max() < 1e-3


def _run(mod, inputs):
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(x) for x in inputs])
    return out.numpy() if hasattr(out, "numpy") else [field.numpy() for field in out]


def _dequantized(bb, acc, steps):
    return bb.emit(relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(np.float32(steps))))


def _quantized(bb, y, step):
    return bb.emit(relax.op.quantize(y, relax.const(np.float32(step)), relax.const(np.int32(0)), axis=-1,
                                     out_dtype="int8"))


def _call_names(mod) -> list[str]:
    names = []
    for binding in mod["main"].body.blocks[0].bindings:
        value = binding.value
        if isinstance(value, relax.Call):
            names.append(value.args[0].name_hint if value.op.name == "relax.call_tir" else value.op.name)
    return names


def _float_bindings(mod) -> list[str]:
    return [b.value.op.name if isinstance(b.value, relax.Call) else "var" for b in mod["main"].body.blocks[0].bindings
            if str(getattr(b.var.ty, "dtype", "")).startswith("float")]


def _encoder_layer_tail():
    """An FFN and its residual LayerNorm as realize leaves them: the FFN-in accumulator dequantized
    per channel, biased, GELU, quantized for FFN-out; FFN-out's accumulator dequantized, biased, added
    to the residual stream (an earlier LayerNorm's integer output, in its dequantize form), LayerNorm,
    quantized for the next Linear."""
    bb = relax.BlockBuilder()
    acc_in = relax.Var("acc_in", relax.TensorType((4, 16), "int32"))
    acc_out = relax.Var("acc_out", relax.TensorType((4, 8), "int32"))
    stream = relax.Var("stream", relax.TensorType((1, 4, 8), "int32"))
    with bb.function("main", [acc_in, acc_out, stream]):
        with bb.dataflow():
            y = _dequantized(bb, acc_in, 2.0 ** -RNG.integers(9, 13, 16))
            y = bb.emit(relax.op.add(relax.const(RNG.uniform(-1, 1, 16).astype(np.float32)), y))
            gelu_codes = _quantized(bb, bb.emit(relax.op.nn.gelu(y)), 2.0**-4)
            h = _dequantized(bb, stream, 2.0**-16)
            z = _dequantized(bb, acc_out, 2.0 ** -RNG.integers(9, 13, 8))
            z = bb.emit(relax.op.add(relax.const(RNG.uniform(-1, 1, 8).astype(np.float32)), z))
            z = bb.emit(relax.op.add(bb.emit(relax.op.reshape(z, (1, 4, 8))), h))
            norm = bb.emit(relax.op.nn.layer_norm(z, relax.const(RNG.uniform(0.5, 2, 8).astype(np.float32)),
                                                  relax.const(RNG.uniform(-1, 1, 8).astype(np.float32)), axes=[-1]))
            out = bb.emit_output(relax.Tuple([gelu_codes, _quantized(bb, norm, 2.0**-5)]))
        bb.emit_func_output(out)
    return bb.get()


def test_gelu_and_the_residual_layer_norm_become_integer_kernels_and_the_codes_stay_integer():
    before = _encoder_layer_tail()
    integer_only = IntegerOnly()
    after = IntegerChain()(integer_only(before))
    assert integer_only.counts == {"softmax": 0, "gelu": 1, "layer_norm": 1} and not integer_only.left_float
    # Expected: i_gelu, then a shift to the next codes; the FFN-out accumulator biased and shifted onto
    # the stream's step (power-of-two steps: no multiply), added to it, i_layer_norm, then a shift
    names = _call_names(after)
    assert names.index("i_gelu") < names.index("i_layer_norm")
    assert "relax.multiply" not in names and "relax.nn.gelu" not in names and "relax.nn.layer_norm" not in names
    assert _float_bindings(after) == []
    # within a code of the float ops they replace (I-BERT's erf is within ~1e-2 of erf; codes step 2^-4)
    inputs = [RNG.integers(-3000, 3000, (4, 16)).astype(np.int32), RNG.integers(-3000, 3000, (4, 8)).astype(np.int32),
              RNG.integers(-2**17, 2**17, (1, 4, 8)).astype(np.int32)]
    for got, want in zip(_run(after, inputs), _run(before, inputs)):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def _attention_scores(step: float = 2.0**-10):
    """``softmax(dq(scores) + where(keep, 0, -inf))``, the all-masked-rows fix-up torch's export adds,
    quantized for P @ V on the 2^-15 grid."""
    bb = relax.BlockBuilder()
    acc = relax.Var("acc", relax.TensorType((2, 4, 4), "int32"))
    keep = relax.Var("keep", relax.TensorType((1, 1, 4, 4), "bool"))
    with bb.function("main", [acc, keep]):
        with bb.dataflow():
            mask = bb.emit(relax.op.where(keep, relax.const(np.float32(0)), relax.const(np.float32(-np.inf))))
            scores = bb.emit(relax.op.reshape(_dequantized(bb, acc, step), (1, 2, 4, 4)))
            logits = bb.emit(relax.op.add(scores, mask))
            p = bb.emit(relax.op.nn.softmax(logits, axis=-1))
            none_kept = bb.emit(relax.op.logical_not(relax.op.astype(relax.op.max(relax.op.astype(
                relax.op.logical_not(relax.op.equal(logits, relax.const(np.float32(-np.inf)))), "int8"), axis=[-1],
                keepdims=True), "bool")))
            p = bb.emit(relax.op.where(none_kept, relax.op.full_like(p, relax.const(np.float32(0))), p))
            codes = bb.emit_output(relax.op.quantize(bb.emit(relax.op.reshape(p, (2, 4, 4))),
                                                     relax.const(np.float32(2.0**-15)), relax.const(np.int32(0)),
                                                     axis=-1, out_dtype="int16"))
        bb.emit_func_output(codes)
    return bb.get()


def test_the_masked_softmax_becomes_i_softmax_and_feeds_p_v_codes_without_float():
    before = _attention_scores()
    after = IntegerChain()(IntegerOnly()(before))
    assert "i_softmax" in _call_names(after) and _float_bindings(after) == []
    acc = RNG.integers(-3000, 3000, (2, 4, 4)).astype(np.int32)
    keep = np.ones((1, 1, 4, 4), bool)
    keep[..., 3] = False
    keep[..., 1, :] = False
    got = _run(after, [acc, keep])
    want = _i_softmax_reference(acc.reshape(1, 2, 4, 4), keep, 2.0**-10, 15).reshape(2, 4, 4)
    np.testing.assert_array_equal(got, want)  # the requantization from 2^-15 to 2^-15 changes nothing
    assert np.all(got[:, 1] == 0)


def test_scores_plus_a_float_bias_and_a_lowest_float_mask_become_i_softmax_with_the_bias_on_the_scores_step():
    """mpnet's attention: ``softmax(dq(scores) / 8 + B + where(keep, 0, float32 min))`` with a float
    relative position bias ``B``, computed before the layer."""
    bb = relax.BlockBuilder()
    acc = relax.Var("acc", relax.TensorType((2, 4, 4), "int32"))
    keep = relax.Var("keep", relax.TensorType((1, 1, 4, 4), "bool"))
    position_bias = relax.Var("position_bias", relax.TensorType((1, 2, 4, 4), "float32"))
    with bb.function("main", [acc, keep, position_bias]):
        with bb.dataflow():
            zero = bb.emit(relax.op.full((), relax.const(np.float32(0)), "float32"))
            mask = bb.emit(relax.op.where(keep, zero, relax.const(np.finfo(np.float32).min)))
            scores = bb.emit(relax.op.divide(bb.emit(relax.op.reshape(_dequantized(bb, acc, 2.0**-7), (1, 2, 4, 4))),
                                             relax.const(np.float32(8))))
            logits = bb.emit(relax.op.add(bb.emit(relax.op.add(scores, position_bias)), mask))
            p = bb.emit(relax.op.nn.softmax(logits, axis=-1))
            codes = bb.emit_output(relax.op.quantize(bb.emit(relax.op.reshape(p, (2, 4, 4))),
                                                     relax.const(np.float32(2.0**-15)), relax.const(np.int32(0)),
                                                     axis=-1, out_dtype="int16"))
        bb.emit_func_output(codes)
    after = IntegerChain()(IntegerOnly()(bb.get()))
    assert "i_softmax" in _call_names(after) and "relax.nn.softmax" not in _call_names(after)
    acc_values = RNG.integers(-3000, 3000, (2, 4, 4)).astype(np.int32)
    keep_values = np.ones((1, 1, 4, 4), bool)
    keep_values[..., 0] = False
    bias_values = RNG.uniform(-2, 2, (1, 2, 4, 4)).astype(np.float32)
    got = _run(after, [acc_values, keep_values, bias_values])
    # the bias on the scores' step 2^-7 / 8 = 2^-10, rounded (half to even: relax's round)
    bias_codes = np.round(bias_values * np.float32(2**10)).astype(np.int32)
    want = _i_softmax_reference(acc_values.reshape(1, 2, 4, 4), keep_values, 2.0**-10, 15, bias_codes)
    np.testing.assert_array_equal(got, want.reshape(2, 4, 4))


def test_scores_with_no_mask_become_i_softmax_over_every_key():
    """A ViT's attention: ``softmax(dq(scores) * c)``, every token attending to every other."""
    bb = relax.BlockBuilder()
    acc = relax.Var("acc", relax.TensorType((1, 2, 4, 4), "int32"))
    with bb.function("main", [acc]):
        with bb.dataflow():
            scores = bb.emit(relax.op.multiply(_dequantized(bb, acc, 2.0**-8), relax.const(np.float32(0.25))))
            p = bb.emit(relax.op.nn.softmax(scores, axis=-1))
            codes = bb.emit_output(relax.op.quantize(p, relax.const(np.float32(2.0**-15)), relax.const(np.int32(0)),
                                                     axis=-1, out_dtype="int16"))
        bb.emit_func_output(codes)
    integer_only = IntegerOnly()
    after = IntegerChain()(integer_only(bb.get()))
    assert integer_only.counts["softmax"] == 1 and _float_bindings(after) == []
    acc_values = RNG.integers(-3000, 3000, (1, 2, 4, 4)).astype(np.int32)
    want = _i_softmax_reference(acc_values, np.ones((1, 1, 4, 4), bool), 2.0**-10, 15)
    np.testing.assert_array_equal(_run(after, [acc_values]), want)


def test_a_pre_layer_norm_stream_takes_the_calibrated_step_and_a_per_channel_layer_scale():
    """``LayerNorm(h + (dq(acc) + b) * f)`` with ``h`` the float embeddings a LayerNorm also reads
    (the block's first one) and ``f`` a layer scale with signs mixed: ``h`` is rounded onto the stream's
    step (the calibrated bound 6 in 2^20 steps: 2^-17), the Linear's output rescaled onto it per channel
    with ``f`` in the ratio, both added in int32, then i_layer_norm."""
    bb = relax.BlockBuilder()
    acc = relax.Var("acc", relax.TensorType((4, 8), "int32"))
    h = relax.Var("h", relax.TensorType((1, 4, 8), "float32"))
    gamma, beta = RNG.uniform(0.5, 2, 8).astype(np.float32), RNG.uniform(-1, 1, 8).astype(np.float32)
    scale = RNG.normal(0, 0.5, 8).astype(np.float32)
    with bb.function("main", [acc, h]):
        with bb.dataflow():
            first = _quantized(bb, bb.emit(relax.op.nn.layer_norm(h, relax.const(gamma), relax.const(beta), axes=[-1])),
                               2.0**-5)
            z = bb.emit(relax.op.add(relax.const(RNG.uniform(-1, 1, 8).astype(np.float32)),
                                     _dequantized(bb, acc, 2.0 ** -RNG.integers(9, 13, 8))))
            z = bb.emit(relax.op.multiply(bb.emit(relax.op.reshape(z, (1, 4, 8))), relax.const(scale)))
            norm = bb.emit(relax.op.nn.layer_norm(bb.emit(relax.op.add(z, h)), relax.const(gamma), relax.const(beta),
                                                  axes=[-1]))
            out = bb.emit_output(relax.Tuple([first, _quantized(bb, norm, 2.0**-5)]))
        bb.emit_func_output(out)
    before = bb.get()
    refused = IntegerOnly()  # no calibrated stream: the LayerNorm after the block stays float, and says so
    refused(before)
    assert refused.left_float == ["nn.layer_norm (its input is not an integer residual stream plus a quantized "
                                  "Linear's output (times a constant per channel))"]
    integer_only = IntegerOnly(stream_bound=6.0)
    assert integer_only.stream_step == 2.0**-17
    after = IntegerChain()(integer_only(before))
    assert integer_only.counts["layer_norm"] == 1 and not integer_only.left_float
    names = _call_names(after)
    assert "i_layer_norm" in names and names.count("relax.nn.layer_norm") == 1  # the block's first stays float
    inputs = [RNG.integers(-3000, 3000, (4, 8)).astype(np.int32), RNG.normal(0, 2, (1, 4, 8)).astype(np.float32)]
    for got, want in zip(_run(after, inputs), _run(before, inputs)):
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1


def test_an_embedding_layer_norm_fed_by_integer_position_ids_is_before_the_first_quantize():
    """MPNet computes its position ids as a cumulative sum in int32, cast to int64: integers, but no
    quantized op's output. Its embeddings' LayerNorm stays float and is not refused."""
    bb = relax.BlockBuilder()
    ids = relax.Var("ids", relax.TensorType((1, 4), "int32"))
    with bb.function("main", [ids]):
        with bb.dataflow():
            positions = bb.emit(relax.op.astype(relax.op.cumsum(ids, axis=1), "int64"))
            rows = bb.emit(relax.op.take(relax.const(RNG.normal(0, 1, (8, 8)).astype(np.float32)), positions, axis=0))
            norm = bb.emit(relax.op.nn.layer_norm(rows, relax.const(np.ones(8, np.float32)),
                                                  relax.const(np.zeros(8, np.float32)), axes=[-1]))
            out = bb.emit_output(_quantized(bb, norm, 2.0**-5))
        bb.emit_func_output(out)
    integer_only = IntegerOnly(stream_bound=6.0)
    integer_only(bb.get())
    assert integer_only.counts["layer_norm"] == 0 and integer_only.left_float == []


def test_scores_finer_than_i_exps_grid_stay_float_and_say_why():
    integer_only = IntegerOnly()
    integer_only(_attention_scores(step=2.0**-30))
    assert integer_only.counts["softmax"] == 0
    assert integer_only.left_float == ["nn.softmax (attention scores with a step of 9.31323e-10 are finer than "
                                       "i-exp's 2^-24 grid (their int64 division would overflow); build without "
                                       "--integer-only)"]


def _integer_tail(mod) -> list[str]:
    """The float ops computed from the output of an integer kernel (a matmul, i_softmax, ...) in
    ``main``, in order: what runs on floats once the layer's codes are integers."""
    from_integers, names = set(), []
    for binding in mod["main"].body.blocks[0].bindings:
        value = binding.value
        reads = [arg for arg in (value.args if isinstance(value, relax.Call) else [value])
                 if isinstance(arg, relax.Var)]
        if isinstance(value, relax.Call) and value.op.name == "relax.call_tir":
            reads = list(value.args[1].fields)
        if (isinstance(value, relax.Call) and value.op.name == "relax.call_tir") or \
                any(var in from_integers for var in reads):
            from_integers.add(binding.var)
            if str(getattr(binding.var.ty, "dtype", "")).startswith("float"):
                names.append(value.op.name if isinstance(value, relax.Call) else "var")
    return names


@pytest.mark.parametrize("kind, scheme", [("bert", "pot8"), ("distilbert", "int8")])
def test_tiny_encoder_has_no_float_op_between_its_first_quantize_and_last_dequantize(kind, scheme, tmp_path, capsys,
                                                                                     empty_schedules):
    from test_hf_folder import SEQ_LEN, _save_tiny_encoder
    from test_shapes import cosine_to_transformers
    from tvmcomp.quant.dot_kernels import dot_kernels_for
    from tvmcomp.quant.pipeline import QuantOptions, quantize_model
    from tvmcomp.source import load_source
    from tvmcomp.targets import resolve_target

    folder = _save_tiny_encoder(tmp_path / kind, kind)
    source = load_source(str(folder), seq_len=SEQ_LEN)
    quantize_model(source, QuantOptions(scheme, samples=4, integer_only=True), "hash", None,
                   dot_kernels_for(resolve_target("x86")))
    # once a layer's inputs are integer codes, the only float ops are the last LayerNorm's dequantize
    assert _integer_tail(source.imported.mod) == ["relax.astype", "relax.multiply"]

    code, _, err = run_cli(capsys, "build", "--model", str(folder), "--seq-len", str(SEQ_LEN), "--quant", scheme,
                           "--integer-only", "--calibration-samples", "4", "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    assert "[quant] --integer-only: 2 softmaxes (i-exp), 2 GELUs (i-erf) and 4 residual adds + LayerNorms" in err
    assert cosine_to_transformers(tmp_path / "pkg", folder).min() > 0.99


@pytest.mark.parametrize("kind, scheme", [("vit", "int8"), ("dinov2", "pot8")])
def test_pre_layer_norm_vit_runs_its_residual_stream_on_integers(kind, scheme, tmp_path, capsys, empty_schedules):
    """A ViT adds each block's output to a stream no LayerNorm bounds: it is held on a calibrated step
    from the first block on. DINOv2 scales each block's output per channel (its layer scale, signs
    mixed), folded into the Linear before it at import: in pot8 every rescale onto the stream is a
    shift (unfolded, a negative ratio made each a dyadic multiply in int64)."""
    from models_for_tests import save_tiny_vit
    from transformers import AutoModel
    from tvmcomp.quant.dot_kernels import dot_kernels_for
    from tvmcomp.quant.pipeline import QuantOptions, quantize_model
    from tvmcomp.source import load_source
    from tvmcomp.targets import resolve_target

    import tvmcomp

    folder = save_tiny_vit(tmp_path / kind, kind)
    source = load_source(str(folder))
    # the patch embedding float, so that the first integer kernel is layer 0's Q, K and V
    options = QuantOptions(scheme, samples=4, integer_only=True, keep_float=("*patch_embeddings*",))
    quantize_model(source, options, "hash", None, dot_kernels_for(resolve_target("x86")))
    # from there on, the only float ops are the last LayerNorm's dequantize
    assert _integer_tail(source.imported.mod) == ["relax.astype", "relax.multiply"]
    if scheme == "pot8":
        multiplies = [line for line in source.imported.mod["main"].script().splitlines() if "R.multiply" in line]
        assert multiplies and not [line for line in multiplies if 'dtype="int64"' in line]

    code, _, err = run_cli(capsys, "build", "--model", str(folder), "--quant", scheme, "--integer-only",
                           "--calibration-samples", "4", "-o", str(tmp_path / "pkg"))
    assert code == 0, err
    # layer 0's first LayerNorm reads the embeddings, before the first quantize; the other 3 and the last run on integers
    assert "[quant] --integer-only: 2 softmaxes (i-exp), 2 GELUs (i-erf) and 4 residual adds + LayerNorms" in err
    package = tvmcomp.load(tmp_path / "pkg")
    pixels = package.example_inputs()["pixel_values"]
    with torch.no_grad():
        want = AutoModel.from_pretrained(folder).eval()(pixel_values=torch.from_numpy(pixels)).last_hidden_state.numpy()
    got = package.run(pixel_values=pixels)[0]
    cosine = np.sum(got * want, -1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(want, axis=-1))
    assert cosine.min() > 0.99


def test_integer_only_refuses_what_it_cannot_run(tmp_path, capsys):
    from test_hf_folder import SEQ_LEN, _save_tiny_encoder
    from models_for_tests import save_tiny_vit

    code, _, err = run_cli(capsys, "build", "--model", "minilm", "--integer-only", "-o", str(tmp_path / "a"))
    assert code != 0 and "--integer-only runs the float ops on integers: add --quant int8" in err
    folder = _save_tiny_encoder(tmp_path / "bert", "bert")
    code, _, err = run_cli(capsys, "build", "--model", str(folder), "--seq-len", str(SEQ_LEN), "--quant", "int8",
                           "--attn-probs", "log2:4", "--integer-only", "-o", str(tmp_path / "b"))
    assert code != 0 and "--integer-only needs quantized activations and uniform attention probabilities" in err
    swin = save_tiny_vit(tmp_path / "swin", "swin")  # windows of tokens, merged between stages
    code, _, err = run_cli(capsys, "build", "--model", str(swin), "--quant", "int8", "--integer-only",
                           "--calibration-samples", "2", "-o", str(tmp_path / "c"))
    assert code != 0 and "calibrating" not in err, err  # refused before any calibration
    assert "encoder ops float" in err and "layer_norm (its input is not an integer residual stream plus a " \
        "quantized Linear's output (times a constant per channel))" in err
