"""Requantize in integers: an int32 accumulator goes straight to the next quantized op's codes.

Realize leaves every quantized op ending in a float dequantize, and the op after it quantizing
from float again. Between the Q, K, V projections and the attention matmuls, and between P @ V
and the output projection, nothing but a bias, reshapes, permutes and the score scale lies in
between, so the float round trip can go. In each dataflow block this pass rewrites every chain::

    y = astype(acc, "float32") * s          # realize's dequantize; s per output channel (last axis)
    y = y + b                               # optional: a bias constant along the last axis
    y = y * f                               # optional: a constant per channel (a layer scale import left)
    y = reshape | permute_dims | broadcast_to | y * c | y / c   (any number; c a scalar constant)
    q = quantize(y, t, z)                   # the next op's codes: step t, zero point z

into integer ops on the accumulator, and the same reshapes and permutes on the codes::

    r = ((acc + round(b / s)) * m + 2^(k-1)) >> k          with  s * c / t = m * 2^-k
    q = clip(r + z, qmin, qmax)  then reshape / permute as before

Where the codes have a step or a zero point per channel (a balanced Linear's input,
:mod:`.balance`) and the accumulator one step for all, the bias add and the reshapes and permutes
come first, on int32, and the requantization follows along the codes' last axis.

Where ``s * c / t`` is a power of two for every channel (pot8: power-of-two steps everywhere),
``m = 1`` and the requantization is a rounding arithmetic shift in int32, no multiply at all.
Elsewhere ``m`` is a 15-bit dyadic multiplier (I-BERT's), applied in int64. The result differs
from the float round trip by rounding only (half up here, half to even there; the bias rounded
to the accumulator's step).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .ops import is_op

LAYOUT_OPS = ("relax.reshape", "relax.permute_dims", "relax.broadcast_to")
_SCALINGS = ("relax.multiply", "relax.divide")  # by a scalar constant
MULTIPLIER_BITS = 15


def dyadic(ratio: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, k) with ``ratio ~= m * 2^-k``: ``m = 1`` where ``ratio`` is a power of two, else
    ``2^14 <= |m| <= 2^15`` (negative where the ratio is)."""
    ratio = np.asarray(ratio, np.float64)
    mantissa, exponent = np.frexp(ratio)  # ratio = mantissa * 2^exponent, 0.5 <= mantissa < 1
    power_of_two = mantissa == 0.5
    m = np.where(power_of_two, 1, np.round(mantissa * 2**MULTIPLIER_BITS)).astype(np.int64)
    k = np.where(power_of_two, 1 - exponent, MULTIPLIER_BITS - exponent).astype(np.int64)
    # a ratio of 1 or more (rare: the next step finer than the accumulator's) multiplies instead of shifting
    m, k = np.where(k < 1, m << np.maximum(1 - k, 0), m), np.maximum(k, 1)
    return m, k


def _uniform(values: np.ndarray | None) -> float | None:
    """The one value of a constant that holds one value (a scalar, or a vector of equal entries)."""
    if values is None or values.size == 0 or not np.all(values == values.flat[0]):
        return None
    return values.flat[0].item()


def constant_value(expr, params: dict) -> np.ndarray | None:
    """A constant's value, or a weight parameter's (realize runs before the weights are bound)."""
    if isinstance(expr, tvm.ir.expr.Constant):
        return expr.value.numpy()
    return np.asarray(params[expr.name]) if isinstance(expr, relax.Var) and expr.name in params else None


def bound_value(expr, mutator):
    """What the variable ``expr`` is bound to in ``mutator``'s function, through aliases (``a = b``);
    None for a parameter (or where ``expr`` is no variable)."""
    if not isinstance(expr, relax.Var):
        return None
    while isinstance(expr, relax.Var):
        expr = mutator.lookup_binding(expr)
    return expr


def accumulator_chain(y, mutator, params: dict):
    """(int32 accumulator, per-channel step s, bias or None, scalar c, layout calls outermost first)
    of the float value ``y``, or None where ``y`` is not such a chain. ``mutator`` looks up bindings."""
    def bound(expr):
        return bound_value(expr, mutator)

    layout, scale, channel_scale = [], 1.0, None
    call = bound(y)
    while call is not None and (any(is_op(call, op) for op in (*LAYOUT_OPS, *_SCALINGS))):
        below = bound(call.args[0])
        if any(is_op(call, op) for op in _SCALINGS):
            factor = constant_value(call.args[1], params)
            if factor is None or below is None or is_op(below, "relax.astype"):  # that is the dequantize
                break
            c = _uniform(factor)
            if c is not None:
                scale *= c if is_op(call, "relax.multiply") else 1 / c  # mpnet divides its scores by sqrt(d)
            elif is_op(call, "relax.multiply") and factor.ndim == 1 and channel_scale is None:
                channel_scale = factor.astype(np.float64)  # one per channel: a layer scale import could not fold
            else:
                break
        else:
            layout.append(call)
        call = below
    bias = None
    if call is not None and is_op(call, "relax.add"):
        first, second = call.args  # the bias on either side (torch's decompositions put it first)
        bias, value = (constant_value(first, params), second) if constant_value(first, params) is not None else \
            (constant_value(second, params), first)
        if bias is None or bias.ndim != 1:
            return None
        call = bound(value)
    if call is None or not is_op(call, "relax.multiply"):
        return None
    step = constant_value(call.args[1], params)
    cast = bound(call.args[0])
    if step is None or step.ndim > 1 or cast is None or not is_op(cast, "relax.astype"):
        return None
    acc = cast.args[0]
    channels = int(acc.ty.shape.values[-1])
    if acc.ty.dtype != "int32" or any(v is not None and v.shape[0] != channels for v in (bias, channel_scale)):
        return None
    if channel_scale is not None:  # (acc s + b) f = acc (s f) + b f, where the reshapes keep the channels
        if not all(is_op(op, "relax.reshape") for op in layout) or int(y.ty.shape.values[-1]) != channels:
            return None
        step, bias = step * channel_scale, None if bias is None else bias * channel_scale
    return acc, step, bias, scale, layout


@mutator
class _IntegerChain(PyExprMutator):
    def __init__(self, mod, params: dict):
        super().__init__(mod)
        self.params, self.rewritten, self.shifts = params, 0, 0

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if not is_op(call, "relax.quantize"):
            return call
        chain = accumulator_chain(call.args[0], self, self.params)
        steps, zeros = constant_value(call.args[1], self.params), constant_value(call.args[2], self.params)
        if chain is None or steps is None or zeros is None:
            return call
        acc, s, bias, c, layout = chain
        # requantize before the layout calls (one code step t and zero point z), or after them, along
        # the codes' last axis (balanced Linear inputs: a step and a zero point per channel, one
        # accumulator step s)
        zero = _uniform(zeros)
        after_layout = _uniform(steps) is None or zero is None
        rank = len(call.args[0].ty.shape.values)
        if after_layout and (_uniform(s) is None or int(call.attrs.axis) % rank != rank - 1):
            return call
        self.rewritten += 1
        if bias is not None:
            acc = relax.op.add(acc, relax.const(np.round(bias / np.float64(s)).astype(np.int32)))
        if after_layout:
            acc = relayout(self.builder_, acc, layout)
        ratio = _uniform(s) * c / np.float64(steps) if after_layout else np.float64(s) * c / _uniform(steps)
        self.shifts += _powers_of_two(ratio)
        codes = self.builder_.emit(_requantize(acc, ratio, zeros if zero is None else zero, call.attrs.out_dtype))
        return codes if after_layout else relayout(self.builder_, codes, layout)


def relayout(builder, value, layout):
    """``value`` through the same reshapes and permutes (``layout``, outermost first), emitted."""
    for op in reversed(layout):
        value = builder.emit(relax.Call(op.op, [value, *op.args[1:]], op.attrs))
    return value


def rescale(acc, ratio: np.ndarray):
    """``(acc * m + 2^(k-1)) >> k`` in int32, ``ratio ~= m * 2^-k`` along the last axis: a rounding
    shift where every ratio is a power of two, a dyadic multiply in int64 elsewhere."""
    if np.all(np.asarray(ratio) == 1):  # already on the step (i_softmax's 2^-15 into uniform:15 codes)
        return acc
    m, k = dyadic(ratio)
    if np.all(m == 1):  # a rounding shift in int32
        return relax.op.right_shift(relax.op.add(acc, relax.const((1 << (k - 1)).astype(np.int32))),
                                    relax.const(k.astype(np.int32)))
    if _powers_of_two(ratio):  # some of them 1 or more: shifts both ways
        exponent = np.log2(np.asarray(ratio, np.float64))
        up, down = np.maximum(exponent, 0).astype(np.int32), np.maximum(-exponent, 0).astype(np.int32)
        half = np.where(down > 0, np.left_shift(1, np.maximum(down - 1, 0)), 0).astype(np.int32)
        return relax.op.right_shift(relax.op.add(relax.op.left_shift(acc, relax.const(up)), relax.const(half)),
                                    relax.const(down))
    # a dyadic multiply in int64 (dtypes spelled out: relax.const makes int64 arrays int32)
    wide = relax.op.multiply(relax.op.astype(acc, "int64"), relax.const(m, "int64"))
    rounded = relax.op.add(wide, relax.const(np.left_shift(1, k - 1), "int64"))
    return relax.op.astype(relax.op.right_shift(rounded, relax.const(k, "int64")), "int32")


def _powers_of_two(ratio: np.ndarray) -> bool:
    """Whether every ratio is a positive power of two (a negative one: a ViT's layer scale)."""
    ratio = np.asarray(ratio, np.float64)
    if np.any(ratio <= 0):
        return False
    exponent = np.log2(ratio)
    return bool(np.all(exponent == np.round(exponent)))


def _requantize(acc, ratio: np.ndarray, zero, out_dtype: str):
    """``clip(rescale(acc, ratio) + zero)`` as ``out_dtype`` (``zero``: one, or one per channel of the
    last axis). The zero point is a tensor even where it is one number: a scalar would be inlined
    into the kernel, and layers whose zero points differ would each get a kernel of their own."""
    info = np.iinfo(out_dtype)
    zero = relax.const(np.atleast_1d(np.asarray(zero, np.int32)))
    return relax.op.astype(relax.op.clip(relax.op.add(rescale(acc, ratio), zero),
                                         int(info.min), int(info.max)), out_dtype)


@tvm.transform.module_pass(opt_level=0, name="IntegerChain")
class IntegerChain:
    """The rewrite of the module docstring on every Relax function of a module. ``params``: the
    weights not yet bound, by name. After it runs, ``rewritten`` is how many quantizes became
    integer requantizations, ``shifts`` how many of those are shifts (no multiply)."""

    def __init__(self, params: dict | None = None):
        self.params, self.rewritten, self.shifts = params or {}, 0, 0

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        chain = _IntegerChain(mod, self.params)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                chain.builder_.update_func(gvar, chain.visit_expr(func))
        self.rewritten += chain.rewritten
        self.shifts += chain.shifts
        return relax.transform.DeadCodeElimination()(chain.builder_.finalize())
