"""Integer-only encoder layers (``--integer-only``; I-BERT): the float ops left between quantized ops
become integer kernels (:mod:`.integer_kernels`), so that :mod:`.integer_chain` can carry integer
codes from one layer's first quantize to its last LayerNorm.

Run after realize and before IntegerChain. In each dataflow block it rewrites:

- ``softmax(dq(acc) [reshape] [+ B] + where(keep, 0, -inf))``, the scores of ``Q @ K^T`` plus the
  attention mask, into ``i_softmax(acc, keep[, B'])``: int32 probabilities at step 2^-15. The mask
  arrives as the bool ``keep``; the "all masked -> 0" fix-up after the softmax goes with it. A float
  bias ``B`` (mpnet's relative position bias: a function of the positions and a weight table,
  which constant folding computes at build time) is rounded onto the scores' step;
- ``gelu(dq(acc) + b)`` into ``i_gelu(acc)`` at a power-of-two step;
- ``dq(acc) + b + h``, a Linear's output added to the residual stream ``h``, into int32 adds on
  the stream's step (a dyadic rescale of the accumulator per channel). ``h`` is the integer output
  of an earlier LayerNorm, or, at the first layer, the embeddings' float LayerNorm output rounded
  onto a step that holds its bound (the layer's first quantize);
- ``layer_norm(x)`` of such a sum into ``i_layer_norm``: int32 at a step from ``gamma`` and ``beta``
  (``|y| <= max|gamma| sqrt(D) + max|beta|`` in 2^20 steps).

``dq(acc) = astype(acc, float32) * s`` is realize's dequantize. Each rewritten op's value is left in
the graph as ``astype(int32 result, float32) * step``: the dequantize form IntegerChain turns into an
integer requantization wherever the next quantized op reads it, and that DeadCodeElimination drops
where nothing float reads it. The encoder's last LayerNorm keeps it: the last dequantize.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..errors import TvmcompError
from .integer_chain import _uniform, accumulator_chain, bound_value, constant_value, dyadic, relayout, rescale
from .integer_kernels import ExpConstants, integer_gelu, integer_layer_norm, integer_softmax
from .ops import is_op

PROBABILITY_BITS = 15  # the softmax's step, 2^-15: the probabilities' grid of uniform:15 (int8, pot8)
RESIDUAL_BITS = 20  # a LayerNorm output's bound is 2^20 of its steps
REWRITTEN = ("softmax", "gelu", "layer_norm")  # the ops it counts


def _power_of_two_above(value: float) -> float:
    return 2.0 ** math.ceil(math.log2(value))


def layer_norm_step(gamma: np.ndarray, beta: np.ndarray) -> float:
    """The step of a LayerNorm's integer output: its bound ``max|gamma| sqrt(D) + max|beta|`` (a
    normalized row has no entry above sqrt(D)) in 2^RESIDUAL_BITS steps, a power of two."""
    bound = np.abs(gamma).max() * math.sqrt(gamma.size) + np.abs(beta).max()
    return _power_of_two_above(float(bound)) / 2**RESIDUAL_BITS


@mutator
class _IntegerOnly(PyExprMutator):
    def __init__(self, mod, params: dict):
        super().__init__(mod)
        self.params = params
        self.counts = dict.fromkeys(REWRITTEN, 0)
        self.left_float: list[str] = []  # ops of an encoder layer that stayed float, and why
        self.probabilities = []  # the i_softmax results

    def _bound(self, expr):
        return bound_value(expr, self)

    def _reshaped_accumulator(self, value, with_bias: bool):
        """(acc, the reshapes to ``value``'s shape, per-channel step s, bias) where ``value`` is a
        dequantized accumulator through reshapes that keep its last axis; None otherwise."""
        chain = accumulator_chain(value, self, self.params)
        if chain is None:
            return None
        acc, step, bias, scale, layout = chain
        keeps_channels = all(is_op(op, "relax.reshape") for op in layout) and \
            int(acc.ty.shape.values[-1]) == int(value.ty.shape.values[-1])
        if scale != 1.0 or not keeps_channels or (bias is not None and not with_bias):
            return None
        return acc, layout, np.broadcast_to(np.float64(step), (int(acc.ty.shape.values[-1]),)), bias

    def _dequantized(self, values, step: float):
        return relax.op.multiply(relax.op.astype(values, "float32"), relax.const(np.float32(step)))

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        for op, rewrite in (("relax.nn.softmax", self._softmax), ("relax.nn.gelu", self._gelu),
                            ("relax.nn.layer_norm", self._layer_norm), ("relax.where", self._drop_mask_fixup)):
            if is_op(call, op):
                return rewrite(call)
        return call

    def _softmax(self, call):
        rank = len(call.ty.shape.values)
        added = self._bound(call.args[0])
        if int(call.attrs.axis) % rank != rank - 1 or added is None or not is_op(added, "relax.add"):
            return self._stays_float(call, "its input is not the scores plus a mask")
        for rest, mask in (added.args, reversed(added.args)):
            keep = self._keep(mask)
            found = self._scores_and_bias(rest) if keep is not None else None
            if found is None or len(keep.ty.shape.values) != rank:
                continue
            (acc, step, _, scale, layout), bias = found
            step = _uniform(step) * scale
            try:  # refused here, listed with the other ops that stay float (an exception would cross the FFI)
                ExpConstants.for_step(step)
            except TvmcompError as err:
                return self._stays_float(call, str(err).removeprefix("--integer-only: "))
            scores_int = relayout(self.builder_, acc, layout)
            if bias is not None:  # a float input of the layer (mpnet's relative position bias) onto the scores' grid
                bias = self.builder_.emit(relax.op.astype(relax.op.clip(relax.op.round(relax.op.multiply(
                    bias, relax.const(np.float32(1 / step)))), -(2**24), 2**24), "int32"))
            probabilities = self.builder_.emit_te(integer_softmax, scores_int, keep, step, PROBABILITY_BITS, bias,
                                                  primfunc_name_hint="i_softmax")
            self.counts["softmax"] += 1
            self.probabilities.append(probabilities)
            return self._dequantized(probabilities, 2.0**-PROBABILITY_BITS)
        return self._stays_float(call, "its input is not a quantized Q @ K^T (plus a bias) plus a where(mask, 0, "
                                       "-inf or the lowest float)")

    def _scores_and_bias(self, value):
        """(the accumulator chain of Q @ K^T, None) where ``value`` is the dequantized scores, or (that
        chain, B) where it is the scores plus a float tensor ``B`` of the same rank; None otherwise."""
        def scores_chain(x):
            chain = accumulator_chain(x, self, self.params)
            return chain if chain is not None and chain[2] is None and _uniform(chain[1]) is not None else None

        if scores_chain(value) is not None:
            return scores_chain(value), None
        added = self._bound(value)
        if added is None or not is_op(added, "relax.add"):
            return None
        for scores, bias in (added.args, reversed(added.args)):
            if scores_chain(scores) is not None and str(bias.ty.dtype).startswith("float") and \
                    len(bias.ty.shape.values) == len(value.ty.shape.values):
                return scores_chain(scores), bias
        return None

    def _scalar(self, expr) -> np.ndarray | None:
        """The value of a constant, or of ``full(shape, constant)``, through the variables bound to them."""
        bound = self._bound(expr)
        if bound is not None and is_op(bound, "relax.full"):
            return self._scalar(bound.args[1])
        return constant_value(expr if bound is None else bound, self.params)

    def _keep(self, mask):
        """The bool tensor ``keep`` of ``mask = where(keep, 0, M)``, M -inf or the lowest float32
        (where a whole row is masked, the float softmax gives 0 for -inf and 1/N for the lowest float;
        i_softmax gives 0), or None."""
        where = self._bound(mask)
        if where is None or not is_op(where, "relax.where"):
            return None
        zero, masked = (self._scalar(arg) for arg in where.args[1:])
        ok = zero is not None and masked is not None and np.all(zero == 0) and np.all(masked <= np.finfo(np.float32).min)
        return where.args[0] if ok else None

    def _drop_mask_fixup(self, call):
        """``where(all_masked, zeros, p)`` after a softmax: i_softmax already gives 0 there."""
        dequantized, fill = self._bound(call.args[2]), self._bound(call.args[1])
        cast = self._bound(dequantized.args[0]) if is_op(dequantized, "relax.multiply") else None
        if fill is not None and is_op(fill, "relax.full_like") and cast is not None and \
                is_op(cast, "relax.astype") and any(cast.args[0].same_as(p) for p in self.probabilities):
            return call.args[2]
        return call

    def _gelu(self, call):
        found = self._reshaped_accumulator(call.args[0], with_bias=True)
        if found is None:
            return self._stays_float(call, "its input is not a quantized Linear's output")
        acc, layout, s, bias = found
        step = _power_of_two_above(float(s.max()))  # the coarsest channel's step: no channel is scaled up
        bias_codes = np.zeros(s.size, np.int32) if bias is None else np.round(bias / s).astype(np.int32)
        shifts = -np.log2(s / step)
        if np.all(shifts == np.round(shifts)):  # power-of-two steps (pot8): rounding shifts in int32
            multiplier, shift = None, relax.const(shifts.astype(np.int32))
        else:
            m, k = dyadic(s / step)
            multiplier, shift = relax.const(m, "int64"), relax.const(k, "int64")
        gelu = self.builder_.emit_te(integer_gelu, acc, relax.const(bias_codes), multiplier, shift, step,
                                     primfunc_name_hint="i_gelu")
        self.counts["gelu"] += 1
        return self._dequantized(relayout(self.builder_, gelu, layout), step)

    def _stream(self, h):
        """(int32 values, step) of the residual stream ``h``: an integer LayerNorm's or residual sum's
        dequantize form, or a float LayerNorm with constant gamma and beta (rounded onto its step
        here: the first quantize of the first layer); None otherwise."""
        found = self._reshaped_accumulator(h, with_bias=False)
        if found is not None and _uniform(found[2]) is not None:
            acc, layout, step, _ = found
            return relayout(self.builder_, acc, layout), _uniform(step)
        norm = self._bound(h)
        gamma, beta = (constant_value(arg, self.params) for arg in norm.args[1:3]) if norm is not None and \
            is_op(norm, "relax.nn.layer_norm") else (None, None)
        if gamma is None or beta is None:
            return None
        step = layer_norm_step(gamma, beta)
        scaled = relax.op.multiply(h, relax.const(np.float32(1 / step)))
        return self.builder_.emit(relax.op.astype(relax.op.round(scaled), "int32")), step

    def _residual_sum(self, x):
        """(int32 sum, step) where ``x = dq(acc) + b + h``, ``h`` the residual stream; None otherwise."""
        added = self._bound(x)
        if added is None or not is_op(added, "relax.add"):
            return None
        for linear, h in (added.args, reversed(added.args)):
            found = self._reshaped_accumulator(linear, with_bias=True)
            stream = self._stream(h) if found is not None else None
            if stream is None:
                continue
            acc, layout, s, bias = found
            h_int, step = stream
            if bias is not None:
                acc = relax.op.add(acc, relax.const(np.round(bias / s).astype(np.int32)))
            linear_int = relayout(self.builder_, self.builder_.emit(rescale(acc, s / step)), layout)
            return self.builder_.emit(relax.op.add(linear_int, h_int)), step
        return None

    def _layer_norm(self, call):
        gamma, beta = (constant_value(arg, self.params) for arg in call.args[1:3])
        axes = [int(axis) for axis in call.attrs.axes]
        rank = len(call.ty.shape.values)
        summed = self._residual_sum(call.args[0])
        if summed is None:
            # the embeddings' LayerNorm reads no quantized op: it is before the first quantize
            added = self._bound(call.args[0])
            reads_linear = added is not None and is_op(added, "relax.add") and any(
                self._reshaped_accumulator(arg, with_bias=True) is not None for arg in added.args)
            return self._stays_float(call, "its input is a Linear's output plus a residual of unknown range") \
                if reads_linear else call
        if gamma is None or beta is None or [axis % rank for axis in axes] != [rank - 1]:
            return self._stays_float(call, "it normalizes other axes or its gamma and beta are not constants")
        x, _ = summed
        step = layer_norm_step(gamma, beta)
        normalized = self.builder_.emit_te(
            integer_layer_norm, x, relax.const(np.round(gamma / step).astype(np.int64), "int64"),
            relax.const(np.round(beta / step).astype(np.int64), "int64"), primfunc_name_hint="i_layer_norm")
        self.counts["layer_norm"] += 1
        return self._dequantized(normalized, step)

    def _stays_float(self, call, why: str):
        self.left_float.append(f"{call.op.name.removeprefix('relax.')} ({why})")
        return call


@tvm.transform.module_pass(opt_level=0, name="IntegerOnly")
class IntegerOnly:
    """The rewrite of the module docstring on every Relax function of a module. ``params``: the
    weights not yet bound, by name. After it runs, ``counts`` says how many softmaxes, GELUs and
    LayerNorms became integer kernels and ``left_float`` which encoder ops could not, and why."""

    def __init__(self, params: dict | None = None):
        self.params = params or {}
        self.counts, self.left_float = dict.fromkeys(REWRITTEN, 0), []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _IntegerOnly(mod, self.params)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        for op, count in rewriter.counts.items():
            self.counts[op] += count
        self.left_float += rewriter.left_float
        return relax.transform.DeadCodeElimination()(rewriter.builder_.finalize())
