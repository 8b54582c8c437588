"""Dense-and-sparse Linear weights (SqueezeLLM, SpQR): the few weights far past their output
column's rms leave the int8 weight, so that they do not set the column's step, and are added to
the integer Linear as int16 codes on that column's finer step.

A column's int8 step is its largest weight over 127. In BERT-class encoders some FFN
down-projection columns write the residual stream's massive activations through one weight
(MiniLM layer 0, column 99: one weight of 7.7, the rest near 0.05); that weight alone makes the
step so coarse that 912 of the column's 1136 weights round to zero, and balancing, which puts the
weight in the row of the outlier input channel, makes it worse (1070 at alpha 0.7). Pruned to 0.7
FLOPs, that one Linear in int8 took MiniLM's WordSim from 0.90 to 0.83
(bench/results/2026-12-06-balance-columns-minilm.md). Split off::

    W = D + S       S: the weights with |W[k, n]| > t * rms(W[:, n]), D: the rest (0 there)

``D`` is balanced and quantized as any weight (``f * D`` to int8 codes ``Dq`` with step ``s_w[n]``).
Each outlier becomes an integer code on its column's step, ``B[k, n] = round(f_k S[k, n] / s_w[n])``
(up to a few thousand: int16), so the Linear stays on integers with the weight ``Dq + B``; the
rows of ``B`` that hold an outlier (R input channels, a handful) are added in the matmul's own
kernel, after its reduction::

    acc[m, n] = sum_k xq[m, k] Dq[k, n] + sum_{r < R} xq[m, k_r] * B[k_r, n]      # int32

and the zero-point correction is that of ``Dq + B``. The split is made on the unbalanced weight,
so it does not depend on the balancing calibration searches; balancing, the step search and the
rounding see only ``D``.

The input columns ``xq[..., k_r]`` are gathered before the matmul (a small kernel of their own)
and ``R`` is padded with rows of zero codes to a power of two, at least :data:`MIN_OUTLIER_ROWS`:
a Linear's matmul kernel is then the same TIR function as every other Linear's of its shape and
padded ``R``, so they share one tuning record (with the channels constants inside it, each of
MiniLM's 13 Linears with outliers was a kernel of its own, tuned on its own). The padded rows cost
at most ``2R`` (or 8) multiply-adds an output after the reduction's ``K``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INT32_MAX = 2**31 - 1
MIN_OUTLIER_ROWS = 8  # Linears with 1 to 8 outlier channels share a kernel


@dataclass(frozen=True)
class SplitWeight:
    dense: np.ndarray  # [K, N]: the weight with its outliers set to 0; what is balanced and quantized
    sparse: np.ndarray  # [K, N]: the outliers, 0 elsewhere

    @property
    def outliers(self) -> int:
        return int(np.count_nonzero(self.sparse))


def split_outliers(weight_kn: np.ndarray, times_rms: float | None) -> SplitWeight:
    """``weight_kn`` ([K, N]) as its dense part and the weights past ``times_rms`` times their column's
    rms (none where ``times_rms`` is None). A column of K weights cannot hold one past sqrt(K) times
    its rms, so small Linears (K <= times_rms ** 2) never split."""
    weight_kn = np.asarray(weight_kn, np.float32)
    if times_rms is None:
        return SplitWeight(weight_kn, np.zeros_like(weight_kn))
    column_rms = np.sqrt(np.mean(np.square(weight_kn, dtype=np.float64), axis=0))
    outlier = np.abs(weight_kn) > times_rms * column_rms
    return SplitWeight(np.where(outlier, np.float32(0), weight_kn), np.where(outlier, weight_kn, np.float32(0)))


def outlier_codes(sparse: np.ndarray, factors: np.ndarray, w_scale: np.ndarray, levels: int,
                  input_span: int) -> tuple[tuple[int, ...], np.ndarray] | None:
    """The split-off weights ``sparse`` ([K, N]) as int16 codes on the columns' steps ``w_scale``, for
    the balancing ``factors``: ``B = round(f S / s_w)``, the rows of the input channels that hold an
    outlier. Returns (channels, codes [R, N] int16); None where a code exceeds int16 or the int32
    accumulator could overflow: ``input_span`` (the most ``|xq - z|``) times the column's
    ``K * levels`` (the dense codes' bound) ``+ sum |B|``."""
    codes = np.round(factors[:, None].astype(np.float64) * sparse / w_scale.astype(np.float64))
    if np.abs(codes).max() > np.iinfo(np.int16).max or \
            (input_span * (len(sparse) * levels + np.abs(codes).sum(axis=0))).max() > INT32_MAX:
        return None
    channels = np.flatnonzero((codes != 0).any(axis=1))
    return tuple(int(channel) for channel in channels), codes[channels].astype(np.int16)


def padded_outlier_rows(channels: tuple[int, ...], codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``channels`` (R) and their ``codes`` ([R, N]) padded with rows of zero codes (on the first
    channel) to the next power of two of R, at least :data:`MIN_OUTLIER_ROWS`: the kernel's channel
    vector (int32) and code rows (int16)."""
    rows = max(MIN_OUTLIER_ROWS, 1 << (len(channels) - 1).bit_length())
    padded_channels = np.full(rows, channels[0], np.int32)
    padded_channels[:len(channels)] = channels
    padded_codes = np.zeros((rows, codes.shape[1]), np.int16)
    padded_codes[:len(channels)] = codes
    return padded_channels, padded_codes


def plus_outlier_codes(acc, outlier_inputs, codes):
    """TE compute: ``acc[..., n] + sum_r outlier_inputs[..., r] * codes[r, n]`` in int32, where
    ``outlier_inputs`` ([..., R]) are the input codes on the outlier channels, gathered before the
    matmul. The sum over ``r`` is spelled out, so the block is elementwise over the output and
    stays an epilogue of the matmul that computes ``acc``; its reads are affine, so it vectorizes
    (read through the channels inside this block, it did not: MiniLM's FFN-up with 2 outlier
    channels took 0.82 ms tuned against 0.56 without)."""
    from tvm import te

    def total(*i):
        value = acc(*i)
        for row in range(int(codes.shape[0])):
            value = value + outlier_inputs[(*i[:-1], row)].astype("int32") * codes[row, i[-1]].astype("int32")
        return value

    return te.compute(acc.shape, total, name=f"{acc.op.name}_outliers")
