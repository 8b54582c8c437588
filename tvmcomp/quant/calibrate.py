"""Calibrate: run the annotated float graph on sample inputs and record each quant site's range.

The graph calibrated is the graph realized: :class:`SitesAsOutputs` turns each quant site into an
identity whose value ``main`` also returns, and each site's observer reads it off the outputs. The
result (one scale and zero point per site) is plain JSON, saved with the package so that a rebuild
does not recalibrate.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, replace

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from ..console import progress_step
from ..errors import TvmcompError
from ..lowering import fuse_for_tuning
from .annotate import QUANT_SITE, integer_inputs, quant_sites, shared_inputs
from .ops import is_op
from .dot_kernels import DotKernels
from .ops.attention import PROBS_ROLE
from .ops.linear import balance_groups, balance_weight, linear_weight, weight_quant_of
from .gptq import InputGram
from .observers import make_observer
from .schemes import QuantScheme
from .step_search import RowSample, search_step, token_rows

ATTENTION_MASK = "attention_mask"  # a text model's input marking real tokens (1) and padding (0)
SEARCH = "search"  # the observer whose Linear sites' steps are searched (:mod:`.step_search`)


@dataclass(frozen=True)
class SiteRange:
    scale: float
    zero_point: int
    lo: float
    hi: float
    # per input channel (last axis) min, max and root mean square, kept for Linear sites when balancing
    # (:mod:`.balance`)
    channel_lo: list[float] | None = None
    channel_hi: list[float] | None = None
    channel_rms: list[float] | None = None
    # what an attention-probability quantizer calibrated (:mod:`.attn_probs`; log2: its top level)
    prob_params: dict | None = None
    # the balancing the step search chose for this Linear input: an alpha or "off" (:mod:`.step_search`);
    # None: the build's --balance decides (with "auto", by the noise estimate of :mod:`.balance`)
    balance: float | str | None = None
    # sum x^T x over a Linear's inputs, for GPTQ rounding (:mod:`.gptq`); in memory only, not saved
    input_gram: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "input_gram"}


def check_samples(samples: list[dict[str, np.ndarray]], input_specs) -> None:
    if not samples:
        raise TvmcompError("calibration needs at least one sample")
    for i, sample in enumerate(samples):
        for spec in input_specs:
            value = sample.get(spec.name)
            if value is None:
                raise TvmcompError(f"calibration sample {i} has no input '{spec.name}'")
            if tuple(value.shape) != tuple(spec.shape) or str(value.dtype) != spec.dtype:
                raise TvmcompError(
                    f"calibration sample {i}: input '{spec.name}' is {value.dtype}{list(value.shape)}, "
                    f"the model takes {spec.dtype}{list(spec.shape)}"
                )


def calibrate(annotated_mod, params: dict, input_specs, samples, scheme: QuantScheme, observer: str | None = None,
              stream=None, channel_ranges: bool = False, probs=None, balance=None,
              input_grams: bool = False, kernels: DotKernels = DotKernels(),
              integer_only: bool = False) -> dict[int, SiteRange]:
    """Activation ranges of every quant site of ``annotated_mod`` over ``samples``; with
    ``channel_ranges``, each Linear site's per-input-channel min and max too; with ``probs`` (an
    attention-probability quantizer that calibrates), its parameters at every ``P @ V``'s probabilities
    (the ``probs`` sites, :mod:`.ops.attention`). With the ``search`` observer, Linear sites' steps are then
    searched (:mod:`.step_search`) for the Linears as realize will build them on the target's dot
    ``kernels`` (their weights' bits and groups), balanced by ``balance``, their inputs integer codes
    or not as realize will have them (``integer_only``: :func:`~.annotate.integer_inputs`).
    With ``input_grams``, each Linear site's ``sum x^T x`` is kept too (for GPTQ, :mod:`.gptq`)."""
    stream = stream or sys.stderr
    check_samples(samples, input_specs)
    sites = quant_sites(annotated_mod)
    by_index = {site.index: site for site in sites}
    if not sites:
        raise TvmcompError("the model has nothing to quantize: no Linear layer, conv2d with a constant weight or "
                           "attention matmul (or --keep-float kept them all)")
    observer = observer or scheme.observer
    observers = {site.index: make_observer(observer) for site in sites}
    # Linears reading one input are searched as one (their input quantized once), on the rows of the first
    groups = balance_groups(shared_inputs(annotated_mod), params, by_index, scheme, kernels)
    chained = integer_inputs(annotated_mod, integer_only)
    kept_rows = {site.index: RowSample(len(samples)) for site in sites
                 if observer == SEARCH and site.is_linear and groups[site.index][0] == site.index}
    channels = {site.index: [np.inf, -np.inf, 0.0, 0] for site in sites if channel_ranges and site.is_linear}
    grams = {site.index: InputGram() for site in sites if input_grams and site.is_linear}
    prob_observers = {site.index: probs.observer() for site in sites
                      if probs is not None and probs.calibrates and site.role == PROBS_ROLE}

    def observe(array, index, real_rows):
        observers[index].observe(array)
        if index in prob_observers:
            prob_observers[index].observe(array)
        if index in kept_rows:
            kept_rows[index].observe(array, real_rows)
        if index in grams:
            grams[index].observe(token_rows(array, real_rows))
        if index in channels:
            rows, stats = array.reshape(-1, array.shape[-1]).astype(np.float64), channels[index]
            stats[0], stats[1] = np.minimum(stats[0], rows.min(axis=0)), np.maximum(stats[1], rows.max(axis=0))
            stats[2], stats[3] = stats[2] + (rows * rows).sum(axis=0), stats[3] + len(rows)

    observed = SitesAsOutputs()(annotated_mod)
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(observed)
    # lowered as the deployed graph is (same GELU, same clamped lookups), on this CPU with default
    # schedules: unscheduled, calibrating ViT-S on 32 images took 4 minutes
    from ..runtime import use_physical_cores
    from ..targets import host_cpu
    from ..tune.default_schedules import apply_default_schedules

    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()})
    use_physical_cores()
    scheduled = apply_default_schedules(fuse_for_tuning(bound, target), target)
    with target, tvm.transform.PassContext(opt_level=3):
        executable = tvm.compile(scheduled, target=target)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    for i, sample in enumerate(samples):
        mask = sample.get(ATTENTION_MASK)
        real_rows = None if mask is None else np.asarray(mask).reshape(-1) != 0
        _, values = vm["main"](*[tvm.runtime.tensor(sample[spec.name]) for spec in input_specs])
        for site, value in zip(sites, values):
            observe(value.numpy(), site.index, real_rows)
        progress_step(stream, "[calibrate] sample", i + 1, len(samples))
    ranges = {}
    for index, obs in observers.items():
        lo, hi = obs.range(scheme.activation)
        # weight-only schemes calibrate for GPTQ's x^T x only: their inputs have no grid
        scale, zero = (1.0, 0) if scheme.activation is None else scheme.activation.scale_zero_point(lo, hi)
        per_channel = {}
        if index in channels:
            lows, highs, squares, count = channels[index]
            per_channel = {"channel_lo": lows.tolist(), "channel_hi": highs.tolist(),
                           "channel_rms": np.sqrt(squares / count).tolist()}
        if index in prob_observers:
            per_channel["prob_params"] = prob_observers[index].params()
        if index in grams:
            per_channel["input_gram"] = grams[index].gram
        ranges[index] = SiteRange(float(scale), int(zero), float(lo), float(hi), **per_channel)
    for done, index in enumerate(kept_rows, 1):
        group, weight_kn = groups[index], linear_weight(params, by_index[index])
        quantized_kn = balance_weight(params, by_index, group, scheme.weight_outliers)  # without its outliers
        searched = search_step(kept_rows[index].array(), quantized_kn, ranges[index],
                               scheme.activation, weight_quant_of(scheme, kernels, *weight_kn.shape), balance,
                               integer_input=index in chained)
        for member in group:
            ranges[member] = replace(searched, input_gram=ranges[member].input_gram)
        progress_step(stream, "[calibrate] step search, Linear input", done, len(kept_rows))
    return ranges


@tvm.transform.module_pass(opt_level=0, name="SitesAsOutputs")
class SitesAsOutputs:
    """Rewrite ``main`` so that each quant site is the identity it stands for and ``main`` returns
    ``(its outputs, (site 0's value, site 1's, ...))``: what calibration observes, with no function
    registered outside the graph."""

    def transform_module(self, mod, _ctx):
        func = relax.transform.ToNonDataflow()(mod)["main"]
        unwrapped = _SiteUnwrapper(mod)
        body = unwrapped.visit_expr(func.body)
        values = relax.Tuple([unwrapped.values[i] for i in range(len(unwrapped.values))])
        returned = unwrapped.builder_.normalize(relax.SeqExpr(body.blocks, relax.Tuple([body.body, values])))
        observed = relax.Function(func.params, returned, attrs=func.attrs)
        mod = tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"}, attrs=mod.attrs)
        mod["main"] = observed
        return relax.transform.ConvertToDataflow()(relax.transform.Normalize()(mod))


@mutator
class _SiteUnwrapper(PyExprMutator):
    """Each quant site ``call_pure_packed("tvmcomp.quant_site", x, i)`` becomes ``x``, kept as ``values[i]``."""

    def __init__(self, mod):
        super().__init__(mod)
        self.values = {}

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if is_op(call, "relax.call_pure_packed") and str(call.args[0].global_symbol) == QUANT_SITE:
            self.values[int(call.args[2].value)] = call.args[1]
            return call.args[1]
        return call
