"""Recompose LayerNorm and exact GELU where an exporter spelled them out in elementwise ops.

ONNX files exported below opset 17 (the bundled vit-s among them) write a LayerNorm over the last
axis as ``mean``, ``subtract``, ``power 2``, ``mean``, ``add eps``, ``sqrt``, ``divide`` (or ``rsqrt``,
``multiply``), then ``multiply gamma`` and ``add beta``, and GELU as ``x * (erf(x / sqrt 2) + 1) * 0.5``. Rewritten
to ``R.nn.layer_norm`` and ``R.nn.gelu`` they are one op each, as the PyTorch importer gives them:
the passes that work on those ops (the integer kernels of ``--integer-only``, the vectorized GELU)
see every model alike. The values are the same up to float rounding.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

from . import rewrite_each_function

_SQRT2 = math.sqrt(2.0)


def _scalar(expr) -> float | None:
    """The value of a scalar (or one-element) constant, else None."""
    if not isinstance(expr, tvm.ir.expr.Constant) or expr.value.numpy().size != 1:
        return None
    return float(expr.value.numpy().reshape(()))


def _last_axis(call, rank: int) -> bool:
    axes = [int(axis) for axis in call.attrs.axis] if call.attrs.axis is not None else []
    return [axis % rank for axis in axes] == [rank - 1] and bool(call.attrs.keepdims)


def _layer_norm(func):
    x, gamma, beta, exponent, epsilon = wildcard(), wildcard(), wildcard(), is_const(), is_const()
    mean = is_op("relax.mean")(x)
    centred = is_op("relax.subtract")(x, mean)
    variance = is_op("relax.mean")(is_op("relax.power")(centred, exponent))
    shifted = is_op("relax.add")(variance, epsilon)
    normalized = is_op("relax.divide")(centred, is_op("relax.sqrt")(shifted)) | \
        is_op("relax.multiply")(centred, is_op("relax.rsqrt")(shifted))
    pattern = is_op("relax.add")(is_op("relax.multiply")(normalized, gamma), beta)

    def rewrite(call, matched):
        shape = matched[x].ty.shape.values
        rank, width = len(shape), int(shape[-1])
        widths = [tuple(int(d) for d in matched[p].ty.shape.values) for p in (gamma, beta)]
        eps = _scalar(matched[epsilon])
        if not (_last_axis(matched[mean], rank) and _last_axis(matched[variance], rank)
                and _scalar(matched[exponent]) == 2.0 and eps is not None and widths == [(width,)] * 2):
            return call
        return relax.op.nn.layer_norm(matched[x], matched[gamma], matched[beta], axes=[-1], epsilon=eps)

    return rewrite_call(pattern, rewrite, func)


def _gelu(func):
    x, factor, one, half = wildcard(), is_const(), is_const(), is_const()
    divided, multiplied = is_op("relax.divide")(x, factor), is_op("relax.multiply")(x, factor)
    erf_plus_one = is_op("relax.add")(is_op("relax.erf")(divided | multiplied), one)
    pattern = is_op("relax.multiply")(is_op("relax.multiply")(x, erf_plus_one), half)

    def rewrite(call, matched):
        scaling = _scalar(matched[factor])
        if scaling is not None and divided in matched:
            scaling = 1.0 / scaling  # x / sqrt 2 as x * (1 / sqrt 2)
        if scaling is None or not np.isclose(scaling, 1.0 / _SQRT2, rtol=1e-6) or \
                _scalar(matched[one]) != 1.0 or _scalar(matched[half]) != 0.5:
            return call
        return relax.op.nn.gelu(matched[x])

    return rewrite_call(pattern, rewrite, func)


@tvm.transform.module_pass(opt_level=0, name="RecomposeNormAndGelu")
class RecomposeNormAndGelu:
    """The rewrite of the module docstring on every Relax function of a module."""

    def transform_module(self, mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        return rewrite_each_function(mod, lambda func: _gelu(_layer_norm(func)))
