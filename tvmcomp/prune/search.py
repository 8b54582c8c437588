"""Which heads and neurons to keep under a FLOPs budget: one global ranking that trades heads
against neurons by their costs (Kwon et al. 2022's mask search).

For every count of kept heads (best first), the rest of the budget goes to the best neurons; the
split that keeps the most importance wins. Every layer keeps its best head and best neuron: a
layer with no head has no attention at all, which the exported graph cannot express as a
zero-width reshape (removing such blocks is left to a later pass). Each layer's neurons are then
cut to whole blocks of 16, the least important going, which keeps the FLOPs under the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TvmcompError
from .structure import EncoderStructure

# FFN widths kept in multiples of the widest int8 dot kernel's output block (VNNI's 16): any other
# width makes the FFN's two Linears fall back to unpacked integer matmuls (MiniLM int8 pruned to
# 0.5 FLOPs ran slower than unpruned int8, 11.3 against 8.6 ms)
NEURON_BLOCK = 16


@dataclass(frozen=True)
class Selection:
    heads: list[np.ndarray]  # per layer, the indices of the heads kept (ascending)
    neurons: list[np.ndarray]  # per layer, the neurons kept


def _ranked(scores: list[np.ndarray]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(layer, index) of each layer's best unit, and of all the others, best first."""
    best = [(layer, int(np.argmax(s))) for layer, s in enumerate(scores)]
    rest = [(layer, index) for layer, s in enumerate(scores) for index in range(len(s)) if (layer, index) not in best]
    rest.sort(key=lambda unit: -scores[unit[0]][unit[1]])
    return best, rest


def select_under_budget(structure: EncoderStructure, head_scores, neuron_scores, fraction: float,
                        seq_len: int) -> Selection:
    """The heads and neurons to keep so that the encoder's MACs per token are at most ``fraction`` of now."""
    budget = fraction * structure.macs(seq_len)
    head_cost, neuron_cost = structure.head_macs(seq_len), structure.neuron_macs()
    best_heads, rest_heads = _ranked(head_scores)
    best_neurons, rest_neurons = _ranked(neuron_scores)
    floor = len(best_heads) * head_cost + len(best_neurons) * neuron_cost
    if floor > budget:
        raise TvmcompError(f"--prune-flops {fraction:g} is below one head and one neuron per layer "
                           f"({floor / structure.macs(seq_len):.3f} of the encoder's FLOPs)")
    head_gain = np.concatenate([[0.0], np.cumsum([head_scores[l][i] for l, i in rest_heads])])
    neuron_gain = np.concatenate([[0.0], np.cumsum([neuron_scores[l][i] for l, i in rest_neurons])])
    choice, kept = None, -1.0
    for heads in range(len(rest_heads) + 1):
        left = budget - floor - heads * head_cost
        if left < 0:
            break
        neurons = min(int(left // neuron_cost), len(rest_neurons))
        if head_gain[heads] + neuron_gain[neurons] > kept:
            choice, kept = (heads, neurons), head_gain[heads] + neuron_gain[neurons]
    heads = best_heads + rest_heads[:choice[0]]
    neurons = best_neurons + rest_neurons[:choice[1]]
    layers = range(len(structure.layers))
    kept_neurons = [_whole_blocks([i for l, i in neurons if l == layer], neuron_scores[layer], len(neuron_scores[layer]))
                    for layer in layers]
    return Selection([np.array(sorted(i for l, i in heads if l == layer)) for layer in layers], kept_neurons)


def _whole_blocks(kept: list[int], scores: np.ndarray, width: int) -> np.ndarray:
    """``kept`` cut to a multiple of :data:`NEURON_BLOCK` (the least important go), at least one block."""
    count = min(max(len(kept) // NEURON_BLOCK * NEURON_BLOCK, NEURON_BLOCK), width)
    ranked, kept = np.argsort(-scores, kind="stable"), set(kept)
    chosen = [i for i in ranked if i in kept][:count]
    if len(chosen) < count:  # a layer below one block keeps its best neurons up to one
        taken = set(chosen)
        chosen += [i for i in ranked if i not in taken][:count - len(chosen)]
    return np.array(sorted(chosen))
