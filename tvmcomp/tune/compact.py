"""Compacting a records folder: keep the fastest few records of each kernel.

MetaSchedule's JSON database appends every trial it measures, and opening it parses every trace:
a build read 3744 records (one per trial) to use 125 of them, 13 s of each build on 2 cores. A
build uses only a kernel's fastest record; further tuning seeds its search with the fastest few.
So after tuning, each (kernel, target) keeps its ``keep`` fastest records that ran, and records
whose every run failed (MetaSchedule stores 1e10 s) go. Lines are kept byte for byte, so what
remains is exactly what MetaSchedule wrote; the workload file (kernels, by line number) is left
as it is.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from .records import RECORDS_FILE

KEEP_PER_KERNEL = 4
FAILED_RUN_SECONDS = 1e9  # MetaSchedule records a failed build or run as 1e10 s


@dataclass(frozen=True)
class Compaction:
    records_before: int
    records_after: int
    kernels: int


def _mean_seconds(record: list) -> float | None:
    run_secs = record[1]  # a record is [trace, run_secs, target, argument info]
    if not run_secs or any(s >= FAILED_RUN_SECONDS for s in run_secs):
        return None
    return sum(run_secs) / len(run_secs)


def compact_records(folder: Path, keep: int = KEEP_PER_KERNEL) -> Compaction:
    """Rewrite ``folder``'s tuning records with only the ``keep`` fastest per kernel and target."""
    path = Path(folder) / RECORDS_FILE
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    ranked: dict[tuple[int, str], list[tuple[float, int]]] = defaultdict(list)
    for number, line in enumerate(lines):
        workload, record = json.loads(line)
        seconds = _mean_seconds(record)
        if seconds is not None:
            ranked[(workload, json.dumps(record[2], sort_keys=True))].append((seconds, number))
    kept = sorted(number for ranking in ranked.values() for _, number in sorted(ranking)[:keep])
    staging = path.with_name(path.name + ".compacting")
    staging.write_text("".join(lines[number] + "\n" for number in kept))
    os.replace(staging, path)  # a build reading meanwhile sees the old file or the new, never half
    return Compaction(records_before=len(lines), records_after=len(kept), kernels=len(ranked))
