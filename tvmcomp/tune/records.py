"""Which tuning records serve a target: the exact CPU's folder first, then CPUs of the same ISA.

Records live in one folder per target and CPU, ``<root>/<target name>-<cpu>`` (``x86-znver3``).
A schedule is a loop nest plus the instructions it tensorizes with; it runs as tuned on any CPU
that has the same vector and dot-product instructions, so records tuned on a Zen3 serve a Zen2
(both AVX2, no AVX-512). Which features make up "the same ISA" is data: the preset's
``"isa_features"`` (x86: AVX2, AVX-512, VNNI ...; aarch64: dotprod, i8mm, SVE). A folder's CPU
features are LLVM's for that CPU name, so no file beside the records has to say them.

New records always go to the exact CPU's folder, which is created only when something is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..targets import TargetSpec

COMMITTED_SCHEDULES = Path(__file__).resolve().parents[2] / "schedules"
RECORDS_FILE = "database_tuning_record.json"
WORKLOADS_FILE = "database_workload.json"


def records_root() -> Path:
    """``$TVMCOMP_SCHEDULES`` if set (tests, users keeping records elsewhere), else the repo's ``schedules/``."""
    return Path(os.environ.get("TVMCOMP_SCHEDULES") or COMMITTED_SCHEDULES)


def database_dir(target: TargetSpec) -> Path:
    """The exact CPU's folder: where this target's new records are written."""
    return records_root() / target.schedule_key


def has_records(folder: Path) -> bool:
    path = folder / RECORDS_FILE
    return path.is_file() and path.stat().st_size > 0


@dataclass(frozen=True)
class RecordFolder:
    path: Path
    cpu: str  # the CPU the records were tuned on ("" where the target names none)
    same_cpu: bool  # False: borrowed from another CPU with the same ISA features

    def describe(self, target: TargetSpec) -> str:
        if self.same_cpu:
            return f"{self.path.name} (this CPU)"
        features = ", ".join(isa_features(target)) or "none"
        return f"{self.path.name}, same ISA as this {target_cpu(target)} ({features})"


def target_cpu(target: TargetSpec) -> str:
    return str(target.tvm_config.get("mcpu") or "")


def isa_features(target: TargetSpec, cpu: str | None = None) -> tuple[str, ...]:
    """The preset's ``isa_features`` that ``target`` has (with its ``mcpu`` replaced by ``cpu``)."""
    from tvm.target import Target, codegen

    names = target.extra.get("isa_features", [])
    if not names or target.tvm_config.get("kind") != "llvm":
        return ()
    config = dict(target.tvm_config, mcpu=cpu) if cpu else target.tvm_config
    tvm_target = Target(config)
    return tuple(name for name in names if codegen.target_has_features(name, tvm_target))


def serving_folders(target: TargetSpec) -> list[RecordFolder]:
    """Folders whose records a build for ``target`` uses, in lookup order: the exact CPU's, then
    other CPUs' of the same target whose ISA features equal this CPU's. Empty: nothing serves."""
    root = records_root()
    exact = RecordFolder(database_dir(target), target_cpu(target), True)
    folders = [exact] if has_records(exact.path) else []
    cpu = target_cpu(target)
    prefix = target.schedule_key[: -len(cpu)] if cpu and target.schedule_key.endswith(cpu) else None
    if prefix is None or not root.is_dir():
        return folders
    mine = isa_features(target)
    if not mine:
        return folders
    for path in sorted(root.iterdir()):
        other = path.name[len(prefix):]
        if (path.name.startswith(prefix) and other and other != cpu and has_records(path)
                and isa_features(target, other) == mine):
            folders.append(RecordFolder(path, other, False))
    return folders
