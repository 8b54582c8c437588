"""Mask rearrangement (Kwon et al. 2022): within a layer, which units to prune once the search has
said how many.

The diagonal Fisher ranks units one by one, as if their contributions to the loss were
independent. With the per-sample mask gradients ``G`` ([samples, units], :mod:`.importance`), the
loss of pruning the set ``P`` is estimated as ``sum_s (sum_{u in P} G[s, u])^2`` (a block of the
Fisher matrix, ``1_P^T G^T G 1_P``): two units whose gradients cancel cost less together than
either alone. Greedy, as theirs: start from the least important units, then for each other unit
in rising importance, add it to the pruned set and take back the one whose removal leaves the
smallest summed gradient.
"""

from __future__ import annotations

import numpy as np


def rearranged(kept: np.ndarray, gradients: np.ndarray) -> np.ndarray:
    """The units to keep (ascending), as many as ``kept``, with ``gradients`` [samples, units]."""
    units = gradients.shape[1]
    pruned_count = units - len(kept)
    if pruned_count == 0 or len(kept) == 0:
        return np.sort(kept)
    vectors = gradients.T  # [units, samples]
    order = np.argsort(np.square(vectors).sum(axis=1), kind="stable")  # least important first
    pruned = list(order[:pruned_count])
    total = vectors[pruned].sum(axis=0)
    for unit in order[pruned_count:]:
        pruned.append(unit)
        total = total + vectors[unit]
        # the pruned set's summed gradient without each member; drop the member that leaves the least
        leftover = np.square(total[None, :] - vectors[pruned]).sum(axis=1)
        dropped = pruned.pop(int(np.argmin(leftover)))
        total = total - vectors[dropped]
    return np.setdiff1d(np.arange(units), pruned)
