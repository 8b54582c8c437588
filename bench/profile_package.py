"""Where a built package spends its time on real inputs: every kernel call of one run, timed.

bench/kernels.py reads the tuner's measurements, which run each kernel alone on random inputs;
this runs the package itself on its example inputs (a real sentence, padding masked) and times
each VM call with an instrument hook. The hook costs some microseconds per call, so the calls sum
to more than the plain end-to-end latency, which is reported beside it.

Run: .venv/bin/python bench/profile_package.py out/minilm-int8 [--threads 2] [--runs 20]
Writes bench/results/<date>-profile-<package folder name>.md.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    from tvmcomp import runtime

    runtime.set_num_threads(args.threads)
    package = runtime.load(args.package)
    inputs = package.example_inputs()
    end_to_end_ms = float(np.median(package.time(inputs, number=1, repeat=50))) * 1e3

    vm, device_inputs = package.vm, package.device_inputs(inputs)
    seconds, calls, started = collections.defaultdict(float), collections.Counter(), {}

    def instrument(_func, symbol, before, _ret, *_args):
        if before:
            started[symbol] = time.perf_counter()
        else:
            seconds[symbol] += time.perf_counter() - started[symbol]
            calls[symbol] += 1
        return 0  # VMInstrumentReturnKind.NO_OP

    vm["main"](*device_inputs)  # warm up
    vm.set_instrument(instrument)
    for _ in range(args.runs):
        vm["main"](*device_inputs)
    total = sum(seconds.values())
    rows = [f"| {symbol} | {calls[symbol] // args.runs} | {secs / args.runs * 1e3:.3f} | {secs / total:.1%} |"
            for symbol, secs in sorted(seconds.items(), key=lambda kv: -kv[1])]
    meta = package.metadata
    date = datetime.date.today().isoformat()
    text = "\n".join([
        f"# Profile of {args.package.name} ({meta['model']}, {meta['variant']}, "
        f"{meta['target']['schedule_key']}), {runtime.num_threads()} threads, {date}", "",
        f"End-to-end median (50 runs, no instrument): {end_to_end_ms:.2f} ms. "
        f"Instrumented calls, mean of {args.runs} runs: {total / args.runs * 1e3:.2f} ms. bench/profile_package.py.", "",
        "| call | per run | ms per run | share |", "|---|---:|---:|---:|", *rows]) + "\n"
    out = REPO / "bench" / "results" / f"{date}-profile-{args.package.name}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
