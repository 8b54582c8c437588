"""Step search (AOCQ's framework level, ``--observer search``): each Linear input's quantization step
chosen by the error of the Linear's output on calibration data, not by the input's own range.

An observer judges a range by how well the input survives rounding; what matters is the
Linear's output, where the weight's rounding and each channel's weight magnitude weigh in. So
during calibration every Linear site keeps a sample of its input rows (:class:`RowSample`; a text
model's padding rows left out), and afterwards its range is shrunk by each factor of
:data:`SHRINK` (every channel's range with it, for balancing) and quantized exactly as realize
will quantize it (balancing, power-of-two steps, the scheme's weight grid); the factor whose
integer Linear output is nearest the float one, ``|| dq(q(x)) @ dq(q(W)) - x @ W ||^2`` over the
sample, wins. Power-of-two steps keep the full range (:data:`POWER_OF_TWO_SHRINK`) where they are
powers of two throughout, on inputs that arrive as integer codes; a balanced input a power-of-two
scheme quantizes from float takes int8's steps (:func:`~.balance.power_of_two_common_step`), and
every shrink.

With ``--balance auto`` the balancing is searched with the step, by the same error: no balancing
and each alpha of :data:`~.balance.ALPHAS`, where the noise estimate of :mod:`.balance` would pick
one alone. The estimate models rounding as uniform noise of a step's size, which power-of-two
steps and factors are not (a factor rounded to a power of two moves a channel's step by up to
a factor of sqrt 2). On mpnet-base pot8's embedding cosine is 0.9821 against int8's 0.9828, and
min-max steps with the estimate's balancing 0.9805
(bench/results/2026-12-06-pot8-mpnet-base-balance-auto.md).

Linears that read one tensor (Q, K and V) are searched as one Linear whose weight is theirs side
by side (:func:`~.ops.linear.balance_groups`): one step and one balancing for the three, whose
summed output error the search minimizes, so realize quantizes their input once.

Other sites (attention operands, convolutions) keep the minmax range.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .balance import ALPHAS, AUTO, OFF, linear_input_steps, takes_real_steps
from .grids import restored_weight

SHRINK = tuple(np.geomspace(1.0, 0.25, 13))  # the range factors tried, from the full observed range down
# Whole power-of-two steps keep the full range: below it, the next step clips the widest channel at half its
# range, which one Linear's output error on a sample of rows accepts and the model does not (mpnet-base
# pot8 0.9808 -> 0.9821 without those candidates, manual builds with 2048 rows; docs/quantization.md)
POWER_OF_TWO_SHRINK = (1.0,)
ROWS = 2048  # input rows a Linear site keeps for the search (512: mpnet-base pot8 0.9814, a manual build)


def token_rows(x: np.ndarray, real_rows: np.ndarray | None = None) -> np.ndarray:
    """``x`` as rows of channels (its last axis), only those ``real_rows`` marks where it is given."""
    rows = x.reshape(-1, x.shape[-1])
    return rows[real_rows] if real_rows is not None and len(real_rows) == len(rows) else rows


class RowSample:
    """Up to :data:`ROWS` input rows of one site, spread over the calibration batches seen."""

    def __init__(self, batches: int):
        self.per_batch = max(ROWS // max(batches, 1), 1)
        self.rows: list[np.ndarray] = []

    def observe(self, x: np.ndarray, real_rows: np.ndarray | None = None) -> None:
        """``real_rows``: a mask over the rows of ``x`` (a text batch's attention mask: padding rows
        are most rows of short sentences at s128, and their outputs are never read), or None: all."""
        rows = token_rows(x, real_rows)
        self.rows.append(rows[np.linspace(0, len(rows) - 1, min(self.per_batch, len(rows))).astype(int)])

    def array(self) -> np.ndarray:
        return np.concatenate(self.rows).astype(np.float32)


def shrunk(site_range, factor: float, activation):
    """``site_range`` with its range (and every channel's) multiplied by ``factor``, its step and zero
    point recomputed for ``activation``."""
    lo, hi = site_range.lo * factor, site_range.hi * factor
    scale, zero = activation.scale_zero_point(np.float64(lo), np.float64(hi))
    scaled = {key: (np.asarray(value) * factor).tolist() for key in ("channel_lo", "channel_hi")
              if (value := getattr(site_range, key)) is not None}
    return replace(site_range, scale=float(scale), zero_point=int(zero), lo=float(lo), hi=float(hi), **scaled)


def output_error(rows: np.ndarray, weight_kn: np.ndarray, site_range, activation, weight_quant, balance) -> float:
    """Squared error of the integer Linear's output on ``rows``, quantized as realize quantizes."""
    quantized = linear_input_steps(site_range, weight_kn, weight_quant.qmax, activation, balance, calibrated=True)
    restored_w = restored_weight(quantized[3][:, None] * weight_kn, weight_quant)
    return _error(rows, rows @ weight_kn, quantized, activation, restored_w)


def _error(rows: np.ndarray, want: np.ndarray, quantized, activation, restored_w: np.ndarray) -> float:
    """:func:`output_error` from the input's (step, steps, zero points, factors) and the weight ``f * W``
    as restored from its grid; ``want``: ``rows @ W``."""
    return float(np.sum((restored_input(rows, quantized, activation) @ restored_w - want) ** 2))


def restored_input(rows: np.ndarray, quantized, activation) -> np.ndarray:
    """``x / f`` as realize's codes restore it, from the input's (step, steps, zero points, factors):
    in steps of ``step``, to be multiplied by ``f * W`` (the factors cancel, as in realize's epilogue)."""
    step, steps, zero, _ = quantized
    codes = np.clip(np.round(rows / (np.float32(step) if steps is None else steps)) + zero, activation.qmin,
                    activation.qmax)
    return ((codes - zero) * np.float32(step)).astype(np.float32)


def fitted_range(site_range, rows: np.ndarray, activation):
    """``site_range`` as calibration would have made it from ``rows`` alone: their min and max, per
    tensor and per channel where it keeps channels, and its step and zero point for ``activation``."""
    fitted = {"lo": float(rows.min()), "hi": float(rows.max())}
    if site_range.channel_lo is not None:
        fitted |= {"channel_lo": rows.min(axis=0).tolist(), "channel_hi": rows.max(axis=0).tolist(),
                   "channel_rms": np.sqrt((rows.astype(np.float64) ** 2).mean(axis=0)).tolist()}
    return shrunk(replace(site_range, **fitted), 1.0, activation)


def search_step(rows: np.ndarray, weight_kn: np.ndarray, site_range, activation, weight_quant, balance,
                integer_input: bool = False):
    """The shrunk range of ``site_range`` (one of :data:`SHRINK`) with the least :func:`output_error`
    on rows its ranges did not see; with ``balance`` "auto" and channel ranges, after the balancing
    (none, or each alpha of :data:`~.balance.ALPHAS`) with the least error on the full range, kept in
    the range for realize (``SiteRange.balance``).

    Each candidate is scored by two-fold cross-validation: the rows split into interleaved halves,
    each half quantized on the ranges of the other (:func:`fitted_range`). On the rows that made
    the ranges, nothing is ever clipped, so a choice that puts every channel at its calibrated edge
    (balancing, a shrunk range) looks free there, and clips values past that edge later: with 32
    calibration rows of a model without outlier channels, balancing chosen so cost 19 dB of held-out
    SQNR (bench/results/2026-12-06-balance-calibration-rows-gaussian-mlp.md). The winner is applied
    to the ranges of all rows. Candidates that quantize alike on those (alphas whose power-of-two
    factors round the same) are scored once. The balancing, then the shrink: 8 + 13 candidates
    where every pair was 104."""
    choices = [None]
    if balance == AUTO and site_range.channel_lo is not None:
        choices = [OFF, *ALPHAS]
    folds = [rows[0::2], rows[1::2]] if len(rows) >= 2 else [rows, rows]
    scored = [(held_out, held_out @ weight_kn, fitted_range(site_range, fitted, activation), {})
              for held_out, fitted in (folds, folds[::-1])]
    errors = {}

    def error_of(choice, factor):
        """(the candidate's cross-validated error, the candidate on the full ranges)."""
        candidate = shrunk(replace(site_range, balance=choice), factor, activation)
        key = _quantizes_as(linear_input_steps(candidate, weight_kn, weight_quant.qmax, activation, balance,
                                               calibrated=True, integer_input=integer_input))
        if key not in errors:
            errors[key] = 0.0
            for held_out, want, fitted, restored in scored:
                quantized = linear_input_steps(shrunk(replace(fitted, balance=choice), factor, activation), weight_kn,
                                               weight_quant.qmax, activation, balance, calibrated=True,
                                               integer_input=integer_input)
                factors = quantized[3].tobytes()
                if restored.get("factors") != factors:  # the restored weight, again only where the factors change
                    restored.update(factors=factors, weight=restored_weight(quantized[3][:, None] * weight_kn,
                                                                            weight_quant))
                errors[key] += _error(held_out, want, quantized, activation, restored["weight"])
        return errors[key], candidate

    whole_steps = activation.power_of_two and not takes_real_steps(site_range, activation, balance, integer_input)
    shrinks = POWER_OF_TWO_SHRINK if whole_steps else SHRINK
    chosen = min(choices, key=lambda choice: error_of(choice, shrinks[0])[0])
    return min((error_of(chosen, factor) for factor in shrinks), key=lambda pair: pair[0])[1]


def _quantizes_as(quantized) -> tuple:
    """A key equal for two (step, steps, zero points, factors) that quantize alike."""
    step, steps, zero, factors = quantized
    return tuple(np.asarray(v, np.float64).tobytes() for v in (step, steps if steps is not None else 0, zero, factors))
