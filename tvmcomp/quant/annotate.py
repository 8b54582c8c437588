"""Annotate: mark which ops are quantized, by wrapping their float inputs in quant sites.

Which ops, and which of their operands, the op rules say (:mod:`.ops`): a Linear's activation
(a site named after its weight), a conv2d's data (likewise), both operands of an attention matmul
(``bmm_<n>`` in graph order: ``Q @ K^T``'s as ``lhs`` / ``rhs``, ``P @ V``'s as ``probs`` /
``values``). A site rewrites an input ``x`` to::

    x_site = R.call_pure_packed("tvmcomp.quant_site", x, R.prim_value(i), ...)  # identity

A site is an identity; calibration observes the values flowing through it (made outputs of the
graph, :class:`~tvmcomp.quant.calibrate.SitesAsOutputs`), and realize replaces each site and its op
by integer compute, by the rule its role names. ``skip`` patterns (fnmatch, on site names) keep ops in float:
``"*layer_0*"`` a layer's Linears, ``"bmm_*"`` every attention matmul.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .integer_chain import LAYOUT_OPS
from .ops import OP_RULES, is_op
from .ops.linear import LINEAR_ROLES

QUANT_SITE = "tvmcomp.quant_site"


@dataclass(frozen=True)
class QuantSite:
    index: int
    name: str  # the weight parameter's name (Linear, conv) or "bmm_<n>"
    role: str  # one of its op rule's roles (:mod:`.ops`)

    @property
    def is_linear(self) -> bool:
        return self.role in LINEAR_ROLES

    @property
    def transposed(self) -> bool:
        return self.role == "T"


@mutator
class _Annotator(PyExprMutator):
    def __init__(self, mod, weight_names: set[str], skip: list[str], rules):
        super().__init__(mod)
        self.weight_names, self.skip, self.rules = weight_names, skip, rules
        self.sites: list[QuantSite] = []
        self.batched = 0  # attention matmuls matched, quantized or not

    def is_weight(self, expr, rank: int) -> bool:
        return isinstance(expr, relax.Var) and expr.name in self.weight_names and len(expr.ty.shape.values) == rank

    def batched_name(self) -> str:
        self.batched += 1
        return f"bmm_{self.batched - 1}"

    def _mark(self, x, name: str, role: str):
        site = QuantSite(len(self.sites), name, role)
        self.sites.append(site)
        return self.builder_.emit(relax.op.call_pure_packed(QUANT_SITE, x, relax.prim_value(site.index), ty_args=x.ty))

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        for rule in self.rules:
            operands = rule.match(self, call) if rule.roles and any(is_op(call, op) for op in rule.ops) else None
            if operands is None:
                continue
            if any(fnmatch.fnmatch(operand.name, pattern) for operand in operands for pattern in self.skip):
                return call
            args = list(call.args)
            for operand in operands:
                args[operand.position] = self._mark(args[operand.position], operand.name, operand.role)
            return relax.Call(call.op, args, call.attrs, call.ty_args)
        return call


SITES_ATTR = "tvmcomp.quant_sites"  # on main: "<name>:<role>" for site 0, 1, ...


@tvm.transform.module_pass(opt_level=0, name="Annotate")
class Annotate:
    """Wrap the float operands that the op rules quantize (:mod:`.ops`) in quant sites, in ``main``.

    ``weight_names``: the names of main's weight parameters; ``skip``: fnmatch patterns of site
    names to keep in float (e.g. ``"*layer_0*"``, ``"bmm_*"``); ``rules``: the op rules to apply
    (default: every registered one). The sites are listed in main's attribute
    ``tvmcomp.quant_sites`` (read them back with :func:`quant_sites`).
    """

    def __init__(self, weight_names, skip: list[str] | None = None, rules=None):
        self.weight_names, self.skip = set(weight_names), list(skip or [])
        self.rules = list(OP_RULES.values() if rules is None else rules)

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        annotator = _Annotator(mod, self.weight_names, self.skip, self.rules)
        func = annotator.visit_expr(mod["main"])
        listing = [f"{site.name}:{site.role}" for site in annotator.sites]
        annotator.builder_.update_func(mod.get_global_var("main"), func.with_attr(SITES_ATTR, listing))
        return annotator.builder_.finalize()


def quant_sites(mod: tvm.IRModule) -> list[QuantSite]:
    listing = (mod["main"].attrs or {}).get(SITES_ATTR, [])
    return [QuantSite(i, *str(entry).rsplit(":", 1)) for i, entry in enumerate(listing)]


def shared_inputs(mod: tvm.IRModule) -> dict[int, tuple[int, ...]]:
    """Each Linear site of ``main`` with the Linear sites that mark the same tensor (or reshapes of it
    to one shape), in site order, itself included: Q, K and V read one LayerNorm output."""
    bound = {binding.var: binding.value for block in mod["main"].body.blocks for binding in block.bindings}
    sites = quant_sites(mod)
    by_tensor: dict[tuple, list[int]] = {}
    for value in bound.values():
        if not (is_op(value, "relax.call_pure_packed") and str(value.args[0].global_symbol) == QUANT_SITE):
            continue
        site = sites[int(value.args[2].value)]
        if site.is_linear:
            x = value.args[1]
            source = bound.get(x) if isinstance(x, relax.Var) else None
            key = ((source.args[0], tuple(int(d) for d in x.ty.shape.values))
                   if source is not None and is_op(source, "relax.reshape") else (x, None))
            by_tensor.setdefault(key, []).append(site.index)
    return {index: tuple(group) for group in by_tensor.values() for index in group}


_SCALINGS = ("relax.multiply", "relax.divide", "relax.add")  # by a constant or a parameter (a bias)


def integer_inputs(mod: tvm.IRModule, integer_only: bool = False) -> frozenset[int]:
    """The Linear sites of ``main`` whose input reaches them as another quantized op's integer codes
    once requantization is integer (:mod:`.integer_chain`): fed by a quantized op's output through
    reshapes, permutes, scalings by a constant and a bias only (P @ V into the attention output
    projection). With ``integer_only``, every Linear site: the LayerNorms and GELUs before them
    become integer kernels too. A power-of-two scheme keeps these inputs' per-channel steps powers
    of two, for shifts; the others it quantizes from float (:func:`~.balance.linear_input_steps`)."""
    sites = quant_sites(mod)
    if integer_only:
        return frozenset(site.index for site in sites if site.is_linear)
    bound = {binding.var: binding.value for block in mod["main"].body.blocks for binding in block.bindings}

    def site_of(value):
        if is_op(value, "relax.call_pure_packed") and str(value.args[0].global_symbol) == QUANT_SITE:
            return sites[int(value.args[2].value)]
        return None

    def is_given(arg) -> bool:  # a constant or one of main's parameters
        return isinstance(arg, tvm.ir.expr.Constant) or isinstance(arg, relax.Var) and arg not in bound

    def producer(x):
        """The call computing ``x``, below layout calls and scalings."""
        call = bound.get(x)
        while call is not None:
            if any(is_op(call, op) for op in LAYOUT_OPS):
                below = call.args[0]
            elif any(is_op(call, op) for op in _SCALINGS) and any(map(is_given, call.args)):
                below = next((arg for arg in call.args if not is_given(arg)), None)
            else:
                return call
            call = bound.get(below)
        return None

    chained = set()
    for value in bound.values():
        site = site_of(value)
        fed_by = producer(value.args[1]) if site is not None and site.is_linear else None
        if fed_by is not None and any(site_of(bound.get(arg)) is not None for arg in fed_by.args):
            chained.add(site.index)
    return frozenset(chained)
