"""The Linear rule: ``R.matmul(x, W)`` or ``R.matmul(x, R.permute_dims(W))`` with ``W`` a 2-D
weight parameter. Its activation ``x`` is quantized (a site named after ``W``, role ``"N"``, or
``"T"`` where ``W`` is read transposed: PyTorch's [N, K]); ``W`` is quantized here, at realize.

With activation scale ``s_x`` / zero point ``z_x`` and ``W`` ([K, N] after any transpose)
quantized per output channel to int8 ``Wq`` with scales ``s_w``::

    xq  = R.quantize(x, s_x, z_x, axis=-1)                 # uint8, round half to even
    acc = R.matmul(xq, Wq, out_dtype="int32")              # u8 x s8 -> s32
    y   = R.astype(acc - z_x * colsum(Wq), "float32") * (s_x * s_w)

``z_x * colsum(Wq)`` and ``s_x * s_w`` are constants computed here; FuseOps puts the subtract,
cast and multiply (and the bias add that follows) into the matmul kernel's epilogue. The float
weight is no longer used and is not bound into the library.

Given the target's dot-product kernel (:mod:`tvmcomp.quant.dot_kernels`), the matmul instead reads
``Wq`` pre-packed in that instruction's block layout, and ``xq`` is stored in the instruction's
activation dtype: uint8 codes become int8 by subtracting 128 from codes and zero point alike,
which changes no value of ``xq - z_x``. A kernel that needs narrower weights (AVX2: 7 bits) gets
them: still stored as int8, quantized to [-63, 63].

With ``--wide-inputs`` (:mod:`..precision`), a Linear whose int8 output is estimated too noisy
quantizes its input to 12-bit codes in int16 and multiplies them with its int8 weights widened to
int16 on the target's int16 dot kernel (packed as an attention operand is), same formula. In the
4-bit schemes such a Linear takes int8 weights per channel too: its inputs' outliers are what
4-bit groups hold worst once balancing moves them into the weights.

With channel balancing (:mod:`..balance`), ``s_x`` is a vector ``a * f`` over input channels,
``z_x`` a vector too, and the weight quantized is ``f[:, None] * W``; the correction is
``z_x @ Wq`` and the rescale ``a * s_w``.

With the scheme's ``weight_outliers`` (int8's: 8), the few weights past that many times their
column's rms leave ``W`` before it is balanced and quantized (:mod:`..outliers`), so that they do
not set their column's step, and return as int16 codes ``B`` on that step, added in the same
kernel after its reduction, for the R input channels that hold them::

    acc = xq @ Wq + sum_r xq[..., k_r] * B[k_r]            # the correction: z_x @ (Wq + B)

With per-token steps (``--per-token``, :mod:`..token_steps`), one kernel computes each row's step
``s_r`` and zero point ``z_r`` from its min and max at run time, and its codes; the correction and
the rescale take them per row (neither balanced nor widened: each token's step already follows
its own outliers)::

    y = R.astype(acc - z_r * colsum(Wq), "float32") * s_w * s_r

With 4-bit weights in groups (``w4a8``), ``W`` is quantized with one scale per output channel and
group of ``G`` input channels, ``s_w[g, n]``, and stored two codes per byte in the int4 dot
kernel's block layout; the kernel sums each group in int32 and applies its scale::

    acc_g = sum_{k in g} xq_k * Wq[k, n]                   # int32, on the int8 dot instruction
    y     = sum_g float(acc_g) * (s_x * s_w[g, n]) - sum_g s_x * s_w[g, n] * sum_{k in g} z_x Wq[k, n]

the last term a constant per output channel (per token, ``s_r`` leaves the group scales and
multiplies the sum, and the last term is ``s_r z_r`` times a constant per output channel). A Linear
the kernel does not fit keeps int8 weights.
A piecewise grid (``pwlq4``, :mod:`..grids`) has two code planes, centre and tail, each with its
own scales: the Linear is that sum twice over the same ``xq``, once per plane, added.

Weight-only (float activations, ``w4``): the codes, packed in 16 x 2 blocks, are decoded with
their scales a column panel at a time inside the float matmul kernel
(:func:`~tvmcomp.quant.dot_kernels.int4_decoded_matmul`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from tvm import relax

from ..balance import linear_input_steps
from ..dot_kernels import (WEIGHT_ONLY_BLOCK, DotKernel, DotKernels, int4_decoded_matmul, int4_group_matmul,
                           integer_matmul, pack_int4_weight, pack_weight, packed_matmul)
from ..gptq import gptq_round
from ..grids import quantize_weight
from ..outliers import outlier_codes, padded_outlier_rows, split_outliers
from ..precision import output_sqnr_db
from ..schemes import Granularity, QuantScheme, TensorQuant
from .registry import Operand, OpRule, is_op, register_op_rule

LINEAR_ROLES = ("T", "N")  # the weight is read transposed ([N, K], PyTorch's layout) or not


def weight_quant_for(scheme: QuantScheme, kernel: DotKernel | None) -> TensorQuant:
    """How weights are quantized for a matmul realized with the int8 ``kernel`` (None: a plain
    matmul). A scheme's 4-bit groups are for its int4 kernel: the other Linears and convolutions
    keep int8 weights per channel."""
    quant = scheme.weight
    if quant.granularity is Granularity.PER_GROUP:
        quant = replace(quant, bits=8, granularity=Granularity.PER_CHANNEL, group_size=None, regions=1)
    if kernel is None or kernel.weight_bits >= quant.bits:
        return quant
    return replace(quant, bits=kernel.weight_bits)


def int4_fits(kernels: DotKernels, scheme: QuantScheme, channels: int, outputs: int) -> bool:
    """Whether a [channels, outputs] Linear takes the scheme's 4-bit groups on the int4 dot kernel."""
    kernel, quant = kernels.int4, scheme.weight
    return (quant.granularity is Granularity.PER_GROUP and kernel is not None and kernel.fits(channels, outputs)
            and channels % quant.group_size == 0)


def weight_quant_of(scheme: QuantScheme, kernels: DotKernels, channels: int, outputs: int) -> TensorQuant:
    """How realize quantizes the weight of a [channels, outputs] Linear with the scheme's activations
    (not wide ones), on the target's ``kernels``: what calibration's step search models too."""
    if int4_fits(kernels, scheme, channels, outputs):
        return scheme.weight
    kernel = kernels.linear
    return weight_quant_for(scheme, kernel if kernel is not None and kernel.fits(channels, outputs) else None)


def linear_weight(params: dict, site) -> np.ndarray:
    """A Linear site's weight as [K, N] float32."""
    weight = params[site.name]
    return np.ascontiguousarray(weight.T if site.transposed else weight, np.float32)


def balance_groups(shared: dict[int, tuple[int, ...]], params: dict, sites: dict, scheme: QuantScheme,
                   kernels: DotKernels) -> dict[int, tuple[int, ...]]:
    """The Linears whose one input is balanced and stepped as one, by site: of the Linears that read
    one tensor (``shared``, :func:`~..annotate.shared_inputs`), those whose weights quantize alike.
    SmoothQuant balances Q, K and V with one set of factors from their weights side by side, so one
    quantize serves all three; factors of their own made pot8 quantize MiniLM's Q/K/V input three times.
    ``sites``: by index."""
    def weight_quant(index):
        site = sites[index]
        channels, outputs = params[site.name].shape[::-1] if site.transposed else params[site.name].shape
        return weight_quant_of(scheme, kernels, channels, outputs)

    return {index: tuple(other for other in group if weight_quant(other) == weight_quant(index))
            for index, group in shared.items()}


def balance_weight(params: dict, sites: dict, group: tuple[int, ...], outliers: float | None) -> np.ndarray:
    """The [K, sum N] weight a group's input is balanced and stepped for: its Linears' side by side,
    without the weights past ``outliers`` times their column's rms (the scheme's ``weight_outliers``),
    which are split off (:mod:`..outliers`)."""
    return np.concatenate([split_outliers(linear_weight(params, sites[index]), outliers).dense for index in group],
                          axis=1)


class Linear(OpRule):
    name, ops, roles = "linear", ("relax.matmul",), LINEAR_ROLES

    def match(self, graph, call):
        lhs, rhs = call.args
        transposed = False
        bound = graph.lookup_binding(rhs) if isinstance(rhs, relax.Var) else None
        if bound is not None and is_op(bound, "relax.permute_dims") and isinstance(bound.args[0], relax.Var):
            rhs, transposed = bound.args[0], True
        if not graph.is_weight(rhs, 2):
            return None
        return [Operand(0, rhs.name, "T" if transposed else "N")]

    def realize(self, ctx, call, operands):
        site, x = operands[0]
        return self.linear(ctx, site, x, linear_weight(ctx.params, site))

    def linear(self, ctx, site, x, weight_kn: np.ndarray, split_outliers_: bool = True):
        """``x @ weight_kn`` ([K, N]) on integers, ``x`` calibrated at ``site`` (convolutions run as
        Linears call this too). The scheme's outlier weights (:mod:`..outliers`) are split off unless
        ``split_outliers_`` is False."""
        scheme = ctx.scheme
        if scheme.activation is None:
            return _weight_only(ctx, site, x, weight_kn)
        channels, outputs = weight_kn.shape
        # (the 4-bit schemes keep every weight in their grid)
        split = split_outliers(weight_kn, scheme.weight_outliers if split_outliers_ else None)
        wide = _wide(ctx, site, split.dense)  # 12-bit codes in int16 and int8 weights, on the int16 kernel
        int4 = None if wide else _int4(ctx, site, x, weight_kn)
        if int4 is not None:
            return int4
        if wide:
            activation, kernel, name = scheme.wide_activation, ctx.kernels.batched, "packed_int16_matmul"
        else:
            activation, kernel, name = scheme.linear_input, ctx.kernels.linear, "packed_int8_matmul"
        packed = kernel is not None and kernel.fits(channels, outputs)
        weight_quant = weight_quant_for(scheme, kernel if packed else None)  # weight_quant_of's, for this kernel
        codes = _input_codes(ctx, site, x, split.dense, weight_quant, activation,
                             kernel.activation_dtype if packed else None)
        wq, w_scale = _weight_codes(ctx, site, codes.factors, split.dense, weight_quant)
        outlier_channels, outlier_rows = (), None
        if split.outliers:
            found = outlier_codes(split.sparse, codes.factors, w_scale, weight_quant.qmax,
                                  activation.qmax - activation.qmin)
            if found is None:  # their codes could overflow int16 or the int32 accumulator: they stay in the weight
                return self.linear(ctx, site, x, weight_kn, split_outliers_=False)
            outlier_channels, outlier_rows = found
            ctx.counts["outlier_linears"] += 1
            ctx.counts["outlier_weights"] += split.outliers
        ctx.counts["wide_linears"] += wide
        xq, rows = ctx.pad_rows(codes.codes) if packed else (codes.codes, int(codes.codes.ty.shape.values[-2]))
        acc = _integer_matmul(ctx, xq, wq.astype(activation.dtype) if activation.bits > 8 else wq,  # int16 pairs
                              kernel if packed else None, name, outlier_channels, outlier_rows)
        if outlier_channels:  # the zero-point correction and the column sums are those of Dq + B
            wq = wq.astype(np.int64)
            wq[list(outlier_channels)] += outlier_rows
        acc = ctx.cut_rows(acc, rows)
        if codes.row_steps is not None:  # z_r * colsum(Wq): the zero point of each token times each column's sum
            colsum = relax.const(wq.astype(np.int64).sum(axis=0).astype(np.int32))
            shifted = ctx.builder_.emit(relax.op.subtract(acc, relax.op.multiply(codes.zero_point, colsum)))
            return relax.op.multiply(ctx.builder_.emit(ctx.dequantize(shifted, w_scale)), codes.row_steps)
        # sum_j z_j Wq_jn: one zero point for all channels, or one per channel (balanced)
        correction = (np.broadcast_to(codes.zero_point, (channels,)) @ wq.astype(np.int64)).astype(np.int32)
        shifted = ctx.builder_.emit(relax.op.subtract(acc, relax.const(correction)))
        return ctx.dequantize(shifted, np.float32(codes.step) * w_scale)


def _integer_matmul(ctx, xq, wq: np.ndarray, kernel: DotKernel | None, name: str, outlier_channels: tuple[int, ...],
                    outlier_rows: np.ndarray | None):
    """``xq @ wq`` accumulated in int32, plus the outliers' codes ``outlier_rows`` on ``outlier_channels``
    (:mod:`..outliers`): on ``kernel`` with ``wq`` packed for it, else a plain matmul."""
    outliers = {}
    if outlier_channels:
        padded_channels, padded_rows = padded_outlier_rows(outlier_channels, outlier_rows)
        gathered = ctx.builder_.emit(relax.op.take(xq, relax.const(padded_channels), axis=-1))
        outliers = {"outlier_inputs": gathered, "outlier_codes": relax.const(padded_rows)}
    if kernel is not None:
        return ctx.builder_.emit_te(packed_matmul, xq, relax.const(pack_weight(wq, kernel.weight_block)), name=name,
                                    **outliers)
    if outlier_channels:
        return ctx.builder_.emit_te(integer_matmul, xq, relax.const(wq), **outliers)
    return ctx.builder_.emit(relax.op.matmul(xq, relax.const(wq), out_dtype="int32"))


@dataclass
class InputCodes:
    """A Linear input's codes, and how to read them back: ``step * (codes - zero_point)`` per input
    channel (balanced: ``step / factors``); with per-token steps, ``step`` is 1, the step and zero
    point of each row are tensors computed at run time (``row_steps``, ``zero_point``: [..., M, 1])."""

    codes: relax.Expr
    step: np.float32
    zero_point: np.ndarray | relax.Expr
    factors: np.ndarray
    row_steps: relax.Expr | None = None


def _input_codes(ctx, site, x, weight_kn: np.ndarray, weight_quant: TensorQuant, activation: TensorQuant,
                 dtype: str | None) -> InputCodes:
    """``x``'s codes for a Linear: per-token steps at run time, or the site's calibrated step, balanced."""
    if activation.granularity is Granularity.PER_TOKEN:
        xq, row_steps, zero_points = ctx.token_codes(x, activation, dtype)
        return InputCodes(xq, np.float32(1.0), zero_points, np.ones(len(weight_kn), np.float32), row_steps)
    step, steps, zero_point, factors = _balanced(ctx, site, weight_kn, weight_quant, activation)
    xq, zero_point = ctx.input_codes(x, site, activation, dtype, steps, zero_point)
    return InputCodes(xq, step, zero_point, factors)


def _balanced(ctx, site, weight_kn: np.ndarray, weight_quant: TensorQuant, activation: TensorQuant):
    """The input steps of :func:`~..balance.linear_input_steps`, for the weights of the Linears
    balanced with this one (:func:`balance_groups`)."""
    group = ctx.balance_groups.get(site.index, ())
    if len(group) > 1:
        weight_kn = balance_weight(ctx.params, ctx.sites, group, ctx.scheme.weight_outliers)
    return linear_input_steps(ctx.ranges[site.index], weight_kn, weight_quant.qmax, activation, ctx.balance,
                              calibrated=activation == ctx.scheme.activation,
                              integer_input=site.index in ctx.integer_inputs)


def _weight_codes(ctx, site, factors: np.ndarray, weight_kn: np.ndarray, weight_quant: TensorQuant):
    """Codes and scales of the balanced weight ``factors[:, None] * W``: rounded to nearest, or by
    GPTQ (:mod:`..gptq`) where the scheme says so and calibration kept the inputs' ``sum x^T x``
    (for the balanced inputs ``x / f``: ``H / (f f^T)``)."""
    gram = ctx.ranges[site.index].input_gram
    balanced = factors[:, None] * weight_kn
    if ctx.scheme.weight_rounding != "gptq" or gram is None or gram.shape[0] != len(weight_kn):
        return quantize_weight(balanced, weight_quant)
    return gptq_round(balanced, gram / np.outer(factors, factors), weight_quant)


def _wide(ctx, site, weight_kn: np.ndarray) -> bool:
    """Whether this Linear's int8 output is estimated noisier than ``wide_below_db`` (:mod:`..precision`)."""
    scheme, act = ctx.scheme, ctx.ranges[site.index]
    if ctx.wide_below_db is None or act.channel_rms is None or scheme.wide_activation is None:
        return False
    kernel = ctx.kernels.linear
    # the int8 weights this Linear would otherwise get: the int8 kernel's bits where it fits the shape
    weight_quant = weight_quant_for(scheme, kernel if kernel is not None and kernel.fits(*weight_kn.shape) else None)
    *_, factors = _balanced(ctx, site, weight_kn, weight_quant, scheme.activation)
    return output_sqnr_db(act, weight_kn, scheme.activation, weight_quant.qmax, factors) < ctx.wide_below_db


def _int4(ctx, site, x, weight_kn: np.ndarray):
    """``x @ W`` with 4-bit weights in groups on the int4 dot kernel (module docstring), or None
    where the kernel does not fit the shape (that Linear keeps int8 weights)."""
    kernel, weight_quant = ctx.kernels.int4, ctx.scheme.weight
    channels, outputs = weight_kn.shape
    if not int4_fits(ctx.kernels, ctx.scheme, channels, outputs):
        return None
    ctx.counts["int4_linears"] += 1
    inputs = _input_codes(ctx, site, x, weight_kn, weight_quant, ctx.scheme.linear_input, kernel.activation_dtype)
    wq, w_scale = _weight_codes(ctx, site, inputs.factors, weight_kn, weight_quant)  # w_scale: [groups, N]
    xq, rows = ctx.pad_rows(inputs.codes)
    planes = zip(wq, w_scale) if weight_quant.regions > 1 else [(wq, w_scale)]
    per_token = inputs.row_steps is not None  # its zero point multiplies the terms at run time: sum them for z = 1
    zero_point = 1 if per_token else inputs.zero_point
    y, correction = None, np.zeros(outputs)
    for codes, plane_scale in planes:  # a piecewise grid's centre and tail: one accumulation each
        scale = np.float32(inputs.step) * plane_scale
        packed = relax.const(pack_int4_weight(codes, kernel.weight_block))
        plane = ctx.builder_.emit_te(int4_group_matmul, xq, packed, relax.const(scale), weight_quant.group_size)
        y = plane if y is None else ctx.builder_.emit(relax.op.add(y, plane))
        # sum_g scale[g, n] * sum_{k in g} z_k Wq[k, n]: the zero-point terms, one constant per output
        zero_terms = (np.broadcast_to(zero_point, (channels,))[:, None] * codes.astype(np.int64))
        correction = correction + (zero_terms.reshape(scale.shape[0], -1, outputs).sum(axis=1)
                                   * scale.astype(np.float64)).sum(0)
    correction = relax.const(correction.astype(np.float32))
    if not per_token:
        return relax.op.subtract(ctx.cut_rows(y, rows), correction)
    zero_terms = relax.op.multiply(relax.op.astype(inputs.zero_point, "float32"), correction)
    return relax.op.multiply(ctx.builder_.emit(relax.op.subtract(ctx.cut_rows(y, rows), zero_terms)), inputs.row_steps)


def _weight_only(ctx, site, x, weight_kn: np.ndarray):
    """``x @ W`` on float ``x`` with the 4-bit codes decoded in the loop (module docstring); a
    Linear whose shape the kernel does not take stays float."""
    channels, outputs = weight_kn.shape
    quant = ctx.scheme.weight
    if channels % quant.group_size or outputs % WEIGHT_ONLY_BLOCK[0]:
        return relax.op.matmul(x, relax.const(weight_kn))
    ctx.counts["int4_linears"] += 1
    wq, w_scale = _weight_codes(ctx, site, np.ones(channels, np.float32), weight_kn, quant)
    x, rows = ctx.pad_rows(x)
    y = ctx.builder_.emit_te(int4_decoded_matmul, x, relax.const(pack_int4_weight(wq, WEIGHT_ONLY_BLOCK)),
                             relax.const(w_scale), quant.group_size)
    return ctx.cut_rows(y, rows)


LINEAR = register_op_rule(Linear())
