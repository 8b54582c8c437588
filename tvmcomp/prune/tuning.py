"""Mask tuning (Kwon et al. 2022): per layer, rescale the kept heads and neurons by least squares so
the pruned layer reproduces the float model's outputs; the scales are folded into the weights.

A block's output projection is linear in its masks: the attention output is
``sum_h m_h (ctx_h @ Wo_h) + bo`` and the FFN output ``sum_n m_n a_n W2_n + b2``; the LayerNorm after
it takes that plus the block's residual input ``r``. Layer by layer, with every earlier layer
already pruned and tuned, the kept units' ``m`` minimize, over the calibration tokens,

    || LN'(sum_u m_u c_u + b + r  -  t) ||^2

with ``c_u`` the unit's contribution on the pruned model's own inputs, ``r`` its residual and ``t``
what the float (unpruned) model feeds the same LayerNorm. So each layer also makes up for the
errors the earlier ones left in its inputs and residual, as Kwon et al. tune against the unpruned
model's layer outputs. ``LN'`` is the LayerNorm's linearization at ``t``: per token, centred over
channels, times gamma, over the token's standard deviation. Without it the fit chases the few
channels with large pre-LayerNorm values, which LayerNorm then scales down: in an exploratory run
on MiniLM at 0.5 FLOPs tuning then cost embedding cosine; with it, tuning raises it from 0.716 to
0.740 (bench/results/2026-12-05-prune-steps-minilm.md). The normal equations
are ``kept x kept``, solved in float64 with a ridge that pulls scales towards 1.

Refit (``refit``): the scales leave one degree of freedom per unit. After them, the kept input
columns of the block's output projection are fitted whole to the same target by ridge regression
towards the scaled weights: ``W' = argmin sum_t s_t^2 ||x_t W^T - u_t||^2 + lam ||W - W_s||^2`` with
``x_t`` the kept units' inputs, ``u_t`` the target sum above, ``s_t`` the token's 1 / std. Each
output channel is a free column, so the LayerNorm's centring and gamma do not move the unregularized
optimum; the token weights stay. How strong the ridge must be depends on how many tokens the
calibration data give against up to 1536 inputs a column, and how many of them the task reads: on
MiniLM (~3,500 text tokens, 128 texts) 1.0 of the weighted ``X^T X``'s mean diagonal kept the most
embedding cosine (0.7993, against 0.7807 at 0.1), on vit-s (16,448 tokens of 64 images, half the
weight on their 64 class tokens) 0.03 kept the most of float's predictions (95.4%, against 91.0% at
1.0; bench/results/2026-12-08-prune-refit-*.md). So each Linear chooses its ``lam`` among
:data:`REFIT_RIDGES` (times the mean diagonal) by the error on held-out samples (every
:data:`HELD_OUT`-th calibration sample), measured as the LayerNorm passes it on, then fits on all
samples with it.
"""

from __future__ import annotations

import numpy as np

from .masks import masked, run, token_weights
from .search import Selection
from .structure import EncoderStructure

RIDGE = 1e-2  # of the normal equations' mean diagonal, pulling each scale towards 1
REFIT_RIDGES = (3.0, 1.0, 0.3, 0.1, 0.03, 0.01)  # of the refit's mean diagonal: candidates for the pull towards the scaled weights
HELD_OUT = 4  # every 4th calibration sample scores the refit's candidate ridges


class _AllRecorded(Exception):
    """Raised by :func:`_record`'s hooks to end a forward pass once every module has its input."""


def _record(module, batches, head_masks, neuron_masks, structure: EncoderStructure, modules,
            readout: str = "mean") -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """The first input of each of ``modules`` (for a masked Linear: before its mask applies), over
    the real tokens of every batch, as rows, with ``head_masks`` / ``neuron_masks`` applied; each
    row's weight for ``readout`` (:func:`.masks.token_weights`); and the index of the calibration
    sample each row comes from."""
    import torch

    seen = [[] for _ in modules]

    def record(_module, args, out):
        out.append(args[0].detach())
        if len(set(map(len, seen))) == 1:  # each module has its input: the layers after are not needed
            raise _AllRecorded

    # registered before the masks' hooks, so they run first and see the unmasked inputs
    hooks = [m.register_forward_pre_hook(lambda m, args, out=out: record(m, args, out)) for m, out in zip(modules, seen)]
    try:
        with torch.no_grad(), masked(structure, head_masks, neuron_masks):
            for batch in batches:
                try:
                    run(module, batch)
                except _AllRecorded:
                    pass
    finally:
        for hook in hooks:
            hook.remove()
    per_row = [token_weights(b, x.shape[:2], readout) for b, x in zip(batches, seen[0])]
    real = [w > 0 for w in per_row]  # padding weighs 0; a row of weight 0 adds nothing to a least squares
    weights = np.concatenate([w[r] for w, r in zip(per_row, real)])
    firsts = np.cumsum([0] + [x.shape[0] for x in seen[0]])
    samples = np.concatenate([np.repeat(first + np.arange(x.shape[0]), x.shape[1])[r]
                              for first, x, r in zip(firsts, seen[0], real)])
    return [torch.cat([x.reshape(-1, x.shape[-1])[torch.from_numpy(r)] for r, x in zip(real, tensors)]).double().numpy()
            for tensors in seen], weights, samples


def _least_squares(gram: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """argmin ||A m - t||^2 + ridge ||m - 1||^2 from A^T A and A^T t: pulled towards the unit's own scale."""
    return _ridge_fit(gram, rhs, np.ones(len(gram)), RIDGE)


def _ridge_fit(gram: np.ndarray, rhs: np.ndarray, towards: np.ndarray, ridge: float) -> np.ndarray:
    """argmin_W ||X W^T - T||^2 + lam ||W - towards||^2 from ``gram`` = X^T X and ``rhs`` = X^T T,
    lam = ``ridge`` times the mean diagonal of X^T X."""
    lam = ridge * max(np.mean(np.diag(gram)), 1e-30)
    return np.linalg.solve(gram + lam * np.eye(len(gram)), rhs + lam * towards.T).T


def _refit(linear, inputs: np.ndarray, target: np.ndarray, columns: np.ndarray, scales: np.ndarray,
           samples: np.ndarray, gamma: np.ndarray, ridges: tuple[float, ...]) -> float:
    """Write into ``linear``'s ``columns`` the ridge fit of ``target`` ([tokens, out]) on ``inputs``
    ([tokens, columns], both already weighted per token), pulled towards the columns times
    ``scales``, with the ridge of ``ridges`` whose fit on the other samples leaves the least error on
    the held-out ones (every :data:`HELD_OUT`-th of ``samples``), centred over the output channels
    and times the LayerNorm's ``gamma``; return that ridge."""
    import torch

    scaled = linear.weight.detach().double().numpy()[:, columns] * scales[None, :]
    held = samples % HELD_OUT == HELD_OUT - 1
    gram, rhs = inputs[~held].T @ inputs[~held], inputs[~held].T @ target[~held]
    ridge = max(ridges)  # fewer samples than HELD_OUT leave none to choose on: the strongest pull
    if len(ridges) > 1 and held.any() and not held.all():
        def held_out_error(candidate):
            residual = inputs[held] @ _ridge_fit(gram, rhs, scaled, candidate).T - target[held]
            return np.sum(np.square(gamma * (residual - residual.mean(axis=1, keepdims=True))))
        ridge = min(ridges, key=held_out_error)
    gram, rhs = gram + inputs[held].T @ inputs[held], rhs + inputs[held].T @ target[held]
    with torch.no_grad():
        linear.weight[:, torch.as_tensor(columns, dtype=torch.long)] = torch.as_tensor(
            _ridge_fit(gram, rhs, scaled, ridge), dtype=linear.weight.dtype)
    return ridge


def tune_masks(module, structure: EncoderStructure, selection: Selection, batches, refit: bool = True,
               readout: str = "mean", refit_ridges: tuple[float, ...] = REFIT_RIDGES):
    """Per layer, the scales of the kept heads and of the kept neurons (the masks' values); with
    ``refit``, the kept columns of each output projection are fitted in place after them and their
    scales are 1, each with the one of ``refit_ridges`` its held-out samples score best (one: that
    ridge). Each token's squared error counts by its weight for ``readout``
    (:func:`.masks.token_weights`)."""
    import torch

    full_heads = [torch.ones(layer.heads) for layer in structure.layers]
    full_neurons = [torch.ones(layer.neurons) for layer in structure.layers]
    norms = [norm for layer in structure.layers for norm in (layer.attention_norm, layer.ffn_norm)]
    float_sums, weights, samples = _record(module, batches, full_heads, full_neurons, structure, norms, readout)  # t, per LayerNorm
    head_masks = [torch.zeros(layer.heads) for layer in structure.layers]
    neuron_masks = [torch.zeros(layer.neurons) for layer in structure.layers]
    for masks, kept in ((head_masks, selection.heads), (neuron_masks, selection.neurons)):
        for mask, index in zip(masks, kept):
            mask[torch.as_tensor(index, dtype=torch.long)] = 1.0
    for i, layer in enumerate(structure.layers):
        for linear, norm, masks, kept, width in (
                (layer.attention_out, layer.attention_norm, head_masks, selection.heads[i], layer.head_dim),
                (layer.ffn_out, layer.ffn_norm, neuron_masks, selection.neurons[i], 1)):
            if len(kept) == 0:  # a block removed whole: nothing to rescale
                continue
            (inputs, norm_inputs), _, _ = _record(module, batches, head_masks, neuron_masks, structure, [linear, norm])
            weight = linear.weight.detach().double().numpy()  # [out, in]: unit u's inputs are u*width .. (u+1)*width
            mask = masks[i].repeat_interleave(width).double().numpy()
            bias = linear.bias.detach().double().numpy()
            residual = norm_inputs - (inputs * mask) @ weight.T - bias
            float_sum = float_sums[norms.index(norm)]
            target = float_sum - residual - bias  # what sum_u m_u c_u should be
            # errors as the LayerNorm passes them on: centred over channels, times gamma, over the token's std
            token_scale = np.sqrt(weights)[:, None] / float_sum.std(axis=1, keepdims=True)
            inputs, refit_target = inputs * token_scale, target * token_scale
            gamma = norm.weight.detach().double().numpy()
            weight = gamma[:, None] * (weight - weight.mean(axis=0))
            target = gamma * (target - target.mean(axis=1, keepdims=True)) * token_scale
            # <c_u, c_v> over tokens and outputs = the (u, v) block of (X^T X) o (W^T W), summed
            units = weight.shape[1] // width
            products = ((inputs.T @ inputs) * (weight.T @ weight)).reshape(units, width, units, width).sum(axis=(1, 3))
            correlations = (inputs * (target @ weight)).sum(axis=0).reshape(units, width).sum(axis=1)
            scales = _least_squares(products[np.ix_(kept, kept)], correlations[kept])
            if refit:
                columns = (np.asarray(kept)[:, None] * width + np.arange(width)).reshape(-1)
                _refit(linear, inputs[:, columns], refit_target, columns, np.repeat(scales, width), samples, gamma,
                       refit_ridges)
                scales = np.ones_like(scales)
            masks[i][torch.as_tensor(kept, dtype=torch.long)] = torch.as_tensor(scales, dtype=torch.float32)
    return ([m[torch.as_tensor(k, dtype=torch.long)].numpy() for m, k in zip(head_masks, selection.heads)],
            [m[torch.as_tensor(k, dtype=torch.long)].numpy() for m, k in zip(neuron_masks, selection.neurons)])
