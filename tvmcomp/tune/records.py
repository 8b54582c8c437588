"""Which tuning records serve a target: the exact CPU's folder first, then CPUs of the same ISA.

Records live in one folder per target and CPU, ``<root>/<target name>-<cpu>`` (``x86-znver3``).
A schedule is a loop nest plus the instructions it tensorizes with; it runs as tuned on any CPU
that has the same vector and dot-product instructions, so records tuned on a Zen3 serve a Zen2
(both AVX2, no AVX-512). Which features make up "the same ISA" is data: the preset's
``"isa_features"`` (x86: AVX2, AVX-512, VNNI ...; aarch64: dotprod, i8mm, SVE). A folder's CPU
features are LLVM's for that CPU name, so no file beside the records has to say them.

Where records are: the user's folder (``--records DIR``; in a source checkout the repo's
``schedules/``, where committing them ships them; in an installed wheel a per-user cache folder),
searched first, then the records shipped with tvmcomp. ``TVMCOMP_SCHEDULES`` replaces both (tests
use it to see exactly the records they lay out). New records always go to the exact CPU's folder
in the user's folder, created only when something is written there: never inside the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..targets import TargetSpec, shipped_data

COMMITTED_SCHEDULES = shipped_data("schedules")
RECORDS_FILE = "database_tuning_record.json"
USER_RECORDS_VARIABLE = "TVMCOMP_RECORDS"  # what --records sets for the process


def records_root() -> Path:
    """The user's records folder: where new records are written, searched first."""
    chosen = os.environ.get("TVMCOMP_SCHEDULES") or os.environ.get(USER_RECORDS_VARIABLE)
    if chosen:
        return Path(chosen)
    if (COMMITTED_SCHEDULES.parent / "pyproject.toml").is_file():  # a source checkout
        return COMMITTED_SCHEDULES
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tvmcomp" / "schedules"


def search_roots() -> list[Path]:
    """Folders of per-CPU record folders, in lookup order."""
    if os.environ.get("TVMCOMP_SCHEDULES"):
        return [Path(os.environ["TVMCOMP_SCHEDULES"])]
    roots = [records_root()]
    return roots if COMMITTED_SCHEDULES in roots else roots + [COMMITTED_SCHEDULES]


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
    cpu = target_cpu(target)
    roots = [root for root in search_roots() if root.is_dir()]
    folders = [RecordFolder(root / target.schedule_key, cpu, True) for root in roots
               if has_records(root / target.schedule_key)]
    prefix = target.schedule_key[: -len(cpu)] if cpu and target.schedule_key.endswith(cpu) else None
    mine = isa_features(target) if prefix else ()
    if not mine:
        return folders
    for root in roots:
        for path in sorted(root.iterdir()):
            other = path.name[len(prefix):]
            if (path.name.startswith(prefix) and other and other != cpu and has_records(path)
                    and isa_features(target, other) == mine):
                folders.append(RecordFolder(path, other, False))
    return folders


def describe_records(folders: list[RecordFolder], target: TargetSpec) -> str:
    """One line a user reads: which folders serve ``target``, or that none does."""
    if not folders:
        return f"none for {target.schedule_key}"
    return "; ".join(folder.describe(target) for folder in folders)
