"""Masks on a float encoder's heads and neurons, applied by hooks: the model's own code is untouched.

A head's mask multiplies its slice of the attention output projection's input (the head's
context); a neuron's multiplies its input of the FFN down projection. With masks of ones the
model computes what it did; a mask entry of 0 is the unit pruned, another value rescales it.
"""

from __future__ import annotations

import contextlib

from .structure import EncoderStructure

ATTENTION_MASK = "attention_mask"
READOUTS = ("mean", "first")  # what a model's task reads off its tokens: their mean, or the first (class) token


@contextlib.contextmanager
def masked(structure: EncoderStructure, head_masks, neuron_masks):
    """Run the encoder with ``head_masks`` / ``neuron_masks`` (per layer, torch tensors) applied."""
    hooks = []
    for layer, heads, neurons in zip(structure.layers, head_masks, neuron_masks):
        hooks.append(layer.attention_out.register_forward_pre_hook(
            lambda _m, args, mask=heads, size=layer.head_dim: (args[0] * mask.repeat_interleave(size),)))
        hooks.append(layer.ffn_out.register_forward_pre_hook(lambda _m, args, mask=neurons: (args[0] * mask,)))
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def run(module, batch: dict):
    """The module's output on one calibration batch (NumPy arrays by input name)."""
    import torch

    return module(**{name: torch.from_numpy(value) for name, value in batch.items()})


def real_tokens(batch: dict, rows: int):
    """A boolean mask over the ``rows`` token rows of a batch: the attention mask, else all."""
    import numpy as np

    mask = batch.get(ATTENTION_MASK)
    return np.ones(rows, bool) if mask is None else np.asarray(mask).reshape(-1) != 0


def token_weights(batch: dict, shape: tuple[int, int], readout: str):
    """How much each token row of an output of ``shape`` ([batch, seq]) counts in the label-free
    importance and the mask tuning, flattened: 0 for padding, 1 for a real token; with ``readout``
    "first" (the task reads the class token alone), the first token counts as much as all the other
    real tokens of its sample together. Unweighted, ViT-S's class token is 1 of 257 and pruning
    hardly sees what its probe reads."""
    import numpy as np

    if readout not in READOUTS:
        raise ValueError(f"readout {readout!r}: one of {READOUTS}")
    weights = real_tokens(batch, shape[0] * shape[1]).reshape(shape).astype(np.float64)
    if readout == "first":
        weights[:, 0] = weights[:, 1:].sum(axis=1)
    return weights.reshape(-1)
