"""Channel balancing (SmoothQuant; AOCQ's operator level): move activation outliers into the weights.

A Linear's input channels can differ in range by 50x (in BERT-base-class encoders, a few channels
of the FFN's GELU output reach 70 where the rest stay near 1), so one per-tensor activation step
is coarse for all but the outliers. With factors ``f_j`` per input channel ``j``::

    y = x @ W = (x / f) @ (f[:, None] * W)

``f_j = max|x_j|^alpha / max|W_j|^(1 - alpha)`` (SmoothQuant's form) evens out the channels of
``x / f``, and the weight rows absorb ``f``, where their per-output-channel scales take it. No one
alpha suits every Linear (on all-mpnet-base-v2, 0.5 everywhere made int8 worse), so by default
each Linear gets the alpha, or no balancing, that minimizes an estimate of its output's
quantization noise from its calibrated channel ranges and its weights (:func:`noise_estimate`).
Linears that read one tensor (Q, K and V) are balanced as one Linear with their weights side by
side, as SmoothQuant does, so that one quantize serves all of them (:func:`~.ops.linear.balance_groups`).

Nothing is added to the graph: the realized Linear already quantizes its input with one scale and
zero point per input channel (vectors, see :mod:`.realize`), so the balanced step is
``scale_j = a * f_j`` with one common step ``a`` and a zero point per channel
(:func:`balanced_steps`); the integer kernel and epilogue are unchanged, and the zero-point
correction stays a constant (``sum_j z_j Wq_jn``). The float model is untouched.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

AUTO = "auto"  # choose alpha per Linear (choose_factors)
OFF = "off"  # no balancing, where a scheme balances by default
ALPHAS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)  # the grid ``choose_factors`` searches per Linear


def balance_factors(channel_absmax: np.ndarray, weight_kn: np.ndarray, alpha: float) -> np.ndarray:
    """``f_j = max|x_j|^alpha / max|W_j|^(1 - alpha)`` for a Linear with weight ``[K, N]``, with
    ``max|x_j|`` no less than the median channel's; channels that never saw data (or have an all-zero
    weight row) keep ``f_j = 1``.

    The floor: balancing moves outlier channels into the weights, and gives quiet channels finer
    steps, each covering its calibrated range and little more. A channel calibration saw near zero
    says least about new inputs: in MiniLM pruned to 0.7, FFN neurons that no calibration sentence
    fired (GELU outputs up to 0.0) fire on the [SEP] of a one-word input (1.05), which their step
    clipped at a fraction of that (WordSim Spearman 0.51 against 0.76 unbalanced). A quiet channel
    now gets the median channel's step: 0.65 there (bench/results/2026-12-06-prune-minilm-median-floor.md),
    and int8's embedding cosine went 0.9968 -> 0.9973 on MiniLM, 0.9875 -> 0.9945 on mpnet-base
    (bench/results/2026-12-06-schemes-*-median-floor.md)."""
    x_max = np.asarray(channel_absmax, np.float64)
    w_max = np.abs(np.asarray(weight_kn, np.float64)).max(axis=1)
    usable = (x_max > 0) & (w_max > 0)
    factors = np.ones_like(x_max)
    if usable.any():  # channels calibration saw quiet keep the median channel's range
        x_max = np.maximum(x_max, np.median(x_max[usable]))
    factors[usable] = x_max[usable] ** alpha / w_max[usable] ** (1 - alpha)
    return factors.astype(np.float32)


def power_of_two_factors(channel_absmax: np.ndarray, weight_kn: np.ndarray, alpha: float) -> np.ndarray:
    """:func:`balance_factors` rounded to the nearest power of two (FQ-ViT's power-of-two factors, as
    H-ViT uses them): with a power-of-two common step, every channel's step ``a * f_j`` stays a
    power of two, so dividing by ``f_j`` is a shift."""
    return (2.0 ** np.round(np.log2(balance_factors(channel_absmax, weight_kn, alpha)))).astype(np.float32)


def balanced_steps(channel_lo, channel_hi, factors: np.ndarray, activation) -> tuple[float, np.ndarray]:
    """One common step ``a`` and a zero point per channel for ``x / f``: ``a`` covers the widest
    balanced channel range, and each channel's zero point places its own range within the codes, so
    channels whose ranges sit apart (a GELU output that is never below -0.17, say) waste none."""
    lo = np.minimum(np.asarray(channel_lo, np.float64), 0) / factors
    hi = np.maximum(np.asarray(channel_hi, np.float64), 0) / factors
    scales, zeros = activation.scale_zero_point(lo, hi)
    step = float(np.float32(scales.max()))
    if activation.symmetric:
        return step, zeros
    return step, np.clip(np.round(activation.qmin - lo / step), activation.qmin, activation.qmax).astype(np.int32)


def noise_estimate(channel_lo, channel_hi, channel_rms, weight_kn: np.ndarray, activation, weight_levels: int,
                   factors: np.ndarray) -> float:
    """Summed variance of a Linear's output error from rounding, balanced by ``factors``: each input
    step ``a * f_j`` adds ``(a f_j)^2 / 12 * W_jn^2``, each weight step ``s_n`` (per output channel,
    of the balanced weight) adds ``s_n^2 / 12 * E[(x_j / f_j)^2]``."""
    scale, _ = balanced_steps(channel_lo, channel_hi, factors, activation)
    f = np.asarray(factors, np.float64)
    weight = np.asarray(weight_kn, np.float64)
    weight_step = np.abs(f[:, None] * weight).max(axis=0) / weight_levels
    from_inputs = ((float(scale) * f) ** 2) @ (weight ** 2)
    from_weights = (weight_step ** 2) * float(np.sum((np.asarray(channel_rms) / f) ** 2))
    return float((from_inputs.sum() + from_weights.sum()) / 12)


def choose_factors(site_range, weight_kn: np.ndarray, activation, weight_levels: int,
                   alpha: float | None) -> np.ndarray:
    """The balancing factors of one Linear from its calibrated channel statistics: for ``alpha``,
    SmoothQuant's; for None, the least noisy of no balancing and each alpha of :data:`ALPHAS`.
    Powers of two where ``activation``'s steps are (:func:`power_of_two_factors`)."""
    lo, hi = np.asarray(site_range.channel_lo, np.float64), np.asarray(site_range.channel_hi, np.float64)
    absmax = np.maximum(np.abs(lo), np.abs(hi))
    factors = balance_factors if not activation.power_of_two else power_of_two_factors
    if alpha is not None:
        return factors(absmax, weight_kn, alpha)
    candidates = [np.ones(len(lo), np.float32)] + [factors(absmax, weight_kn, a) for a in ALPHAS]
    return min(candidates, key=lambda f: noise_estimate(lo, hi, site_range.channel_rms, weight_kn, activation,
                                                        weight_levels, f))


def linear_input_steps(site_range, weight_kn: np.ndarray, weight_levels: int, activation, balance,
                       calibrated: bool, integer_input: bool = False):
    """(common step, per-channel steps, zero points, factors) of a Linear's input quantized as
    ``activation``: balanced (``balance``: an alpha or :data:`AUTO`) where asked and the site has
    channel ranges, else one step for all (the site's own where ``calibrated`` for ``activation``,
    steps None) and factors of 1. Where the step search chose the site's balancing
    (``site_range.balance``), that choice stands for ``balance``. Power-of-two ``activation`` steps
    on an input quantized from float, balanced: :func:`power_of_two_common_step`; on an
    ``integer_input`` (another quantized op's codes, :func:`~.annotate.integer_inputs`): powers of
    two throughout."""
    ones, requested = np.ones(weight_kn.shape[0], np.float32), balance
    if balance is not None and site_range.balance is not None:
        balance = None if site_range.balance == OFF else site_range.balance
    if takes_real_steps(site_range, activation, requested, integer_input):
        return power_of_two_common_step(site_range, weight_kn, weight_levels, activation, balance)
    if balance is None or site_range.channel_lo is None:
        if calibrated:
            return site_range.scale, None, site_range.zero_point, ones
        step, zero = activation.scale_zero_point(site_range.lo, site_range.hi)
        return float(step), np.full(len(ones), step, np.float32), int(zero), ones
    alpha = None if balance == AUTO else float(balance)
    factors = choose_factors(site_range, weight_kn, activation, weight_levels, alpha)
    step, zeros = balanced_steps(site_range.channel_lo, site_range.channel_hi, factors, activation)
    return step, np.float32(step) * factors, zeros, factors


def takes_real_steps(site_range, activation, balance, integer_input: bool) -> bool:
    """Whether a Linear input of power-of-two ``activation`` steps is quantized with int8's steps
    (:func:`power_of_two_common_step`): balanced (``balance`` asked, channel ranges kept), from float."""
    return activation.power_of_two and balance is not None and site_range.channel_lo is not None and not integer_input


def power_of_two_common_step(site_range, weight_kn: np.ndarray, weight_levels: int, activation, balance):
    """:func:`linear_input_steps` of a power-of-two scheme's Linear input quantized from float: its
    steps are int8's (real factors for ``balance``, an alpha or :data:`AUTO` as :func:`choose_factors`
    picks them, or none where None, and a real step for the balanced input), and only the step the
    accumulator carries is a power of two. With int8's step ``a`` and factors ``f``, the common step
    is the power of two ``2^e >= a`` and the factors are ``f a / 2^e``: ``x`` is quantized by
    ``a f``, the weight rows take ``f a / 2^e``, and the accumulator's step ``2^e s_w`` stays a
    power of two, so requantizing it to the next op's codes is still a shift (H-ViT's point). A
    float producer (a LayerNorm, a GELU) does not care how its output is divided; the factors are
    what SmoothQuant folds into a LayerNorm's gamma and beta. Factors and steps rounded to powers of
    two moved a channel's step by up to sqrt(2) and the common one by up to 2: mpnet-base pot8 was
    0.0027 of embedding cosine under int8 that way (bench/results/2026-12-06-schemes-*-common-step.md)."""
    real = replace(activation, power_of_two=False)
    factors = np.ones(weight_kn.shape[0], np.float32) if balance is None else \
        choose_factors(site_range, weight_kn, real, weight_levels, None if balance == AUTO else float(balance))
    step, zeros = balanced_steps(site_range.channel_lo, site_range.channel_hi, factors, real)
    common = float(2.0 ** np.ceil(np.log2(step)))
    return common, np.float32(step) * factors, zeros, (factors * np.float32(step / common)).astype(np.float32)
