"""The conv2d rule: ``R.nn.conv2d(x, W)`` (NCHW / OIHW) with ``W`` a 4-D weight parameter. Its data
``x`` is quantized (a site named after ``W``, role ``"conv"``); ``W`` per output channel.

A convolution whose windows tile its input (stride = kernel, no padding, one group: ViT's patch
embedding) runs as a Linear over the patches, on the int8 dot kernel (:mod:`.linear`)::

    patches = x as [N * H' * W', C * kh * kw]   (a reshape and permute: im2col without copies)
    y = (patches @ W.reshape(O, -1).T) as [N, O, H', W']

The int16 direct convolution it replaces took 5.6 of vit-s int8's 55 ms. Any other convolution
centres its data in int16 (zero padding then pads real zeros, which a zero point would not) and
multiplies the weight codes as an int16 constant::

    acc = R.nn.conv2d(xq - z_x, Wq, out_dtype="int32");  y = R.astype(acc, "float32") * (s_x * s_w)

With float activations (weight-only schemes) a patch embedding is a Linear; other convolutions stay float.
"""

from __future__ import annotations

import numpy as np
from tvm import relax

from ..grids import quantize_weight
from .linear import LINEAR, weight_quant_for
from .registry import Operand, OpRule, register_op_rule

CONV_ROLE = "conv"


class Conv2d(OpRule):
    name, ops, roles = "conv2d", ("relax.nn.conv2d",), (CONV_ROLE,)

    def match(self, graph, call):
        data, weight = call.args
        canonical = call.attrs.data_layout == "NCHW" and call.attrs.kernel_layout == "OIHW"
        return [Operand(0, weight.name, CONV_ROLE)] if canonical and graph.is_weight(weight, 4) else None

    def realize(self, ctx, call, operands):
        site, x = operands[0]
        patches = _patch_embedding(ctx, site, x, call)
        if patches is not None or ctx.scheme.activation is None:
            return patches
        wq, w_scale = quantize_weight(ctx.params[site.name].astype(np.float32), weight_quant_for(ctx.scheme, None),
                                      channel_axis=0)
        attrs = call.attrs
        acc = ctx.builder_.emit(relax.op.nn.conv2d(
            ctx.centered(x, site, axis=1), relax.const(wq.astype(np.int16)), strides=attrs.strides,
            padding=attrs.padding, dilation=attrs.dilation, groups=attrs.groups, data_layout="NCHW",
            kernel_layout="OIHW", out_dtype="int32"))
        return ctx.dequantize(acc, (np.float32(ctx.ranges[site.index].scale) * w_scale).reshape(-1, 1, 1))


def _patch_embedding(ctx, site, x, call):
    """The convolution as a Linear over its patches (module docstring), or None where its windows
    do not tile its input or the dot kernel does not fit it."""
    weight = ctx.params[site.name].astype(np.float32)
    out_c, in_c, kh, kw = weight.shape
    n, c, h, w = (int(d) for d in x.ty.shape.values)
    attrs = call.attrs
    tiles = ([int(v) for v in attrs.strides] == [kh, kw] and not any(int(v) for v in attrs.padding)
             and all(int(v) == 1 for v in attrs.dilation) and int(attrs.groups) == 1 and h % kh == 0 == w % kw)
    if not tiles or ctx.kernels.linear is None or not ctx.kernels.linear.fits(in_c * kh * kw, out_c):
        return None
    rows, cols = h // kh, w // kw
    blocks = relax.op.permute_dims(relax.op.reshape(x, [n, c, rows, kh, cols, kw]), [0, 2, 4, 1, 3, 5])
    patches = ctx.builder_.emit(relax.op.reshape(blocks, [n * rows * cols, c * kh * kw]))
    y = ctx.builder_.emit(LINEAR.linear(ctx, site, patches, np.ascontiguousarray(weight.reshape(out_c, -1).T)))
    return relax.op.permute_dims(relax.op.reshape(y, [n, rows, cols, out_c]), [0, 3, 1, 2])


register_op_rule(Conv2d())
