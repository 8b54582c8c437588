"""``tvmcomp run``: a package on the user's inputs (an ``.npz`` keyed by input name), here or on a
device over RPC, its outputs written by name to an ``.npz``."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from .bench import package_batch
from .errors import TvmcompError
from .remote import RemoteSpec, run_remote
from .results import latency_stats
from .runtime import Package, read_metadata


def read_inputs(path: str | Path, package: str | Path | None = None) -> dict[str, np.ndarray]:
    """Arrays of an ``.npz`` by name (``np.savez(path, input_ids=..., attention_mask=...)``), or the
    first batch of a ``.txt`` (one text per line) or an image folder, turned into inputs by the
    tokenizer or image processor that ``package`` carries."""
    path = Path(path)
    if package is not None and (path.suffix.lower() == ".txt" or path.is_dir()):
        from .calibration_data import read_calibration_data
        from .frontend import TensorSpec
        from .shape_choice import drop_padding_columns

        loaded = Package(package)
        specs = [TensorSpec.from_json(spec) for spec in loaded.inputs]
        return drop_padding_columns(read_calibration_data(path, specs, *loaded.input_makers(), flag="--inputs")[0])
    if not path.is_file():
        raise TvmcompError(f"inputs file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single array")
            return {name: data[name] for name in data.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise TvmcompError(f"{path} is not an .npz of named arrays ({err}); write one with "
                           "np.savez(path, input_name=array, ...)") from None


def run_package(path: str | Path, inputs: dict[str, np.ndarray] | None = None, remote: RemoteSpec | None = None,
                repeat: int = 0) -> dict:
    """Outputs by name of the package on ``inputs`` (default: its example inputs), and with
    ``repeat`` the latency of that many timed runs. Inputs are checked against the package."""
    metadata = read_metadata(path)
    if remote is not None:
        outputs, seconds = run_remote(path, remote, inputs, repeat)
    else:
        package = Package(path)
        inputs = package.example_inputs() if inputs is None else inputs
        outputs = package.run(**inputs)
        seconds = package.time(inputs, number=1, repeat=repeat) if repeat else []
    names = metadata["outputs"] if len(metadata["outputs"]) == len(outputs) else [
        f"output_{i}" for i in range(len(outputs))]
    return {"outputs": dict(zip(names, outputs)),
            "latency": latency_stats(seconds, package_batch(metadata)) if seconds else None}


def describe_outputs(outputs: dict[str, np.ndarray]) -> dict:
    return {name: {"shape": list(value.shape), "dtype": str(value.dtype)} for name, value in outputs.items()}
