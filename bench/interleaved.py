"""Latency of several built packages, interleaved: on a noisy machine, back-to-back rounds compare
packages under the same conditions where one-after-another runs do not.

Each package is timed the way a user calls it (``tvmcomp.load(p).run``, no thread setting) on its
own example inputs, ``--runs`` times a round; the median of each round is reported, round by round,
and each package's ratio to the first package's median of the same round, summarized over the rounds.

With ``--torch MODEL``, the bundled model's float PyTorch module (``torch.inference_mode``, as many
threads as the packages get) runs in every round too, on the first package's inputs, and each
package's speedup over it is given round by round.

Run: .venv/bin/python bench/interleaved.py NAME=PACKAGE [NAME=PACKAGE ...] --title TITLE [--rounds 4] [--runs 15]
     [--torch MODEL]
Writes bench/results/<date>-interleaved-<slug of TITLE>.md.
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# bench/ off sys.path: its kernels.py would hide the `kernels` package transformers imports (--torch)
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+", metavar="NAME=PACKAGE")
    parser.add_argument("--title", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--torch", metavar="MODEL", help="also time this bundled model's float PyTorch module")
    args = parser.parse_args()

    import tvmcomp
    from tvmcomp.bench import reference_torch_module, time_callable, torch_call
    from tvmcomp.targets import host_cores, host_cpu

    packages = {name: tvmcomp.load(path) for name, path in (entry.split("=", 1) for entry in args.packages)}
    runners = {name: lambda p=package, f=package.example_inputs(): p.run(**f) for name, package in packages.items()}
    if args.torch:
        runners[f"pytorch fp32 ({args.torch})"] = torch_call(reference_torch_module(args.torch),
                                                            next(iter(packages.values())).example_inputs(), host_cores())
    medians = {name: [] for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            medians[name].append(float(np.median(time_callable(run, args.runs))) * 1000)
    date = datetime.date.today().isoformat()
    lines = [f"# {args.title} ({host_cpu()}, {host_cores()} threads, {date})", "",
             f"bench/interleaved.py: {args.rounds} rounds, each package {args.runs} runs a round "
             "(`tvmcomp.load(p).run`), median per round, in ms.", "",
             "| package | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |",
             "|---|" + "---:|" * args.rounds]
    lines += [f"| {name} | " + " | ".join(f"{m:.3g}" for m in values) + " |" for name, values in medians.items()]
    if args.torch:
        torch_ms = medians[f"pytorch fp32 ({args.torch})"]
        lines += ["", "Speedup over PyTorch fp32 in the same round:", "",
                  "| package | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |",
                  "|---|" + "---:|" * args.rounds]
        lines += [f"| {name} | " + " | ".join(f"{t / m:.2f}x" for t, m in zip(torch_ms, medians[name])) + " |"
                  for name in packages]
    first = next(iter(packages))
    lines += ["", f"Each package against {first} in the same round (a noisy host moves every package of a round "
              "together; the ratio cancels it):", "",
              "| package | median ms over rounds | median ratio to the first | rounds faster than the first |",
              "|---|---:|---:|---:|"]
    for name in packages:
        ratios = np.array(medians[name]) / np.array(medians[first])
        lines.append(f"| {name} | {np.median(medians[name]):.3g} | {np.median(ratios):.3f} | "
                     f"{int((ratios < 1).sum())} of {args.rounds} |")
    write_result("interleaved", args.title, date, lines)


def write_result(kind: str, title: str, date: str, lines: list[str]) -> None:
    """Write ``lines`` to bench/results/<date>-<kind>-<slug of title>.md and print them."""
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60]
    (REPO / "bench" / "results" / f"{date}-{kind}-{slug}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
