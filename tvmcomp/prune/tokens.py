"""Token pruning (LTP, Kim et al. 2022; SaiT): the tokens that receive the least attention are
dropped as the input goes deeper, so later layers run on fewer rows.

A built library has static shapes, so how many tokens each layer keeps is fixed at build time, as
fractions of the shape's sequence length, chosen on calibration data (:func:`choose_tokens`).

In the graph, after a layer that drops tokens, each token is ranked by LTP's importance, the
attention it received in that layer summed over heads and real queries; padding receives none, so
it goes first. The top ones are kept by a gather; the first token (``[CLS]``) always is.

``last_hidden_state`` keeps its shape: kept tokens are scattered back to their positions, and a
dropped token's row is the mean of the kept real tokens' final rows. Mean pooling over the attention
mask then gives the mean over the kept tokens, and ``[CLS]`` pooling reads a token that ran every
layer. (A dropped token's state from when it was dropped, as Hou et al. 2022's token dropping
returns it, lies in an earlier layer's space than the rows it would be pooled with.)

The fractions are of the shape's length: an input much shorter than its shape drops its padding
first and loses little, so the pruning bites where inputs fill their shape (build the lengths
they fill: ``--seq-len 16,32,64,128``).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import TvmcompError
from .masks import ATTENTION_MASK
from .structure import EncoderStructure


@dataclass(frozen=True)
class TokenReport:
    flops_kept: float  # of the encoder's multiply-adds at the build's sequence length
    fractions: list[float]  # of the shape's tokens entering each layer after the first
    tokens: list[int]  # entering each layer, at the build's sequence length

    def to_json(self) -> dict:
        return {"flops_kept": round(self.flops_kept, 4), "fractions": [round(f, 4) for f in self.fractions],
                "tokens": self.tokens}


def kept_tokens(fractions: list[float], seq_len: int) -> list[int]:
    """Tokens entering each layer at ``seq_len``: all of them, then ``ceil(fraction * seq_len)``."""
    return [seq_len] + [max(1, min(seq_len, math.ceil(f * seq_len - 1e-9))) for f in fractions]


def encoder_macs(structure: EncoderStructure, tokens: list[int]) -> int:
    """The encoder's multiply-adds with ``tokens[l]`` tokens entering layer ``l`` (keys and queries alike)."""
    return sum(n * (layer.heads * structure.head_macs(n) + layer.neurons * structure.neuron_macs())
               for layer, n in zip(structure.layers, tokens))


STEPS = 8  # a search step drops an eighth of the sequence from a layer on


def choose_tokens(module, structure: EncoderStructure, batches: list[dict[str, np.ndarray]], flops: float,
                  seq_len: int, stream=None, reuse_layers: bool = True) -> TokenReport:
    """Make ``module`` drop tokens (:func:`drop_tokens`) and choose how many each layer keeps: a
    greedy search that, from all tokens everywhere, takes the step (one layer and every later one
    down by ``seq_len / STEPS`` tokens) that costs the least embedding error per FLOP saved, until
    the encoder's FLOPs at ``seq_len`` are at most ``flops`` of the unpruned ones. The error is
    one minus the cosine of mean-pooled outputs to the module's own before token pruning, on
    ``batches`` (run as one batch). A candidate changes the layers from one on, so the layers
    before it are read from the last chosen step's run (:attr:`_TokenState.layer_outputs`), not run
    again (``reuse_layers=False``: they are, as before 2026-12-06; bench/token_search.py compares).
    Each step taken is printed to ``stream``, where given."""
    inputs = {name: torch.from_numpy(np.concatenate([b[name] for b in batches])) for name in batches[0]}
    weights = inputs[ATTENTION_MASK][..., None].float()
    with torch.no_grad():
        want = _pooled(module(**inputs), weights)
    layers, step = len(structure.layers), max(1, seq_len // STEPS)
    full = encoder_macs(structure, [seq_len] * layers)
    fractions = [1.0] * (layers - 1)
    state = drop_tokens(module, structure, fractions)

    def error(tokens: list[int], record: bool = False) -> float:
        fractions[:] = [n / seq_len for n in tokens[1:]]
        state.recording = record
        with torch.no_grad():
            got = _pooled(module(**inputs), weights)
        state.recording = False
        return float(1 - torch.nn.functional.cosine_similarity(got, want).mean())

    tokens, current = [seq_len] * layers, 0.0
    state.layer_outputs = {} if reuse_layers else None
    try:
        if reuse_layers:
            error(tokens, record=True)
        while encoder_macs(structure, tokens) > flops * full:
            tokens, current = _step(structure, tokens, current, step, error, flops, full)
            if reuse_layers:  # the chosen step's layer outputs are what the next candidates share
                kept = tuple(n / seq_len for n in tokens[1:])
                state.layer_outputs = {key: value for key, value in state.layer_outputs.items()
                                       if key[1:] == kept[:len(key) - 1]}
                error(tokens, record=True)
            if stream is not None:
                print(f"[prune] token step: {tokens}, {encoder_macs(structure, tokens) / full:.3f} of the encoder's "
                      f"FLOPs (down to {flops:g})", file=stream, flush=True)
    finally:
        state.layer_outputs = None  # the module is exported next: no outputs of these inputs in it
    fractions[:] = [n / seq_len for n in tokens[1:]]
    return TokenReport(encoder_macs(structure, tokens) / full, list(fractions), tokens)


def _step(structure: EncoderStructure, tokens: list[int], current: float, step: int, error, flops: float,
          full: int) -> tuple[list[int], float]:
    """The search's next (tokens, error): among one layer and every later one down by ``step``
    tokens, the one whose error grows least per FLOP saved."""
    seq_len, candidates = tokens[0], []
    for layer in range(1, len(tokens)):
        if tokens[layer] > 1:
            cut = max(1, tokens[layer] - step)
            candidates.append(tokens[:layer] + [min(n, cut) for n in tokens[layer:]])
    if not candidates:
        raise TvmcompError(f"--prune-tokens {flops:g} is below what dropping tokens can reach at {seq_len} tokens: "
                           f"keeping one token after the first layer keeps "
                           f"{encoder_macs(structure, tokens) / full:.3f} of the encoder's FLOPs")
    saved = [encoder_macs(structure, tokens) - encoder_macs(structure, c) for c in candidates]
    errors = [error(c) for c in candidates]
    best = min(range(len(candidates)), key=lambda i: (errors[i] - current) / saved[i])
    return candidates[best], errors[best]


def _pooled(hidden, weights):
    return (hidden * weights).sum(1) / weights.sum(1)


def drop_tokens(module, structure: EncoderStructure, fractions: list[float]) -> "_TokenState":
    """Make ``module``'s encoder drop tokens to ``fractions`` of its input length entering each
    layer after the first (module docstring), in place: its layers are wrapped, its attention made
    eager (the one that computes attention weights) and hooked to hand the weights over. Returns
    the state the wrapped layers share."""
    state = _TokenState(_AttentionWeights(structure))
    module.register_forward_pre_hook(state.record_mask, with_kwargs=True)
    for sub in module.modules():
        if hasattr(getattr(sub, "config", None), "_attn_implementation"):
            sub.config._attn_implementation = "eager"
    encoder = next(m for m in module.modules()
                   if any(layer is structure.layers[0].module for layer in getattr(m, "layer", ())))
    for index, layer in enumerate(structure.layers):
        encoder.layer[index] = _DroppingLayer(layer.module, index, fractions, state)
    return state


class _AttentionWeights:
    """Hooks on each layer's self-attention: it is asked for its attention weights (MPNet returns
    them only then), and the latest are kept, one per layer."""

    def __init__(self, structure: EncoderStructure):
        self.latest = [None] * len(structure.layers)
        for index, layer in enumerate(structure.layers):
            layer.attention.register_forward_pre_hook(_ask_for_weights, with_kwargs=True)
            layer.attention.register_forward_hook(
                lambda _m, _args, output, index=index: self.latest.__setitem__(index, output[1]))


def _ask_for_weights(module, args, kwargs):
    """``output_attentions=True`` into a self-attention's call, where its forward takes it by name
    (MPNet; a hook before this one may have passed it by position) or in ``**kwargs`` (BERT)."""
    signature = inspect.signature(module.forward)
    if "output_attentions" not in signature.parameters:
        return args, {**kwargs, "output_attentions": True}
    bound = signature.bind(*args, **kwargs)
    bound.arguments["output_attentions"] = True
    return bound.args, bound.kwargs


class _TokenState:
    """What the wrapped layers of one forward share: the kept tokens' positions and realness; and,
    while :func:`choose_tokens` searches on one set of inputs, the layers' outputs of a run, by the
    index and the fractions they depend on (layer ``i``'s: ``(i, *fractions[:i + 1])``), recorded
    where ``recording``."""

    def __init__(self, weights: _AttentionWeights):
        self.weights = weights
        self.layer_outputs: dict[tuple, tuple] | None = None  # key -> (output, positions, realness)
        self.recording = False

    def record_mask(self, _module, args, kwargs):
        mask = kwargs.get(ATTENTION_MASK, args[1] if len(args) > 1 else None)
        if mask is None:
            raise TvmcompError("token pruning needs the model's attention_mask input, to rank real tokens")
        self.mask = mask

    def start(self, hidden):
        self.full = hidden.shape[1]
        self.keep(torch.arange(self.full).expand(hidden.shape[0], -1))
        self.real = self.mask.to(hidden.dtype)

    def keep(self, positions):
        """Go on with the tokens at ``positions`` (of the full length)."""
        self.positions = positions
        self.cut_arguments = {}  # id -> the argument cut to these tokens, so layers alike cut it once

    def cut(self, argument):
        """A layer's argument cut to the kept tokens (:func:`_kept_tokens_of`), once per kept set (the
        argument is held with its cut, so its id is not reused)."""
        if id(argument) not in self.cut_arguments:
            self.cut_arguments[id(argument)] = (argument, _kept_tokens_of(argument, self.positions, self.full))
        return self.cut_arguments[id(argument)][1]


def _kept_tokens_of(tensor, positions, full: int):
    """A per-token argument of a layer (an attention mask or bias ``[B, *, queries, keys]``) cut to
    the kept tokens on each of its axes of the full length; any other argument as it is."""
    if not isinstance(tensor, torch.Tensor) or tensor.dim() != 4:
        return tensor
    for axis in (2, 3):
        if tensor.shape[axis] == full:
            shape, sizes = [1, 1, 1, 1], list(tensor.shape)
            shape[0], shape[axis] = sizes[0], sizes[axis] = positions.shape
            tensor = tensor.gather(axis, positions.reshape(shape).expand(sizes))
    return tensor


class _DroppingLayer(torch.nn.Module):
    """An encoder layer that, after it runs, keeps its most attended tokens (module docstring)."""

    def __init__(self, layer, index: int, fractions: list[float], state: _TokenState):
        super().__init__()
        self.layer, self.index, self.fractions, self.state = layer, index, fractions, state

    def forward(self, hidden_states, *args, **kwargs):
        state = self.state
        if self.index == 0:
            state.start(hidden_states)
        key = (self.index, *self.fractions[:self.index + 1])
        if state.layer_outputs is not None and key in state.layer_outputs:
            output, positions, state.real = state.layer_outputs[key]
            state.keep(positions)
            return output
        if state.positions.shape[1] < state.full:
            args = [state.cut(a) for a in args]
            kwargs = {k: state.cut(v) for k, v in kwargs.items()}
        out = self.layer(hidden_states, *args, **kwargs)
        hidden = out[0] if isinstance(out, tuple) else out
        if self.index < len(self.fractions):
            hidden = self._drop(hidden, kept_tokens(self.fractions, state.full)[self.index + 1])
        elif hidden.shape[1] < state.full:  # the last layer: every row of the output back
            hidden = self._output(hidden)
        output = (hidden, *out[1:]) if isinstance(out, tuple) else hidden
        if state.recording:
            state.layer_outputs[key] = output, state.positions, state.real
        return output

    def _drop(self, hidden, keep: int):
        state = self.state
        if keep >= hidden.shape[1]:
            return hidden
        weights = state.weights.latest[self.index]  # [B, heads, queries, keys]
        received = (weights.sum(1) * state.real[:, :, None]).sum(1)  # from real queries
        chosen = torch.cat([torch.zeros_like(state.positions[:, :1]),
                            received[:, 1:].topk(keep - 1, dim=1).indices + 1], dim=1)
        state.keep(state.positions.gather(1, chosen))
        state.real = state.real.gather(1, chosen)
        return hidden.gather(1, chosen[:, :, None].expand(-1, -1, hidden.shape[2]))

    def _output(self, hidden):
        """The kept rows at their positions, the mean of the real ones at every other position."""
        state = self.state
        real = state.real[:, :, None]
        mean = (hidden * real).sum(1, keepdim=True) / real.sum(1, keepdim=True).clamp(min=1)
        rows = mean.expand(-1, state.full, -1).contiguous()
        return rows.scatter(1, state.positions[:, :, None].expand(-1, -1, hidden.shape[2]), hidden)
