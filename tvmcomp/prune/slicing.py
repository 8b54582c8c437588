"""Prune for real: slice the Linears of the heads and neurons not kept out of the PyTorch encoder,
so the graph imported from it is smaller (its reshapes take the head count from the sliced
widths), with no mask multiply left. A self-attention's head count and width are set to what it
keeps, and a per-head bias it is given (MPNet's relative position bias) is sliced to its heads.

A layer that keeps no head loses its self-attention: the block's output is then its output
projection's bias, so the self-attention is replaced by that constant (and an output projection
outside it by an identity). A layer that keeps no neuron likewise: the FFN's down projection is
replaced by its bias, and the up projection by an identity whose result nothing reads, which the
compiler drops. The LayerNorm after each block (bias + residual) stays.
"""

from __future__ import annotations

import inspect
from operator import attrgetter

import numpy as np
import torch

from .search import Selection
from .structure import EncoderStructure


def _slice(linear, index: np.ndarray, dim: int, scales: np.ndarray | None = None) -> None:
    """Keep ``index`` of ``linear``'s outputs (dim 0) or inputs (dim 1), in place; inputs scaled by ``scales``."""
    keep = torch.as_tensor(index, dtype=torch.long)
    with torch.no_grad():
        weight = linear.weight.index_select(dim, keep).clone()
        if scales is not None:
            weight *= torch.as_tensor(scales, dtype=weight.dtype)
        linear.weight = torch.nn.Parameter(weight)
        if dim == 0 and linear.bias is not None:
            linear.bias = torch.nn.Parameter(linear.bias.index_select(0, keep).clone())
    if dim == 0:
        linear.out_features = len(index)
    else:
        linear.in_features = len(index)


def slice_encoder(structure: EncoderStructure, selection: Selection, head_scales=None, neuron_scales=None) -> None:
    """Remove the heads and neurons ``selection`` does not keep; the kept ones' outputs are multiplied
    by ``head_scales`` / ``neuron_scales`` (per layer, one per kept unit; mask tuning), folded into
    the output projections' columns."""
    for i, layer in enumerate(structure.layers):
        heads, neurons = selection.heads[i], selection.neurons[i]
        dims = (heads[:, None] * layer.head_dim + np.arange(layer.head_dim)).ravel()
        column_scales = None if head_scales is None else np.repeat(head_scales[i], layer.head_dim)
        for projection in (layer.query, layer.key, layer.value):
            _slice(projection, dims, 0)
        for attribute, value in (("num_attention_heads", len(heads)), ("all_head_size", len(dims))):
            if hasattr(layer.attention, attribute):  # read by some forwards (MPNet's reshape of the context)
                setattr(layer.attention, attribute, value)
        if layer.naming.head_bias is not None:
            _keep_head_bias(layer.attention, layer.naming.head_bias, heads)
        _slice(layer.attention_out, dims, 1, column_scales)
        _slice(layer.ffn_in, neurons, 0)
        _slice(layer.ffn_out, neurons, 1, None if neuron_scales is None else neuron_scales[i])
        _remove_empty_blocks(layer)


def _remove_empty_blocks(layer) -> None:
    """Replace a block with no head or no neuron left by its output bias (module docstring)."""
    naming = layer.naming
    if layer.heads == 0:
        _replace(layer.module, naming.attention, _NoHeads(layer.attention_out.bias))
        if not naming.attention_out.startswith(naming.attention + "."):
            _replace(layer.module, naming.attention_out, torch.nn.Identity())
    if layer.neurons == 0:
        _replace(layer.module, naming.ffn_in, torch.nn.Identity())
        _replace(layer.module, naming.ffn_out, _Bias(layer.ffn_out.bias))


def _replace(root, path: str, module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(attrgetter(parent)(root) if parent else root, name, module)


class _Bias(torch.nn.Module):
    """Stands for a Linear with no inputs left: its bias, at every token of its input."""

    def __init__(self, bias):
        super().__init__()
        self.bias = torch.nn.Parameter(bias.detach().clone())

    def forward(self, x):
        return self.bias.expand(*x.shape[:-1], -1)


class _NoHeads(_Bias):
    """Stands for a self-attention with no head left, output projection included: that projection's
    bias at every token, and no attention weights."""

    def forward(self, hidden_states, *args, **kwargs):
        return self.bias.expand(*hidden_states.shape[:-1], -1), None


def _keep_head_bias(attention, argument: str, heads: np.ndarray) -> None:
    """Slice ``attention``'s forward argument ``argument`` (a bias per head on axis 1, shared by all
    layers) to ``heads`` on every call, positional or keyword."""
    signature, index = inspect.signature(attention.forward), torch.as_tensor(heads, dtype=torch.long)

    def hook(_module, args, kwargs):
        bound = signature.bind(*args, **kwargs)
        if bound.arguments.get(argument) is not None:
            bound.arguments[argument] = bound.arguments[argument].index_select(1, index)
        return bound.args, bound.kwargs

    attention.register_forward_pre_hook(hook, with_kwargs=True)
