"""Structured post-training pruning of BERT-class encoders (Kwon et al. 2022): heads and FFN
neurons ranked by Fisher importance, of the task's loss or a label-free one (:mod:`.importance`), kept under a FLOPs budget
(:mod:`.search`), rearranged within each layer by their gradients' interactions
(:mod:`.rearrange`), rescaled by least squares (:mod:`.tuning`), then sliced out of the PyTorch
model (:mod:`.slicing`) so the imported graph is smaller. Tokens are pruned too, layer by layer
(:mod:`.tokens`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .importance import mask_gradients
from .rearrange import rearranged
from .search import Selection, select_under_budget
from .slicing import slice_encoder
from .structure import encoder_structure, fold_layer_scales
from .tuning import REFIT_RIDGES, tune_masks


def flops_kept(pruning: dict | None) -> float:
    """The encoder's FLOPs a package keeps, of the unpruned one's: heads and neurons (a
    :class:`PruneReport`'s) times tokens (under ``"tokens"``, of the encoder left by the first)."""
    pruning = pruning or {}
    return pruning.get("flops_kept", 1.0) * pruning.get("tokens", {}).get("flops_kept", 1.0)


@dataclass(frozen=True)
class PruneReport:
    flops_kept: float  # of the encoder's multiply-adds per token, at the build's sequence length
    params_kept: float  # of the whole model's parameters
    heads: list[int]  # kept per layer
    neurons: list[int]

    def to_json(self) -> dict:
        return {"flops_kept": round(self.flops_kept, 4), "params_kept": round(self.params_kept, 4),
                "heads": self.heads, "neurons": self.neurons}


def prune_encoder(module, batches, flops: float, seq_len: int, tune: bool = True, rearrange: bool = True,
                  labels: np.ndarray | None = None, refit: bool = True, readout: str = "mean",
                  refit_ridges: tuple[float, ...] = REFIT_RIDGES) -> PruneReport:
    """Prune ``module`` (a PyTorch BERT-class encoder) in place to at most ``flops`` of its encoder
    FLOPs per token, ranking and tuning on ``batches`` (calibration inputs by input name); with
    ``labels`` (a class index per sample), ranking by the task's loss. ``tune`` / ``rearrange`` /
    ``refit`` (after tuning: :mod:`.tuning`): whether those steps run (off: to measure what each buys);
    ``refit_ridges``: the refit's candidate ridges, chosen per Linear on held-out samples (one: that one).
    ``readout``: what the model's task reads off its tokens (:data:`.masks.READOUTS`); the label-free
    importance and the tuning weight the tokens by it."""
    structure = encoder_structure(module)
    fold_layer_scales(structure)
    params = sum(p.numel() for p in module.parameters())
    macs = structure.macs(seq_len)
    head_grads, neuron_grads = mask_gradients(module, structure, batches, labels, readout=readout)
    selection = select_under_budget(structure, [np.square(g).sum(axis=0) for g in head_grads],
                                    [np.square(g).sum(axis=0) for g in neuron_grads], flops, seq_len)
    if rearrange:
        selection = Selection([rearranged(kept, g) for kept, g in zip(selection.heads, head_grads)],
                              [rearranged(kept, g) for kept, g in zip(selection.neurons, neuron_grads)])
    head_scales, neuron_scales = tune_masks(module, structure, selection, batches, refit, readout, refit_ridges) if tune else (None, None)
    slice_encoder(structure, selection, head_scales, neuron_scales)
    return PruneReport(structure.macs(seq_len) / macs, sum(p.numel() for p in module.parameters()) / params,
                       [layer.heads for layer in structure.layers], [layer.neurons for layer in structure.layers])
