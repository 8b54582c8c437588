"""Integer kernels for the float ops of an encoder layer (I-BERT, Kim et al. 2021): softmax by i-exp,
GELU by i-erf, LayerNorm with an integer square root.

Each kernel reads int32 values at a step known at build time and writes int32 values at a step known
at build time; in between there is integer arithmetic only (adds, multiplies, shifts, one floor
division a row, comparisons), in int32 where the values fit and int64 elsewhere. Every float constant the method needs is folded with the steps into an integer here,
in Python, so that the emitted TE holds none. :mod:`.integer_only` puts them in the graph.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import TvmcompError

# I-BERT's second-order polynomials
EXP_POLY = (0.3585, 1.353, 0.344)  # exp(p) ~ a (p + b)^2 + c for p in (-ln 2, 0]
ERF_POLY = (-0.2888, -1.769, 1.0)  # erf(x) ~ sgn(x) (a (min(|x|, -b) + b)^2 + c)
# scores are shifted onto a grid at least this fine before i-exp: the polynomial's input then has
# 2^12 steps per unit, so its own error (~1e-3) dominates the grid's
EXP_INPUT_STEP = 2.0**-12
GELU_INPUT_BITS = 24  # GELU inputs are clipped to +-2^24 steps (GELU(x) = x there: the next codes clip)
PRODUCT_BITS = 46  # i-GELU's product is shifted down to this many bits before its 15-bit multiplier
MAX_EXP_SHIFT = 63  # exp(d) is a polynomial under 2^62 shifted right by z: 0 from z = 62 on
NEWTON_STEPS = 6  # from a start within 2x of the root, enough for 64-bit integers
# x86 has no vector integer division: each row divides once, into a reciprocal 2^RECIPROCAL_BITS // d,
# and its entries multiply by that and shift (d <= 2^37: relative error 2^-25)
RECIPROCAL_BITS = 62
NORMALIZED_BITS = 16  # LayerNorm's (x - mean) / std, on a 2^-16 grid before gamma


def _int64(value):
    from tvm import tirx

    return tirx.const(int(value), "int64")


def _wide(value):
    return value.astype("int64")


def _broadcast_index(tensor, index):
    """``tensor``'s element for ``index`` of a larger shape of the same rank (size-1 axes broadcast)."""
    return tensor[tuple(0 if int(extent) == 1 else i for extent, i in zip(tensor.shape, index))]


@dataclass(frozen=True)
class ExpConstants:
    """i-exp of scores at ``step``: the scores shifted left by ``up`` bits, then ``ln2``, ``b``, ``c``
    as integers on that grid (I-BERT Algorithms 2 and 3). ``n // ln2`` for ``0 <= n <= 63 ln2`` is
    ``(n * multiplier) >> shift`` (Granlund and Montgomery's exact division by a constant: vector
    multiplies, where a division would run one element at a time)."""

    up: int
    ln2: int
    b: int
    c: int
    multiplier: int
    shift: int

    @property
    def dtype(self) -> str:
        """The polynomial's: int32 where ``(p + b)^2 + c`` fits it (grids down to 2^-13, where the
        scores' step is that coarse), else int64; int32 vectors are twice as wide."""
        return "int32" if self.b * self.b + self.c < 2**31 else "int64"

    @classmethod
    def for_step(cls, step: float) -> ExpConstants:
        up = max(0, math.ceil(math.log2(step / EXP_INPUT_STEP)))
        fine = step / 2**up
        a, b, c = EXP_POLY
        ln2 = math.floor(math.log(2) / fine)
        if ln2 >= 2**24:
            raise TvmcompError(f"--integer-only: attention scores with a step of {step:g} are finer than i-exp's "
                               "2^-24 grid (their int64 division would overflow); build without --integer-only")
        bits = (MAX_EXP_SHIFT * ln2).bit_length()
        shift = bits + ln2.bit_length()  # n < 2^bits; n * multiplier < 2^(2 bits + 1) <= 2^63
        return cls(up, ln2, math.floor(b / fine), math.floor(c / (a * fine * fine)), -(-(2**shift) // ln2), shift)


def integer_softmax(scores, keep, step: float, out_bits: int, bias=None):
    """Softmax along the last axis of int32 ``scores`` (value = code * ``step``), over the entries where
    the bool ``keep`` (broadcast to the scores' shape; None: all) is true; int32 probabilities at step 2^-out_bits,
    ``(e * (2^62 // sum e) + 2^(61 - out_bits)) >> (62 - out_bits)``, 0 where nothing is kept.
    ``e = exp(d) = (a (p + b)^2 + c) 2^-z`` with ``d = -z ln2 + p``: one polynomial on (-ln 2, 0]
    and a shift (z <= 62: ``poly >> z`` is 0 from 31 on in int32, 62 in int64). ``bias``: int32 on the
    scores' step, broadcast to them and added first."""
    from tvm import te, tirx

    k = ExpConstants.for_step(step)
    rows, width = scores.shape[:-1], scores.shape[-1]
    shift = RECIPROCAL_BITS - out_bits
    lowest = tirx.const(np.iinfo(np.int32).min, "int32")

    def score(*i):
        return scores[i] if bias is None else scores[i] + _broadcast_index(bias, i)

    def kept(i):
        return tirx.const(True, "bool") if keep is None else _broadcast_index(keep, i)

    j = te.reduce_axis((0, width), "j")
    top = te.compute(rows, lambda *r: te.max(
        tirx.if_then_else(kept((*r, j)), score(*r, j), lowest), axis=j), name="row_max")

    def constant(value):
        return tirx.const(int(value), k.dtype)

    def exp(*i):
        # -d >= 0 where kept, capped where exp(d) is 0 anyway
        n = tirx.min((_wide(top[i[:-1]]) - _wide(score(*i))) << _int64(k.up), _int64(MAX_EXP_SHIFT * k.ln2 - 1))
        z = ((n * _int64(k.multiplier)) >> _int64(k.shift)).astype(k.dtype)  # n // ln2
        p = z * constant(k.ln2) - n.astype(k.dtype)
        poly = (p + constant(k.b)) * (p + constant(k.b)) + constant(k.c)
        bits = 32 if k.dtype == "int32" else 64  # a shift by the width or more is undefined
        return tirx.if_then_else(kept(i), poly >> tirx.min(z, constant(bits - 1)), constant(0))

    e = te.compute(scores.shape, exp, name="i_exp")
    t = te.reduce_axis((0, width), "t")
    total = te.compute(rows, lambda *r: te.sum(_wide(e[(*r, t)]), axis=t), name="exp_sum")

    reciprocal = te.compute(rows, lambda *r: tirx.floordiv(_int64(2**RECIPROCAL_BITS), tirx.max(total[r], _int64(1))),
                            name="exp_reciprocal")

    def probability(*i):  # e / total at 2^-out_bits, rounded half up; e <= total, so e * reciprocal <= 2^62
        return ((_wide(e[i]) * reciprocal[i[:-1]] + (_int64(1) << _int64(shift - 1))) >> _int64(shift)).astype("int32")

    return te.compute(scores.shape, probability, name="i_softmax")


@dataclass(frozen=True)
class GeluConstants:
    """i-GELU at input step ``step`` (a power of two): ``GELU(x) = x (1 + erf(x / sqrt 2)) / 2`` with
    erf's polynomial on ``x / sqrt 2``'s grid; the product ``q (erf_q + one)`` is shifted right by
    ``pre`` bits, then multiplied by ``m`` and shifted right by ``k`` back to ``step``."""

    b: int
    c: int
    one: int
    pre: int
    m: int
    k: int

    @property
    def dtype(self) -> str:
        """The polynomial's: int32 where ``b^2`` and ``2 |one|`` fit it (input steps down to about
        2^-13), else int64."""
        return "int32" if self.b * self.b < 2**31 and 2 * abs(self.one) < 2**31 else "int64"

    @classmethod
    def for_step(cls, step: float) -> GeluConstants:
        from .integer_chain import dyadic

        a, b, c = ERF_POLY
        erf_in = step / math.sqrt(2)
        erf_step = a * erf_in * erf_in  # negative: a < 0
        one = math.floor(1 / erf_step)
        pre = max(0, GELU_INPUT_BITS + (2 * abs(one)).bit_length() - PRODUCT_BITS)
        m, k = dyadic(np.float64(-erf_step / 2 * 2**pre))  # value / step = -product * (-erf_step / 2)
        return cls(math.floor(b / erf_in), math.floor(c / (a * erf_in * erf_in)), one, pre, int(m), int(k))


def integer_gelu(acc, bias, multiplier, shift, step: float):
    """GELU of ``(acc + bias) * s`` (int32 ``acc`` [..., N], int32 ``bias`` [N], ``s`` per channel
    as ``multiplier * 2^-shift`` relative to ``step``; ``multiplier`` None: ``s`` is ``2^-shift``, a
    rounding shift in int32, ``shift`` 0 for none): int32 values at ``step``."""
    from tvm import te, tirx

    g = GeluConstants.for_step(step)

    def constant(value):
        return tirx.const(int(value), g.dtype)

    def rescaled(i, n):
        if multiplier is None:
            half = tirx.if_then_else(shift[n] > 0, tirx.const(1, "int32") << tirx.max(shift[n] - 1, 0), 0)
            return (acc[i] + bias[n] + half) >> shift[n]
        return (_wide(acc[i] + bias[n]) * multiplier[n] + (_int64(1) << (shift[n] - 1))) >> shift[n]

    def gelu(*i):
        x = rescaled(i, i[-1])
        limit = tirx.const(2**GELU_INPUT_BITS, "int32" if multiplier is None else "int64")
        q = tirx.max(tirx.min(x, limit), -limit).astype(g.dtype)
        clipped = tirx.min(tirx.abs(q), constant(-g.b))
        erf = (clipped + constant(g.b)) * (clipped + constant(g.b)) + constant(g.c)
        signed_erf = tirx.if_then_else(q < constant(0), -erf, tirx.if_then_else(q > constant(0), erf, constant(0)))
        product = -(_wide(q) * _wide(signed_erf + constant(g.one))) >> _int64(g.pre)
        return ((product * _int64(g.m) + (_int64(1) << _int64(g.k - 1))) >> _int64(g.k)).astype("int32")

    return te.compute(acc.shape, gelu, name="i_gelu")


def integer_sqrt(n):
    """floor(sqrt(n)) of int64 ``n >= 1`` (a TE tensor): Newton's steps ``x = (x + n // x) / 2`` from
    ``2^ceil(bits / 2)``, which is at or above the root, so the steps only come down to it. One stage
    a step: as one expression the steps would repeat each other (3^steps copies)."""
    from tvm import te, tirx

    def start(*r):
        bits = _int64(64) - tirx.clz(n[r]).astype("int64")
        return _int64(1) << tirx.floordiv(bits + _int64(1), _int64(2))

    def newton(x):
        return lambda *r: tirx.min(x[r], (x[r] + tirx.floordiv(n[r], x[r])) >> _int64(1))

    x = te.compute(n.shape, start, name="sqrt_start")
    for step in range(NEWTON_STEPS):
        x = te.compute(n.shape, newton(x), name=f"sqrt_step{step}")
    return x


def integer_layer_norm(x, gamma, beta):
    """LayerNorm along the last axis of int32 ``x``: ``(x - mean) / std * gamma + beta`` with ``gamma``
    and ``beta`` int64 [D] already divided by the output step; mean rounded half up, variance floored,
    std = floor(sqrt(variance)) (at least 1); ``(x - mean) / std`` on a 2^-16 grid by the row's
    reciprocal ``2^56 // std`` (a shift of 40), then ``(n * gamma + 2^15) >> 16 + beta``. int32 at
    the output step."""
    from tvm import te, tirx

    rows, width = x.shape[:-1], x.shape[-1]
    count = _int64(int(width))
    j = te.reduce_axis((0, width), "j")
    total = te.compute(rows, lambda *r: te.sum(_wide(x[(*r, j)]), axis=j), name="ln_sum")
    mean = te.compute(rows, lambda *r: tirx.floordiv(2 * total[r] + count, 2 * count), name="ln_mean")
    v = te.reduce_axis((0, width), "v")
    squares = te.compute(rows, lambda *r: te.sum((_wide(x[(*r, v)]) - mean[r]) * (_wide(x[(*r, v)]) - mean[r]),
                                                 axis=v), name="ln_squares")
    variance = te.compute(rows, lambda *r: tirx.max(tirx.floordiv(squares[r], count), _int64(1)), name="ln_var")
    std = integer_sqrt(variance)

    shift = RECIPROCAL_BITS - 6 - NORMALIZED_BITS  # |x - mean| / std <= sqrt(D) < 2^6: the product fits 2^62
    reciprocal = te.compute(rows, lambda *r: tirx.floordiv(_int64(2 ** (RECIPROCAL_BITS - 6)), std[r]),
                            name="ln_reciprocal")

    def normalized(*i):
        n = ((_wide(x[i]) - mean[i[:-1]]) * reciprocal[i[:-1]]) >> _int64(shift)
        half = _int64(1 << (NORMALIZED_BITS - 1))
        return (((n * gamma[i[-1]] + half) >> _int64(NORMALIZED_BITS)) + beta[i[-1]]).astype("int32")

    return te.compute(x.shape, normalized, name="i_layer_norm")
