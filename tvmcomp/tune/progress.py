"""Progress display for MetaSchedule tuning: a line per batch sent to the builder, and a line per
batch of measurements (trials done, the model's estimated latency, time left).

The estimate is each kernel's best measured time times the number of times the model calls it,
summed: shown only once every kernel has a measurement (a partial sum is no model latency). It
runs a little above the package's measured latency, since each kernel is timed alone, cold, on
random inputs."""

from __future__ import annotations

import sys
import time


def _fmt_secs(secs: float) -> str:
    secs = int(max(secs, 0))
    return f"{secs // 60}m{secs % 60:02d}s" if secs >= 60 else f"{secs}s"


class TuningStopped(Exception):
    """Raised by the progress callback, after the batch's records are committed, to end tuning."""


class TuningProgress:
    def __init__(self, total_trials: int, task_names: list[str], task_weights: list[float], stream=None):
        self.total_trials = total_trials
        self.task_names = task_names
        self.task_weights = task_weights
        self.stream = stream or sys.stderr
        self.started = time.monotonic()
        self.sent = 0
        self.measured = 0
        self.failed = 0
        self.best: dict[int, float] = {}
        self.stop_requested = False

    def _print(self, text: str) -> None:
        print(f"[tune] {text} | elapsed {_fmt_secs(time.monotonic() - self.started)}", file=self.stream, flush=True)

    def on_build_batch(self, candidates: int) -> None:
        self.sent += candidates
        # MetaSchedule may send a few candidates past the budget to fill its last batch
        self._print(f"building {candidates:>3} candidates ({self.sent} sent, budget {self.total_trials})")

    def on_measured(self, task_id: int, builder_results, runner_results) -> None:
        if not runner_results:  # an exhausted kernel asked again for candidates: nothing to report
            return
        self.measured += len(runner_results)
        for build, run in zip(builder_results, runner_results):
            if build.error_msg is not None or run.error_msg is not None or not run.run_secs:
                self.failed += 1
                continue
            secs = sum(float(s) for s in run.run_secs) / len(run.run_secs)
            self.best[task_id] = min(self.best.get(task_id, float("inf")), secs)
        elapsed = time.monotonic() - self.started
        # the first batches are the big GEMMs' and pay one-off start-up: no estimate before a tenth of the budget
        left = (_fmt_secs(elapsed / self.measured * max(self.total_trials - self.measured, 0))
                if self.measured >= self.total_trials / 10 else "?")
        self._print(
            f"measured {self.measured:>4}/{self.total_trials} | kernels measured {len(self.best)}/{len(self.task_names)} "
            f"| {self.task_names[task_id][:36]:<36} | {self.model_estimate()} | failed {self.failed} | left ~{left}"
        )

    def model_estimate(self) -> str:
        if len(self.best) < len(self.task_names):
            return "model ~? ms (until every kernel is measured)"
        return f"model ~{sum(self.task_weights[i] * secs for i, secs in self.best.items()) * 1e3:.2f} ms"

    def measure_callback(self):
        """This display as a MetaSchedule MeasureCallback."""
        from tvm.ir.utils import derived_object
        from tvm.s_tir import meta_schedule as ms

        progress = self

        @derived_object
        class ProgressCallback(ms.measure_callback.PyMeasureCallback):
            def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
                progress.on_measured(task_id, builder_results, runner_results)
                if progress.stop_requested:  # raised here, between batches, where unwinding is safe
                    raise TuningStopped()

        return ProgressCallback()
