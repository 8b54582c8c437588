"""Quantization schemes: small registered dataclasses sharing one interface.

A scheme says, for weights, activations and embedding tables, how many bits, signed or not,
symmetric or not, and at what granularity scales are kept. Adding a scheme is adding an entry to ``SCHEMES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from ..errors import TvmcompError

FLOAT = "fp32"  # the variant name of an uncompressed build


class Granularity(str, Enum):
    PER_TENSOR = "per_tensor"
    PER_CHANNEL = "per_channel"  # one scale per output channel (weights) or per row (embedding tables)
    PER_GROUP = "per_group"  # one scale per output channel and run of ``group_size`` input channels (weights)
    # one scale and zero point per token (row), from its own min and max at run time (Linear inputs)
    PER_TOKEN = "per_token"


@dataclass(frozen=True)
class TensorQuant:
    """How one tensor is mapped to integers: ``q = clip(round(x / scale) + zero_point, qmin, qmax)``."""

    bits: int
    signed: bool
    symmetric: bool
    granularity: Granularity = Granularity.PER_TENSOR
    power_of_two: bool = False  # steps rounded up to powers of two (H-ViT): rescaling becomes a shift
    group_size: int | None = None  # input channels sharing a scale (PER_GROUP only)
    # 2: PWLQ's centre and tail regions, each with its own codes and scale (:mod:`.grids`; PER_GROUP only)
    regions: int = 1
    # each group's step chosen down to half of max|w| / qmax by its squared error (:class:`.grids.UniformGrid`;
    # PER_GROUP, one region)
    mse_clip: bool = False

    @property
    def qmin(self) -> int:
        # Symmetric signed ranges drop -2^(b-1) so that -x is representable (int8: [-127, 127]).
        return -(2 ** (self.bits - 1)) + int(self.symmetric) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def dtype(self) -> str:
        return f"{'int' if self.signed else 'uint'}{next(width for width in (8, 16, 32) if self.bits <= width)}"

    def scale_zero_point(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point covering [lo, hi] (arrays: one entry per channel, or 0-d)."""
        lo = np.minimum(np.asarray(lo, np.float64), 0.0)
        hi = np.maximum(np.asarray(hi, np.float64), 0.0)
        if self.symmetric:
            bound = np.maximum(np.abs(lo), np.abs(hi))
            scale = np.where(bound > 0, bound / self.qmax, 1.0)
        else:
            span = hi - lo
            scale = np.where(span > 0, span / (self.qmax - self.qmin), 1.0)
        if self.power_of_two:  # up, so the range still fits
            scale = 2.0 ** np.ceil(np.log2(scale))
        if self.symmetric:
            zero = np.zeros_like(scale) if self.signed else np.full_like(scale, (self.qmax + 1) // 2)
        else:  # from the step as rounded: the zero point places lo on qmin
            zero = np.clip(np.round(self.qmin - lo / scale), self.qmin, self.qmax)
        return scale.astype(np.float32), zero.astype(np.int32)

    def quantize(self, x: np.ndarray, scale, zero_point) -> np.ndarray:
        """The reference rounding every kernel must match: round half to even, then clip."""
        q = np.round(np.asarray(x, np.float32) / scale) + zero_point
        return np.clip(q, self.qmin, self.qmax).astype(self.dtype)


@dataclass(frozen=True)
class QuantScheme:
    name: str
    description: str
    weight: TensorQuant
    activation: TensorQuant | None  # None: activations stay float (weight-only: the weights decoded in the matmul)
    observer: str = "minmax"  # default activation observer (see observers.OBSERVERS)
    embedding: TensorQuant | None = None  # embedding tables' rows (None: tables stay float)
    wide_activation: TensorQuant | None = None  # inputs of Linears int8 cannot hold (--wide-inputs; :mod:`.precision`)
    # softmax outputs feeding P @ V (--attn-probs; :mod:`.attn_probs`); None: quantized as activations
    attn_probs: str | None = None
    # "integer": an accumulator feeding the next quantized op through a bias, reshapes and permutes is
    # requantized in integers (:mod:`.integer_chain`); "float": dequantized, then quantized again
    requantize: str = "float"
    # channel balancing unless --balance says otherwise: None, "auto" or an alpha (:mod:`.balance`)
    balance: str | float | None = None
    # Linear inputs where they differ from ``activation``: per-token steps computed at run time (--per-token)
    linear_activation: TensorQuant | None = None
    # how Linear weights are rounded to their grid: "nearest", or "gptq" (:mod:`.gptq`: errors spread
    # over the input channels not yet rounded, from the calibration inputs' second moments)
    weight_rounding: str = "nearest"
    # Linear weights past this many times their output column's rms left out of the int8 weight, so that
    # they do not set its column's step, and added as int16 codes on that step (:mod:`.outliers`); None: none
    weight_outliers: float | None = None

    @property
    def calibration_samples(self) -> int:
        """Calibration batches unless --calibration-samples says otherwise: ranges settle on 32, GPTQ's second
        moments ``H [K, K]`` want more tokens than a Linear has inputs (1536 in a BERT FFN's down projection,
        where 32 sentences give about 900): MiniLM's embedding cosine in w4a8 g32 0.9633 -> 0.9722, g128
        0.9519 -> 0.9640, w4 0.9715 -> 0.9802 (bench/results/2026-12-07-gptq-samples-minilm.md)."""
        return 128 if self.weight_rounding == "gptq" else 32

    @property
    def linear_input(self) -> TensorQuant | None:
        """How Linear inputs are quantized: ``linear_activation``, else ``activation``."""
        return self.linear_activation or self.activation


SCHEMES: dict[str, QuantScheme] = {}
WEIGHT_ROUNDINGS = ("nearest", "gptq")
GROUP_SIZES = (32, 64, 128)  # multiples of every int4 kernel's 8 codes per lane, dividing BERT's and ViT's widths


def unexecutable(scheme: QuantScheme) -> list[str]:
    """Why :mod:`.realize` cannot compute ``scheme`` exactly (empty: it can). Realize keeps weights
    symmetric with one scale per output channel (no weight zero-point term), activations per tensor
    in at most 8 bits (their dot kernels' operand), wide activations and embedding rows likewise;
    Linear inputs may have per-token steps, computed at run time (so never power-of-two steps that
    an integer requantization could fold at build time)."""
    reasons = []
    for role, quant in (("weights", scheme.weight), ("embedding tables", scheme.embedding)):
        if quant is None:
            continue
        if not (quant.signed and quant.symmetric):
            reasons.append(f"{role} must be signed and symmetric (realize has no weight zero point)")
        if quant.granularity is Granularity.PER_GROUP:
            if quant.bits != 4:
                reasons.append(f"{role} with a scale per group must be 4-bit (packed two codes per byte)")
            if quant.group_size not in GROUP_SIZES:
                reasons.append(f"groups of {role} must hold {', '.join(map(str, GROUP_SIZES))} channels, "
                               f"not {quant.group_size}")
        elif quant.granularity is not Granularity.PER_CHANNEL:
            reasons.append(f"{role} must have one scale per channel or per group")
        if quant.bits > 8:
            reasons.append(f"{role} must fit int8")
        if quant.regions not in (1, 2):
            reasons.append(f"{role} have one region or two (PWLQ's centre and tail), not {quant.regions}")
        if quant.regions == 2 and (role != "weights" or quant.granularity is not Granularity.PER_GROUP
                                   or scheme.activation is None):
            reasons.append("two regions are for 4-bit weights in groups with quantized activations (two int4 "
                           "dot-kernel accumulations; the weight-only kernel decodes one code per weight)")
        if quant.mse_clip and (quant.granularity is not Granularity.PER_GROUP or quant.regions != 1
                               or quant.power_of_two):
            reasons.append(f"mse_clip searches the step of {role} in groups with one region and steps that need "
                           "not be powers of two (a piecewise grid searches its breakpoint instead)")
    for role, quant, bits in (("activations", scheme.activation, 8), ("wide activations", scheme.wide_activation, 12)):
        if quant is None:
            continue
        if quant.granularity is not Granularity.PER_TENSOR:
            reasons.append(f"{role} must have one scale per tensor")
        if quant.bits > bits:
            reasons.append(f"{role} must fit {bits} bits (int32 accumulation of a 3072-long dot product)")
    if scheme.linear_activation is not None:
        quant = scheme.linear_activation
        if scheme.activation is None or quant.bits != scheme.activation.bits or quant.dtype != scheme.activation.dtype:
            reasons.append("Linear inputs take the activations' codes (the same dot kernel), only their steps may differ")
        if quant.granularity not in (Granularity.PER_TENSOR, Granularity.PER_TOKEN):
            reasons.append("Linear inputs have one scale per tensor or per token")
        if quant.granularity is Granularity.PER_TOKEN and (quant.power_of_two or scheme.requantize == "integer"):
            reasons.append("per-token steps are computed at run time, so they cannot be powers of two chosen at build "
                           "time nor be folded into an integer requantization (pot8)")
    if scheme.activation is None:
        if scheme.weight.granularity is not Granularity.PER_GROUP or scheme.weight.bits != 4:
            reasons.append("with float activations, weights must be 4-bit in groups (the weight-only int4 kernel)")
        if scheme.wide_activation is not None or scheme.attn_probs is not None or scheme.balance is not None:
            reasons.append("with float activations there are no wide inputs, probability grids or balancing")
    if scheme.weight_outliers is not None and (scheme.activation is None
                                               or scheme.weight.granularity is not Granularity.PER_CHANNEL):
        reasons.append("outlier weights are split off weights with one scale per channel, on integer inputs (their "
                       "codes are added in the integer Linear)")
    if scheme.weight_rounding not in WEIGHT_ROUNDINGS:
        reasons.append(f"weight_rounding is one of {', '.join(WEIGHT_ROUNDINGS)}, not '{scheme.weight_rounding}'")
    if scheme.requantize not in ("float", "integer"):
        reasons.append(f"requantize is 'float' or 'integer', not '{scheme.requantize}'")
    if not (scheme.balance in (None, "auto") or isinstance(scheme.balance, float) and 0 <= scheme.balance <= 1):
        reasons.append(f"balance is None, 'auto' or an alpha between 0 and 1, not {scheme.balance!r}")
    if scheme.attn_probs is not None:
        from .attn_probs import parse_attn_probs

        try:
            parse_attn_probs(scheme.attn_probs)
        except TvmcompError as err:
            reasons.append(f"attention probabilities: {err}")
    return reasons


def register_scheme(scheme: QuantScheme) -> QuantScheme:
    """Add ``scheme`` to the registry; a scheme realize would compute wrongly is refused here."""
    reasons = unexecutable(scheme)
    if reasons:
        raise TvmcompError(f"quantization scheme '{scheme.name}' cannot be executed: {'; '.join(reasons)}")
    SCHEMES[scheme.name] = scheme
    return scheme


def get_scheme(name: str) -> QuantScheme:
    if name not in SCHEMES:
        raise TvmcompError(f"unknown quantization scheme '{name}'; available: {FLOAT}, {', '.join(sorted(SCHEMES))}")
    return SCHEMES[name]


WIDE_INPUTS = TensorQuant(bits=12, signed=True, symmetric=False)  # --wide-inputs: 12-bit codes on the int16 kernel

register_scheme(
    QuantScheme(
        name="int8",
        description="W8A8: symmetric per-output-channel int8 weights (the few past 8x their column's rms as int16 "
        "codes), asymmetric per-tensor uint8 activations; embedding tables int8 per row; attention probabilities in "
        "15-bit steps on the int16 P @ V kernel",
        weight=TensorQuant(bits=8, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL),
        activation=TensorQuant(bits=8, signed=False, symmetric=False),
        embedding=TensorQuant(bits=8, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL),
        wide_activation=WIDE_INPUTS,
        attn_probs="uniform:15",
        # balancing and each Linear input's step chosen by its output's error on held-out calibration rows:
        # MiniLM's embedding cosine 0.9919 -> 0.9973, all-mpnet-base-v2's 0.8806 -> 0.9945 (its outlier
        # channels; bench/results/2026-12-06-defaults-*.md, then *-median-floor.md); where the calibration
        # rows show no outliers the search leaves balancing off (docs/quantization.md)
        balance="auto",
        observer="search",
        # the few weights past 8x their column's rms as int16 codes on their column's step: MiniLM pruned to 0.7
        # FLOPs 0.8023 -> 0.9011 WordSim, mpnet-base 0.9946 -> 0.9968 embedding cosine
        # (bench/results/2026-12-06-outliers-*.md)
        weight_outliers=8.0,
    )
)

register_scheme(
    QuantScheme(
        name="pot8",
        description="H-ViT: symmetric int8 weights (per output channel; the few past 8x their column's rms as int16 "
        "codes) and uint8 activations with a zero point (per tensor) whose steps are powers of two, so requantizing "
        "between quantized ops is a rounding shift; embedding tables likewise",
        weight=TensorQuant(bits=8, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL, power_of_two=True),
        # a zero point, as int8's: symmetric codes left half the grid unused on one-sided inputs (GELU's
        # output, >= -0.17); mpnet-base's embedding cosine 0.9743 -> 0.9774, MiniLM's 0.9928 -> 0.9946
        # (bench/results/2026-12-06-pot8-codes-*.md)
        activation=TensorQuant(bits=8, signed=False, symmetric=False, power_of_two=True),
        embedding=TensorQuant(bits=8, signed=True, symmetric=True, granularity=Granularity.PER_CHANNEL,
                              power_of_two=True),
        attn_probs="uniform:15",
        requantize="integer",
        # Linear inputs balanced: from float (LayerNorm, GELU), with int8's factors and steps, the power of two
        # above the step carried by the accumulator (balance.power_of_two_common_step); codes from another
        # quantized op (or with --integer-only), FQ-ViT's power-of-two factors, as H-ViT uses them
        balance="auto",
        observer="search",  # each Linear input's step (and balancing) chosen by its output's error
        # as int8's: embedding cosine MiniLM 0.9965 -> 0.9975, mpnet-base 0.9928 -> 0.9956
        # (bench/results/2026-12-06-outliers-integer-*.md); the codes join the accumulator, so the shifts stay
        weight_outliers=8.0,
    )
)

# 4-bit codes with a step per output channel and 32 input channels (per 32 entries of a table row), clipped:
# MiniLM's embedding cosine in w4a8 g32 0.9608 -> 0.9635, g128 0.9427 -> 0.9518 (bench/results/2026-12-06-clip-minilm.md)
INT4_GROUPS = TensorQuant(bits=4, signed=True, symmetric=True, granularity=Granularity.PER_GROUP, group_size=32,
                          mse_clip=True)

register_scheme(
    QuantScheme(
        name="w4a8",
        description="int4 weights, symmetric, one scale per output channel and group of 32 input channels "
        "(--group-size), rounded by GPTQ on 128 calibration batches, two codes per byte, on the int8 dot kernels; "
        "activations int8, Linear inputs balanced as int8's; embedding tables in 4 bits with a scale per 32 entries of "
        "a row; attention as int8",
        weight=INT4_GROUPS,
        activation=TensorQuant(bits=8, signed=False, symmetric=False),
        # rows in 4 bits with a scale per 32 entries: MiniLM 18.6 -> 14.3 MiB for 0.0016 of embedding cosine
        # (a scale per row: 13.0 MiB, 0.0072; bench/results/2026-12-05-w4a8-rows-minilm.md)
        embedding=INT4_GROUPS,
        wide_activation=WIDE_INPUTS,  # --wide-inputs: those Linears keep int8 weights
        attn_probs="uniform:15",
        # nearest rounding cost MiniLM 4 pt of probe accuracy, GPTQ 2 (bench/results/*-int4-minilm.md)
        weight_rounding="gptq",
        # balancing and each Linear input's step chosen by its output's error, as int8's: with GPTQ on 128
        # batches, MiniLM's embedding cosine 0.9722 -> 0.9804, WordSim 0.9746 -> 0.9862, probe 0.750 -> 0.760
        # (bench/results/2026-12-07-gptq-samples-minilm.md)
        balance="auto",
        observer="search",
    )
)

register_scheme(
    QuantScheme(
        name="pwlq4",
        description="PWLQ: w4a8 with each group of 32 weights split at a breakpoint into a centre and a tail "
        "region, each with its own 4-bit codes and scale, run as two int4 dot-kernel accumulations (two code "
        "planes: the library holds 8 bits per weight); GPTQ rounding; activations and attention int8, Linear "
        "inputs balanced, embedding tables as w4a8's",
        weight=TensorQuant(bits=4, signed=True, symmetric=True, granularity=Granularity.PER_GROUP, group_size=32,
                           regions=2),
        activation=TensorQuant(bits=8, signed=False, symmetric=False),
        embedding=INT4_GROUPS,
        wide_activation=WIDE_INPUTS,  # --wide-inputs: those Linears keep int8 weights
        attn_probs="uniform:15",
        weight_rounding="gptq",
        # as w4a8's: MiniLM's embedding cosine 0.9870 -> 0.9942 on 128 batches
        # (bench/results/2026-12-07-gptq-samples-minilm-pwlq4-balanced.md)
        balance="auto",
        observer="search",
    )
)

register_scheme(
    QuantScheme(
        name="w4",
        description="weight-only: int4 weights as w4a8's (groups of 32, GPTQ, two codes per byte), decoded inside "
        "the float matmul; activations and attention float, embedding tables as w4a8's; for batch 1 and short inputs",
        weight=INT4_GROUPS,
        activation=None,
        embedding=INT4_GROUPS,
        weight_rounding="gptq",
    )
)
