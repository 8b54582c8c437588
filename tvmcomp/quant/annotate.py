"""Annotate: mark which matmuls are quantized, by wrapping their activation in a quant site.

Rewrites ``R.matmul(x, W)`` and ``R.matmul(x, R.permute_dims(W))`` where ``W`` is a weight
parameter of ``main`` (a Linear layer) into::

    x_site = R.call_pure_packed("tvmcomp.quant_site", x, R.prim_value(i), ...)  # identity
    y = R.matmul(x_site, <weight as before>)

A site is an identity at run time; calibration registers ``tvmcomp.quant_site`` to observe the
values flowing through it, and realize replaces each site and its matmul by integer compute.
Sites are named after their weight parameter, so ``skip`` patterns can keep layers in float.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

QUANT_SITE = "tvmcomp.quant_site"


@dataclass(frozen=True)
class QuantSite:
    index: int
    weight: str  # name of the weight parameter of main
    transposed: bool  # the matmul reads permute_dims(W): W is [N, K] (PyTorch Linear)


def _is_op(expr, name: str) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


@mutator
class _Annotator(PyExprMutator):
    def __init__(self, mod, weight_names: set[str], skip: list[str]):
        super().__init__(mod)
        self.weight_names = weight_names
        self.skip = skip
        self.sites: list[QuantSite] = []

    def _weight_of(self, rhs) -> tuple[str, bool] | None:
        """The weight parameter a matmul's right-hand side reads, and whether it is transposed."""
        transposed = False
        bound = self.lookup_binding(rhs) if isinstance(rhs, relax.Var) else None
        if bound is not None and _is_op(bound, "relax.permute_dims") and isinstance(bound.args[0], relax.Var):
            rhs, transposed = bound.args[0], True
        if isinstance(rhs, relax.Var) and rhs.name in self.weight_names and len(rhs.ty.shape.values) == 2:
            return rhs.name, transposed
        return None

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if not _is_op(call, "relax.matmul"):
            return call
        found = self._weight_of(call.args[1])
        if found is None or any(fnmatch.fnmatch(found[0], pattern) for pattern in self.skip):
            return call
        site = QuantSite(len(self.sites), *found)
        self.sites.append(site)
        x = call.args[0]
        marked = self.builder_.emit(
            relax.op.call_pure_packed(QUANT_SITE, x, relax.prim_value(site.index), ty_args=x.ty)
        )
        return relax.op.matmul(marked, call.args[1], out_dtype=call.attrs.out_dtype)


SITES_ATTR = "tvmcomp.quant_sites"  # on main: "<weight name>:<T|N>" for site 0, 1, ...


def annotate(mod: tvm.IRModule, weight_names, skip: list[str] | None = None) -> tvm.IRModule:
    """Wrap the activation of every Linear-layer matmul of ``main`` in a quant site.

    ``weight_names``: the names of main's weight parameters; ``skip``: fnmatch patterns of weight
    names to keep in float (e.g. ``"*layer_0*"``). The sites are listed in main's attribute
    ``tvmcomp.quant_sites`` (read them back with :func:`quant_sites`).
    """
    annotator = _Annotator(mod, set(weight_names), list(skip or []))
    func = annotator.visit_expr(mod["main"])
    listing = [f"{site.weight}:{'T' if site.transposed else 'N'}" for site in annotator.sites]
    annotator.builder_.update_func(mod.get_global_var("main"), func.with_attr(SITES_ATTR, listing))
    return annotator.builder_.finalize()


def quant_sites(mod: tvm.IRModule) -> list[QuantSite]:
    listing = (mod["main"].attrs or {}).get(SITES_ATTR, [])
    return [QuantSite(i, *(lambda name, flag: (name, flag == "T"))(*str(entry).rsplit(":", 1))) for i, entry in enumerate(listing)]
