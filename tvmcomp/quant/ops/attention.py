"""The attention rules: a batched matmul of two activations (rank >= 3, neither a weight). Both
operands vary at run time, so both are quantized and nothing folds into a constant::

    ac  = R.astype(R.quantize(a, s_a, z_a), "int16") - z_a   # exact: |code - z| <= 255
    acc = R.matmul(ac, bc, out_dtype="int32")               # bc likewise from b
    y   = R.astype(acc, "float32") * (s_a * s_b)

Given the target's int16 dot-product kernel (AVX2 ``vpmaddwd``: s16 x s16 pairs summed to s32,
exact for these 9-bit values), ``bc`` is packed in its block layout at run time and the matmul
reads it there, as a Linear reads its packed weight.

Two rules, told apart by what the left operand holds:

- ``attention_values``, ``P @ V``: ``P`` is a softmax output (the softmax itself, or it reshaped,
  broadcast or with fully masked rows set to zero: torch's SDPA decomposition). ``P`` (role
  ``"probs"``) takes the attention-probability quantizer's codes (:mod:`..attn_probs`: uniform or
  log2, whose rows may be renormalized by their code sums), or the activations' own where none is
  given; ``V`` is role ``"values"``.
- ``attention_scores``, every other one (``Q @ K^T``): roles ``"lhs"`` and ``"rhs"``.

Both are named ``bmm_<n>`` in graph order.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..dot_kernels import pack_operand, packed_matmul
from .registry import Operand, OpRule, is_op, register_op_rule

# ops between a softmax and the matmul it feeds that keep every value a probability
_PROBABILITY_PRESERVING = ("relax.reshape", "relax.broadcast_to", "relax.permute_dims", "relax.expand_dims",
                           "relax.squeeze", "relax.where")


def is_softmax_output(graph, x) -> bool:
    """Whether ``x`` holds softmax outputs (see the module docstring)."""
    while isinstance(x, relax.Var):
        bound = graph.lookup_binding(x)
        if bound is None or not isinstance(bound, relax.Call):
            return False
        if is_op(bound, "relax.nn.softmax"):
            return True
        if not any(is_op(bound, op) for op in _PROBABILITY_PRESERVING):
            return False
        x = bound.args[2] if is_op(bound, "relax.where") else bound.args[0]
    return False


class _ActivationMatmul(OpRule):
    ops = ("relax.matmul",)
    multiplies_probabilities = False

    def match(self, graph, call):
        lhs, rhs = call.args
        ranks = [len(operand.ty.shape.values) for operand in (lhs, rhs)]
        if min(ranks) < 3 or any(graph.is_weight(operand, rank) for operand, rank in zip((lhs, rhs), ranks)):
            return None
        if is_softmax_output(graph, lhs) != self.multiplies_probabilities:
            return None
        name = graph.batched_name()
        return [Operand(0, name, self.roles[0]), Operand(1, name, self.roles[1])]

    def realize(self, ctx, call, operands):
        (lhs_site, lhs), (rhs_site, rhs) = operands[0], operands[1]
        lhs_scale, row_sums = np.float32(ctx.ranges[lhs_site.index].scale), None
        if self.multiplies_probabilities and ctx.probs is not None:  # P on the probabilities' own grid
            ctx.counts["prob_matmuls"] += 1
            lhs_c, lhs_scale, row_sums = ctx.probs.emit(ctx.builder_, lhs, ctx.ranges[lhs_site.index].prob_params)
        else:
            lhs_c = ctx.centered(lhs, lhs_site)
        rhs_c = ctx.centered(rhs, rhs_site)
        kernel = ctx.kernels.batched
        if kernel is not None:
            acc = _packed(ctx, lhs_c, rhs_c, kernel)
        else:
            acc = ctx.builder_.emit(relax.op.matmul(lhs_c, rhs_c, out_dtype="int32"))
        scale = lhs_scale * np.float32(ctx.ranges[rhs_site.index].scale)
        y = ctx.dequantize(acc, np.full(int(acc.ty.shape.values[-1]), scale))
        if row_sums is None:
            return y
        return relax.op.divide(ctx.builder_.emit(y), relax.op.astype(
            relax.op.maximum(row_sums, relax.const(1, "int32")), "float32"))


class AttentionScores(_ActivationMatmul):
    name, roles = "attention_scores", ("lhs", "rhs")


class AttentionValues(_ActivationMatmul):
    name, roles, multiplies_probabilities = "attention_values", ("probs", "values"), True


def _packed(ctx, lhs_c, rhs_c, kernel):
    """``lhs_c @ rhs_c`` on the int16 dot kernel, zero-padding K and N up to its block: ViT's 257
    tokens are both (``P @ V``'s K, ``Q @ K^T``'s N), and the plain int16 matmul they fell back to
    ran at a quarter of the packed kernel's speed (19 of vit-s int8's 80 ms)."""
    *batch, k, n = (int(d) for d in rhs_c.ty.shape.values)
    bn, bk = kernel.weight_block
    pad_k, pad_n = -k % bk, -n % bn
    if pad_k or pad_n:
        rhs_c = ctx.builder_.emit(relax.op.nn.pad(rhs_c, [0, 0] * len(batch) + [0, pad_k, 0, pad_n]))
    packed = ctx.builder_.emit(pack_operand(rhs_c, kernel.weight_block))
    lhs_c, rows = ctx.pad_rows(lhs_c, pad_k)
    acc = ctx.cut_rows(ctx.builder_.emit_te(packed_matmul, lhs_c, packed, name="packed_int16_matmul"), rows)
    if pad_n:
        acc = ctx.builder_.emit(relax.op.strided_slice(acc, axes=[len(batch) + 1], begin=[0], end=[n]))
    return acc


PROBS_ROLE = AttentionValues.roles[0]
register_op_rule(AttentionScores())
register_op_rule(AttentionValues())
