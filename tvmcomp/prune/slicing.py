"""Prune for real: slice the Linears of the heads and neurons not kept out of the PyTorch encoder,
so the graph imported from it is smaller (its reshapes take the head count from the sliced
widths), with no mask multiply left. A self-attention's head count and width are set to what it
keeps, and a per-head bias it is given (MPNet's relative position bias) is sliced to its heads."""

from __future__ import annotations

import inspect

import numpy as np

from .search import Selection
from .structure import EncoderStructure


def _slice(linear, index: np.ndarray, dim: int, scales: np.ndarray | None = None) -> None:
    """Keep ``index`` of ``linear``'s outputs (dim 0) or inputs (dim 1), in place; inputs scaled by ``scales``."""
    import torch

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
        if layer.head_bias is not None:
            _keep_head_bias(layer.attention, layer.head_bias, heads)
        _slice(layer.attention_out, dims, 1, column_scales)
        _slice(layer.ffn_in, neurons, 0)
        _slice(layer.ffn_out, neurons, 1, None if neuron_scales is None else neuron_scales[i])


def _keep_head_bias(attention, argument: str, heads: np.ndarray) -> None:
    """Slice ``attention``'s forward argument ``argument`` (a bias per head on axis 1, shared by all
    layers) to ``heads`` on every call, positional or keyword."""
    import torch

    signature, index = inspect.signature(attention.forward), torch.as_tensor(heads, dtype=torch.long)

    def hook(_module, args, kwargs):
        bound = signature.bind(*args, **kwargs)
        if bound.arguments.get(argument) is not None:
            bound.arguments[argument] = bound.arguments[argument].index_select(1, index)
        return bound.args, bound.kwargs

    attention.register_forward_pre_hook(hook, with_kwargs=True)
