"""Which heads and neurons to keep under a FLOPs budget: one global ranking that trades heads
against neurons by their costs (Kwon et al. 2022's mask search).

For every count of kept heads (best first), the rest of the budget goes to the best neurons; the
split that keeps the most importance wins. A layer may keep no head or no neuron: slicing then
removes its attention or FFN block (:mod:`.slicing`). Each layer's neurons are then cut to whole
blocks of 16, the least important going, which keeps the FLOPs under the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .structure import EncoderStructure

# FFN widths kept in multiples of the widest int8 dot kernel's output block (VNNI's 16): any other
# width makes the FFN's two Linears fall back to unpacked integer matmuls (MiniLM int8 pruned to
# 0.5 FLOPs ran slower than unpruned int8, 11.3 against 8.6 ms)
NEURON_BLOCK = 16


@dataclass(frozen=True)
class Selection:
    heads: list[np.ndarray]  # per layer, the indices of the heads kept (ascending)
    neurons: list[np.ndarray]  # per layer, the neurons kept


def _ranked(scores: list[np.ndarray]) -> list[tuple[int, int]]:
    """(layer, index) of every unit, best first."""
    units = [(layer, index) for layer, s in enumerate(scores) for index in range(len(s))]
    return sorted(units, key=lambda unit: -scores[unit[0]][unit[1]])


def select_under_budget(structure: EncoderStructure, head_scores, neuron_scores, fraction: float,
                        seq_len: int) -> Selection:
    """The heads and neurons to keep so that the encoder's MACs per token are at most ``fraction`` of now."""
    budget = fraction * structure.macs(seq_len)
    head_cost, neuron_cost = structure.head_macs(seq_len), structure.neuron_macs()
    ranked_heads, ranked_neurons = _ranked(head_scores), _ranked(neuron_scores)
    head_gain = np.concatenate([[0.0], np.cumsum([head_scores[l][i] for l, i in ranked_heads])])
    neuron_gain = np.concatenate([[0.0], np.cumsum([neuron_scores[l][i] for l, i in ranked_neurons])])
    choice, kept = (0, 0), -1.0
    for heads in range(len(ranked_heads) + 1):
        left = budget - heads * head_cost
        if left < 0:
            break
        neurons = min(int(left // neuron_cost), len(ranked_neurons))
        if head_gain[heads] + neuron_gain[neurons] > kept:
            choice, kept = (heads, neurons), head_gain[heads] + neuron_gain[neurons]
    heads, neurons = ranked_heads[:choice[0]], ranked_neurons[:choice[1]]
    layers = range(len(structure.layers))
    kept_neurons = [_whole_blocks([i for l, i in neurons if l == layer], neuron_scores[layer]) for layer in layers]
    return Selection([np.array(sorted(i for l, i in heads if l == layer), dtype=np.int64) for layer in layers],
                     kept_neurons)


def _whole_blocks(kept: list[int], scores: np.ndarray) -> np.ndarray:
    """``kept`` cut to a multiple of :data:`NEURON_BLOCK`, the least important going."""
    count = len(kept) // NEURON_BLOCK * NEURON_BLOCK
    return np.array(sorted(sorted(kept, key=lambda i: -scores[i])[:count]), dtype=np.int64)
