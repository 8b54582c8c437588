"""Per-token (dynamic) steps for Linear inputs: each row gets a step and zero point from its own min
and max at run time, so a token with outliers does not coarsen every other token's codes.

The formula is :meth:`~.schemes.TensorQuant.scale_zero_point`'s on the row's
``[lo, hi] = [min(min x, 0), max(max x, 0)]``, in float32: for asymmetric codes
``step = (hi - lo) / (qmax - qmin)`` (1 for a row of zeros) and ``z = clip(round(qmin - lo / step))``;
codes ``clip(round(x / step) + z)``, round half to even.

It is one TE kernel a Linear input, with two outputs: the codes, and each row's step and zero point
side by side. The default schedule's ``RowReduction`` runs each output's rows in parallel, its row
reductions in vector partial results, as it runs softmax and LayerNorm. TIR cannot compute an
output block inside another's row loop, so the step and zero point are computed twice, once for
the codes and once for the output: a second min and max over the row, cheaper than a kernel more
(11% of MiniLM int8's run: bench/results/2026-12-05-profile-minilm-int8-per-token.md).
"""

from __future__ import annotations

from .schemes import TensorQuant


def token_quantize(x, quant: TensorQuant, dtype: str, shift: int = 0):
    """TE compute: ``x[..., M, K]``'s codes in ``dtype`` (plus ``shift``: uint8 codes stored as int8
    for Arm's sdot), and [..., M, 2] float32: each row's step, and its zero point (plus ``shift``)."""
    from tvm import te, tirx

    *lead, _ = x.shape
    f32 = "float32"
    step_of, zero_of = _row_step(x, quant), _row_step(x, quant)  # one chain each (module docstring)
    steps = te.compute(lead, lambda *i: step_of(i)[0], name="token_step")
    zeros = te.compute(lead, lambda *i: step_of(i, steps[i])[1], name="token_zero")

    def code(*i):
        row = i[:-1]
        value = _clip(quant, tirx.round(x[i] / steps[row]) + zeros[row])
        return (value.astype("int32") + shift).astype(dtype)

    def step_and_zero(*i):
        step, zero = zero_of(i[:-1])
        return tirx.Select(i[-1] == 0, step, zero + tirx.const(float(shift), f32))

    return [te.compute(x.shape, code, name="token_codes"),
            te.compute((*lead, 2), step_and_zero, name="token_step_zero")]


def _clip(quant: TensorQuant, value):
    from tvm import tirx

    return tirx.max(tirx.min(value, tirx.const(float(quant.qmax), "float32")), tirx.const(float(quant.qmin), "float32"))


def _row_step(x, quant: TensorQuant):
    """The row reductions of ``x`` and a function of a row index giving its (step, zero point) as
    float32 expressions (the zero point from ``step`` where given, a tensor element already computed)."""
    from tvm import te, tirx

    *lead, width = x.shape
    f32 = "float32"

    def row_reduce(reduce, name):
        k = te.reduce_axis((0, width), "k")
        return te.compute(lead, lambda *i: reduce(x[(*i, k)], axis=k), name=name)

    lo_seen, hi_seen = row_reduce(te.min, "token_min"), row_reduce(te.max, "token_max")
    zero, levels = tirx.const(0.0, f32), float(quant.qmax if quant.symmetric else quant.qmax - quant.qmin)

    def step_and_zero(i, step=None):
        lo, hi = tirx.min(lo_seen[i], zero), tirx.max(hi_seen[i], zero)
        span = tirx.max(-lo, hi) if quant.symmetric else hi - lo
        if step is None:
            step = tirx.Select(span > zero, span / tirx.const(levels, f32), tirx.const(1.0, f32))
        if quant.symmetric:
            return step, tirx.const(float(0 if quant.signed else (quant.qmax + 1) // 2), f32)
        return step, _clip(quant, tirx.round(tirx.const(float(quant.qmin), f32) - lo / step))

    return step_and_zero
