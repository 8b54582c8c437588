"""Quantize embedding tables: a lookup in a weight table reads integer rows and scales them.

In ``main``, every lookup ``R.take(W, ids, axis=0)`` of a 2-D weight parameter ``W`` [V, D] with
at least ``min_rows`` rows (a vocabulary)::

    rows = R.take(W, ids, axis=0)

becomes, with ``Wq`` [V, D] quantized per row (one scale per vocabulary entry) and ``s`` [V, 1]
its row scales::

    rows = R.astype(R.take(Wq, ids, axis=0), "float32") * R.take(s, ids, axis=0)

Rows of at most 4 bits are stored two codes per byte (:mod:`.nibbles`) and unpacked after the
lookup, ``(astype(concat([rows & 15, rows >> 4]), "float32") - 8) * scale``: an eighth of the
float table. With a scale per group of ``G`` entries of a row (``Granularity.PER_GROUP``), ``s`` is
[V, D / G] and the row is scaled group by group::

    rows = R.reshape(R.reshape(values, [..., D / G, G]) * R.expand_dims(R.take(s, ids, axis=0), -1), [..., D])

A lookup does no arithmetic, so there is no integer kernel to run: what this buys is a table a
quarter of the size (MiniLM's 30522 x 384 word table is 44.7 of its 86.6 MiB of float weights).
The float rows feed the LayerNorm that follows, which stays float (see
:mod:`tvmcomp.quant.annotate`).

Small tables stay float: a position or segment table saves under 1 MiB, and since every token
reads one of its few rows, their rounding error is the same shift in every token rather than
noise spread over a vocabulary.
"""

from __future__ import annotations

import fnmatch

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .annotate import _is_op
from .nibbles import OFFSET, pack_nibbles, unpack_nibbles
from .grids import round_to_grid
from .realize import quantize_weight
from .schemes import Granularity, TensorQuant


@mutator
class _EmbeddingQuantizer(PyExprMutator):
    def __init__(self, mod, params: dict, quant: TensorQuant, skip: list[str], min_rows: int):
        super().__init__(mod)
        self.params, self.quant, self.skip, self.min_rows = params, quant, skip, min_rows

    def _table(self, call) -> np.ndarray | None:
        table = call.args[0]
        if not (isinstance(table, relax.Var) and table.name in self.params and int(call.attrs.axis) == 0):
            return None
        shape = [int(d) for d in table.ty.shape.values]
        odd_for_nibbles = self.quant.bits <= 4 and shape[-1] % 2  # two codes per byte need an even row
        ragged = self.quant.group_size is not None and shape[-1] % self.quant.group_size
        if len(shape) != 2 or shape[0] < self.min_rows or odd_for_nibbles or ragged or any(
                fnmatch.fnmatch(table.name, p) for p in self.skip):
            return None
        return np.asarray(self.params[table.name], np.float32)

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if not _is_op(call, "relax.take"):
            return call
        table = self._table(call)
        if table is None:
            return call
        codes, scales = table_codes(table, self.quant)
        ids, mode = call.args[1], call.attrs.mode
        packed = self.quant.bits <= 4
        stored = pack_nibbles(codes) if packed else codes
        rows = self.builder_.emit(relax.op.take(relax.const(stored), ids, axis=0, mode=mode))
        row_scales = self.builder_.emit(relax.op.take(relax.const(scales), ids, axis=0, mode=mode))
        values = relax.op.astype(self.builder_.emit(unpack_nibbles(rows)) if packed else rows, "float32")
        if packed:  # nibbles hold code + 8
            values = relax.op.subtract(values, relax.const(np.float32(OFFSET)))
        groups, width = scales.shape[1], codes.shape[1]
        if groups == 1:
            return relax.op.multiply(values, row_scales)
        lead = [int(d) for d in call.ty.shape.values[:-1]]
        grouped = relax.op.reshape(self.builder_.emit(values), [*lead, groups, width // groups])
        return relax.op.reshape(self.builder_.emit(relax.op.multiply(grouped, relax.op.expand_dims(row_scales, -1))),
                                [*lead, width])


def table_codes(table: np.ndarray, quant: TensorQuant) -> tuple[np.ndarray, np.ndarray]:
    """Codes [V, D] of a table and their scales: [V, 1] (one per row) or [V, D / group_size]."""
    if quant.granularity is Granularity.PER_GROUP:  # groups along a row: the rows of the transposed table
        codes, scales = round_to_grid(np.ascontiguousarray(table.T), quant)
        return np.ascontiguousarray(codes.T), np.ascontiguousarray(scales.T)
    codes, scales = quantize_weight(table, quant, channel_axis=0)
    return codes, scales.reshape(-1, 1)


@tvm.transform.module_pass(opt_level=0, name="QuantizeEmbeddings")
class QuantizeEmbeddings:
    """Rewrite every row lookup of a 2-D weight parameter of at least ``min_rows`` rows in ``main``
    to read ``quant`` codes (see module docstring). ``skip``: fnmatch patterns of parameter names
    to keep in float."""

    def __init__(self, params: dict, quant: TensorQuant, skip: list[str] | None = None, min_rows: int = 1024):
        self.params, self.quant, self.skip, self.min_rows = params, quant, list(skip or []), min_rows

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        quantizer = _EmbeddingQuantizer(mod, self.params, self.quant, self.skip, self.min_rows)
        func = quantizer.visit_expr(mod["main"])
        quantizer.builder_.update_func(mod.get_global_var("main"), func)
        return quantizer.builder_.finalize()
