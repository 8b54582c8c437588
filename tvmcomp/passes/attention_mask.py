"""Drop the attention mask that masks nothing, and the guard of PyTorch's safe softmax where no row is masked.

``torch.export`` of SDPA writes its softmax as ``_safe_softmax``: the softmax, and a guard that sets
a row to zeros where every score is -inf (a query with nothing to attend to)::

    where(logical_not(max(astype(logical_not(equal(s, -inf)), int8), axis=-1)), zeros, softmax(s))

and models built with Hugging Face's masking utilities add a mask even where there is no padding:
vit-s's PyTorch form adds ``where(arange(257) >= 0, 0, -inf)``, zeros computed at run time, to
every layer's scores. The guard costs a reduction kernel of its own and a select per probability, and
stands between the softmax and the quantize of the probabilities.

The masks here depend on no input, so this pass computes them (a small Relax function, compiled and
run once). A mask that is all zeros leaves the graph. Where the scores plus a finite mask (or no
mask) feed the guard, no row can be all -inf unless an input is infinite, so the guard goes too and
the softmax remains. Masks that depend on an input (a text model's padding) stay as they are, and
so do their guards.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, rewrite_call, wildcard
from tvm.relax.dpl import is_op as op_pattern
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..quant.ops.registry import is_op
from . import rewrite_each_function


@mutator
class _Renamer(PyExprMutator):
    """Rewrites an expression to read the variables ``renamed`` maps its own to."""

    def __init__(self, renamed: dict):
        super().__init__()
        self.renamed = renamed

    def visit_var_(self, var):
        return self.renamed.get(var, var)

    def visit_dataflow_var_(self, var):
        return self.renamed.get(var, var)


def _input_free(var, var2val, found: dict) -> bool:
    """Whether ``var`` is bound to a value computed from constants alone (``found`` memoizes)."""
    if var not in found:
        value = var2val.get(var)
        found[var] = value is not None and all(_input_free(v, var2val, found) for v in relax.analysis.free_vars(value))
    return found[var]


def _evaluate_input_free(func: relax.Function, variables: list) -> list[np.ndarray]:
    """The values of ``variables`` of ``func``, each computed from constants alone."""
    var2val, needed = relax.analysis.get_var2val(func), {}
    for var in variables:
        _input_free(var, var2val, needed)
    copies, bb = {}, relax.BlockBuilder()
    renamer = _Renamer(copies)
    with bb.function("main", []):
        with bb.dataflow():
            for var in var2val:  # in binding order
                if needed.get(var):
                    copies[var] = bb.emit(renamer.visit_expr(var2val[var]))
            out = bb.emit_output(relax.Tuple([copies[var] for var in variables]))
        bb.emit_func_output(out)
    executable = tvm.compile(bb.get(), target=tvm.target.Target({"kind": "llvm"}))
    values = relax.VirtualMachine(executable, tvm.cpu())["main"]()
    return [value.numpy() for value in values]


class _GuardedSoftmax:
    """The pattern of the module docstring and its parts."""

    def __init__(self):
        self.scores, self.zeros, self.neg_inf = wildcard(), wildcard(), is_const()
        self.probabilities = op_pattern("relax.nn.softmax")(self.scores)
        live = op_pattern("relax.logical_not")(op_pattern("relax.equal")(self.scores, self.neg_inf))
        row_has_live = op_pattern("relax.astype")(op_pattern("relax.max")(op_pattern("relax.astype")(live)))
        empty_row = op_pattern("relax.logical_not")(row_has_live)
        self.pattern = op_pattern("relax.where")(empty_row, self.zeros, self.probabilities)

    def matches(self, matched) -> bool:
        """Whether the constants are what ``_safe_softmax`` writes: -inf, and zeros for empty rows."""
        zeros = matched[self.zeros]
        if is_op(zeros, "relax.full_like"):
            zeros = zeros.args[1]
        return isinstance(zeros, tvm.ir.expr.Constant) and not np.any(zeros.value.numpy()) and \
            np.all(np.isneginf(matched[self.neg_inf].value.numpy()))


def _input_free_masks(func, var2val) -> list:
    """The input-free operands of the scores-plus-mask sums that guarded softmaxes read."""
    guarded, found, masks = _GuardedSoftmax(), {}, []

    def collect(call, matched):
        added = matched[guarded.scores]
        if guarded.matches(matched) and is_op(added, "relax.add"):
            masks.extend(v for v in added.args if isinstance(v, relax.Var) and _input_free(v, var2val, found)
                         and v not in masks)
        return call

    rewrite_call(guarded.pattern, collect, func)
    return masks


def _unguard(func: relax.Function) -> relax.Function:
    var2val = relax.analysis.get_var2val(func)
    masks = _input_free_masks(func, var2val)
    values = dict(zip(masks, _evaluate_input_free(func, masks))) if masks else {}
    guarded = _GuardedSoftmax()

    def rewrite(call, matched):
        if not guarded.matches(matched):
            return call
        added, probabilities = matched[guarded.scores], matched[guarded.probabilities]
        if not is_op(added, "relax.add"):
            return probabilities  # no mask
        mask = next((arg for arg in added.args if arg in values), None)
        if mask is None or not np.all(np.isfinite(values[mask])):
            return call  # a mask that depends on an input, or one with -inf: rows may be fully masked
        scores = added.args[1] if added.args[0].same_as(mask) else added.args[0]
        broadcasts = [int(d) for d in scores.ty.shape.values] != [int(d) for d in added.ty.shape.values]
        if not np.any(values[mask]) and not broadcasts:
            return relax.op.nn.softmax(scores, axis=int(probabilities.attrs.axis))
        return probabilities

    return rewrite_call(guarded.pattern, rewrite, func)


@tvm.transform.module_pass(opt_level=0, name="DropEmptyAttentionMasks")
class DropEmptyAttentionMasks:
    """The rewrite of the module docstring on every Relax function of a module."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_each_function(mod, _unguard)
