"""Lower ``R.nn.softmax`` to a kernel whose exponential vectorizes.

TVM legalizes softmax with ``te.exp``, which LLVM turns into one call of libm's scalar ``expf`` per
element: 1.5 ms per attention softmax (12x128x128) of MiniLM on 2 Zen3 cores, a quarter of the
whole int8 model. MetaSchedule's tuner does not see this cost: its random inputs are large, so
libm takes its quick overflow/underflow exits. TVM's own ``topi.nn.fast_softmax`` computes the
exponential as Cephes' expf polynomial times 2^n built from the exponent bits (input clamped to
[-88.4, 88.4], so masked scores of -3.4e38 still give 0); it is plain vector arithmetic, and its
error is within the float32 rounding of the row sum (see tests/test_fast_softmax.py). Rows whose
length is not a multiple of the vector width are padded (:func:`padded_fast_softmax`).
"""

from __future__ import annotations


# rows are padded to a multiple of this many float32s: an AVX-512 register, two AVX2 ones, four NEON ones
ROW_MULTIPLE = 16


def _legalize_softmax(bb, call):
    from tvm import tirx, topi

    x, axis = call.args[0], int(call.attrs.axis)
    dims = x.ty.shape.values
    width = dims[axis]
    if axis in (-1, len(dims) - 1) and isinstance(width, tirx.IntImm) and int(width) % ROW_MULTIPLE:
        return bb.call_te(padded_fast_softmax, x, primfunc_name_hint="softmax")
    return bb.call_te(topi.nn.fast_softmax, x, axis, primfunc_name_hint="softmax")


def padded_fast_softmax(x):
    """``fast_softmax`` over the last axis of ``x`` padded with -inf to a multiple of
    :data:`ROW_MULTIPLE`, cut back after. A row of 257 (ViT's tokens) does not split into vectors,
    so its max and sum ran as chains of scalar ops; padded to 272 they run as vector partial results
    (the default schedule's ``RowReduction``). The padding adds exp(-88.4), about 1e-38 each, to a
    row sum of at least 1: nothing in float32."""
    from tvm import te, tirx, topi

    *lead, width = x.shape
    width = int(width)
    padded_width = -(-width // ROW_MULTIPLE) * ROW_MULTIPLE
    padded = te.compute((*lead, padded_width), lambda *i: tirx.Select(
        i[-1] < width, x[(*i[:-1], tirx.min(i[-1], width - 1))], tirx.const(float("-inf"), x.dtype)), name="softmax_pad")
    probs = topi.nn.fast_softmax(padded, -1)
    return te.compute(x.shape, lambda *i: probs[i], name="softmax_cut")


def fast_softmax_legalize_map() -> dict:
    """A ``customize_legalize_map`` for ``relax.transform.LegalizeOps``."""
    return {"relax.nn.softmax": _legalize_softmax}
