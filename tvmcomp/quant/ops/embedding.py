"""The embedding-lookup rule: a lookup in a weight table reads integer rows and scales them.

Every lookup ``R.take(W, ids, axis=0)`` of a 2-D weight parameter ``W`` [V, D] with at least
``min_rows`` rows (a vocabulary), with the scheme's ``embedding`` quantizer::

    rows = R.take(W, ids, axis=0)

becomes, with ``Wq`` [V, D] quantized per row (one scale per vocabulary entry) and ``s`` [V, 1]
its row scales::

    rows = R.astype(R.take(Wq, ids, axis=0), "float32") * R.take(s, ids, axis=0)

Rows of at most 4 bits are stored two codes per byte (:mod:`..nibbles`) and unpacked after the
lookup, ``(astype(concat([rows & 15, rows >> 4]), "float32") - 8) * scale``: an eighth of the
float table. With a scale per group of ``G`` entries of a row (``Granularity.PER_GROUP``), ``s`` is
[V, D / G] and the row is scaled group by group::

    rows = R.reshape(R.reshape(values, [..., D / G, G]) * R.expand_dims(R.take(s, ids, axis=0), -1), [..., D])

A lookup does no arithmetic, so there is no integer kernel to run: what this buys is a table a
quarter of the size (MiniLM's 30522 x 384 word table is 44.7 of its 86.6 MiB of float weights).
The float rows feed the LayerNorm that follows, which stays float. The rule has no roles: its ids
are integers already and the table a weight, so nothing is calibrated and Annotate leaves it alone.

Small tables stay float: a position or segment table saves under 1 MiB, and since every token
reads one of its few rows, their rounding error is the same shift in every token rather than
noise spread over a vocabulary.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import numpy as np
from tvm import relax

from ..grids import quantize_weight, round_to_grid
from ..nibbles import OFFSET, pack_nibbles, unpack_nibbles
from ..schemes import Granularity, TensorQuant
from .registry import OpRule, register_op_rule


@dataclass(frozen=True)
class EmbeddingLookup(OpRule):
    min_rows: int = 1024  # fewer rows: a position or segment table, kept float (module docstring)
    name, ops, roles = "embedding_lookup", ("relax.take",), ()

    def _table(self, ctx, call) -> np.ndarray | None:
        table, quant = call.args[0], ctx.scheme.embedding
        if quant is None or not (isinstance(table, relax.Var) and table.name in ctx.params and int(call.attrs.axis) == 0):
            return None
        shape = [int(d) for d in table.ty.shape.values]
        odd_for_nibbles = quant.bits <= 4 and shape[-1] % 2  # two codes per byte need an even row
        ragged = quant.group_size is not None and shape[-1] % quant.group_size
        if len(shape) != 2 or shape[0] < self.min_rows or odd_for_nibbles or ragged or any(
                fnmatch.fnmatch(table.name, p) for p in ctx.skip):
            return None
        return np.asarray(ctx.params[table.name], np.float32)

    def realize(self, ctx, call, operands):
        table = self._table(ctx, call)
        if table is None:
            return None
        quant, emit = ctx.scheme.embedding, ctx.builder_.emit
        codes, scales = table_codes(table, quant)
        ids, mode = call.args[1], call.attrs.mode
        packed = quant.bits <= 4
        stored = pack_nibbles(codes) if packed else codes
        rows = emit(relax.op.take(relax.const(stored), ids, axis=0, mode=mode))
        row_scales = emit(relax.op.take(relax.const(scales), ids, axis=0, mode=mode))
        values = relax.op.astype(emit(unpack_nibbles(rows)) if packed else rows, "float32")
        if packed:  # nibbles hold code + 8
            values = relax.op.subtract(values, relax.const(np.float32(OFFSET)))
        groups, width = scales.shape[1], codes.shape[1]
        if groups == 1:
            return relax.op.multiply(values, row_scales)
        lead = [int(d) for d in call.ty.shape.values[:-1]]
        grouped = relax.op.reshape(emit(values), [*lead, groups, width // groups])
        return relax.op.reshape(emit(relax.op.multiply(grouped, relax.op.expand_dims(row_scales, -1))), [*lead, width])


def table_codes(table: np.ndarray, quant: TensorQuant) -> tuple[np.ndarray, np.ndarray]:
    """Codes [V, D] of a table and their scales: [V, 1] (one per row) or [V, D / group_size]."""
    if quant.granularity is Granularity.PER_GROUP:  # groups along a row: the rows of the transposed table
        codes, scales = round_to_grid(np.ascontiguousarray(table.T), quant)
        return np.ascontiguousarray(codes.T), np.ascontiguousarray(scales.T)
    codes, scales = quantize_weight(table, quant, channel_axis=0)
    return codes, scales.reshape(-1, 1)


register_op_rule(EmbeddingLookup())
