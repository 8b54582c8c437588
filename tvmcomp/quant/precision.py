"""Mixed precision: which Linears int8 inputs cannot hold, from calibrated channel statistics.

A Linear's output SQNR under quantization is estimated without running the model: the signal is
``sum_n E[y_n^2] ~ sum_j E[x_j^2] sum_n W_jn^2`` (channels taken as uncorrelated) and the noise is
:func:`.balance.noise_estimate` for the factors balancing chose. On all-mpnet-base-v2 the FFN
output Linears (inputs: GELU outputs with a few channels 50x the rest) estimate 22-31 dB and every
other Linear 29-34 dB. Those below the threshold get wide inputs: 12-bit codes in int16 (16x finer
steps), multiplied on the target's int16 dot kernel (AVX2 ``vpmaddwd``) with the int8 weights
widened. 12 bits and not 16: a K = 3072 sum of 2^11 x 2^7 products stays within int32.
"""

from __future__ import annotations

import numpy as np

from .balance import noise_estimate

WIDE_BELOW_DB = 28.0  # --wide-inputs without a value


def output_sqnr_db(site_range, weight_kn: np.ndarray, activation, weight_levels: int, factors: np.ndarray) -> float:
    """Estimated signal-to-quantization-noise ratio of a Linear's output, in dB."""
    rms = np.asarray(site_range.channel_rms, np.float64)
    weight = np.asarray(weight_kn, np.float64)
    signal = float((rms ** 2) @ (weight ** 2).sum(axis=1))
    noise = noise_estimate(site_range.channel_lo, site_range.channel_hi, rms, weight, activation, weight_levels,
                           factors)
    return float(10 * np.log10(signal / noise)) if noise > 0 and signal > 0 else float("inf")
