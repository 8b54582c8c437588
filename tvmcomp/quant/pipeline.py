"""The quantization step of a build: annotate -> calibrate (or reuse a saved calibration) -> realize
(-> requantize in integers, for schemes that keep codes integer between ops)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import TvmcompError
from .annotate import Annotate, integer_inputs, quant_sites, shared_inputs
from .attn_probs import parse_attn_probs
from .balance import OFF
from .calibrate import SEARCH, SiteRange, calibrate
from .dot_kernels import DotKernels
from .integer_chain import IntegerChain
from .integer_only import IntegerOnly
from .ops import OP_RULES
from .ops.linear import balance_groups
from .ops.residual_stream import ResidualStream, stream_bound
from .realize import Realize
from .schemes import FLOAT, Granularity, get_scheme, unexecutable

CALIBRATION = "calibration.json"


@dataclass(frozen=True)
class QuantOptions:
    """How a build quantizes: the scheme (``fp32``: not at all) and the calibration and rewrite knobs."""

    scheme: str = FLOAT
    samples: int | None = None  # calibration batches; None: the scheme's
    observer: str | None = None  # None: the scheme's
    keep_float: tuple[str, ...] = ()  # weight-name patterns left float (annotate)
    balance: str | float | None = None  # channel balancing alpha, "auto", "off", or None: the scheme's (:mod:`.balance`)
    wide_below_db: float | None = None  # Linears estimated below this output SQNR get wide inputs (realize)
    attn_probs: str | None = None  # attention probabilities' grid, "log2:4" (:mod:`.attn_probs`); None: the scheme's
    group_size: int | None = None  # input channels per scale of 4-bit weights; None: the scheme's
    weight_rounding: str | None = None  # "nearest" or "gptq" (:mod:`.gptq`); None: the scheme's
    integer_only: bool = False  # softmax, GELU, LayerNorm and residual adds on integers (:mod:`.integer_only`)
    per_token: bool = False  # Linear inputs with a step and zero point per token, computed at run time

    @property
    def quantizes(self) -> bool:
        return self.scheme != FLOAT

    @property
    def variant(self) -> str:
        """The package's variant name: the scheme's, with what was asked that is not its default."""
        suffixes = [f"g{self.group_size}" if self.group_size is not None else None, self.weight_rounding,
                    "integer-only" if self.integer_only else None, "per-token" if self.per_token else None]
        return "-".join([self.scheme, *(suffix for suffix in suffixes if suffix)])

    def resolve_scheme(self):
        """The scheme asked for, with the weight group size and rounding and the Linear inputs' steps asked for."""
        scheme = get_scheme(self.scheme)
        if self.group_size is not None:
            scheme = replace(scheme, weight=replace(scheme.weight, group_size=self.group_size))
        if self.weight_rounding is not None:
            scheme = replace(scheme, weight_rounding=self.weight_rounding)
        return self._per_token(scheme) if self.per_token else scheme

    def _per_token(self, scheme):
        """``scheme`` with per-token steps on its Linear inputs, or a refusal saying why it cannot have them."""
        if scheme.activation is None:
            raise TvmcompError(f"--per-token quantizes Linear inputs; {scheme.name} keeps them float: use w4a8")
        conflicts = [flag for flag, given in (("--balance", self.balance not in (None, OFF)),
                                              ("--wide-inputs", self.wide_below_db is not None),
                                              ("--integer-only", self.integer_only)) if given]
        if conflicts:
            raise TvmcompError(f"--per-token computes each token's step at run time, so it takes no "
                               f"{' or '.join(conflicts)} (they choose or fold steps at build time)")
        per_token = replace(scheme, balance=None, observer="minmax",  # run-time steps: nothing to balance or search
                            linear_activation=replace(scheme.activation, granularity=Granularity.PER_TOKEN))
        reasons = unexecutable(per_token)
        if reasons:
            raise TvmcompError(f"--per-token with {scheme.name}: {'; '.join(reasons)}")
        return per_token

    def probs(self, scheme):
        """The attention-probability quantizer: the one asked for, else the scheme's (or None)."""
        spec = self.attn_probs or scheme.attn_probs
        return parse_attn_probs(spec) if spec else None

    def balancing(self, scheme) -> str | float | None:
        """The channel balancing asked for, else the scheme's; None for none."""
        balance = scheme.balance if self.balance is None else self.balance
        return None if balance == OFF else balance

    def channel_ranges(self, scheme) -> bool:
        """Balancing and choosing wide inputs both read per-channel statistics from calibration."""
        return self.balancing(scheme) is not None or self.wide_below_db is not None


def load_calibration(package_dir: Path, model_hash: str, key: dict) -> dict[int, SiteRange] | None:
    """Ranges saved by an earlier build of the same model with the same settings, if any."""
    path = Path(package_dir) / CALIBRATION
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    if saved.get("model_hash") != model_hash or saved.get("settings") != key:
        return None
    return {int(index): SiteRange(**value) for index, value in saved["ranges"].items()}


def quantize_model(source, options: QuantOptions, model_hash: str, previous_package: Path | None = None,
                   kernels: DotKernels = DotKernels(), stream=None):
    """Rewrite the module of every shape ``source`` has to integer compute, with the ranges calibrated
    at its largest shape; returns the calibration document to save.

    ``kernels`` are the target's dot-product instructions (operands are packed for them).
    """
    stream = stream or sys.stderr
    scheme = options.resolve_scheme()
    # a weight-only scheme leaves the matmuls of two activations (attention) float
    keep_float = list(options.keep_float) + (["bmm_*"] if scheme.activation is None else [])
    probs = options.probs(scheme)
    if options.integer_only and (scheme.activation is None or probs is None or probs.kind != "uniform"):
        raise TvmcompError(f"--integer-only needs quantized activations and uniform attention probabilities (its "
                           f"softmax writes them on a uniform grid); {scheme.name} with "
                           f"{probs.spec if probs is not None else 'float attention'} has not")
    imported = source.imported
    # --integer-only also calibrates the residual stream (a pre-LayerNorm encoder's needs a step)
    rules = [*OP_RULES.values(), *([ResidualStream()] if options.integer_only else [])]
    annotated = Annotate(imported.params, skip=keep_float, rules=rules)(imported.mod)
    if options.integer_only:  # refused before calibrating, where the model's layers do not fit
        _integer_only(source.name, _placeholder_realize(annotated, imported.params, scheme, kernels, probs, keep_float,
                                                        rules), dict(imported.params), PLACEHOLDER_BOUND)
    # the sites are part of the key: ranges are stored by site index, which a change to annotate
    # (or to --keep-float) shifts; patterns that only keep an embedding table float need no recalibration
    samples = options.samples or scheme.calibration_samples
    settings = {"scheme": scheme.name, "observer": options.observer or scheme.observer, "samples": samples,
                "data": source.calibration_key(), "channel_ranges": options.channel_ranges(scheme),
                "attn_probs": probs.spec if probs is not None and probs.calibrates else None,
                "sites": [f"{site.name}:{site.role}" for site in quant_sites(annotated)]}
    if settings["observer"] == SEARCH:  # the steps searched are the best for the Linears balanced, on these kernels
        settings["balance"] = options.balancing(scheme)
        settings["weight_outliers"] = scheme.weight_outliers
        settings["weight_kernels"] = [kernel.intrinsic for kernel in (kernels.linear, kernels.int4) if kernel]
        groups = balance_groups(shared_inputs(annotated), imported.params,
                                {site.index: site for site in quant_sites(annotated)}, scheme, kernels)
        settings["searched_together"] = sorted({group for group in groups.values() if len(group) > 1})
        settings["integer_inputs"] = sorted(integer_inputs(annotated, options.integer_only))
    gptq = scheme.weight_rounding == "gptq"  # its inputs' second moments are not saved: calibrate again
    ranges = load_calibration(previous_package, model_hash, settings) if previous_package and not gptq else None
    if ranges is None:
        batches = source.calibration_samples(samples)
        data = "the bundled data" if source.calibration_data is None else "--calib-data"
        print(f"[quant] calibrating {scheme.name} on {len(batches)} batches of {data} "
              f"({settings['observer']} observer)", file=stream)
        ranges = calibrate(annotated, imported.params, imported.inputs, batches, scheme, options.observer,
                           stream=stream, channel_ranges=options.channel_ranges(scheme), probs=probs,
                           balance=options.balancing(scheme), input_grams=gptq, kernels=kernels,
                           integer_only=options.integer_only)
    else:
        print(f"[quant] reusing the calibration saved in {previous_package}", file=stream)
    for shape_imported in source.shapes().values():  # every shape reuses the ranges calibrated at the largest
        shape_annotated = annotated if shape_imported is imported else Annotate(
            shape_imported.params, skip=keep_float, rules=rules)(shape_imported.mod)
        if [f"{site.name}:{site.role}" for site in quant_sites(shape_annotated)] != settings["sites"]:
            raise TvmcompError(f"{source.name} quantizes different layers at another shape: build one shape per package")
        realize = Realize(shape_imported.params, ranges, scheme, kernels, options.balancing(scheme),
                          options.wide_below_db, probs, skip=keep_float, rules=rules, integer_only=options.integer_only)
        shape_imported.mod = realize(shape_annotated)
        counts = dict(realize.counts)
        if options.integer_only:
            shape_imported.mod, counts["integer_only"] = _integer_only(
                source.name, shape_imported.mod, shape_imported.params, stream_bound(quant_sites(annotated), ranges))
        if scheme.requantize == "integer" or options.integer_only:
            chain = IntegerChain(shape_imported.params)
            shape_imported.mod = chain(shape_imported.mod)
            counts["integer_chains"], counts["shifts"] = chain.rewritten, chain.shifts
    _say_what_options_changed(options, counts, stream)
    if counts["outlier_weights"]:
        print(f"[quant] {counts['outlier_weights']} weights of {counts['outlier_linears']} Linears, past "
              f"{scheme.weight_outliers:g}x their column's rms, leave the int8 weights for int16 codes on a finer "
              "step (a dense-and-sparse split)", file=stream)
    if options.integer_only:
        done = counts["integer_only"]
        print(f"[quant] --integer-only: {done['softmax']} softmaxes (i-exp), {done['gelu']} GELUs (i-erf) and "
              f"{done['layer_norm']} residual adds + LayerNorms (integer square root) run on integers; "
              f"{counts['integer_chains']} requantizations between them", file=stream)
    elif scheme.requantize == "integer":
        print(f"[quant] {scheme.name}: {counts['integer_chains']} requantizations between quantized ops stay integer, "
              f"{counts['shifts']} of them shifts", file=stream)
    return {"model_hash": model_hash, "settings": settings, "balance": options.balancing(scheme),
            "wide_below_db": options.wide_below_db, "attn_probs": probs.spec if probs is not None else None,
            "group_size": scheme.weight.group_size,
            "ranges": {str(index): value.to_json() for index, value in ranges.items()}}


PLACEHOLDER_BOUND = 8.0  # the range of every site before calibration


def _placeholder_realize(annotated, params: dict, scheme, kernels: DotKernels, probs, keep_float: list[str], rules):
    """``annotated`` realized with a placeholder range for every site: the ops realize emits, and so
    what :mod:`.integer_only` can rewrite, do not depend on the ranges' values."""
    scale, zero = scheme.activation.scale_zero_point(np.float64(-PLACEHOLDER_BOUND), np.float64(PLACEHOLDER_BOUND))
    ranges = {site.index: SiteRange(float(scale), int(zero), -PLACEHOLDER_BOUND, PLACEHOLDER_BOUND)
              for site in quant_sites(annotated)}
    return Realize(dict(params), ranges, replace(scheme, weight_rounding="nearest"), kernels, probs=probs,
                   skip=keep_float, rules=rules, integer_only=True)(annotated)


def _integer_only(model: str, mod, params: dict, residual_bound: float | None):
    """``mod`` with its float encoder ops rewritten to integer kernels (:mod:`.integer_only`, the
    residual stream's calibrated bound ``residual_bound``) and how many of each, or a refusal that says
    which could not be and why."""
    integer_only = IntegerOnly(params, residual_bound)
    mod = integer_only(mod)
    if integer_only.left_float:
        kept = sorted(set(integer_only.left_float))
        raise TvmcompError(f"--integer-only: {model} would keep {len(integer_only.left_float)} encoder ops float: "
                           f"{'; '.join(kept)}. It takes BERT-class encoders (BERT, MiniLM, DistilBERT, MPNet) and ViTs "
                           "(ViT, DeiT, DINOv2, the bundled vit-s): attention scores plus at most a mask and a bias "
                           "computed before the layer, LayerNorms that read the residual stream")
    return mod, integer_only.counts


def _say_what_options_changed(options: QuantOptions, counts: dict, stream) -> None:
    """One line for --wide-inputs and --attn-probs: how many layers they changed (0 is worth knowing)."""
    if options.wide_below_db is not None:
        print(f"[quant] --wide-inputs {options.wide_below_db:g}: {counts['wide_linears']} Linears estimated below "
              f"{options.wide_below_db:g} dB in int8 take 12-bit inputs and int8 weights", file=stream)
    if options.attn_probs is not None:
        found, kind = counts["prob_matmuls"], options.attn_probs.partition(":")[0]
        print(f"[quant] --attn-probs {options.attn_probs}: " + (
            f"{found} attention matmuls multiply {kind} probabilities" if found else
            "no softmax output feeds a quantized matmul in this model, so nothing changed"), file=stream)
