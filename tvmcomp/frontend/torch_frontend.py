"""PyTorch -> Relax through ``torch.export`` and TVM's ExportedProgram importer."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import TvmcompError
from .model import ImportedModel, from_relax_with_weights


def from_exported_program(program, output_names: list[str] | None = None, source: str = "") -> ImportedModel:
    from tvm.relax.frontend.torch import from_exported_program as tvm_from_ep

    try:
        with warnings.catch_warnings():  # torch's pytree deprecation noise, not the user's concern
            warnings.simplefilter("ignore", FutureWarning)
            mod = tvm_from_ep(program, keep_params_as_input=True)
    except AssertionError as err:
        match = re.search(r"Unsupported function types \[(.*)\]", str(err))
        if not match:
            raise
        raise TvmcompError(
            f"{source or 'model'} uses PyTorch operators the Relax importer does not support: {match.group(1)}"
        ) from None
    n_outputs = len(program.graph_signature.user_outputs)
    outputs = output_names or [f"output_{i}" for i in range(n_outputs)]
    return from_relax_with_weights(mod, outputs, source)


def from_torch_module(module, example_inputs: dict, output_names: list[str] | None = None) -> ImportedModel:
    """Export ``module(**example_inputs)`` with torch.export and import it."""
    import torch

    module = module.eval()
    kwargs = {k: torch.as_tensor(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v for k, v in example_inputs.items()}
    try:
        with torch.no_grad():
            program = torch.export.export(module, args=(), kwargs=kwargs)
    except Exception as err:  # torch.export reports graph breaks etc. in many exception types
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TvmcompError(f"torch.export could not trace {type(module).__name__}: {first}") from None
    return from_exported_program(program, output_names, source=type(module).__name__)


def from_pt2_file(path: Path) -> ImportedModel:
    import zipfile

    import torch

    # a .pt2 is a zip archive; torch logs a whole traceback before raising on anything else
    if not zipfile.is_zipfile(path):
        raise TvmcompError(f"{path} is not a loadable torch.export .pt2 file: not a zip archive "
                           "(save one with torch.export.save)")
    try:
        program = torch.export.load(str(path))
    except Exception as err:
        raise TvmcompError(f"{path} is not a loadable torch.export .pt2 file: {err}") from None
    imported = from_exported_program(program, source=str(path))
    imported.meta["exported_program"] = program
    return imported


def load_program_module(path):
    """The .pt2 file at ``path`` as :func:`program_module` gives it."""
    import torch

    return program_module(torch.export.load(str(path)))


def program_module(program):
    """``program`` (a loaded .pt2) as a callable taking its inputs by name, as every reference here
    calls a model: a program exported with positional arguments (``export(model, (x,))``) gets them
    back in order, under the names its graph gives them (the forward's parameter names)."""
    module = program.module()
    positional = program.call_spec.in_spec.child(0).num_children
    if positional == 0:
        return module
    names = list(program.graph_signature.user_inputs)

    def call(**inputs):
        return module(*(inputs[name] for name in names[:positional]),
                      **{name: inputs[name] for name in names[positional:]})

    return call


def torch_reference(module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of the PyTorch module on numpy inputs, as a flat list of numpy arrays."""
    import torch

    with torch.no_grad():
        result = module(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()})
    flat = result if isinstance(result, (tuple, list)) else [result]
    return [t.detach().numpy() for t in flat]
