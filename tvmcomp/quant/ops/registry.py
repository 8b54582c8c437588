"""The op-rule registry: the ops quantization rewrites, one registered rule per op kind.

A rule says which operands of an op are quantized, with which role (:meth:`OpRule.match`: Annotate
wraps those operands in quant sites, which calibration observes), and how the op is computed on
integers (:meth:`OpRule.realize`: Realize calls it with each marked operand's site and float
tensor). Annotate and Realize only walk the registry; adding an op is registering a rule.

A site's role names its rule, so roles are unique across rules. A rule with no roles quantizes
nothing that varies at run time (an embedding lookup reads a weight table with integer ids):
Annotate leaves it alone, and Realize offers it every call of its ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax

from ...errors import TvmcompError


def is_op(expr, name: str) -> bool:
    """Whether ``expr`` is a call of the Relax op ``name`` (``"relax.matmul"``)."""
    return isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == name


@dataclass(frozen=True)
class Operand:
    """An operand ``call.args[position]`` a rule quantizes: its site's name and role."""

    position: int
    name: str
    role: str


class OpRule:
    """One op kind's quantization. ``ops``: the Relax ops it may match; ``roles``: its sites' roles."""

    name: str = ""
    ops: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()

    def match(self, graph, call) -> list[Operand] | None:
        """The operands of ``call`` to quantize, or None where this rule does not apply. ``graph``
        is the annotating mutator: ``lookup_binding``, ``is_weight(expr, rank)``, ``batched_name()``."""
        return None

    def realize(self, ctx, call, operands: dict) -> object | None:
        """The integer compute replacing ``call`` (a Relax expression), or None to leave the op float.
        ``operands``: position -> (site, float tensor) of each marked operand; ``ctx``: the realizing
        mutator (the pass's configuration and emit helpers, :class:`~tvmcomp.quant.realize.Realize`)."""
        raise NotImplementedError


OP_RULES: dict[str, OpRule] = {}


def register_op_rule(rule: OpRule) -> OpRule:
    """Add ``rule``; its name and roles must be new (a site's role says which rule realizes it)."""
    taken = {role: other.name for other in OP_RULES.values() for role in other.roles}
    clashes = [f"role '{role}' is {taken[role]}'s" for role in rule.roles if role in taken]
    if rule.name in OP_RULES or clashes or not rule.ops:
        why = "; ".join(clashes) or ("no ops to match" if rule.ops == () else "the name is taken")
        raise TvmcompError(f"op rule '{rule.name}' cannot be registered: {why}")
    OP_RULES[rule.name] = rule
    return rule


def rule_for_role(role: str, rules=None) -> OpRule:
    for rule in (OP_RULES.values() if rules is None else rules):
        if role in rule.roles:
            return rule
    raise TvmcompError(f"no op rule realizes quant sites of role '{role}' (registered: {', '.join(OP_RULES)})")
