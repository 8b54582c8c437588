"""Op rules (:mod:`.registry`): importing this package registers the Linear, conv2d, attention and
embedding-lookup rules, in that order (Annotate tries them in it)."""

from . import linear, conv2d, attention, embedding  # noqa: F401,I001  (registration, in this order)
from .registry import OP_RULES, Operand, OpRule, is_op, register_op_rule, rule_for_role  # noqa: F401
