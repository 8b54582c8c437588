"""Integer-only encoder layers (``--integer-only``; I-BERT): the float ops left between quantized ops
become integer kernels (:mod:`.integer_kernels`), so that :mod:`.integer_chain` can carry integer
codes from one layer's first quantize to its last LayerNorm.

Run after realize and before IntegerChain. In each dataflow block it rewrites:

- ``softmax(dq(acc) [reshape] [+ B] [+ where(keep, 0, -inf)])``, the scores of ``Q @ K^T`` plus the
  attention mask, or alone (a ViT attends to every token), into ``i_softmax(acc, keep[, B'])``: int32
  probabilities at step 2^-15. The mask arrives as the bool ``keep``; the "all masked -> 0" fix-up
  after the softmax goes with it. A float bias ``B`` (mpnet's relative position bias: a function of
  the positions and a weight table, which constant folding computes at build time) is rounded onto
  the scores' step;
- ``gelu(dq(acc) + b)`` into ``i_gelu(acc)`` at a power-of-two step;
- ``(dq(acc) + b) [* f] + h``, a Linear's output (times a constant per channel: a layer scale import could not fold)
  added to the residual stream ``h``, into int32 adds on the stream's step (a dyadic rescale of the
  accumulator per channel, ``f`` in its ratio). ``h`` is one of:
  - in a post-LayerNorm encoder (BERT), the integer output of an earlier LayerNorm, or, at the first
    layer, the embeddings' float LayerNorm output rounded onto a step that holds its bound (the
    layer's first quantize);
  - in a pre-LayerNorm encoder (ViT), the integer sum of the block before, or, at the first block,
    the embeddings (a LayerNorm's float input) rounded onto the stream's step: the largest value
    calibration saw at a LayerNorm's input (:mod:`.ops.residual_stream`) in 2^20 steps, which leaves
    2^6 of headroom before i_layer_norm's int64 sums could overflow;
- ``layer_norm(x)`` of such a sum into ``i_layer_norm``: int32 at a step from ``gamma`` and ``beta``
  (``|y| <= max|gamma| sqrt(D) + max|beta|`` in 2^20 steps). A LayerNorm that reads a quantized op's
  output any other way stays float and is listed in ``left_float``; one that reads none (the
  embeddings') is before the first quantize.

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
    def __init__(self, mod, params: dict, stream_step: float | None):
        super().__init__(mod)
        self.params, self.stream_step = params, stream_step
        self.counts = dict.fromkeys(REWRITTEN, 0)
        self.left_float: list[str] = []  # ops of an encoder layer that stayed float, and why
        self.probabilities = []  # the i_softmax results
        self.streams = {}  # a residual sum: its (int32 values, step), each computed once
        self.reads_integers = {}  # a value: whether it is computed from a dequantize
        self.layer_norm_inputs = set()  # of the function being rewritten, before the rewrite

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
        if int(call.attrs.axis) % rank != rank - 1:
            return self._stays_float(call, "it is not along the last axis")
        added = self._bound(call.args[0])
        # the scores plus a mask (either side), or the scores alone (a ViT attends to every token)
        masked = [(rest, self._keep(mask)) for rest, mask in (added.args, reversed(added.args))] \
            if added is not None and is_op(added, "relax.add") else []
        for rest, keep in [*((rest, keep) for rest, keep in masked if keep is not None), (call.args[0], None)]:
            found = self._scores_and_bias(rest)
            if found is None or (keep is not None and len(keep.ty.shape.values) != rank):
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
        return self._stays_float(call, "its input is not a quantized Q @ K^T (plus a bias), alone or plus a "
                                       "where(mask, 0, -inf or the lowest float)")

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

    def _stream(self, h, first_quantize: bool = True):
        """(int32 values, step) of the residual stream ``h``, or None: an integer LayerNorm's output or a
        residual sum (each in its dequantize form, or a float sum of a block's output and the stream,
        which a pre-LayerNorm encoder adds to). With ``first_quantize``, also a float value rounded onto
        a step here, the first quantize of the stream: a float LayerNorm's output with constant gamma
        and beta (a post-LayerNorm encoder's embeddings) on a step holding its bound, or a LayerNorm's
        float input (a pre-LayerNorm encoder's embeddings) on the calibrated stream step."""
        if h in self.streams:
            return self.streams[h]
        found = self._reshaped_accumulator(h, with_bias=False)
        if found is not None and _uniform(found[2]) is not None:
            acc, layout, step, _ = found
            return relayout(self.builder_, acc, layout), _uniform(step)
        bound = self._bound(h)
        summed = self._residual_sum(bound) if bound is not None and is_op(bound, "relax.add") else None
        if summed is not None:  # kept: a pre-LayerNorm sum is read by its LayerNorm and the next block's add
            self.streams[h] = summed
            return summed
        return self._first_quantize(h, bound) if first_quantize else None

    def _first_quantize(self, h, bound):
        gamma, beta = (constant_value(arg, self.params) for arg in bound.args[1:3]) if bound is not None and \
            is_op(bound, "relax.nn.layer_norm") else (None, None)
        if gamma is not None and beta is not None:
            step = layer_norm_step(gamma, beta)
        elif self.stream_step is not None and h in self.layer_norm_inputs:
            step = self.stream_step
        else:
            return None
        scaled = relax.op.multiply(h, relax.const(np.float32(1 / step)))
        return self.builder_.emit(relax.op.astype(relax.op.round(scaled), "int32")), step

    def _residual_sum(self, added):
        """(int32 sum, step) where the call ``added`` is ``dq(acc) + b [* f] + h``, ``h`` the residual
        stream; None otherwise."""
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
        summed = self._stream(call.args[0], first_quantize=False)
        if summed is None:
            # the embeddings' LayerNorm reads no quantized op: it is before the first quantize
            return self._stays_float(call, "its input is not an integer residual stream plus a quantized Linear's "
                                           "output (times a constant per channel)") \
                if self._reads_integers(call.args[0]) else call
        if gamma is None or beta is None or [axis % rank for axis in axes] != [rank - 1]:
            return self._stays_float(call, "it normalizes other axes or its gamma and beta are not constants")
        x, _ = summed
        step = layer_norm_step(gamma, beta)
        normalized = self.builder_.emit_te(
            integer_layer_norm, x, relax.const(np.round(gamma / step).astype(np.int64), "int64"),
            relax.const(np.round(beta / step).astype(np.int64), "int64"), primfunc_name_hint="i_layer_norm")
        self.counts["layer_norm"] += 1
        return self._dequantized(normalized, step)

    def _reads_integers(self, value) -> bool:
        """Whether ``value`` is computed from a quantized op's int32 accumulator cast to float (an
        embedding lookup's dequantized int8 rows are not: they come before the first quantize)."""
        if value not in self.reads_integers:
            bound = self._bound(value)
            self.reads_integers[value] = isinstance(bound, relax.Call) and (
                (is_op(bound, "relax.astype") and str(bound.args[0].ty.dtype) == "int32"
                 and str(bound.attrs.dtype).startswith("float"))
                or any(self._reads_integers(arg) for arg in bound.args if isinstance(arg, relax.Var)))
        return self.reads_integers[value]

    def _stays_float(self, call, why: str):
        self.left_float.append(f"{call.op.name.removeprefix('relax.')} ({why})")
        return call


@tvm.transform.module_pass(opt_level=0, name="IntegerOnly")
class IntegerOnly:
    """The rewrite of the module docstring on every Relax function of a module. ``params``: the
    weights not yet bound, by name. After it runs, ``counts`` says how many softmaxes, GELUs and
    LayerNorms became integer kernels and ``left_float`` which encoder ops could not, and why.
    ``stream_bound``: the largest magnitude of the residual stream calibration saw
    (:func:`~.ops.residual_stream.stream_bound`), which a pre-LayerNorm encoder's stream is held in
    :data:`RESIDUAL_BITS` bits of; None: a pre-LayerNorm stream stays float (and is refused)."""

    def __init__(self, params: dict | None = None, stream_bound: float | None = None):
        self.params = params or {}
        self.stream_step = None if stream_bound is None else _power_of_two_above(stream_bound) / 2**RESIDUAL_BITS
        self.counts, self.left_float = dict.fromkeys(REWRITTEN, 0), []

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        rewriter = _IntegerOnly(mod, self.params, self.stream_step)
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                rewriter.layer_norm_inputs = {binding.value.args[0] for block in func.body.blocks
                                              for binding in block.bindings
                                              if is_op(binding.value, "relax.nn.layer_norm")}
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        for op, count in rewriter.counts.items():
            self.counts[op] += count
        self.left_float += rewriter.left_float
        return relax.transform.DeadCodeElimination()(rewriter.builder_.finalize())
