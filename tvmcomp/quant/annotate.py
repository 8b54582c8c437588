"""Annotate: mark which matmuls are quantized, by wrapping their float inputs in quant sites.

Three kinds of op are marked in ``main``:

- a Linear layer, ``R.matmul(x, W)`` or ``R.matmul(x, R.permute_dims(W))`` where ``W`` is a 2-D
  weight parameter: its activation ``x`` gets a site named after ``W``;
- a convolution, ``R.nn.conv2d(x, W)`` (NCHW / OIHW) with ``W`` a weight parameter: likewise;
- a batched matmul of two activations (rank >= 3, neither a weight: attention's ``Q @ K^T`` and
  ``P @ V``): both operands get a site, named ``bmm_<n>`` in graph order.

A site rewrites an input ``x`` to::

    x_site = R.call_pure_packed("tvmcomp.quant_site", x, R.prim_value(i), ...)  # identity

A site is an identity at run time; calibration registers ``tvmcomp.quant_site`` to observe the
values flowing through it, and realize replaces each site and its matmul by integer compute.
``skip`` patterns (fnmatch, on site names) keep matmuls in float: ``"*layer_0*"`` a layer's
Linears, ``"bmm_*"`` every attention matmul.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

QUANT_SITE = "tvmcomp.quant_site"
LINEAR_ROLES = ("T", "N")  # the Linear's weight is read transposed ([N, K], PyTorch's layout) or not
CONV_ROLE = "conv"  # the data of a conv2d whose weight is a parameter
BMM_ROLES = ("lhs", "rhs")  # the two activation operands of a batched matmul


@dataclass(frozen=True)
class QuantSite:
    index: int
    name: str  # the weight parameter's name (Linear, conv) or "bmm_<n>"
    role: str  # one of LINEAR_ROLES, CONV_ROLE or BMM_ROLES

    @property
    def is_linear(self) -> bool:
        return self.role in LINEAR_ROLES

    @property
    def transposed(self) -> bool:
        return self.role == "T"


def _is_op(expr, name: str) -> bool:
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


@mutator
class _Annotator(PyExprMutator):
    def __init__(self, mod, weight_names: set[str], skip: list[str]):
        super().__init__(mod)
        self.weight_names = weight_names
        self.skip = skip
        self.sites: list[QuantSite] = []
        self.batched = 0  # batched activation matmuls seen, quantized or not

    def _is_weight(self, expr, rank: int) -> bool:
        return isinstance(expr, relax.Var) and expr.name in self.weight_names and len(expr.ty.shape.values) == rank

    def _weight_of(self, rhs) -> tuple[str, bool] | None:
        """The weight parameter a matmul's right-hand side reads, and whether it is transposed."""
        transposed = False
        bound = self.lookup_binding(rhs) if isinstance(rhs, relax.Var) else None
        if bound is not None and _is_op(bound, "relax.permute_dims") and isinstance(bound.args[0], relax.Var):
            rhs, transposed = bound.args[0], True
        return (rhs.name, transposed) if self._is_weight(rhs, 2) else None

    def _mark(self, x, name: str, role: str):
        site = QuantSite(len(self.sites), name, role)
        self.sites.append(site)
        return self.builder_.emit(relax.op.call_pure_packed(QUANT_SITE, x, relax.prim_value(site.index), ty_args=x.ty))

    def _skipped(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in self.skip)

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if _is_op(call, "relax.nn.conv2d"):
            return self._conv2d(call)
        if not _is_op(call, "relax.matmul"):
            return call
        lhs, rhs = call.args
        found = self._weight_of(rhs)
        if found is not None:
            if self._skipped(found[0]):
                return call
            return _with_args(call, self._mark(lhs, found[0], "T" if found[1] else "N"), rhs)
        if min(len(lhs.ty.shape.values), len(rhs.ty.shape.values)) < 3:
            return call
        name = f"bmm_{self.batched}"
        self.batched += 1
        if self._skipped(name):
            return call
        return _with_args(call, self._mark(lhs, name, "lhs"), self._mark(rhs, name, "rhs"))

    def _conv2d(self, call):
        data, weight = call.args
        canonical = call.attrs.data_layout == "NCHW" and call.attrs.kernel_layout == "OIHW"
        if not canonical or not self._is_weight(weight, 4) or self._skipped(weight.name):
            return call
        return _with_args(call, self._mark(data, weight.name, CONV_ROLE), weight)


def _with_args(call, *args):
    return relax.Call(call.op, list(args), call.attrs, call.ty_args)


SITES_ATTR = "tvmcomp.quant_sites"  # on main: "<name>:<role>" for site 0, 1, ...


@tvm.transform.module_pass(opt_level=0, name="Annotate")
class Annotate:
    """Wrap the float inputs of every Linear, conv2d and batched activation matmul of ``main`` in quant sites.

    ``weight_names``: the names of main's weight parameters; ``skip``: fnmatch patterns of site
    names to keep in float (e.g. ``"*layer_0*"``, ``"bmm_*"``). The sites are listed in main's
    attribute ``tvmcomp.quant_sites`` (read them back with :func:`quant_sites`).
    """

    def __init__(self, weight_names, skip: list[str] | None = None):
        self.weight_names, self.skip = set(weight_names), list(skip or [])

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        annotator = _Annotator(mod, self.weight_names, self.skip)
        func = annotator.visit_expr(mod["main"])
        listing = [f"{site.name}:{site.role}" for site in annotator.sites]
        annotator.builder_.update_func(mod.get_global_var("main"), func.with_attr(SITES_ATTR, listing))
        return annotator.builder_.finalize()


def quant_sites(mod: tvm.IRModule) -> list[QuantSite]:
    listing = (mod["main"].attrs or {}).get(SITES_ATTR, [])
    return [QuantSite(i, *str(entry).rsplit(":", 1)) for i, entry in enumerate(listing)]
