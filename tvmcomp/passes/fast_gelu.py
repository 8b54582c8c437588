"""Lower ``R.nn.gelu`` (exact, erf-based) and ``R.erf`` to kernels that vectorize.

TVM legalizes exact GELU to a call of libm's scalar ``erff`` per element: 5 ms for the 128x1536
FFN activation of MiniLM on 2 Zen3 cores, more than the GEMM before it. Here erf is the rational
approximation Eigen and TVM's ``fast_erf`` use (odd degree-13 numerator over even degree-8
denominator, argument clamped to [-4, 4]; max abs error ~1e-7 against the exact erf, see
tests/test_fast_gelu.py), written as plain multiply-adds and one divide so LLVM vectorizes it.
ONNX exports spell GELU out as ``x * 0.5 * (1 + erf(x / sqrt 2))``, so a bare ``R.erf`` is lowered
the same way: on vit-s's file it took 38 of 120 ms (int8, Zen4), more than all its FFN GEMMs.
"""

from __future__ import annotations

_ERF_NUMERATOR = (  # coefficients of x^13, x^11, ..., x^1 (in powers of x^2, times x)
    -2.72614225801306e-10,
    2.77068142495902e-08,
    -2.10102402082508e-06,
    -5.69250639462346e-05,
    -7.34990630326855e-04,
    -2.95459980854025e-03,
    -1.60960333262415e-02,
)
_ERF_DENOMINATOR = (  # coefficients of x^8, x^6, ..., x^0
    -1.45660718464996e-05,
    -2.13374055278905e-04,
    -1.68282697438203e-03,
    -7.37332916720468e-03,
    -1.42647390514189e-02,
)


def erf_rational(x):
    """erf(x) as a TIR expression of multiply-adds and one divide."""
    from tvm import tirx

    dtype = str(x.ty.dtype)
    x = tirx.max(tirx.min(x, tirx.const(4.0, dtype)), tirx.const(-4.0, dtype))
    x2 = x * x

    def horner(coefficients):
        acc = tirx.const(coefficients[0], dtype)
        for c in coefficients[1:]:
            acc = acc * x2 + tirx.const(c, dtype)
        return acc

    return x * horner(_ERF_NUMERATOR) / horner(_ERF_DENOMINATOR)


def _legalize_gelu(bb, call):
    from tvm import te, tirx

    def gelu(x):
        half, one, rsqrt2 = (tirx.const(v, str(x.dtype)) for v in (0.5, 1.0, 0.7071067811865476))
        return te.compute(x.shape, lambda *i: half * x(*i) * (one + erf_rational(x(*i) * rsqrt2)), name="gelu")

    return bb.call_te(gelu, call.args[0], primfunc_name_hint="gelu")


def _legalize_erf(bb, call):
    from tvm import te

    return bb.call_te(lambda x: te.compute(x.shape, lambda *i: erf_rational(x(*i)), name="erf"), call.args[0],
                      primfunc_name_hint="erf")


def fast_gelu_legalize_map() -> dict:
    """A ``customize_legalize_map`` for ``relax.transform.LegalizeOps``."""
    return {"relax.nn.gelu": _legalize_gelu, "relax.erf": _legalize_erf}
