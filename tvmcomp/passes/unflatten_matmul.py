"""Undo the flattening ``torch.export`` wraps around matmuls, so they read and write the model's shapes.

``torch.export`` writes a Linear on a ``[1, 257, 384]`` input as ``reshape`` to ``[257, 384]``, the
matmul (plus bias), and ``reshape`` back to ``[1, 257, 384]``; attention's batched matmuls merge
batch and heads (``[1, 6, 257, 64]`` to ``[6, 257, 64]``) the same way, and SDPA puts a
``broadcast_to`` of an operand to its own shape in front. Relax's ``matmul`` broadcasts over leading
dimensions, so without them it computes the same numbers in the same order, and the ops around it
fuse as they do in an ONNX file's graph: a ``reshape`` is injective, and ``FuseOps`` does not fuse an
injective op after a softmax, a LayerNorm or a matmul's epilogue. With them, the PyTorch form of
vit-s ran the residual adds, the LayerNorms, the GELUs and the quantize of the attention
probabilities as kernels of their own.

Rewritten, where the shapes show the reshapes only merge and split dimensions ahead of the ones the
matmul reads (batch dimensions, and for a 2-D right operand, the rows)::

    reshape(matmul(reshape(x, [P, K]), W) [+ b], [*lead, N])         ->  matmul(x, W) [+ b]
    reshape(matmul(reshape(a, [B, M, K]), reshape(c, [B, K, N])),
            [*lead, M, N])                                            ->  matmul(a, c)
    broadcast_to(x, shape of x)                                       ->  x
"""

from __future__ import annotations

import math

import tvm
from tvm import relax
from tvm.relax.dpl import is_op as op_pattern
from tvm.relax.dpl import rewrite_call, wildcard

from ..quant.ops.registry import is_op
from . import rewrite_each_function


def _shape(expr) -> tuple[int, ...] | None:
    shape = getattr(expr.ty, "shape", None)
    values = getattr(shape, "values", None)
    if values is None or not all(isinstance(d, tvm.tirx.IntImm) for d in values):
        return None
    return tuple(int(d) for d in values)


def _unreshaped(expr, var2val):
    """The input of ``expr`` where it is a ``reshape`` (or a variable bound to one), else None."""
    value = var2val.get(expr) if isinstance(expr, relax.Var) else expr
    return value.args[0] if is_op(value, "relax.reshape") else None


def _drop_same_shape_broadcasts(func: relax.Function) -> relax.Function:
    x = wildcard()
    pattern = op_pattern("relax.broadcast_to")(x, wildcard())

    def rewrite(call, matched):
        shape = _shape(matched[x])
        return matched[x] if shape is not None and shape == _shape(call) else call

    return rewrite_call(pattern, rewrite, func)


def _unflatten(func: relax.Function) -> relax.Function:
    var2val = relax.analysis.get_var2val(func)
    lhs, rhs, bias = wildcard(), wildcard(), wildcard()
    product = op_pattern("relax.matmul")(lhs, rhs)
    bias_first, bias_last = op_pattern("relax.add")(bias, product), op_pattern("relax.add")(product, bias)
    pattern = op_pattern("relax.reshape")(bias_first | bias_last | product, wildcard())

    def rewrite(call, matched):
        left, right = _unreshaped(matched[lhs], var2val), _unreshaped(matched[rhs], var2val)
        if left is None:
            return call
        flat_left, flat_right, out, full_left = (_shape(e) for e in (matched[lhs], matched[rhs], call, left))
        if None in (flat_left, flat_right, out, full_left):
            return call
        if bias in matched and len(_shape(matched[bias]) or ()) != 1:
            return call  # a bias other than one value per output column would not broadcast the same
        if len(flat_right) == 2:  # a Linear: rows merged, the weight as it was
            fits = len(flat_left) == 2 and full_left[-1] == flat_left[-1] and out == full_left[:-1] + flat_right[-1:]
            new_right = matched[rhs]
        else:  # a batched matmul: batch dimensions merged alike on both sides
            full_right = _shape(right) if right is not None else None
            fits = full_right is not None and full_left[-2:] == flat_left[-2:] and full_right[-2:] == flat_right[-2:] \
                and full_left[:-2] == full_right[:-2] and math.prod(full_left[:-2]) == math.prod(flat_left[:-2]) \
                and out == full_left[:-2] + flat_left[-2:-1] + flat_right[-1:]
            new_right = right
        if not fits:
            return call
        matmul = matched[product]
        result = relax.op.matmul(left, new_right, out_dtype=matmul.attrs.out_dtype)
        if bias_first in matched:
            return relax.op.add(matched[bias], result)
        return relax.op.add(result, matched[bias]) if bias_last in matched else result

    return rewrite_call(pattern, rewrite, func)


@tvm.transform.module_pass(opt_level=0, name="UnflattenMatmul")
class UnflattenMatmul:
    """The rewrites of the module docstring on every Relax function of a module."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_each_function(mod, lambda func: _unflatten(_drop_same_shape_broadcasts(func)))
