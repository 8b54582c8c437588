"""GPTQ rounding (Frantar et al. 2022): weights rounded one input channel at a time, each
rounding error spread onto the channels not yet rounded so that the Linear's output on the
calibration inputs moves as little as possible.

For a Linear ``y = x @ W`` (``W`` [K, N]) and the calibration inputs' second moments
``H = sum x^T x`` ([K, K]), with ``U`` the upper Cholesky factor of ``H^-1`` (``H^-1 = U^T U``),
input channel ``k`` is rounded to ``q_k`` on its group's grid and the rows after it absorb the error::

    e_k = (W[k] - q_k) / U[k, k];     W[k+1:] -= outer(U[k, k+1:], e_k)

A group's scales are set from its rows as updated when the group's first row comes up (GPTQ's
``groupsize``). Rows are processed in blocks of 128 whose updates to the rows below are applied
at once (GPTQ's lazy batch updates). Nearest rounding is the special case ``H = I``.
"""

from __future__ import annotations

import numpy as np

from .grids import dequantize, weight_grid
from .schemes import TensorQuant

DAMPING = 0.01  # of the mean diagonal of H, added to it: H from a few thousand rows is near singular
BLOCK = 128  # rows per lazy batch (a multiple of every group size)


def gptq_round(weight_kn: np.ndarray, gram: np.ndarray, quant: TensorQuant) -> tuple[np.ndarray, np.ndarray]:
    """Codes ``[K, N]`` and scales (``[K / group_size, N]``, or ``[N]`` per channel) of ``weight_kn``,
    as :func:`~tvmcomp.quant.grids.quantize_weight` returns them (a leading plane axis for a grid
    of several planes, :mod:`.grids`), rounded by GPTQ with ``gram`` = H."""
    weight = np.array(weight_kn, np.float64)
    k_total, n = weight.shape
    group = quant.group_size or k_total  # per channel: one group of all rows
    grid = weight_grid(quant)
    hessian = np.array(gram, np.float64)
    unseen = np.diag(hessian) == 0  # inputs that were always 0: their weights do not matter
    hessian[unseen, unseen] = 1.0
    weight[unseen] = 0.0
    hessian += DAMPING * np.mean(np.diag(hessian)) * np.eye(k_total)
    upper = np.linalg.cholesky(np.linalg.inv(hessian)).T
    codes = np.zeros((grid.planes, k_total, n), np.float64)
    scales = np.zeros((grid.planes, k_total // group, n), np.float32)
    for start in range(0, k_total, BLOCK):
        stop = min(start + BLOCK, k_total)
        errors = np.zeros((stop - start, n))
        for k in range(start, stop):
            if k % group == 0:
                scales[:, k // group] = grid.fit(weight[k:k + group])
            steps = scales[:, k // group].astype(np.float64)
            codes[:, k] = grid.round(weight[k], steps)
            errors[k - start] = (weight[k] - dequantize(codes[:, k], steps)) / upper[k, k]
            weight[k + 1:stop] -= np.outer(upper[k, k + 1:stop], errors[k - start])
        weight[stop:] -= upper[start:stop, stop:].T @ errors
    codes = codes.astype(quant.dtype)
    scales = scales if quant.group_size else scales[:, 0]
    return (codes, scales) if grid.planes > 1 else (codes[0], scales[0])


class InputGram:
    """``sum x^T x`` over the rows of channels a Linear's input takes during calibration."""

    def __init__(self):
        self.gram = None

    def observe(self, rows: np.ndarray) -> None:
        rows = rows.astype(np.float64)
        self.gram = rows.T @ rows if self.gram is None else self.gram + rows.T @ rows
