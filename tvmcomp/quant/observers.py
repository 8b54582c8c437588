"""Calibration observers: see activation values batch by batch, then choose a clipping range.

All share one interface (``observe(x)``, ``range() -> (lo, hi)``) and are looked up by name.
They keep a fixed-size histogram, so memory does not grow with the calibration set.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import TvmcompError
from .schemes import TensorQuant

BINS = 2048


@dataclass
class MinMaxObserver:
    """The full observed range: no clipping, so outliers set the step size."""

    lo: float = np.inf
    hi: float = -np.inf

    def observe(self, x: np.ndarray) -> None:
        self.lo = min(self.lo, float(np.min(x)))
        self.hi = max(self.hi, float(np.max(x)))

    def range(self, quant: TensorQuant) -> tuple[float, float]:  # noqa: ARG002 (shared signature)
        if self.lo > self.hi:
            raise TvmcompError("an observer saw no data: give at least one calibration sample")
        return self.lo, self.hi


@dataclass
class HistogramObserver(MinMaxObserver):
    """Min-max plus a histogram over [lo, hi], re-binned as the range grows."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(BINS, np.float64))

    def observe(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).ravel()
        old_lo, old_hi = self.lo, self.hi
        super().observe(x)
        if old_lo <= old_hi and (self.lo < old_lo or self.hi > old_hi):
            centers = old_lo + (np.arange(BINS) + 0.5) * (old_hi - old_lo) / BINS
            self.counts, _ = np.histogram(centers, bins=BINS, range=(self.lo, self.hi), weights=self.counts)
        hist, _ = np.histogram(x, bins=BINS, range=(self.lo, self.hi) if self.hi > self.lo else (self.lo, self.lo + 1e-12))
        self.counts = self.counts + hist

    def centers(self) -> np.ndarray:
        return self.lo + (np.arange(BINS) + 0.5) * (self.hi - self.lo) / BINS

    def candidate_ranges(self, steps: int = 96):
        """Ranges clipped at magnitude t on both sides, t from the largest |value| down to 2% of it."""
        largest = max(abs(self.lo), abs(self.hi))
        for t in largest * np.geomspace(1.0, 0.02, steps):
            yield max(self.lo, -t), min(self.hi, t)


@dataclass
class PercentileObserver(HistogramObserver):
    """Clip the ``percentile`` tails (default keeps 99.99% of values)."""

    percentile: float = 99.99

    def range(self, quant: TensorQuant) -> tuple[float, float]:
        super().range(quant)
        cdf = np.cumsum(self.counts) / max(self.counts.sum(), 1)
        tail = (100.0 - self.percentile) / 100.0
        centers = self.centers()
        lo = centers[np.searchsorted(cdf, tail)] if self.lo < 0 else self.lo
        hi = centers[min(np.searchsorted(cdf, 1.0 - tail), BINS - 1)]
        return float(min(lo, 0.0) if self.lo < 0 else lo), float(hi)


def _mse(centers, counts, quant: TensorQuant, lo: float, hi: float) -> float:
    scale, zero = quant.scale_zero_point(np.float64(lo), np.float64(hi))
    restored = (np.clip(np.round(centers / scale) + zero, quant.qmin, quant.qmax) - zero) * scale
    return float(np.sum(counts * (centers - restored) ** 2))


@dataclass
class MSEObserver(HistogramObserver):
    """The clipping range, among shrinking candidates, with the least squared quantization error."""

    def range(self, quant: TensorQuant) -> tuple[float, float]:
        super().range(quant)
        centers = self.centers()
        return min(self.candidate_ranges(), key=lambda r: _mse(centers, self.counts, quant, *r))


def _kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    p, q = p / p.sum(), q / max(q.sum(), 1e-12)
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))


@dataclass
class EntropyObserver(HistogramObserver):
    """Entropy (KL) calibration: the threshold t on |x| whose clipped distribution (tail folded into
    the last bin) loses the least information when merged into the quantizer's levels."""

    def range(self, quant: TensorQuant) -> tuple[float, float]:
        super().range(quant)
        largest = max(abs(self.lo), abs(self.hi))
        magnitude, _ = np.histogram(np.abs(self.centers()), bins=BINS, range=(0, largest), weights=self.counts)
        levels = (quant.qmax - quant.qmin + 1) // 2
        best_t, best_kl = largest, np.inf
        for stop in range(levels, BINS + 1, 16):
            reference = magnitude[:stop].copy()
            reference[-1] += magnitude[stop:].sum()
            merged = np.zeros(stop)
            for chunk in np.array_split(np.arange(stop), levels):  # each level spreads over its non-empty bins
                nonzero = magnitude[chunk] > 0
                if nonzero.any():
                    merged[chunk[nonzero]] = magnitude[chunk].sum() / nonzero.sum()
            kl = _kl_divergence(reference, merged)
            if kl < best_kl:
                best_t, best_kl = stop * largest / BINS, kl
        return max(self.lo, -best_t), min(self.hi, best_t)


OBSERVERS = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
    "kl": EntropyObserver,
    # min-max, then each Linear input's step chosen by its output's error (:mod:`.step_search`, run by calibrate)
    "search": MinMaxObserver,
}


def make_observer(name: str):
    if name not in OBSERVERS:
        raise TvmcompError(f"unknown observer '{name}'; available: {', '.join(OBSERVERS)}")
    return OBSERVERS[name]()
