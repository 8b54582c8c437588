"""Realize: replace each quant site and its matmul by integer compute.

For a site with activation scale ``s_x`` / zero point ``z_x`` and weight ``W`` ([K, N] after any
transpose), quantized per output channel to int8 ``Wq`` with scales ``s_w``::

    xq  = R.quantize(x, s_x, z_x, axis=-1)                 # uint8, round half to even
    acc = R.matmul(xq, Wq, out_dtype="int32")              # u8 x s8 -> s32
    y   = R.astype(acc - z_x * colsum(Wq), "float32") * (s_x * s_w)

``z_x * colsum(Wq)`` and ``s_x * s_w`` are constants computed here; FuseOps puts the subtract,
cast and multiply (and the bias add that follows) into the matmul kernel's epilogue. The float
weight is no longer used and is not bound into the library.

Given the target's dot-product kernel (:mod:`tvmcomp.quant.dot_kernels`), the matmul instead reads
``Wq`` pre-packed in that instruction's block layout, and ``xq`` is stored in the instruction's
activation dtype: uint8 codes become int8 by subtracting 128 from codes and zero point alike,
which changes no value of ``xq - z_x``.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .annotate import QUANT_SITE, SITES_ATTR, _is_op, quant_sites
from .dot_kernels import DotKernel, pack_weight, packed_matmul
from .schemes import QuantScheme

_SIGNED_SHIFT = {("uint8", "int8"): -128, ("int8", "uint8"): 128}


def quantize_weight(weight_kn: np.ndarray, scheme: QuantScheme) -> tuple[np.ndarray, np.ndarray]:
    """int8 weight [K, N] and per-output-channel scales [N]."""
    quant = scheme.weight
    scale, zero = quant.scale_zero_point(weight_kn.min(axis=0), weight_kn.max(axis=0))
    return quant.quantize(weight_kn, scale, zero), scale


@mutator
class _Realizer(PyExprMutator):
    def __init__(self, mod, params, ranges, scheme, kernel):
        super().__init__(mod)
        self.params, self.ranges, self.scheme, self.kernel = params, ranges, scheme, kernel
        self.sites = {site.index: site for site in quant_sites(mod)}

    def _site_of(self, lhs):
        bound = self.lookup_binding(lhs) if isinstance(lhs, relax.Var) else None
        if bound is None or not _is_op(bound, "relax.call_pure_packed"):
            return None, None
        if str(bound.args[0].global_symbol) != QUANT_SITE:
            return None, None
        return self.sites[int(bound.args[2].value)], bound.args[1]

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if not _is_op(call, "relax.matmul"):
            return call
        site, x = self._site_of(call.args[0])
        if site is None:
            return call
        weight = self.params[site.weight]
        weight_kn = weight.T if site.transposed else weight
        wq, w_scale = quantize_weight(np.ascontiguousarray(weight_kn, np.float32), self.scheme)
        act = self.ranges[site.index]
        channels, outputs = wq.shape
        packed = self.kernel is not None and self.kernel.fits(channels, outputs)
        dtype = self.kernel.activation_dtype if packed else self.scheme.activation.dtype
        zero_point = act.zero_point + _SIGNED_SHIFT.get((self.scheme.activation.dtype, dtype), 0)
        # Scale and zero point as per-channel vectors, not scalars: scalars get inlined into the kernel
        # as literals, so every recalibration would change the kernel and miss its tuning records.
        xq = self.builder_.emit(relax.op.quantize(
            x, relax.const(np.full(channels, act.scale, np.float32)), relax.const(np.full(channels, zero_point, np.int32)),
            axis=-1, out_dtype=dtype))
        if packed:
            acc = self.builder_.emit_te(packed_matmul, xq, relax.const(pack_weight(wq, self.kernel.weight_block)))
        else:
            acc = self.builder_.emit(relax.op.matmul(xq, relax.const(wq), out_dtype="int32"))
        correction = (zero_point * wq.astype(np.int64).sum(axis=0)).astype(np.int32)
        shifted = self.builder_.emit(relax.op.subtract(acc, relax.const(correction)))
        return relax.op.multiply(relax.op.astype(shifted, "float32"), relax.const((act.scale * w_scale).astype(np.float32)))


def realize(mod: tvm.IRModule, params: dict, ranges: dict, scheme: QuantScheme,
            kernel: DotKernel | None = None) -> tvm.IRModule:
    """Rewrite every annotated matmul of ``main`` to integer compute (see module docstring).

    With a ``kernel``, matmuls whose shapes fit its block read packed weights.
    """
    realizer = _Realizer(mod, params, ranges, scheme, kernel)
    func = realizer.visit_expr(mod["main"]).without_attr(SITES_ATTR)
    realizer.builder_.update_func(mod.get_global_var("main"), func)
    # the identity site calls are now unused (pure): dead code elimination drops them
    return relax.transform.DeadCodeElimination()(realizer.builder_.finalize())
