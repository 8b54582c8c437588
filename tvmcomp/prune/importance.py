"""Head and neuron importance: the diagonal Fisher information of masks on the float model (Kwon et
al. 2022), of the task's loss where the user gives labels, else of a label-free one.

Kwon et al. sum squared gradients of the task loss w.r.t. masks of ones (:mod:`.masks`).

- With labels: the task is read off the encoder by a linear head on what its task reads (a
  sentence encoder's mean-pooled tokens, a ViT's class token): a logistic regression fitted on the
  float model's embeddings of the labelled samples (what ``tvmcomp eval``'s probe is). The loss is
  that head's cross-entropy against the labels, one gradient per sample.
- Without labels, the output ``f`` is taken as the mean of a unit Gaussian, whose Fisher is
  ``J^T J`` (``J = df/dmask``); its diagonal is estimated with a random probe per sample: for
  ``v ~ N(0, I)`` over the real tokens, ``E[(v . J)^2] = diag(J^T J)``.

Each gradient is kept, not only their squares: the mask rearrangement (:mod:`.rearrange`) needs the
interactions between units, ``F = G^T G``.
"""

from __future__ import annotations

import numpy as np

from .masks import ATTENTION_MASK, masked, run, token_weights
from .structure import EncoderStructure


PROBES = 4  # random probes per sample: MiniLM at 0.7 FLOPs kept cosine 0.788 with 1, 0.803 with 4


def mask_gradients(module, structure: EncoderStructure, batches: list[dict[str, np.ndarray]],
                   labels: np.ndarray | None = None, seed: int = 0, probes: int = PROBES, readout: str = "mean"):
    """Per layer, the gradients w.r.t. the head masks and the neuron masks, one row per labelled
    sample or, without ``labels`` (class indices, one per sample of ``batches`` in order), per (sample,
    probe): lists of ``[rows, heads]`` and ``[rows, neurons]`` arrays. A unit's importance (diagonal
    Fisher) is its column's sum of squares. ``readout`` (:data:`.masks.READOUTS`) is what the task
    reads: the labelled head's input, and the weights of the label-free probes' tokens
    (:func:`.masks.token_weights`)."""
    import torch

    losses = _task_losses(module, batches, labels, readout) if labels is not None else _probe_losses(seed, probes, readout)
    head_masks = [torch.ones(layer.heads, requires_grad=True) for layer in structure.layers]
    neuron_masks = [torch.ones(layer.neurons, requires_grad=True) for layer in structure.layers]
    head_grads, neuron_grads = [[] for _ in structure.layers], [[] for _ in structure.layers]
    with masked(structure, head_masks, neuron_masks):
        for index, batch in enumerate(batches):
            for loss in losses(index, batch, run(module, batch)):
                grads = torch.autograd.grad(loss, head_masks + neuron_masks, retain_graph=True)
                for i in range(len(structure.layers)):
                    head_grads[i].append(grads[i].double().numpy())
                    neuron_grads[i].append(grads[len(structure.layers) + i].double().numpy())
    return [np.stack(g) for g in head_grads], [np.stack(g) for g in neuron_grads]


def _probe_losses(seed: int, probes: int, readout: str):
    """``losses(index, batch, output)``: ``output . v`` for ``probes`` random ``v`` over the real tokens,
    each token's scaled by the root of its weight, so that its share of the Fisher is its weight."""
    import torch

    generator = torch.Generator().manual_seed(seed)

    def losses(_index, batch, output):
        rows = torch.from_numpy(np.sqrt(token_weights(batch, output.shape[:2], readout)).astype(np.float32))
        return [(output * torch.randn(output.shape, generator=generator)
                 * rows.reshape(*output.shape[:-1], 1)).sum() for _ in range(probes)]

    return losses


def read_out(output, batch: dict, readout: str):
    """``[batch, hidden]`` embeddings as the task reads them: the first (class) token, or the outputs
    averaged over each sample's real tokens."""
    import torch

    if readout == "first":
        return output[:, 0]
    mask = batch.get(ATTENTION_MASK)
    weights = torch.ones(output.shape[:2]) if mask is None else torch.from_numpy(np.asarray(mask))
    weights = weights.to(output.dtype)
    return (output * weights[..., None]).sum(1) / weights.sum(1, keepdim=True).clamp(min=1e-9)


def _task_losses(module, batches, labels: np.ndarray, readout: str):
    """``losses(index, batch, output)``: per sample of batch ``index``, the cross-entropy against its
    label of a logistic regression fitted on the float model's outputs as ``readout`` reads them."""
    import torch
    from sklearn.linear_model import LogisticRegression

    with torch.no_grad():
        pooled = [read_out(run(module, batch), batch, readout) for batch in batches]
    embeddings, first = torch.cat(pooled).numpy(), np.cumsum([0] + [len(p) for p in pooled])
    if len(labels) != len(embeddings):
        raise ValueError(f"{len(labels)} labels for {len(embeddings)} samples")
    head = LogisticRegression(max_iter=2000).fit(embeddings, labels)
    weight, bias = torch.from_numpy(head.coef_).float(), torch.from_numpy(head.intercept_).float()
    if len(head.classes_) == 2:  # one logit z: the two classes' logits are (0, z)
        weight, bias = torch.cat([torch.zeros_like(weight), weight]), torch.cat([torch.zeros_like(bias), bias])
    targets = torch.from_numpy(np.searchsorted(head.classes_, labels))

    def losses(index, batch, output):
        logits = read_out(output, batch, readout) @ weight.T.to(output.dtype) + bias.to(output.dtype)
        return [torch.nn.functional.cross_entropy(logits[j], targets[first[index] + j]) for j in range(len(logits))]

    return losses
