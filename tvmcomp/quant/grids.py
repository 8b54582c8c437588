"""Weight grids: the values a group of weights may take, and how a weight is rounded onto them.

A grid is fitted to a group of rows of a weight ``[G, N]`` (one set of scales per output channel)
and rounds a value to codes in one or more *planes*; the value it stands for is
``sum_p scale_p * code_p``. Each plane is an integer weight of its own, so a Linear on a grid of
``P`` planes is ``P`` integer matmuls over the same input codes, each with its own scales, summed
in the epilogue (:mod:`.realize`).

- :class:`UniformGrid`, one plane: ``w ~ s * c``, ``s = max|w| / qmax`` (symmetric, as
  :meth:`~tvmcomp.quant.schemes.TensorQuant.scale_zero_point`); with ``mse_clip``, ``s = r * max|w| /
  qmax`` with ``r`` among :data:`CLIP_RATIOS`, chosen per group and output channel by the squared
  error of the group's weights (an MSE clipping search, as AWQ's and llama.cpp's quantizers search
  the step): at 4 bits the largest weight of a group otherwise sets a step too coarse for the rest.
- :class:`PiecewiseGrid`, two planes (PWLQ, Fang et al. 2020): a breakpoint ``p`` splits the
  range into a centre ``|w| <= p`` and a tail ``p < |w| <= m`` (``m = max|w|``), each with its own
  ``qmax + 1`` levels per sign. With ``L = qmax``, ``s_c = p / L`` and ``s_t = (m - p) / L``::

      centre:  c = round(w / s_c),         t = 0                       w ~ s_c * c
      tail:    c = L * sign(w),            t = round((w - c s_c) / s_t)  w ~ sign(w) p + s_t * t

  A tail weight's centre code is +-L, which is exactly +-p: the tail's offset costs no third
  plane, and both planes are ordinary 4-bit codes on the int4 dot kernel. ``p`` is chosen per
  group and output channel among :data:`BREAKPOINTS` (fractions of ``m``) by the squared error of
  the group's weights, as PWLQ chooses it by the quantization error; ``p = m`` is the unclipped
  uniform grid.

Both work on any leading axes: :meth:`fit` reduces axis -2 (the group's rows) and returns scales
``[P, ..., N]``; :meth:`round` takes values and scales that broadcast and returns codes ``[P, ...]``.
"""

from __future__ import annotations

import numpy as np

from .schemes import Granularity, TensorQuant

BREAKPOINTS = np.linspace(0.25, 1.0, 16)  # candidate p / max|w|; 1.0: no tail (the uniform grid)
CLIP_RATIOS = np.linspace(0.5, 1.0, 11)  # candidate s / (max|w| / qmax); 1.0: no weight clipped


def least_error_scales(grid, rows: np.ndarray, candidates) -> np.ndarray:
    """Of the ``candidates`` (scales ``[P, ..., N]``) for the groups ``rows`` (``[..., G, N]``), the one
    that rounds each group and output channel with the least squared error (the first where tied)."""
    rows = np.asarray(rows, np.float64)
    best_scales, best_error = None, None
    for scales in candidates:
        row_scales = scales[..., None, :]
        error = np.square(rows - dequantize(grid.round(rows, row_scales), row_scales)).sum(axis=-2)
        if best_error is None:
            best_scales, best_error = scales, error
        else:
            better = error < best_error
            best_scales, best_error = np.where(better, scales, best_scales), np.minimum(error, best_error)
    return best_scales.astype(np.float32)


class UniformGrid:
    planes = 1

    def __init__(self, quant: TensorQuant):
        self.quant = quant

    def fit(self, rows: np.ndarray) -> np.ndarray:
        unclipped = self.quant.scale_zero_point(rows.min(axis=-2), rows.max(axis=-2))[0][None]
        if not self.quant.mse_clip:
            return unclipped
        return least_error_scales(self, rows, (ratio * unclipped.astype(np.float64) for ratio in CLIP_RATIOS[::-1]))

    def round(self, values: np.ndarray, scales: np.ndarray) -> np.ndarray:
        return np.clip(np.round(values / scales[0]), self.quant.qmin, self.quant.qmax)[None]


class PiecewiseGrid:
    planes = 2

    def __init__(self, quant: TensorQuant):
        self.levels = quant.qmax

    def fit(self, rows: np.ndarray) -> np.ndarray:
        bound = np.abs(np.asarray(rows, np.float64)).max(axis=-2)
        return least_error_scales(self, rows, (self._scales(bound, ratio) for ratio in BREAKPOINTS))

    def _scales(self, bound: np.ndarray, ratio: float) -> np.ndarray:
        centre = np.where(bound > 0, ratio * bound / self.levels, 1.0)
        return np.stack([centre, np.where(bound > 0, (1 - ratio) * bound / self.levels, 0.0)])

    def round(self, values: np.ndarray, scales: np.ndarray) -> np.ndarray:
        centre_step, tail_step = scales[0], scales[1]
        tail = np.abs(values) > self.levels * centre_step  # beyond the breakpoint p
        centre = np.where(tail, np.sign(values) * self.levels,
                          np.clip(np.round(values / centre_step), -self.levels, self.levels))
        # a tail step of 0 (no tail chosen): GPTQ's updates may still push a value past p; it keeps +-L
        residual = (values - centre * centre_step) / np.where(tail_step > 0, tail_step, 1.0)
        tail_codes = np.where(tail & (tail_step > 0), np.clip(np.round(residual), -self.levels, self.levels), 0)
        return np.stack([centre, tail_codes])


def dequantize(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """The values codes ``[P, ...]`` stand for on scales ``[P, ...]`` (broadcasting): the planes' sum."""
    return (codes * scales).sum(axis=0)


def weight_grid(quant: TensorQuant):
    return PiecewiseGrid(quant) if quant.regions == 2 else UniformGrid(quant)


def round_to_grid(weight_kn: np.ndarray, quant: TensorQuant) -> tuple[np.ndarray, np.ndarray]:
    """Nearest rounding of ``W[K, N]`` onto ``quant``'s grid in groups of ``group_size`` rows: codes
    ``[K, N]`` and scales ``[K / group_size, N]``, each with a leading plane axis if the grid has more
    than one plane."""
    grid = weight_grid(quant)
    k, n = weight_kn.shape
    grouped = weight_kn.reshape(k // quant.group_size, quant.group_size, n)
    scales = grid.fit(grouped)
    codes = grid.round(grouped, scales[:, :, None, :]).reshape(grid.planes, k, n).astype(quant.dtype)
    return (codes, scales) if grid.planes > 1 else (codes[0], scales[0])


def quantize_weight(weight: np.ndarray, quant: TensorQuant, channel_axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Integer weight and its scales: one per output channel along ``channel_axis`` (-1: Linear's
    [K, N]; 0: conv2d's OIHW), or with per-group granularity (Linears) one per group of
    ``group_size`` rows of [K, N] and output channel, as [K / group_size, N] (codes and scales with a
    leading plane axis for a piecewise grid)."""
    if quant.granularity is Granularity.PER_GROUP:
        return round_to_grid(weight, quant)
    reduced = tuple(a for a in range(weight.ndim) if a != channel_axis % weight.ndim)
    scale, zero = quant.scale_zero_point(weight.min(axis=reduced), weight.max(axis=reduced))
    shape = [-1 if a == channel_axis % weight.ndim else 1 for a in range(weight.ndim)]
    return quant.quantize(weight, scale.reshape(shape), zero.reshape(shape)), scale


def restored_weight(weight_kn: np.ndarray, quant: TensorQuant) -> np.ndarray:
    """The float values ``W[K, N]`` stands for once quantized by ``quant`` (symmetric: no zero point)."""
    codes, scales = quantize_weight(weight_kn, quant)
    if quant.granularity is not Granularity.PER_GROUP:
        return codes.astype(np.float32) * scales
    values = codes.astype(np.float32) * np.repeat(scales, quant.group_size, axis=-2)
    return values.sum(axis=0) if quant.regions > 1 else values
