"""Attention probabilities: the integer codes a softmax output takes where it multiplies V (``--attn-probs``).

P @ V runs on the int16 dot kernel against V's centered int8 codes, so P's codes are int16 whatever
grid they sit on: the grid costs accuracy, never speed. Two grids, one interface (``spec``,
``observer()`` for what calibration must choose, ``emit`` for the Relax that makes the codes):

- ``uniform:B`` (B = 8..15), int8's default ``uniform:15``: ``q = min(round(p 2^B), 2^B - 1)``, a
  fixed power-of-two step, nothing to calibrate. A row's codes sum to about ``2^B``, so
  ``|P_int @ V_c| <= (2^B + n/2) * 255`` stays far inside int32. Why 15: on vit-s (4 images, float
  P and V of every layer) 8-bit steps put a 4-12% relative error on P @ V, 15 bits 0.02-0.04%;
  the 8-bit Q and K of the scores cost 0.4-3%.
- ``log2:B`` (B = 3, 4; TP-ViT): each probability rounded to the nearest power of two in the log
  domain, ``e = round(-log2 p)``, taken exactly from the float's bits (its exponent, and its
  mantissa against sqrt 2); ``2^B - 1`` levels ``2^-top .. 2^-bottom`` (``bottom = top + 2^B - 2``),
  ``e`` clipped to ``top`` and truncated to 0 beyond ``bottom``. The code is the shift
  ``2^(bottom - e)`` (it must fit int16: ``2^B - 2 <= 14``), and the row is renormalized::

      y = (P_int @ V_c) * s_v / sum_j P_int[j]

  Log-domain rounding moves each probability by up to a factor sqrt 2 and truncation drops the
  tail, so a row's mass drifts from 1; dividing by the codes' row sum restores it (vit-s, log2:4:
  P @ V's relative error 1.7-6.8% per layer against 4.3-11.6% without). ``top`` is calibrated by
  error (TP-ViT's truncation point): the one whose renormalized grid lies nearest the calibration
  probabilities in squared error, not the exponent of the largest one (at 3 bits on vit-s that
  kept 1 and truncated the spread attention of 257 tokens: cosine 0.42).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from ..errors import TvmcompError

UNIFORM_BITS = range(8, 16)
LOG2_BITS = (3, 4)
CANDIDATE_TOPS = range(0, 10)  # log2: 2^0 .. 2^-9 as the largest level


def log2_exponents(p: np.ndarray) -> np.ndarray:
    """``round(-log2 p)`` from float32 bits: ``p = 1.m * 2^E`` gives ``-E``, one more when ``1.m``
    exceeds sqrt 2 (mantissa 0x3504F3 is the largest below it); 0 and denormals land beyond 125."""
    bits = np.ascontiguousarray(p, np.float32).view(np.int32).astype(np.int64)
    return 127 - (bits >> 23) - ((bits & 0x7FFFFF) > 0x3504F3)


def log2_codes(p: np.ndarray, top: int, bits: int) -> np.ndarray:
    """The int16 codes ``2^(bottom - clip(e, top, bottom))``, 0 beyond ``bottom``."""
    bottom = top + 2**bits - 2
    e = log2_exponents(p)
    return np.where(e > bottom, 0, np.left_shift(1, bottom - np.clip(e, top, bottom))).astype(np.int16)


@dataclass
class Log2TopObserver:
    """Squared error of each candidate top's renormalized grid against the probabilities seen."""

    bits: int
    errors: np.ndarray = None
    probabilities: bool = True  # every value seen lay in [0, 1]

    def observe(self, p: np.ndarray) -> None:
        if self.errors is None:
            self.errors = np.zeros(len(CANDIDATE_TOPS))
        if not self.probabilities or p.min() < 0 or p.max() > 1:
            self.probabilities = False
            return
        rows = p.reshape(-1, p.shape[-1])
        for i, top in enumerate(CANDIDATE_TOPS):
            grid = log2_codes(rows, top, self.bits).astype(np.float64)
            grid /= np.maximum(grid.sum(-1, keepdims=True), 1)
            self.errors[i] += np.square(grid - rows).sum()

    def params(self) -> dict | None:
        if self.errors is None or not self.probabilities:
            return None
        return {"top": int(CANDIDATE_TOPS[int(np.argmin(self.errors))])}


@dataclass(frozen=True)
class _Grid:
    bits: int
    kind: ClassVar[str]
    calibrates: ClassVar[bool]  # whether calibration chooses parameters (``observer()``)

    @property
    def spec(self) -> str:
        return f"{self.kind}:{self.bits}"


@dataclass(frozen=True)
class UniformProbs(_Grid):
    kind: ClassVar[str] = "uniform"
    calibrates: ClassVar[bool] = False

    def observer(self):
        return None

    def emit(self, builder, probs, params: dict | None):  # noqa: ARG002 (shared signature)
        """(int16 codes, their scale, None: no row normalizer)."""
        from tvm import relax

        codes = relax.op.quantize(probs, relax.const(np.float32(2.0**-self.bits)), relax.const(0, "int32"),
                                  out_dtype="int16")
        if self.bits < 15:
            codes = relax.op.clip(codes, 0, 2**self.bits - 1)
        return builder.emit(codes), np.float32(2.0**-self.bits), None


@dataclass(frozen=True)
class Log2Probs(_Grid):
    kind: ClassVar[str] = "log2"
    calibrates: ClassVar[bool] = True

    def observer(self) -> Log2TopObserver:
        return Log2TopObserver(self.bits)

    def emit(self, builder, probs, params: dict | None):
        """(int16 codes ``2^(bottom - e)``, scale 1, their int32 row sums: the normalizer)."""
        from tvm import relax, te, tirx

        if not params:
            raise TvmcompError("log2 attention probabilities need a calibrated top level: recalibrate "
                               "(the saved calibration has none)")
        top, bottom = params["top"], params["top"] + 2**self.bits - 2

        def codes(p):
            def code(*i):
                bits = tirx.reinterpret("int32", p(*i))
                e = 127 - (bits >> 23) - tirx.Select((bits & 0x7FFFFF) > 0x3504F3, 1, 0)
                shift = bottom - tirx.min(tirx.max(e, top), bottom)
                return tirx.Select(e > bottom, tirx.const(0, "int16"),
                                   (tirx.const(1, "int32") << shift).astype("int16"))
            return te.compute(p.shape, code, name="log2_codes")

        emitted = builder.emit_te(codes, probs, primfunc_name_hint="log2_codes")
        row_sums = builder.emit(relax.op.sum(relax.op.astype(emitted, "int32"), axis=[-1], keepdims=True))
        return emitted, np.float32(1.0), row_sums


_KINDS = {"uniform": (UniformProbs, UNIFORM_BITS), "log2": (Log2Probs, LOG2_BITS)}


def parse_attn_probs(text: str):
    """``"log2:4"`` -> Log2Probs(4), ``"uniform:15"`` -> UniformProbs(15); else a one-line error."""
    kind, _, bits = text.partition(":")
    if kind not in _KINDS or not bits.isdigit():
        raise TvmcompError(f"--attn-probs takes uniform:B (B = 8..15) or log2:B (B = 3 or 4), not '{text}'")
    quantizer, allowed = _KINDS[kind]
    if int(bits) not in allowed:
        why = ("the codes 2^(levels - 1) must fit int16, which holds 2^14 at most (15 levels, B = 4)" if kind == "log2"
               else "codes are int16 and at least 8 bits")
        raise TvmcompError(f"--attn-probs {text}: B must be {min(allowed)}..{max(allowed)} for {kind}; {why}")
    return quantizer(int(bits))
