"""Frontends: a PyTorch module, a saved ExportedProgram (.pt2) or an ONNX file -> Relax IRModule.

Every frontend returns an :class:`ImportedModel`, whose ``mod["main"]`` takes the model inputs
followed by the weights in ``params`` (weights stay separate so that compression passes can
read and rewrite them before they are bound as constants).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TvmcompError
from .model import ImportedModel, TensorSpec

__all__ = ["ImportedModel", "TensorSpec", "import_file", "import_torch"]


def import_torch(module, example_inputs: dict, output_names: list[str] | None = None) -> ImportedModel:
    """Import a ``torch.nn.Module`` called as ``module(**example_inputs)``."""
    from .torch_frontend import from_torch_module

    return from_torch_module(module, example_inputs, output_names)


def import_file(path: str | Path, input_shapes: dict[str, list[int]] | None = None) -> ImportedModel:
    """Import a ``.pt2`` ExportedProgram or an ``.onnx`` file.

    ``input_shapes`` overrides (or, for dynamic dimensions, supplies) ONNX input shapes.
    """
    path = Path(path)
    if not path.exists():
        raise TvmcompError(f"model file not found: {path}")
    if not path.is_file():
        raise TvmcompError(f"model path is not a file: {path}")
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as err:
        raise TvmcompError(f"cannot read model file {path}: {err.strerror}") from None
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .onnx_frontend import from_onnx_file

        return from_onnx_file(path, input_shapes)
    if suffix == ".pt2":
        from .torch_frontend import from_pt2_file

        return from_pt2_file(path)
    raise TvmcompError(f"unsupported model file type '{suffix}' ({path}): give an .onnx or a .pt2 file")
