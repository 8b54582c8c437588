"""Make embedding lookups bounds-safe: ``R.take(..., mode="fast")`` -> ``mode="clip"``.

Importers emit ``take`` in "fast" mode, which reads out of bounds (and crashes the deployed
library) on a token id >= the vocabulary size. "clip" clamps the index inside the same kernel:
two integer min/max per row looked up, nothing measurable next to the row copy.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator


@mutator
class _ClipTakeMutator(PyExprMutator):
    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.take" and call.attrs.mode == "fast":
            return relax.op.take(call.args[0], call.args[1], axis=call.attrs.axis, mode="clip")
        return call


@tvm.transform.module_pass(opt_level=0, name="ClipGatherIndices")
def ClipGatherIndices(mod: tvm.IRModule, _ctx) -> tvm.IRModule:  # noqa: N802 (TVM's pass naming)
    """Rewrite every fast-mode ``R.take`` in every Relax function to clip its indices."""
    mutator_ = _ClipTakeMutator(mod)
    for global_var, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator_.builder_.update_func(global_var, mutator_.visit_expr(func))
    return mutator_.builder_.finalize()
