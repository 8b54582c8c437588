"""Auto-scheduling with MetaSchedule and its XGBoost cost model.

Records live in a JSON database per target and CPU under ``schedules/`` (committed for the
machines we tune on), so a build finds its schedules without tuning again; records tuned on a CPU
with the same instruction set serve too (:mod:`tvmcomp.tune.records`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import TvmcompError
from ..targets import TargetSpec
from .compact import KEEP_PER_KERNEL, compact_records
from .default_schedules import keeps_its_default_schedule
from .intrinsics import register_tensor_intrinsics
from .space import search_space

from .records import COMMITTED_SCHEDULES, RecordFolder, database_dir, describe_records, serving_folders  # noqa: F401


def _json_database(path: Path):
    from tvm.s_tir import meta_schedule as ms

    return ms.database.JSONDatabase(work_dir=str(path), module_equality="structural")


def open_database(target: TargetSpec, folders: list[RecordFolder] | None = None):
    """The records a build for ``target`` reads: each serving folder, the first that has a
    kernel's record wins (exact CPU first). ``folders`` defaults to :func:`serving_folders`."""
    from tvm.s_tir import meta_schedule as ms

    # records' traces name tensor intrinsics (ours among them): loading fails on an unregistered one
    register_tensor_intrinsics(list(target.tensor_intrinsics))
    folders = serving_folders(target) if folders is None else folders
    if not folders:
        return ms.database.MemoryDatabase(module_equality="structural")
    if len(folders) == 1:
        return _json_database(folders[0].path)
    # answers queries only: it cannot list its records (use open_write_database for that)
    return ms.database.OrderedUnionDatabase(*[_json_database(f.path) for f in folders])


def open_write_database(target: TargetSpec):
    """The exact CPU's database, created if missing: where tuning commits new records."""
    register_tensor_intrinsics(list(target.tensor_intrinsics))
    path = database_dir(target)
    path.mkdir(parents=True, exist_ok=True)
    return _json_database(path)


def extract_tasks(fused_mod, target: TargetSpec):
    from tvm.s_tir import meta_schedule as ms

    return [t for t in ms.relax_integration.extract_tasks(fused_mod, target.tvm_target())
            if t.dispatched and not keeps_its_default_schedule(t.dispatched[0]["main"])]


def tasks_without_records(tasks, database, target: TargetSpec) -> list:
    tvm_target = target.tvm_target()
    return [
        t for t in tasks
        if database.query_tuning_record(t.dispatched[0], tvm_target, t.task_name) is None
    ]


@contextlib.contextmanager
def stop_on_ctrl_c(progress, stream):
    """First Ctrl-C: finish the batch in flight, then stop. Second Ctrl-C: abort at once.

    A KeyboardInterrupt raised inside MetaSchedule's C++ loop corrupts its state and aborts the
    process, so the first Ctrl-C only sets a flag; the progress callback, which runs after the
    database callback has committed a batch, then raises TuningStopped.
    """

    def request_stop(_signum, _frame):
        progress.stop_requested = True
        print("\n[tune] Ctrl-C: stopping after the batch in flight (Ctrl-C again to abort)", file=stream, flush=True)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class TuneResult:
    tasks: int
    trials: int
    database: Path
    interrupted: bool = False


def tune(
    fused_mod,
    target: TargetSpec,
    total_trials: int,
    trials_per_task: int | None = None,
    only_missing: bool = False,
    builder=None,
    runner=None,
    stream=None,
) -> TuneResult:
    """Tune the kernels of ``fused_mod`` (see :func:`tvmcomp.lowering.fuse_for_tuning`).

    ``only_missing`` restricts tuning to kernels with no record yet. Records are committed to the
    database as they are measured, so an interrupted tune (Ctrl-C) keeps what it found; at the end
    the database keeps only each kernel's fastest few (:mod:`tvmcomp.tune.compact`).
    """
    from tvm.s_tir import meta_schedule as ms

    from .builder import fast_local_builder
    from .progress import TuningProgress
    from .rpc import cross_linking_export
    from .runner import safe_local_runner

    stream = stream or sys.stderr
    register_tensor_intrinsics(list(target.tensor_intrinsics))
    # MetaSchedule echoes its per-task tables to stdout; keep them in its log files only.
    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    ms_logger.setLevel(logging.WARNING)
    # Its logger setup lists this logger's handlers by name and crashes on an unnamed one (one was
    # there under pytest's log capture); that setup replaces these handlers anyway.
    for handler in [h for h in ms_logger.handlers if h.get_name() is None]:
        ms_logger.removeHandler(handler)
    tasks = extract_tasks(fused_mod, target)
    if only_missing:  # records borrowed from a CPU of the same ISA count as present
        tasks = tasks_without_records(tasks, open_database(target), target)
    if not tasks:
        return TuneResult(tasks=0, trials=0, database=database_dir(target))
    if total_trials <= 0:
        raise TvmcompError("--trials must be a positive number of measurement trials")
    # The first round gives every kernel its fair share, so even a small budget reaches all of them.
    # Most kernels (reshapes, elementwise) have one-candidate design spaces and finish at once; the
    # gradient scheduler then spends the rest on the kernels that still improve (GEMMs), up to 64 each.
    fair_share = -(-total_trials // len(tasks))
    trials_per_iter = min(32, fair_share)
    trials_per_task = trials_per_task or min(total_trials, max(64, fair_share))
    cores = int(target.tvm_config.get("num-cores", os.cpu_count() or 1))
    work_dir = database_dir(target) / "logs"
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        tasks, work_dir=str(work_dir), space=search_space(target), num_threads=cores
    )
    names = [t.task_name for t in tasks]
    print(
        f"[tune] {len(tasks)} kernels, {total_trials} trials (at most {trials_per_task} each), "
        f"target {target.schedule_key}, records -> {database_dir(target)}",
        file=stream,
        flush=True,
    )
    progress = TuningProgress(total_trials, names, weights, stream)
    callbacks = ms.MeasureCallback.create("default") + [progress.measure_callback()]
    with stop_on_ctrl_c(progress, stream):
        try:
            ms.tune.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(work_dir),
                max_trials_global=total_trials,
                max_trials_per_task=trials_per_task,
                num_trials_per_iter=min(trials_per_iter, trials_per_task),
                builder=builder or fast_local_builder(
                    max_workers=os.cpu_count() or 1, on_batch=progress.on_build_batch,
                    f_export=cross_linking_export(target.cross_compiler) if target.is_cross else None),
                runner=runner or safe_local_runner(cores),
                database=open_write_database(target),
                cost_model="xgb",
                measure_callbacks=callbacks,
                task_scheduler="gradient",
            )
        except Exception:  # TuningStopped arrives re-wrapped by the FFI as a RuntimeError
            if not progress.stop_requested:
                raise
    interrupted = progress.stop_requested
    if interrupted:
        print(f"[tune] interrupted: the records measured so far are kept in {database_dir(target)}", file=stream)
    compaction = compact_records(database_dir(target))
    print(f"[tune] kept the {KEEP_PER_KERNEL} fastest records of each of {compaction.kernels} kernels "
          f"({compaction.records_after} of {compaction.records_before}): builds open the database faster",
          file=stream)
    return TuneResult(tasks=len(tasks), trials=total_trials, database=database_dir(target), interrupted=interrupted)
