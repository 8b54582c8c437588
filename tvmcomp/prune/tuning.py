"""Mask tuning (Kwon et al. 2022): per layer, rescale the kept heads and neurons by least squares so
the pruned layer reproduces the float model's outputs; the scales are folded into the weights.

A block's output projection is linear in its masks: the attention output is
``sum_h m_h (ctx_h @ Wo_h) + bo`` and the FFN output ``sum_n m_n a_n W2_n + b2``. Layer by layer,
with every earlier layer already pruned and tuned (its errors are what this layer corrects), the
kept units' ``m`` minimize ``||sum_u m_u c_u - (y - b)||^2`` over the calibration tokens, ``y`` the
float model's block output; the normal equations are ``kept x kept``. Solved in float64 with a
little ridge (1e-6 of the mean diagonal) where units are nearly collinear.
"""

from __future__ import annotations

import numpy as np

from .masks import masked, real_tokens, run
from .search import Selection
from .structure import EncoderStructure

RIDGE = 1e-6


def _record(module, structure: EncoderStructure, batches, head_masks, neuron_masks, linear):
    """``linear``'s input before the masks apply, over the real tokens of every batch, as rows."""
    import torch

    seen = []
    # registered before the masks' hooks, so it runs first and sees the unmasked input
    hook = linear.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad(), masked(structure, head_masks, neuron_masks):
            for batch in batches:
                run(module, batch)
    finally:
        hook.remove()
    rows = [x.reshape(-1, x.shape[-1])[torch.from_numpy(real_tokens(b, x[..., 0].numel()))]
            for b, x in zip(batches, seen)]
    return torch.cat(rows).double().numpy()


def _least_squares(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    ridge = RIDGE * max(np.mean(np.diag(gram)), 1e-30)
    return np.linalg.solve(gram + ridge * np.eye(len(gram)), rhs)


def tune_masks(module, structure: EncoderStructure, selection: Selection, batches):
    """Per layer, the scales of the kept heads and of the kept neurons (the masks' values)."""
    import torch

    head_masks = [torch.zeros(layer.heads) for layer in structure.layers]
    neuron_masks = [torch.zeros(layer.neurons) for layer in structure.layers]
    for masks, kept in ((head_masks, selection.heads), (neuron_masks, selection.neurons)):
        for mask, index in zip(masks, kept):
            mask[torch.as_tensor(index, dtype=torch.long)] = 1.0
    for i, layer in enumerate(structure.layers):
        for linear, masks, kept, width in ((layer.attention_out, head_masks, selection.heads[i], layer.head_dim),
                                           (layer.ffn_out, neuron_masks, selection.neurons[i], 1)):
            inputs = _record(module, structure, batches, head_masks, neuron_masks, linear)
            weight = linear.weight.detach().double().numpy()  # [out, in]: unit u's inputs are u*width .. (u+1)*width
            target = inputs @ weight.T  # what the whole block computes from these inputs (bias aside)
            # <c_u, c_v> over tokens and outputs = the (u, v) block of (X^T X) o (W^T W), summed
            units = weight.shape[1] // width
            products = ((inputs.T @ inputs) * (weight.T @ weight)).reshape(units, width, units, width).sum(axis=(1, 3))
            correlations = (inputs * (target @ weight)).sum(axis=0).reshape(units, width).sum(axis=1)
            scales = _least_squares(products[np.ix_(kept, kept)], correlations[kept])
            masks[i][torch.as_tensor(kept, dtype=torch.long)] = torch.as_tensor(scales, dtype=torch.float32)
    return ([m[torch.as_tensor(k, dtype=torch.long)].numpy() for m, k in zip(head_masks, selection.heads)],
            [m[torch.as_tensor(k, dtype=torch.long)].numpy() for m, k in zip(neuron_masks, selection.neurons)])
