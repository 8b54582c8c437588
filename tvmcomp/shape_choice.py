"""Which of a package's compiled shapes serves given inputs, padded how, and outputs cut back.

A package holds one function per shape it was built for (``--seq-len 32,64,128``, ``--batch 1,8``),
listed smallest first in its metadata. Inputs go to the smallest shape they fit, padded with zeros:
along the batch axis always (rows are computed independently), along the sequence axis only when
the model takes an attention mask, whose zeros keep padded tokens out of every real token's
attention. An output axis that equals an input axis in every shape (batch, tokens) is cut back to
the size the caller gave. Needs only NumPy: this runs inside deployed packages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import TvmcompError

BATCH_AXIS, SEQUENCE_AXIS = 0, 1


@dataclass
class Choice:
    function: str  # the package function that runs
    inputs: dict[str, np.ndarray]  # padded to that function's shapes
    given: dict[str, tuple[int, ...]]  # the caller's shapes


def package_shapes(metadata: dict) -> list[dict]:
    """The shapes a package serves; a package from before shape lists serves exactly its inputs."""
    return metadata.get("shapes") or [{"function": "main", "outputs": None,
                                       "inputs": {spec["name"]: spec["shape"] for spec in metadata["inputs"]}}]


def _paddable_axes(shape: dict, names: list[str]) -> set[int]:
    if shape["outputs"] is None:
        return set()
    has_mask = any("mask" in name for name in names)
    return {BATCH_AXIS, SEQUENCE_AXIS} if has_mask else {BATCH_AXIS}


def _fits(given: tuple[int, ...], dims: list[int], paddable: set[int]) -> bool:
    return len(given) == len(dims) and all(
        size == dim or (size < dim and axis in paddable) for axis, (size, dim) in enumerate(zip(given, dims)))


def choose_shape(shapes: list[dict], inputs: dict[str, np.ndarray]) -> Choice:
    """The smallest shape that ``inputs`` fit, with the inputs zero-padded to it."""
    given = {name: tuple(np.shape(value)) for name, value in inputs.items()}
    for shape in shapes:
        paddable = _paddable_axes(shape, list(given))
        if all(_fits(given[name], dims, paddable) for name, dims in shape["inputs"].items()):
            padded = {name: _pad(np.asarray(inputs[name]), dims) for name, dims in shape["inputs"].items()}
            return Choice(shape["function"], padded, given)
    first = next(iter(shapes[0]["inputs"]))
    served = f"{first} " + ", ".join(str(shape["inputs"][first]) for shape in shapes)
    pads = "batch and sequence" if SEQUENCE_AXIS in _paddable_axes(shapes[-1], list(given)) else "batch"
    raise TvmcompError(
        f"inputs of shape {', '.join(f'{name} {list(dims)}' for name, dims in given.items())} fit no shape this package "
        f"was built for ({served}; smaller {pads} sizes are padded): rebuild with the shape you need "
        "(--seq-len / --batch take comma lists)")


def _pad(value: np.ndarray, dims: list[int]) -> np.ndarray:
    if list(value.shape) == list(dims):
        return value
    return np.pad(value, [(0, dim - size) for size, dim in zip(value.shape, dims)])


def trim_outputs(outputs: list[np.ndarray], shapes: list[dict], choice: Choice) -> list[np.ndarray]:
    """Cut each output axis that follows the first input's batch or sequence axis back to its given size."""
    if shapes[0]["outputs"] is None:
        return outputs
    first = next(iter(shapes[0]["inputs"]))
    given = choice.given[first]
    trimmed = []
    for index, output in enumerate(outputs):
        cut = tuple(
            slice(0, given[axis]) if all(
                axis < len(shape["outputs"][index]) and shape["outputs"][index][axis] == shape["inputs"][first][axis]
                for shape in shapes) else slice(None)
            for axis in range(min(output.ndim, len(given), SEQUENCE_AXIS + 1)))
        trimmed.append(output[cut])
    return trimmed


def drop_padding_columns(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Text inputs tokenized to a package's longest shape, cut after the last real token of any row
    (the attention mask says which are real), so that a shorter shape serves them."""
    mask = next((value for name, value in inputs.items() if "mask" in name and value.ndim == 2), None)
    if mask is None:
        return inputs
    length = max(1, int(np.flatnonzero(mask.any(axis=BATCH_AXIS)).max(initial=0)) + 1)
    return {name: value[:, :length] if value.ndim == 2 and value.shape == mask.shape else value
            for name, value in inputs.items()}
