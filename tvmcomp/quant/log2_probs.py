"""``--attn-probs log2:B``: attention probabilities on a truncated uniform-log2 grid (TP-ViT).

Softmax outputs span decades: a few keys near 1, most near 0. A uniform 8-bit grid spends its
levels evenly and rounds the small ones to 0; a log2 grid keeps their magnitude. With ``B`` bits,
``2^B - 1`` powers of two ``2^-top .. 2^-bottom`` plus zero::

    e = round(-log2 p)                       # the nearest power of two, in the log domain
    q = clip(e, top, bottom);  p~ = 2^-q     # p~ = 0 where e > bottom (truncated)

``top`` is calibrated: the exponent of the largest probability seen (1 for a sharp attention,
2^-5 for one spread over 32 keys), so no level is spent above what occurs; ``bottom = top + 2^B - 2``.

P @ V then runs on integers: each code becomes the int16 ``2^(bottom - q)`` (a shift of 1, 0 where
truncated) and multiplies V's centered int16 codes on the int16 dot kernel, the attention matmul's::

    acc = P_int @ (Vq - z_v);  y = acc * (2^-bottom * s_v)

``2^(bottom - q)`` must fit int16, so ``2^B - 2 <= 14``: B is 3 or 4.
"""

from __future__ import annotations

import numpy as np

from ..errors import TvmcompError

SUPPORTED_BITS = (3, 4)


def parse_attn_probs(text: str | None) -> int | None:
    """``"log2:4"`` -> 4 (bits); None -> None."""
    if text is None:
        return None
    kind, _, bits = text.partition(":")
    if kind != "log2" or not bits.isdigit():
        raise TvmcompError(f"--attn-probs takes log2:B (B bits, {' or '.join(map(str, SUPPORTED_BITS))}), not '{text}'")
    if int(bits) not in SUPPORTED_BITS:
        raise TvmcompError(f"--attn-probs log2:{bits}: B must be {' or '.join(map(str, SUPPORTED_BITS))}; the P @ V "
                           f"kernel multiplies 2^(levels - 1) in int16, which holds 2^14 at most (15 levels, B = 4)")
    return int(bits)


def exponent_range(largest_probability: float, bits: int) -> tuple[int, int]:
    """(top, bottom): the exponents of the largest and smallest nonzero levels."""
    top = max(0, int(np.round(-np.log2(max(largest_probability, 2.0**-60)))))
    return top, top + 2**bits - 2


def emit_log2_probs(builder, probs, top: int, bottom: int):
    """Relax: softmax outputs ``probs`` -> int16 ``2^(bottom - q)`` per the module docstring."""
    from tvm import relax

    exponent = builder.emit(relax.op.round(relax.op.multiply(relax.op.log(probs), relax.const(-1 / np.log(2), "float32"))))
    level = relax.op.power(relax.const(2.0, "float32"),
                           relax.op.subtract(relax.const(float(bottom), "float32"), relax.op.clip(exponent, top, bottom)))
    kept = relax.op.where(relax.op.greater(exponent, relax.const(float(bottom), "float32")),
                          relax.const(0.0, "float32"), level)
    return builder.emit(relax.op.astype(kept, "int16"))
