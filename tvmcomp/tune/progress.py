"""A one-line-per-batch progress display for MetaSchedule tuning."""

from __future__ import annotations

import sys
import time


def _fmt_secs(secs: float) -> str:
    secs = int(max(secs, 0))
    return f"{secs // 60}m{secs % 60:02d}s" if secs >= 60 else f"{secs}s"


def make_progress_callback(total_trials: int, task_names: list[str], task_weights: list[float], stream=None):
    """A MeasureCallback printing trials done, tasks touched, best model latency so far, time left."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.ir.utils import derived_object

    stream = stream or sys.stderr

    @derived_object
    class TuningProgress(ms.measure_callback.PyMeasureCallback):
        def __init__(self):
            super().__init__()
            self.started = time.monotonic()
            self.trials = 0
            self.failed = 0
            self.best: dict[int, float] = {}

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            self.trials += len(runner_results)
            for build, run in zip(builder_results, runner_results):
                if build.error_msg is not None or run.error_msg is not None or not run.run_secs:
                    self.failed += 1
                    continue
                secs = sum(float(s) for s in run.run_secs) / len(run.run_secs)
                self.best[task_id] = min(self.best.get(task_id, float("inf")), secs)
            elapsed = time.monotonic() - self.started
            left = elapsed / self.trials * max(total_trials - self.trials, 0) if self.trials else 0.0
            tuned = sum(task_weights[i] * secs for i, secs in self.best.items())
            print(
                f"[tune] {self.trials:>5}/{total_trials} trials | tasks with a schedule "
                f"{len(self.best)}/{len(task_names)} | last: {task_names[task_id][:40]:<40} "
                f"| best kernels total {tuned * 1e3:8.3f} ms | failed {self.failed} "
                f"| elapsed {_fmt_secs(elapsed)}, left ~{_fmt_secs(left)}",
                file=stream,
                flush=True,
            )

    return TuningProgress()
