"""Result documents: what every command's ``--json FILE`` writes, and latency statistics.

Each document carries where and when it was made (tvmcomp version, host CPU, UTC timestamp), so a
file found later still says what it measured.
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import numpy as np

from .errors import TvmcompError


def latency_stats(seconds: list[float], batch: int = 1) -> dict:
    """Milliseconds per run: median (= p50), p90, p99, min, max, std; samples per second at the median."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    median = float(np.median(ms))
    return {
        "median_ms": median,
        "p50_ms": median,
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
        "std_ms": float(ms.std()),
        "runs": int(ms.size),
        "throughput_per_s": batch * 1e3 / median if median > 0 else None,
    }


def result_document(command: str, result: dict) -> dict:
    """``result`` with the tvmcomp version, host CPU and time it was made."""
    from . import __version__
    from .targets import host_cpu

    made = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"tvmcomp_version": __version__, "command": command, "host_cpu": host_cpu(), "timestamp": made} | result


def write_json(document: dict | list, destination: str | Path) -> None:
    """Write to a file, or to standard output for ``-``."""
    text = json.dumps(document, indent=2) + "\n"
    if str(destination) == "-":
        sys.stdout.write(text)
        return
    try:
        Path(destination).write_text(text)
    except OSError as err:
        raise TvmcompError(f"cannot write {destination}: {err.strerror}") from None
