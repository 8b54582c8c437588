"""Realize: replace each quant site and its op by integer compute, by the op rule its role names.

Each rule (:mod:`.ops`) says how its op is computed on integers: a Linear on the target's int8 or
int4 dot kernel (:mod:`.ops.linear`), a conv2d (:mod:`.ops.conv2d`), an attention matmul on the
int16 dot kernel (:mod:`.ops.attention`), an embedding lookup reading integer rows
(:mod:`.ops.embedding`). This module holds what they share: quantizing an operand to the codes a
kernel reads, padding rows to the kernel's register tiles, and the float dequantize epilogue::

    xq = R.quantize(x, s_x, z_x, axis=-1)                   # round half to even
    y  = R.astype(acc, "float32") * scale                   # scale per output channel

A rule that declines a marked op (None) leaves it float, on its unwrapped operands.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .annotate import QUANT_SITE, SITES_ATTR, integer_inputs, quant_sites, shared_inputs
from .dot_kernels import DotKernels
from .ops import OP_RULES, is_op, rule_for_role
from .ops.linear import balance_groups
from .schemes import QuantScheme, TensorQuant
from .token_steps import token_quantize
from ..tune.default_schedules import REGISTER_ROWS

_SIGNED_SHIFT = {("uint8", "int8"): -128, ("int8", "uint8"): 128}


@mutator
class _Realizer(PyExprMutator):
    """The rules' context: the pass's configuration (``params``, ``ranges``, ``scheme``, ``kernels``,
    ``balance``, ``wide_below_db``, ``probs``, ``skip``), the Linear sites whose inputs arrive as
    integer codes (``integer_inputs``), ``counts`` for what the options changed,
    and the emit helpers below."""

    def __init__(self, mod, params, ranges, scheme: QuantScheme, kernels: DotKernels, balance, wide_below_db,
                 probs, skip: list[str], rules, integer_only: bool):
        super().__init__(mod)
        self.params, self.ranges, self.scheme, self.kernels, self.balance = params, ranges, scheme, kernels, balance
        self.wide_below_db, self.probs, self.skip, self.rules = wide_below_db, probs, skip, rules
        self.counts = {"wide_linears": 0, "prob_matmuls": 0, "int4_linears": 0, "outlier_linears": 0,
                       "outlier_weights": 0}
        self.sites = {site.index: site for site in quant_sites(mod)}
        self.balance_groups = balance_groups(shared_inputs(mod), params, self.sites, scheme, kernels)
        self.integer_inputs = integer_inputs(mod, integer_only)
        self.codes = {}  # (tensor, shape, dtype, axis, steps, zero points) -> its codes (:meth:`quantize`)

    def visit_dataflow_block_(self, block):
        self.codes = {}  # codes are dataflow variables: reused within their own block only
        return super().visit_dataflow_block_(block)

    def _site_of(self, operand):
        """The quant site ``operand`` is bound to, and the float tensor it marks (else None)."""
        bound = self.lookup_binding(operand) if isinstance(operand, relax.Var) else None
        if bound is None or not is_op(bound, "relax.call_pure_packed"):
            return None
        if str(bound.args[0].global_symbol) != QUANT_SITE:
            return None
        return self.sites[int(bound.args[2].value)], bound.args[1]

    def quantize(self, x, site, dtype: str, zero_point, axis: int = -1, scale=None):
        """``x``'s codes; ``scale`` and ``zero_point``: one per channel along ``axis``, or one for all
        (default scale: the site's)."""
        width = int(x.ty.shape.values[axis])
        # Scale and zero point as per-channel vectors, not scalars: scalars get inlined into the kernel
        # as literals, so every recalibration would change the kernel and miss its tuning records.
        steps = np.ascontiguousarray(np.broadcast_to(
            np.float32(self.ranges[site.index].scale) if scale is None else scale, (width,)), np.float32)
        zeros = np.ascontiguousarray(np.broadcast_to(np.asarray(zero_point, np.int32), (width,)))
        # Q, K and V read one LayerNorm output, calibrated and balanced as one: their codes are computed once
        key = (*self._tensor_key(x), dtype, axis % len(x.ty.shape.values), steps.tobytes(), zeros.tobytes())
        if key not in self.codes:
            self.codes[key] = self.builder_.emit(relax.op.quantize(x, relax.const(steps), relax.const(zeros),
                                                                   axis=axis, out_dtype=dtype))
        return self.codes[key]

    def _tensor_key(self, x) -> tuple:
        """What ``x`` holds, for :meth:`quantize`'s reuse: each Linear reshapes its input for itself, so
        a reshape of ``y`` is known as (y, shape)."""
        bound = self.lookup_binding(x) if isinstance(x, relax.Var) else None
        if bound is not None and is_op(bound, "relax.reshape"):
            return bound.args[0], tuple(int(d) for d in x.ty.shape.values)
        return x, None

    def input_codes(self, x, site, activation: TensorQuant, dtype: str | None, steps, zero_point):
        """``x`` as ``activation`` codes stored in ``dtype`` (a dot kernel's; None: the codes' own), and
        the zero point, shifted as the codes are: uint8 codes become int8 by subtracting 128 from codes
        and zero point alike, which changes no value of ``xq - z_x``."""
        dtype = dtype or activation.dtype
        shift = _SIGNED_SHIFT.get((activation.dtype, dtype), 0)
        zero_point = np.asarray(zero_point, np.int64) + shift
        xq = self.quantize(x, site, dtype, zero_point, scale=steps)
        if activation.qmax + shift < np.iinfo(dtype).max:  # codes narrower than their dtype: clip to their range
            xq = self.builder_.emit(relax.op.clip(xq, activation.qmin + shift, activation.qmax + shift))
        return xq, zero_point

    def token_codes(self, x, activation: TensorQuant, dtype: str | None):
        """``x``'s codes with a step and zero point per token (row), computed at run time
        (:mod:`.token_steps`), stored in ``dtype`` and shifted as :meth:`input_codes` shifts them.
        Returns (codes, steps, zero points), the last two [..., M, 1] float32 and int32."""
        dtype = dtype or activation.dtype
        shift = _SIGNED_SHIFT.get((activation.dtype, dtype), 0)
        quantized = self.builder_.emit_te(lambda data: token_quantize(data, activation, dtype, shift), x,
                                          primfunc_name_hint="token_quantize")
        codes, step_zero = (self.builder_.emit(relax.TupleGetItem(quantized, i)) for i in range(2))
        axis, op = len(x.ty.shape.values) - 1, relax.op
        steps = self.builder_.emit(op.strided_slice(step_zero, axes=[axis], begin=[0], end=[1]))
        zeros = self.builder_.emit(op.astype(op.strided_slice(step_zero, axes=[axis], begin=[1], end=[2]), "int32"))
        return codes, steps, zeros

    def centered(self, x, site, axis: int = -1):
        """``xq - z_x`` as int16 (exact: |xq - z_x| <= 255), for operands whose zero-point terms
        cannot fold into constants: both operands of an attention matmul vary at run time, and a
        padded convolution's border windows see fewer codes."""
        zero_point = self.ranges[site.index].zero_point
        xq = self.quantize(x, site, self.scheme.activation.dtype, zero_point, axis)
        dims = [int(d) for d in x.ty.shape.values]
        axis %= len(dims)
        shape = [dims[axis]] + [1] * (len(dims) - 1 - axis)  # broadcasts along the quantized axis
        return self.builder_.emit(relax.op.subtract(relax.op.astype(xq, "int16"),
                                                    relax.const(np.full(shape, zero_point, np.int16))))

    @staticmethod
    def dequantize(acc, scale: np.ndarray):
        """int32 accumulator -> float32 output: ``astype(acc) * scale`` (a vector, see quantize)."""
        return relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(np.asarray(scale, np.float32)))

    def pad_rows(self, x, pad_k: int = 0):
        """``x[..., M, K]`` with M zero-padded to whole register tiles of the default packed-matmul
        schedule (:data:`~tvmcomp.tune.default_schedules.REGISTER_ROWS`; with ViT's 257 rows, a prime,
        it tiled one row at a time and reloaded every weight block per row: vit-s int8 went from 75 to
        55 ms padded), and K by ``pad_k``. Returns (x, M)."""
        dims = [int(d) for d in x.ty.shape.values]
        pad_m = 0 if dims[-2] % 2 == 0 else -dims[-2] % REGISTER_ROWS[0]  # even counts tile by 2 or 4 already
        if pad_m or pad_k:
            x = self.builder_.emit(relax.op.nn.pad(x, [0, 0] * (len(dims) - 2) + [0, pad_m, 0, pad_k]))
        return x, dims[-2]

    def cut_rows(self, acc, rows: int):
        """``acc`` with its rows cut back to ``rows`` (undoing :meth:`pad_rows`)."""
        if int(acc.ty.shape.values[-2]) == rows:
            return acc
        return self.builder_.emit(relax.op.strided_slice(acc, axes=[len(acc.ty.shape.values) - 2], begin=[0], end=[rows]))

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        operands = {position: marked for position, marked in enumerate(map(self._site_of, call.args))
                    if marked is not None}
        if operands:
            site, _ = next(iter(operands.values()))
            realized = rule_for_role(site.role, self.rules).realize(self, call, operands)
            if realized is not None:
                return realized
            args = [operands[i][1] if i in operands else arg for i, arg in enumerate(call.args)]
            return relax.Call(call.op, args, call.attrs, call.ty_args)
        for rule in self.rules:  # rules without sites (embedding lookups) match here
            if not rule.roles and any(is_op(call, op) for op in rule.ops):
                realized = rule.realize(self, call, {})
                if realized is not None:
                    return realized
        return call


@tvm.transform.module_pass(opt_level=0, name="Realize")
class Realize:
    """Rewrite every op of ``main`` that an op rule quantizes to integer compute (:mod:`.ops`).

    Ops whose shapes fit the target's dot-product ``kernels`` read their right-hand operand packed
    in its layout: Linear weights packed here, activations packed at run time. With ``balance``
    (an alpha, or ``"auto"``: chosen per Linear), Linear sites calibrated with channel ranges are
    balanced (:mod:`.balance`). With ``wide_below_db``, Linear sites estimated noisier than that in
    int8 get the scheme's wide activation codes instead (:mod:`.precision`). With ``probs``
    (:mod:`.attn_probs`), attention probabilities take that quantizer's codes; without, their
    site's uniform 8-bit ones. Embedding tables take the scheme's ``embedding`` codes unless a
    ``skip`` pattern (fnmatch) names them. ``rules``: the op rules to apply (default: every
    registered one). ``integer_only``: the encoder's float ops will become integer kernels
    (:mod:`.integer_only`), so every Linear input arrives as integer codes
    (:func:`~.annotate.integer_inputs`). After it runs, ``counts`` says how many Linears got wide
    inputs or int4 weights and how many matmuls the probabilities' own codes.
    """

    def __init__(self, params: dict, ranges: dict, scheme: QuantScheme, kernels: DotKernels = DotKernels(),
                 balance: str | float | None = None, wide_below_db: float | None = None, probs=None,
                 skip: list[str] | None = None, rules=None, integer_only: bool = False):
        self.params, self.ranges, self.scheme, self.kernels = params, ranges, scheme, kernels
        self.integer_only = integer_only
        self.balance, self.wide_below_db, self.probs, self.skip = balance, wide_below_db, probs, list(skip or [])
        self.rules = list(OP_RULES.values() if rules is None else rules)
        self.counts = {}

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        realizer = _Realizer(mod, self.params, self.ranges, self.scheme, self.kernels, self.balance,
                             self.wide_below_db, self.probs, self.skip, self.rules, self.integer_only)
        func = realizer.visit_expr(mod["main"]).without_attr(SITES_ATTR)
        realizer.builder_.update_func(mod.get_global_var("main"), func)
        self.counts = dict(realizer.counts)
        # the identity site calls are now unused (pure): dead code elimination drops them
        return relax.transform.DeadCodeElimination()(realizer.builder_.finalize())
