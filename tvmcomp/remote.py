"""Run a package on a device over TVM RPC: directly (``HOST:PORT``) or through a tracker and key.

The library is uploaded under a unique remote name (re-uploading over a name a session has loaded
has crashed the stock server), loaded, checked against the outputs the build computed on the host,
and timed with ``time_evaluator`` on the device: only outputs and timings come back.
"""

from __future__ import annotations

import gc
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import TvmcompError
from .quant.schemes import FLOAT
from .runtime import LIBRARY, Package

REFERENCE_OUTPUTS = "reference_outputs.npz"  # the host's outputs for example_inputs.npz (cross builds)


@dataclass(frozen=True)
class RemoteSpec:
    """Where the device is: ``address`` for a direct server, or ``tracker`` and ``key``."""

    address: str | None = None
    tracker: str | None = None
    key: str | None = None
    timeout_s: float = 600.0

    def describe(self) -> str:
        return f"server {self.address}" if self.address else f"key '{self.key}' at tracker {self.tracker}"


def parse_address(text: str, flag: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise TvmcompError(f"{flag} takes HOST:PORT (e.g. 127.0.0.1:9090), not '{text}'")
    return host, int(port)


def connect(spec: RemoteSpec):
    """An RPC session, or a one-line error saying what is not there."""
    from tvm import rpc

    if spec.address:
        host, port = parse_address(spec.address, "--rpc")
        try:
            return rpc.connect(host, port, session_timeout=spec.timeout_s)
        except Exception as err:  # refused, reset, or not an RPC server
            raise TvmcompError(
                f"cannot open an RPC session with {host}:{port} ({_first_line(err)}); is a server running there? "
                "(`tvmcomp board start` for an emulated board, `python -m tvm.exec.rpc_server` on a real one)"
            ) from None
    if not (spec.tracker and spec.key):
        raise TvmcompError("give --rpc HOST:PORT, or --rpc-tracker HOST:PORT with --rpc-key KEY")
    host, port = parse_address(spec.tracker, "--rpc-tracker")
    try:
        # TVM's tracker client retries a refused connection for 60 s; a quick probe fails first
        socket.create_connection((host, port), timeout=10).close()
        tracker = rpc.connect_tracker(host, port)
        queues = tracker.summary()["queue_info"]
    except Exception as err:
        raise TvmcompError(f"no RPC tracker at {host}:{port} ({_first_line(err)})") from None
    if spec.key not in queues:
        known = ", ".join(sorted(queues)) or "none"
        raise TvmcompError(f"the tracker at {host}:{port} has no device with key '{spec.key}' (keys: {known})")
    try:
        return tracker.request(spec.key, priority=1, session_timeout=spec.timeout_s, max_retry=3)
    except Exception as err:
        raise TvmcompError(f"the tracker could not give a '{spec.key}' device: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[-1] if lines else type(err).__name__


def open_remote_package(path: str | Path, session) -> Package:
    """Upload the package's library under a fresh name and load it on the session's CPU."""
    remote_name = f"tvmcomp-{uuid.uuid4().hex[:12]}.so"
    session.upload(str(Path(path) / LIBRARY), remote_name)
    return Package(path, device=session.cpu(), module=session.load_module(remote_name))


FLOAT_TOLERANCE = 1e-4  # relative to the outputs' magnitude: float code differs in summation order only
# In integer code a last-bit float difference (FMA contraction, another libm) can move a value
# across a rounding boundary of the next requantization, and the step spreads: seen on MiniLM int8
# on aarch64, 98.5% of outputs within 1e-3 of the host's, mean per-token cosine 0.99992, worst 0.992.
INT8_MIN_COSINE = 0.999


def check_against_reference(path: str | Path, outputs: list[np.ndarray], variant: str) -> float | None:
    """Max abs difference from the host's outputs saved at build time (None if the build saved none).

    Float packages must agree elementwise; quantized ones by cosine similarity (see above).
    """
    reference_file = Path(path) / REFERENCE_OUTPUTS
    if not reference_file.is_file():
        return None
    with np.load(reference_file) as data:
        reference = [data[f"output_{i}"] for i in range(len(data.files))]
    error = float(max(np.abs(o - r).max() for o, r in zip(outputs, reference)))
    if variant == FLOAT:
        bound = FLOAT_TOLERANCE * max(1.0, max(float(np.abs(r).max()) for r in reference))
        if not error <= bound:
            raise TvmcompError(f"the device's outputs differ from the host's by {error:.3g} (allowed {bound:.3g})")
        return error
    for got, want in zip(outputs, reference):
        got, want = got.astype(np.float64).ravel(), want.astype(np.float64).ravel()
        cosine = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want) or 1.0))
        if not cosine >= INT8_MIN_COSINE:
            raise TvmcompError(f"the device's outputs disagree with the host's: cosine {cosine:.5f} "
                               f"(at least {INT8_MIN_COSINE} expected), max abs difference {error:.3g}")
    return error


def run_remote(path: str | Path, spec: RemoteSpec, inputs: dict[str, np.ndarray] | None = None,
               repeat: int = 0) -> tuple[list[np.ndarray], list[float]]:
    """Outputs of the package on the remote device for ``inputs`` (default: its example inputs), and
    the seconds of ``repeat`` timed runs; one retry on a dropped session."""
    for attempt in (1, 2):
        session, package = connect(spec), None
        try:
            package = open_remote_package(path, session)
            inputs = package.example_inputs() if inputs is None else inputs
            outputs = package.run(**inputs)
            return outputs, package.time(inputs, number=1, repeat=repeat) if repeat else []
        except TvmcompError:
            raise
        except Exception as err:  # the session or the server process died under us
            if attempt == 2:
                raise TvmcompError(f"the RPC session with {spec.describe()} failed twice: {_first_line(err)}") from None
        finally:
            # End the session now. A server serves one session at a time, and a session lasts until
            # its last remote reference is freed; the VM holds some in reference cycles that only the
            # collector frees, so without this the next client would wait for the session timeout.
            package = session = None
            gc.collect()
    raise AssertionError("unreachable")
