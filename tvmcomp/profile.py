"""Where a package spends its time on real inputs: every kernel call of a run, timed.

The tuner's numbers time each kernel alone on random inputs; this runs the package itself on its
example inputs (a real sentence, padding masked) and times each VM call with an instrument hook.
The hook costs some microseconds per call, so the calls sum to a little more than the plain
end-to-end latency, which is reported beside them.
"""

from __future__ import annotations

import collections
import time

import numpy as np

from .runtime import Package


def profile_package(package: Package, runs: int = 20) -> dict:
    """Per-call time of ``package`` on its example inputs, most expensive first."""
    inputs = package.example_inputs()
    end_to_end_ms = float(np.median(package.time(inputs, number=1, repeat=max(runs, 10)))) * 1e3
    choice = package.choose(inputs)
    vm, function, device_inputs = package.vm, choice.function, package.device_inputs(choice)
    seconds, calls, started = collections.defaultdict(float), collections.Counter(), {}

    def instrument(_func, symbol, before, _ret, *_args):
        if before:
            started[symbol] = time.perf_counter()
        else:
            seconds[symbol] += time.perf_counter() - started[symbol]
            calls[symbol] += 1
        return 0  # VMInstrumentReturnKind.NO_OP

    vm[function](*device_inputs)  # warm up
    vm.set_instrument(instrument)
    try:
        for _ in range(runs):
            vm[function](*device_inputs)
    finally:
        vm.set_instrument(None)
    total = sum(seconds.values())
    kernels = [{"name": name, "calls_per_run": calls[name] // runs, "ms_per_run": secs / runs * 1e3,
                "share": secs / total if total else 0.0}
               for name, secs in sorted(seconds.items(), key=lambda item: -item[1])]
    return {"runs": runs, "end_to_end_ms": end_to_end_ms, "instrumented_ms": total / runs * 1e3, "kernels": kernels}


def format_profile(profile: dict, top: int = 12) -> str:
    lines = [f"per-kernel time over {profile['runs']} runs (instrumented {profile['instrumented_ms']:.2f} ms, "
             f"end to end {profile['end_to_end_ms']:.2f} ms)",
             f"{'kernel':<64}{'calls':>6}{'ms/run':>9}{'share':>7}"]
    for kernel in profile["kernels"][:top]:
        lines.append(f"{kernel['name'][:63]:<64}{kernel['calls_per_run']:>6}{kernel['ms_per_run']:>9.3f}"
                     f"{kernel['share']:>7.1%}")
    if len(profile["kernels"]) > top:
        rest = profile["kernels"][top:]
        lines.append(f"{f'({len(rest)} more)':<64}{'':>6}{sum(k['ms_per_run'] for k in rest):>9.3f}"
                     f"{sum(k['share'] for k in rest):>7.1%}")
    return "\n".join(lines)
