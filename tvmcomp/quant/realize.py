"""Realize: replace each quant site and its matmul by integer compute.

For a Linear site with activation scale ``s_x`` / zero point ``z_x`` and weight ``W`` ([K, N] after any
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
which changes no value of ``xq - z_x``. A kernel that needs narrower weights (AVX2: 7 bits) gets
them: still stored as int8, quantized to [-63, 63].

With ``--wide-inputs`` (:mod:`.precision`), a Linear whose int8 output is estimated too noisy
quantizes its input to 12-bit codes in int16 and multiplies them with its int8 weights widened to
int16 on the target's int16 dot kernel (packed as an attention operand is), same formula.

With channel balancing (:mod:`.balance`), a Linear site's ``s_x`` is a vector ``a * f`` over input
channels, ``z_x`` a vector too, and the weight quantized is ``f[:, None] * W``; the correction is
``z_x @ Wq`` and the rescale ``a * s_w``.

With 4-bit weights in groups (``w4a8``), a Linear's weight is quantized with one scale per output
channel and group of ``G`` input channels, ``s_w[g, n]``, and stored two codes per byte in the
int4 dot kernel's block layout; the kernel sums each group in int32 and applies its scale::

    acc_g = sum_{k in g} xq_k * Wq[k, n]                   # int32, on the int8 dot instruction
    y     = sum_g float(acc_g) * (s_x * s_w[g, n]) - sum_g s_x * s_w[g, n] * sum_{k in g} z_x Wq[k, n]

the last term a constant per output channel. A Linear the kernel does not fit keeps int8 weights.
A piecewise grid (``pwlq4``, :mod:`.grids`) has two code planes, centre and tail, each with its
own scales: the Linear is that sum twice over the same ``xq``, once per plane, added.
Weight-only (float activations, ``w4``): the codes, packed in 16 x 2 blocks, are decoded with
their scales a column panel at a time inside the float matmul kernel
(:func:`~tvmcomp.quant.dot_kernels.int4_decoded_matmul`).

A batched matmul of two activations ``a @ b`` (attention) has a site on each operand; both vary at
run time, so nothing folds into a constant::

    ac  = R.astype(R.quantize(a, s_a, z_a), "int16") - z_a   # exact: |code - z| <= 255
    acc = R.matmul(ac, bc, out_dtype="int32")               # bc likewise from b
    y   = R.astype(acc, "float32") * (s_a * s_b)

Given the target's int16 dot-product kernel (AVX2 ``vpmaddwd``: s16 x s16 pairs summed to s32,
exact for these 9-bit values), ``bc`` is packed in its block layout at run time and the matmul
reads it there, as a Linear reads its packed weight.

A conv2d site does the same with the data centered in int16 (zero padding then pads real zeros)
and its weight quantized per output channel, as an int16 constant::

    acc = R.nn.conv2d(xc, Wq, out_dtype="int32");  y = R.astype(acc, "float32") * (s_x * s_w)
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from .annotate import CONV_ROLE, QUANT_SITE, SITES_ATTR, _is_op, quant_sites
from .balance import linear_input_steps
from .dot_kernels import (WEIGHT_ONLY_BLOCK, DotKernel, DotKernels, int4_decoded_matmul, int4_group_matmul,
                          pack_int4_weight, pack_operand, pack_weight, packed_matmul)
from .gptq import gptq_round
from .grids import round_to_grid
from .precision import output_sqnr_db
from .schemes import Granularity, QuantScheme, TensorQuant
from ..tune.default_schedules import REGISTER_ROWS

# ops between a softmax and the matmul it feeds that keep every value a probability
_PROBABILITY_PRESERVING = ("relax.reshape", "relax.broadcast_to", "relax.permute_dims", "relax.expand_dims",
                           "relax.squeeze", "relax.where")
_SIGNED_SHIFT = {("uint8", "int8"): -128, ("int8", "uint8"): 128}


def quantize_weight(weight: np.ndarray, quant: TensorQuant, channel_axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Integer weight and its scales: one per output channel along ``channel_axis`` (-1: Linear's
    [K, N]; 0: conv2d's OIHW), or with per-group granularity (Linears) one per group of
    ``group_size`` rows of [K, N] and output channel, as [K / group_size, N] (codes and scales with a
    leading plane axis for a piecewise grid, :mod:`.grids`)."""
    if quant.granularity is Granularity.PER_GROUP:
        return round_to_grid(weight, quant)
    reduced = tuple(a for a in range(weight.ndim) if a != channel_axis % weight.ndim)
    scale, zero = quant.scale_zero_point(weight.min(axis=reduced), weight.max(axis=reduced))
    shape = [-1 if a == channel_axis % weight.ndim else 1 for a in range(weight.ndim)]
    return quant.quantize(weight, scale.reshape(shape), zero.reshape(shape)), scale


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


def _dequantize(acc, scale: np.ndarray):
    """int32 accumulator -> float32 output: ``astype(acc) * scale`` (a vector, see _quantize)."""
    return relax.op.multiply(relax.op.astype(acc, "float32"), relax.const(np.asarray(scale, np.float32)))


@mutator
class _Realizer(PyExprMutator):
    def __init__(self, mod, params, ranges, scheme, kernels: DotKernels, balance: str | float | None,
                 wide_below_db: float | None, probs):
        super().__init__(mod)
        self.params, self.ranges, self.scheme, self.balance = params, ranges, scheme, balance
        self.wide_below_db, self.probs = wide_below_db, probs
        self.counts = {"wide_linears": 0, "prob_matmuls": 0, "int4_linears": 0}  # what the options changed
        self.kernel, self.batched_kernel, self.int4_kernel = kernels.linear, kernels.batched, kernels.int4
        self.sites = {site.index: site for site in quant_sites(mod)}

    def _site_of(self, operand):
        """The quant site ``operand`` is bound to, and the float tensor it marks (else None, None)."""
        bound = self.lookup_binding(operand) if isinstance(operand, relax.Var) else None
        if bound is None or not _is_op(bound, "relax.call_pure_packed"):
            return None, None
        if str(bound.args[0].global_symbol) != QUANT_SITE:
            return None, None
        return self.sites[int(bound.args[2].value)], bound.args[1]

    def _quantize(self, x, site, dtype: str, zero_point, axis: int = -1, scale=None):
        """``scale`` and ``zero_point``: one per channel along ``axis``, or one for all (default scale: the site's)."""
        width = int(x.ty.shape.values[axis])
        # Scale and zero point as per-channel vectors, not scalars: scalars get inlined into the kernel
        # as literals, so every recalibration would change the kernel and miss its tuning records.
        steps = np.broadcast_to(np.float32(self.ranges[site.index].scale) if scale is None else scale, (width,))
        zeros = np.broadcast_to(np.asarray(zero_point, np.int32), (width,))
        return self.builder_.emit(relax.op.quantize(
            x, relax.const(np.ascontiguousarray(steps, np.float32)), relax.const(np.ascontiguousarray(zeros)),
            axis=axis, out_dtype=dtype))

    def _balanced(self, act, weight_kn: np.ndarray, weight_quant: TensorQuant, activation: TensorQuant):
        return linear_input_steps(act, weight_kn, weight_quant.qmax, activation, self.balance,
                                  calibrated=activation == self.scheme.activation)

    def _weight_codes(self, site, factors: np.ndarray, weight_kn: np.ndarray, weight_quant: TensorQuant):
        """Codes and scales of the balanced weight ``factors[:, None] * W``: rounded to nearest, or by
        GPTQ (:mod:`.gptq`) where the scheme says so and calibration kept the inputs' ``sum x^T x``
        (for the balanced inputs ``x / f``: ``H / (f f^T)``)."""
        gram = self.ranges[site.index].input_gram
        balanced = factors[:, None] * weight_kn
        if self.scheme.weight_rounding != "gptq" or gram is None or gram.shape[0] != len(weight_kn):
            return quantize_weight(balanced, weight_quant)
        return gptq_round(balanced, gram / np.outer(factors, factors), weight_quant)

    def _wide(self, act, weight_kn: np.ndarray) -> bool:
        """Whether this Linear's int8 output is estimated noisier than ``wide_below_db`` (:mod:`.precision`)."""
        if self.wide_below_db is None or act.channel_rms is None or self.scheme.wide_activation is None:
            return False
        weight_quant = weight_quant_for(self.scheme, self.kernel)
        *_, factors = self._balanced(act, weight_kn, weight_quant, self.scheme.activation)
        return output_sqnr_db(act, weight_kn, self.scheme.activation, weight_quant.qmax, factors) < self.wide_below_db

    def _linear(self, site, x, weight_kn: np.ndarray | None = None):
        """``x @ W`` on integers; ``weight_kn``: the weight as [K, N] (default: the site's Linear weight)."""
        if weight_kn is None:
            weight = self.params[site.name]
            weight_kn = np.ascontiguousarray(weight.T if site.transposed else weight, np.float32)
        if self.scheme.activation is None:
            return self._weight_only_linear(site, x, weight_kn)
        if self.scheme.weight.granularity is Granularity.PER_GROUP:
            int4 = self._int4_linear(site, x, weight_kn)
            if int4 is not None:
                return int4
        channels, outputs = weight_kn.shape
        act = self.ranges[site.index]
        if self._wide(act, weight_kn):  # 12-bit codes in int16, on the int16 kernel
            self.counts["wide_linears"] += 1
            activation, kernel, name = self.scheme.wide_activation, self.batched_kernel, "packed_int16_matmul"
        else:
            activation, kernel, name = self.scheme.activation, self.kernel, "packed_int8_matmul"
        packed = kernel is not None and kernel.fits(channels, outputs)
        weight_quant = weight_quant_for(self.scheme, kernel if packed else None)
        step, steps, zero_point, factors = self._balanced(act, weight_kn, weight_quant, activation)
        wq, w_scale = self._weight_codes(site, factors, weight_kn, weight_quant)
        wq = wq.astype(activation.dtype) if activation.bits > 8 else wq  # the int16 kernel multiplies int16 pairs
        xq, zero_point = self._input_codes(x, site, activation, kernel.activation_dtype if packed else None, steps,
                                           zero_point)
        if packed:
            xq, rows = self._pad_rows(xq)
            acc = self.builder_.emit_te(packed_matmul, xq, relax.const(pack_weight(wq, kernel.weight_block)), name=name)
            acc = self._cut_rows(acc, rows)
        else:
            acc = self.builder_.emit(relax.op.matmul(xq, relax.const(wq), out_dtype="int32"))
        # sum_j z_j Wq_jn: one zero point for all channels, or one per channel (balanced)
        correction = (np.broadcast_to(zero_point, (channels,)) @ wq.astype(np.int64)).astype(np.int32)
        shifted = self.builder_.emit(relax.op.subtract(acc, relax.const(correction)))
        return _dequantize(shifted, np.float32(step) * w_scale)

    def _input_codes(self, x, site, activation: TensorQuant, dtype: str | None, steps, zero_point):
        """A Linear's input as ``activation`` codes stored in ``dtype`` (the dot kernel's; None: the
        codes' own), and the zero point, shifted as the codes are (see the module docstring)."""
        dtype = dtype or activation.dtype
        shift = _SIGNED_SHIFT.get((activation.dtype, dtype), 0)
        zero_point = np.asarray(zero_point, np.int64) + shift
        xq = self._quantize(x, site, dtype, zero_point, scale=steps)
        if activation.qmax + shift < np.iinfo(dtype).max:  # codes narrower than their dtype: clip to their range
            xq = self.builder_.emit(relax.op.clip(xq, activation.qmin + shift, activation.qmax + shift))
        return xq, zero_point

    def _int4_linear(self, site, x, weight_kn: np.ndarray):
        """``x @ W`` with 4-bit weights in groups on the int4 dot kernel (module docstring), or None
        where the kernel does not fit the shape (that Linear keeps int8 weights)."""
        kernel, weight_quant = self.int4_kernel, self.scheme.weight
        channels, outputs = weight_kn.shape
        if kernel is None or not kernel.fits(channels, outputs) or channels % weight_quant.group_size:
            return None
        self.counts["int4_linears"] += 1
        activation = self.scheme.activation
        step, steps, zero_point, factors = self._balanced(self.ranges[site.index], weight_kn, weight_quant, activation)
        wq, w_scale = self._weight_codes(site, factors, weight_kn, weight_quant)  # w_scale: [groups, N]
        xq, zero_point = self._input_codes(x, site, activation, kernel.activation_dtype, steps, zero_point)
        xq, rows = self._pad_rows(xq)
        planes = zip(wq, w_scale) if weight_quant.regions > 1 else [(wq, w_scale)]
        y, correction = None, np.zeros(outputs)
        for codes, plane_scale in planes:  # a piecewise grid's centre and tail: one accumulation each
            scale = np.float32(step) * plane_scale
            packed = relax.const(pack_int4_weight(codes, kernel.weight_block))
            plane = self.builder_.emit_te(int4_group_matmul, xq, packed, relax.const(scale), weight_quant.group_size)
            y = plane if y is None else self.builder_.emit(relax.op.add(y, plane))
            # sum_g scale[g, n] * sum_{k in g} z_k Wq[k, n]: the zero-point terms, one constant per output
            zero_terms = (np.broadcast_to(zero_point, (channels,))[:, None] * codes.astype(np.int64))
            correction += (zero_terms.reshape(scale.shape[0], -1, outputs).sum(axis=1) * scale.astype(np.float64)).sum(0)
        return relax.op.subtract(self._cut_rows(y, rows), relax.const(correction.astype(np.float32)))

    def _weight_only_linear(self, site, x, weight_kn: np.ndarray):
        """``x @ W`` on float ``x`` with the 4-bit codes decoded in the loop (module docstring); a
        Linear whose shape the kernel does not take stays float."""
        channels, outputs = weight_kn.shape
        quant = self.scheme.weight
        if channels % quant.group_size or outputs % WEIGHT_ONLY_BLOCK[0]:
            return relax.op.matmul(x, relax.const(weight_kn))
        self.counts["int4_linears"] += 1
        wq, w_scale = self._weight_codes(site, np.ones(channels, np.float32), weight_kn, quant)
        x, rows = self._pad_rows(x)
        y = self.builder_.emit_te(int4_decoded_matmul, x, relax.const(pack_int4_weight(wq, WEIGHT_ONLY_BLOCK)),
                                  relax.const(w_scale), quant.group_size)
        return self._cut_rows(y, rows)

    def _centered(self, x, site, axis: int = -1):
        """``xq - z_x`` as int16 (exact: |xq - z_x| <= 255), for operands whose zero-point terms
        cannot fold into constants: both operands of a batched matmul vary at run time, and a padded
        convolution's border windows see fewer codes."""
        zero_point = self.ranges[site.index].zero_point
        xq = self._quantize(x, site, self.scheme.activation.dtype, zero_point, axis)
        dims = [int(d) for d in x.ty.shape.values]
        axis %= len(dims)
        shape = [dims[axis]] + [1] * (len(dims) - 1 - axis)  # broadcasts along the quantized axis
        return self.builder_.emit(relax.op.subtract(relax.op.astype(xq, "int16"),
                                                    relax.const(np.full(shape, zero_point, np.int16))))

    def _patch_embedding(self, site, x, call):
        """A convolution whose windows tile its input (stride = kernel, no padding, one group: ViT's
        patch embedding) as a Linear over the patches, on the int8 dot kernel; None for any other::

            patches = x as [N * H' * W', C * kh * kw]   (a reshape and permute: im2col without copies)
            y = (patches @ W.reshape(O, -1).T) as [N, O, H', W']

        The int16 direct convolution it replaces took 5.6 of vit-s int8's 55 ms."""
        weight = self.params[site.name].astype(np.float32)
        out_c, in_c, kh, kw = weight.shape
        n, c, h, w = (int(d) for d in x.ty.shape.values)
        attrs = call.attrs
        tiles = ([int(v) for v in attrs.strides] == [kh, kw] and not any(int(v) for v in attrs.padding)
                 and all(int(v) == 1 for v in attrs.dilation) and int(attrs.groups) == 1 and h % kh == 0 == w % kw)
        if not tiles or self.kernel is None or not self.kernel.fits(in_c * kh * kw, out_c):
            return None
        rows, cols = h // kh, w // kw
        blocks = relax.op.permute_dims(relax.op.reshape(x, [n, c, rows, kh, cols, kw]), [0, 2, 4, 1, 3, 5])
        patches = self.builder_.emit(relax.op.reshape(blocks, [n * rows * cols, c * kh * kw]))
        y = self.builder_.emit(self._linear(site, patches, np.ascontiguousarray(weight.reshape(out_c, -1).T)))
        return relax.op.permute_dims(relax.op.reshape(y, [n, rows, cols, out_c]), [0, 3, 1, 2])

    def _conv2d(self, site, x, call):
        patch_embedding = self._patch_embedding(site, x, call)
        if patch_embedding is not None:
            return patch_embedding
        wq, w_scale = quantize_weight(self.params[site.name].astype(np.float32), weight_quant_for(self.scheme, None),
                                      channel_axis=0)
        attrs = call.attrs
        acc = self.builder_.emit(relax.op.nn.conv2d(
            self._centered(x, site, axis=1), relax.const(wq.astype(np.int16)), strides=attrs.strides,
            padding=attrs.padding, dilation=attrs.dilation, groups=attrs.groups, data_layout="NCHW",
            kernel_layout="OIHW", out_dtype="int32"))
        return _dequantize(acc, (np.float32(self.ranges[site.index].scale) * w_scale).reshape(-1, 1, 1))

    def _is_softmax_output(self, x) -> bool:
        """Whether ``x`` holds softmax outputs: the softmax itself, or it reshaped, broadcast or with
        fully masked rows set to zero (``where(mask, 0, p)``, torch's SDPA decomposition)."""
        while isinstance(x, relax.Var):
            bound = self.lookup_binding(x)
            if bound is None or not isinstance(bound, relax.Call):
                return False
            if _is_op(bound, "relax.nn.softmax"):
                return True
            if not any(_is_op(bound, op) for op in _PROBABILITY_PRESERVING):
                return False
            x = bound.args[2] if _is_op(bound, "relax.where") else bound.args[0]
        return False

    def _batched(self, lhs_site, lhs, rhs_site, rhs):
        lhs_scale, row_sums = np.float32(self.ranges[lhs_site.index].scale), None
        if self.probs is not None and self._is_softmax_output(lhs):  # P @ V: P on the probabilities' own grid
            self.counts["prob_matmuls"] += 1
            lhs_c, lhs_scale, row_sums = self.probs.emit(self.builder_, lhs, self.ranges[lhs_site.index].prob_params)
        else:
            lhs_c = self._centered(lhs, lhs_site)
        rhs_c = self._centered(rhs, rhs_site)
        kernel = self.batched_kernel
        if kernel is not None:
            acc = self._packed_batched(lhs_c, rhs_c, kernel)
        else:
            acc = self.builder_.emit(relax.op.matmul(lhs_c, rhs_c, out_dtype="int32"))
        scale = lhs_scale * np.float32(self.ranges[rhs_site.index].scale)
        y = _dequantize(acc, np.full(int(acc.ty.shape.values[-1]), scale))
        if row_sums is None:
            return y
        return relax.op.divide(self.builder_.emit(y), relax.op.astype(relax.op.maximum(row_sums, relax.const(1, "int32")),
                                                                       "float32"))

    def _packed_batched(self, lhs_c, rhs_c, kernel: DotKernel):
        """``lhs_c @ rhs_c`` on the int16 dot kernel, zero-padding K and N up to its block: ViT's 257
        tokens are both (``P @ V``'s K, ``Q @ K^T``'s N), and the plain int16 matmul they fell back to
        ran at a quarter of the packed kernel's speed (19 of vit-s int8's 80 ms)."""
        *batch, k, n = (int(d) for d in rhs_c.ty.shape.values)
        bn, bk = kernel.weight_block
        pad_k, pad_n = -k % bk, -n % bn
        if pad_k or pad_n:
            rhs_c = self.builder_.emit(relax.op.nn.pad(rhs_c, [0, 0] * len(batch) + [0, pad_k, 0, pad_n]))
        packed = self.builder_.emit(pack_operand(rhs_c, kernel.weight_block))
        lhs_c, rows = self._pad_rows(lhs_c, pad_k)
        acc = self._cut_rows(self.builder_.emit_te(packed_matmul, lhs_c, packed, name="packed_int16_matmul"), rows)
        if pad_n:
            acc = self.builder_.emit(relax.op.strided_slice(acc, axes=[len(batch) + 1], begin=[0], end=[n]))
        return acc

    def _pad_rows(self, x, pad_k: int = 0):
        """``x[..., M, K]`` with M zero-padded to whole register tiles of the default packed-matmul
        schedule (:data:`~tvmcomp.tune.default_schedules.REGISTER_ROWS`; with ViT's 257 rows, a prime,
        it tiled one row at a time and reloaded every weight block per row: vit-s int8 went from 75 to
        55 ms padded), and K by ``pad_k``. Returns (x, M)."""
        dims = [int(d) for d in x.ty.shape.values]
        pad_m = 0 if dims[-2] % 2 == 0 else -dims[-2] % REGISTER_ROWS[0]  # even counts tile by 2 or 4 already
        if pad_m or pad_k:
            x = self.builder_.emit(relax.op.nn.pad(x, [0, 0] * (len(dims) - 2) + [0, pad_m, 0, pad_k]))
        return x, dims[-2]

    def _cut_rows(self, acc, rows: int):
        if int(acc.ty.shape.values[-2]) == rows:
            return acc
        return self.builder_.emit(relax.op.strided_slice(acc, axes=[len(acc.ty.shape.values) - 2], begin=[0], end=[rows]))

    def visit_call_(self, call):
        call = self.visit_expr_post_order(call)
        if not (_is_op(call, "relax.matmul") or _is_op(call, "relax.nn.conv2d")):
            return call
        site, x = self._site_of(call.args[0])
        if site is None:
            return call
        if site.role == CONV_ROLE:
            if self.scheme.activation is None:  # weight-only: a patch embedding is a Linear, others stay float
                patches = self._patch_embedding(site, x, call)
                return relax.Call(call.op, [x, *call.args[1:]], call.attrs) if patches is None else patches
            return self._conv2d(site, x, call)
        if site.is_linear:
            return self._linear(site, x)
        rhs_site, y = self._site_of(call.args[1])
        return self._batched(site, x, rhs_site, y)


@tvm.transform.module_pass(opt_level=0, name="Realize")
class Realize:
    """Rewrite every annotated matmul of ``main`` to integer compute (see module docstring).

    Matmuls whose shapes fit the target's dot-product ``kernels`` read their right-hand operand
    packed in its layout: Linear weights packed here, activations packed at run time. With
    ``balance`` (an alpha, or ``"auto"``: chosen per Linear), Linear sites calibrated with channel
    ranges are balanced (:mod:`.balance`). With ``wide_below_db``, Linear sites estimated noisier
    than that in int8 get the scheme's wide activation codes instead (:mod:`.precision`). With
    ``probs`` (:mod:`.attn_probs`), attention probabilities (a softmax output multiplying V) take
    that quantizer's codes; without, their site's uniform 8-bit ones. After it runs, ``counts`` says
    how many Linears got wide inputs and how many matmuls the probabilities' own codes.
    """

    def __init__(self, params: dict, ranges: dict, scheme: QuantScheme, kernels: DotKernels = DotKernels(),
                 balance: str | float | None = None, wide_below_db: float | None = None, probs=None):
        self.params, self.ranges, self.scheme, self.kernels = params, ranges, scheme, kernels
        self.balance, self.wide_below_db, self.probs = balance, wide_below_db, probs
        self.counts = {}

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        realizer = _Realizer(mod, self.params, self.ranges, self.scheme, self.kernels, self.balance,
                             self.wide_below_db, self.probs)
        func = realizer.visit_expr(mod["main"]).without_attr(SITES_ATTR)
        realizer.builder_.update_func(mod.get_global_var("main"), func)
        self.counts = dict(realizer.counts)
        # the identity site calls are now unused (pure): dead code elimination drops them
        return relax.transform.DeadCodeElimination()(realizer.builder_.finalize())
