"""Latency of a package while other processes keep cores busy, by TVM thread-pool spin count.

TVM's worker threads spin ``TVM_THREAD_POOL_SPIN_COUNT`` times (300000 by default) waiting for
work before they sleep, and the pool waits for every worker at the end of each parallel loop. On
a machine with no idle core, a spinning thread holds a core that the thread everyone waits for
needs. Each configuration runs in a process of its own (the pool reads the variable when it
starts): the package as a user calls it (``tvmcomp.load(p).run``) under the default spin count
and each ``--spin`` value, quiet and with ``--busy`` Python busy loops beside it; with
``--torch MODEL``, that model's PyTorch fp32 module under the same loads. Configurations are
interleaved round by round.

Run: .venv/bin/python bench/contention.py PACKAGE --title TITLE [--spin 0] [--busy 1] [--rounds 3] [--runs 30]
     [--torch MODEL]
Writes bench/results/<date>-contention-<slug of TITLE>.md.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/ off sys.path: its kernels.py would hide the `kernels` package transformers imports (--torch)
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))
DEFAULT = "default"


def _child(package: str, torch_model: str | None, runs: int) -> None:
    """Time one configuration in this process and print its median in ms."""
    import numpy as np

    import tvmcomp
    from tvmcomp.bench import reference_torch_module, time_callable, torch_call
    from tvmcomp.targets import host_cores

    loaded = tvmcomp.load(package)
    inputs = loaded.example_inputs()
    run = (torch_call(reference_torch_module(torch_model), inputs, host_cores()) if torch_model
           else lambda: loaded.run(**inputs))
    print(json.dumps(float(np.median(time_callable(run, runs))) * 1000))


def _measure(package: str, torch_model: str | None, spin: str, runs: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "TVM_THREAD_POOL_SPIN_COUNT"}
    if spin != DEFAULT:
        env["TVM_THREAD_POOL_SPIN_COUNT"] = spin
    command = [sys.executable, __file__, "--child", package, "--runs", str(runs), "--title", "-"]
    result = subprocess.run(command + (["--torch", torch_model] if torch_model else []), env=env, check=True,
                            capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package")
    parser.add_argument("--title", required=True)
    parser.add_argument("--spin", nargs="*", default=["0"], help="spin counts to try besides TVM's default")
    parser.add_argument("--busy", type=int, default=1, help="busy-loop processes beside the loaded runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--torch", metavar="MODEL")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.package, args.torch, args.runs)
        return

    from tvmcomp.targets import host_cores, host_cpu

    configurations = [(f"tvmcomp, spin {spin}", spin, None) for spin in [DEFAULT, *args.spin]]
    if args.torch:
        configurations.append((f"pytorch fp32 ({args.torch})", DEFAULT, args.torch))
    loads = {"quiet": 0, f"{args.busy} busy": args.busy}
    medians = {(name, load): [] for name, _, _ in configurations for load in loads}
    for _ in range(args.rounds):
        for load, busy in loads.items():
            loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
            try:
                for name, spin, torch_model in configurations:
                    medians[(name, load)].append(_measure(args.package, torch_model, spin, args.runs))
            finally:
                for loop in loops:
                    loop.kill()
                    loop.wait()
    date = datetime.date.today().isoformat()
    lines = [f"# {args.title} ({host_cpu()}, {host_cores()} threads, {date})", "",
             f"bench/contention.py: {args.rounds} rounds, {args.runs} runs a configuration a round, each in a process "
             f"of its own; median per round, in ms. Package: `{args.package}`.", "",
             "| engine | load | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |",
             "|---|---|" + "---:|" * args.rounds]
    lines += [f"| {name} | {load} | " + " | ".join(f"{m:.3g}" for m in values) + " |"
              for (name, load), values in medians.items()]
    spec = importlib.util.spec_from_file_location("bench_interleaved", Path(__file__).with_name("interleaved.py"))
    interleaved = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(interleaved)
    interleaved.write_result("contention", args.title, date, lines)


if __name__ == "__main__":
    main()
