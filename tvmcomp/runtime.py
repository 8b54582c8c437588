"""Load and run a built package. Needs only TVM's runtime and NumPy: no torch, no compiler.

A package is a folder with ``model.so`` (the exported Relax VM executable, weights inside),
``metadata.json``, ``example_inputs.npz`` and, when the source model had them, its tokenizer or
image-processor files under ``preprocessing/`` (reading those needs transformers or Pillow).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import TvmcompError
from .shape_choice import Choice, choose_shape, package_shapes, trim_outputs

LIBRARY = "model.so"
METADATA = "metadata.json"
EXAMPLE_INPUTS = "example_inputs.npz"
PREPROCESSING_DIR = "preprocessing"


def set_num_threads(threads: int) -> None:
    """Run TVM's CPU kernels on ``threads`` threads.

    TVM sizes its pool once, when first used, from ``TVM_NUM_THREADS``, else from half the
    logical CPUs on x86 (it assumes two hyper-threads per core): one thread on a 2-vCPU VM whose
    vCPUs are real cores. ``config_threadpool`` can only use fewer than that, so the variable is
    set first; a pool already made smaller in this process cannot grow.
    """
    import tvm  # loads the runtime library that registers the thread-pool functions

    os.environ["TVM_NUM_THREADS"] = str(int(threads))
    tvm.get_global_func("runtime.config_threadpool")(1, int(threads))
    if num_threads() < threads:
        raise TvmcompError(f"TVM's thread pool in this process already has {num_threads()} threads and cannot "
                           f"grow to {threads}: set TVM_NUM_THREADS={threads} before the first kernel runs")


def use_physical_cores() -> None:
    """Size TVM's pool to this machine's physical cores unless the user chose (``TVM_NUM_THREADS``).

    TVM's own default is half the logical CPUs, one thread on a 2-vCPU VM, while ONNX Runtime and
    PyTorch use every core. A pool this process already made cannot grow; it is then left as it is.
    """
    if "TVM_NUM_THREADS" in os.environ:
        return
    from .targets import host_cores

    try:
        set_num_threads(host_cores())
    except TvmcompError:
        pass


def num_threads() -> int:
    """Threads TVM's CPU kernels run on now."""
    import tvm

    return int(tvm.get_global_func("runtime.NumThreads")())


def read_metadata(path: str | Path) -> dict:
    path = Path(path)
    meta_file = path / METADATA
    if not path.is_dir():
        raise TvmcompError(f"package not found: {path} is not a folder (build one with `tvmcomp build`)")
    if not meta_file.is_file():
        raise TvmcompError(f"{path} is not a tvmcomp package: it has no {METADATA}")
    try:
        return json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise TvmcompError(f"{meta_file} is corrupt: {err}") from None


def check_runs_here(metadata: dict, path: str | Path) -> None:
    """A package cross-compiled or built for a GPU cannot be loaded on this CPU: say where it runs."""
    target = metadata["target"]
    if target["device"] != "cpu" or target.get("cross_compiler"):
        raise TvmcompError(
            f"{path} was built for '{target['name']}', which this machine cannot run; run it on its device "
            "over RPC (--rpc HOST:PORT, or --rpc-tracker HOST:PORT --rpc-key KEY)")


class Package:
    """A loaded package: ``run(**inputs)`` returns the outputs as a list of NumPy arrays."""

    def __init__(self, path: str | Path, device=None, module=None):
        import tvm
        from tvm import relax

        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        if module is None:
            check_runs_here(self.metadata, self.path)
            use_physical_cores()  # before the library loads: loading it can already size TVM's pool
        self.inputs = self.metadata["inputs"]
        self.output_names = self.metadata["outputs"]
        self.shapes = package_shapes(self.metadata)
        if module is None:
            library = self.path / LIBRARY
            if not library.is_file():
                raise TvmcompError(f"{self.path} has no {LIBRARY}")
            module = tvm.runtime.load_module(str(library))
        self.device = device if device is not None else tvm.device(self.metadata["target"]["device"], 0)
        self.vm = relax.VirtualMachine(module, self.device)

    def example_inputs(self) -> dict[str, np.ndarray]:
        with np.load(self.path / EXAMPLE_INPUTS) as data:
            return {name: data[name] for name in data.files}

    def input_makers(self):
        """(tokenize, preprocess_images) from the files the package carries: each takes a list of
        texts or of RGB images and returns inputs shaped for this package, or is None."""
        from .frontend import TensorSpec

        folder, specs = self.path / PREPROCESSING_DIR, [TensorSpec.from_json(spec) for spec in self.inputs]
        tokenize = preprocess = None
        if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.json").is_file():
            from .models.hf_text import _tokenize

            tokenize = lambda texts: _tokenize(str(folder), texts, specs[0].shape[1])  # noqa: E731
        elif (folder / "preprocessor_config.json").is_file():
            from .models.hf_image import image_preprocessor

            preprocess = image_preprocessor(folder, {})
        return tokenize, preprocess

    def choose(self, inputs: dict[str, np.ndarray]) -> Choice:
        """Check names and dtypes against the package; the shape that serves ``inputs``, which are
        padded to it (:mod:`tvmcomp.shape_choice`)."""
        expected = [spec["name"] for spec in self.inputs]
        unknown = sorted(set(inputs) - set(expected))
        missing = [name for name in expected if name not in inputs]
        if unknown or missing:
            raise TvmcompError(f"inputs must be exactly {expected}; missing {missing}, unexpected {unknown}")
        typed = {}
        for spec in self.inputs:
            value = np.asarray(inputs[spec["name"]])
            if str(value.dtype) != spec["dtype"]:
                if not np.can_cast(value.dtype, spec["dtype"], casting="same_kind"):
                    raise TvmcompError(f"input '{spec['name']}' has dtype {value.dtype}, expected {spec['dtype']}")
                value = value.astype(spec["dtype"])
            typed[spec["name"]] = value
        return choose_shape(self.shapes, typed)

    def device_inputs(self, choice: Choice) -> list:
        import tvm

        return [tvm.runtime.tensor(np.ascontiguousarray(choice.inputs[spec["name"]]), self.device)
                for spec in self.inputs]

    # The stateful interface (set inputs, invoke, get outputs) works the same on a local and on an
    # RPC device; calling ``vm["main"]`` over RPC returns an opaque remote reference to the result.
    def run(self, **inputs) -> list[np.ndarray]:
        """The outputs for ``inputs``, run at the smallest shape the package has that they fit."""
        choice = self.choose(inputs)
        self.vm.set_input(choice.function, *self.device_inputs(choice))
        self.vm.invoke_stateful(choice.function)
        outputs = [t.numpy() for t in flatten_outputs(self.vm.get_outputs(choice.function))]
        return trim_outputs(outputs, self.shapes, choice)

    def time(self, inputs: dict[str, np.ndarray], number: int, repeat: int, min_repeat_ms: int = 0):
        """TVM's time_evaluator over the function that serves ``inputs``: seconds per run, one entry per repeat."""
        choice = self.choose(inputs)
        self.vm.set_input(choice.function, *self.device_inputs(choice))
        timer = self.vm.time_evaluator("invoke_stateful", self.device, number=number, repeat=repeat,
                                       min_repeat_ms=min_repeat_ms)
        return list(timer(choice.function).results)


def flatten_outputs(result) -> list:
    if hasattr(result, "numpy"):
        return [result]
    flat = []
    for item in result:
        flat.extend(flatten_outputs(item))
    return flat


def load(path: str | Path) -> Package:
    """Load a package built by ``tvmcomp build``.

    Its CPU kernels run on this machine's physical cores. To choose another number, set
    ``TVM_NUM_THREADS=n`` in the environment, or call ``tvmcomp.runtime.set_num_threads(n)``,
    before the first run in the process."""
    return Package(path)
