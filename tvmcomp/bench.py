"""Time a built package (TVM's time_evaluator) and, optionally, its PyTorch source on the same inputs."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .errors import TvmcompError
from .remote import RemoteSpec, check_against_reference, run_remote
from .results import latency_stats
from .runtime import EXAMPLE_INPUTS, Package, check_runs_here, num_threads, read_metadata, set_num_threads
from .targets import host_cores


def package_batch(metadata: dict) -> int:
    """Samples per run: the leading dimension of the first input (1 for a scalar input)."""
    shape = metadata["inputs"][0]["shape"] if metadata["inputs"] else []
    return int(shape[0]) if shape else 1


def time_callable(fn, repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def reference_torch_module(model: str):
    """The float PyTorch model a package was built from (bundled models and .pt2 files)."""
    if Path(model).suffix.lower() == ".pt2":
        from .frontend.torch_frontend import load_program_module

        return load_program_module(model)
    if Path(model).suffix.lower() == ".onnx":
        raise TvmcompError("--compare torch needs a PyTorch source; this package was built from an ONNX file")
    from .models import find_model

    entry = find_model(model)
    if entry.load_torch is None:
        raise TvmcompError(f"{model} has no PyTorch source to compare with; `tvmcomp eval` compares it with its "
                           "float model in ONNX Runtime")
    return entry.load_torch()


def bench_torch(module, inputs: dict[str, np.ndarray], threads: int, repeat: int,
                batch: int = 1) -> tuple[dict, list[np.ndarray]]:
    from .frontend.torch_frontend import torch_reference

    samples = time_callable(torch_call(module, inputs, threads), repeat)
    return latency_stats(samples, batch), torch_reference(module, inputs)


def torch_call(module, inputs: dict[str, np.ndarray], threads: int):
    """One timed run of a PyTorch ``module`` on ``inputs``, as a no-argument call: ``threads`` threads,
    inference mode."""
    import torch

    torch.set_num_threads(threads)
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}

    def run():
        with torch.inference_mode():
            return module(**tensors)

    return run


def bench_remote(path: str | Path, remote: RemoteSpec, repeat: int) -> dict:
    """Latency of the package on a device over RPC, after checking its outputs against the host's."""
    metadata = read_metadata(path)
    outputs, seconds = run_remote(path, remote, repeat=repeat)
    return {
        "package": str(path),
        "model": metadata["model"],
        "variant": metadata["variant"],
        "target": metadata["target"]["schedule_key"],
        "device": remote.describe(),
        "library_bytes": metadata["library_bytes"],
        "max_abs_err_vs_host": check_against_reference(path, outputs, metadata["variant"]),
        "tvmcomp": latency_stats(seconds, package_batch(metadata)),
    }


def bench_package(path: str | Path, repeat: int = 50, threads: int | None = None, compare: str | None = None,
                  remote: RemoteSpec | None = None, profile: bool = False) -> dict:
    """Latency of the package at ``path`` on this machine, or on ``remote``; ``compare="torch"`` adds
    PyTorch eager on this machine, ``profile`` the time of each kernel (:mod:`tvmcomp.profile`)."""
    if remote is not None:
        if compare is not None or profile:
            raise TvmcompError("--compare and --profile run on this machine; they cannot be combined with --rpc")
        return bench_remote(path, remote, repeat)
    metadata = read_metadata(path)
    check_runs_here(metadata, path)  # before PyTorch is timed
    threads = threads or host_cores()
    reference = None
    if compare == "torch":
        # PyTorch first: once TVM's pool has pinned and spun threads on these cores, PyTorch threads
        # started afterwards share them and run many times slower (920 vs 27 ms seen for MiniLM).
        module = reference_torch_module(metadata["model"])
        with np.load(Path(path) / EXAMPLE_INPUTS) as data:
            torch_inputs = {name: data[name] for name in data.files}
        torch_stats, reference = bench_torch(module, torch_inputs, threads, repeat, package_batch(metadata))
    elif compare is not None:
        raise TvmcompError(f"--compare takes 'torch', not '{compare}'")
    set_num_threads(threads)
    package = Package(path)
    inputs = package.example_inputs()
    outputs = package.run(**inputs)  # also warms up
    result = {
        "package": str(path),
        "model": metadata["model"],
        "variant": metadata["variant"],
        "target": metadata["target"]["schedule_key"],
        "threads": num_threads(),  # what TVM's pool really runs, not what was asked
        "library_bytes": metadata["library_bytes"],
        "tvmcomp": latency_stats(package.time(inputs, number=1, repeat=repeat), package_batch(metadata)),
    }
    if len(package.shapes) > 1:
        result["shapes"] = time_every_shape(package, inputs, repeat)
    if profile:
        from .profile import profile_package

        result["profile"] = profile_package(package)
    if reference is not None:
        result["torch"] = torch_stats
        result["speedup_vs_torch"] = torch_stats["median_ms"] / result["tvmcomp"]["median_ms"]
        result["max_abs_err_vs_torch"] = float(max(np.abs(o - r).max() for o, r in zip(outputs, reference)))
        result |= output_agreement(outputs, reference)
    return result


def time_every_shape(package: Package, inputs: dict[str, np.ndarray], repeat: int) -> list[dict]:
    """Latency of each shape a package holds, on its example inputs cut to that shape, smallest first."""
    rows = []
    for shape in package.shapes:
        cut = {name: inputs[name][tuple(slice(0, dim) for dim in dims)] for name, dims in shape["inputs"].items()}
        batch = int(next(iter(shape["inputs"].values()))[0])
        rows.append({"function": shape["function"], "inputs": shape["inputs"],
                     **latency_stats(package.time(cut, number=1, repeat=repeat), batch)})
    return rows


def output_agreement(outputs: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    """Cosine and relative L2 error of all outputs (flattened together) against the reference: a max
    abs difference alone does not say whether 5.0 is noise or a broken model."""
    got = np.concatenate([np.ravel(o).astype(np.float64) for o in outputs])
    want = np.concatenate([np.ravel(r).astype(np.float64) for r in reference])
    norms = np.linalg.norm(got) * np.linalg.norm(want)
    return {"cosine_vs_torch": float(got @ want / norms) if norms else 1.0,
            "relative_err_vs_torch": float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30))}


def format_bench(result: dict) -> str:
    rows = [("tvmcomp " + result["variant"], result["tvmcomp"])]
    if "torch" in result:
        rows.append(("pytorch eager fp32", result["torch"]))
    where = f"device {result['device']}" if "device" in result else f"{result['threads']} threads"
    lines = [
        f"model {result['model']} | target {result['target']} | {where} | "
        f"library {result['library_bytes'] / 2**20:.1f} MiB",
        f"{'engine':<22}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'min ms':>9}{'std ms':>9}{'runs':>6}{'per s':>11}",
    ]
    for shape in result.get("shapes", []):  # every shape of a package built with --seq-len / --batch lists
        name, dims = next(iter(shape["inputs"].items()))
        rows.append((f"  {name} {'x'.join(map(str, dims))}", shape))
    for name, s in rows:
        lines.append(f"{name:<22}{s['p50_ms']:>9.3f}{s['p90_ms']:>9.3f}{s['p99_ms']:>9.3f}{s['min_ms']:>9.3f}"
                     f"{s['std_ms']:>9.3f}{s['runs']:>6}{s['throughput_per_s']:>11.1f}")
    if result.get("max_abs_err_vs_host") is not None:
        lines.append(f"outputs checked against this machine's reference (max abs difference {result['max_abs_err_vs_host']:.2e})")
    if "speedup_vs_torch" in result:
        lines.append(
            f"speedup vs pytorch: {result['speedup_vs_torch']:.2f}x "
            f"(outputs: cosine {result['cosine_vs_torch']:.5f}, relative error {result['relative_err_vs_torch']:.2e}, "
            f"max abs difference {result['max_abs_err_vs_torch']:.2e})"
        )
    if "profile" in result:
        from .profile import format_profile

        lines.append(format_profile(result["profile"]))
    return "\n".join(lines)
