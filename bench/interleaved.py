"""Latency of several built packages, interleaved: on a noisy machine, back-to-back rounds compare
packages under the same conditions where one-after-another runs do not.

Each package is timed the way a user calls it (``tvmcomp.load(p).run``, no thread setting) on its
own example inputs, ``--runs`` times a round; the median of each round is reported, round by round.

Run: .venv/bin/python bench/interleaved.py NAME=PACKAGE [NAME=PACKAGE ...] --title TITLE [--rounds 4] [--runs 15]
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
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", nargs="+", metavar="NAME=PACKAGE")
    parser.add_argument("--title", required=True)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()

    import tvmcomp
    from tvmcomp.bench import time_callable
    from tvmcomp.targets import host_cores, host_cpu

    packages = {name: tvmcomp.load(path) for name, path in (entry.split("=", 1) for entry in args.packages)}
    feeds = {name: package.example_inputs() for name, package in packages.items()}
    medians = {name: [] for name in packages}
    for _ in range(args.rounds):
        for name, package in packages.items():
            times = time_callable(lambda p=package, f=feeds[name]: p.run(**f), args.runs)
            medians[name].append(float(np.median(times)) * 1000)
    date = datetime.date.today().isoformat()
    lines = [f"# {args.title} ({host_cpu()}, {host_cores()} threads, {date})", "",
             f"bench/interleaved.py: {args.rounds} rounds, each package {args.runs} runs a round "
             "(`tvmcomp.load(p).run`), median per round, in ms.", "",
             "| package | " + " | ".join(f"round {i + 1}" for i in range(args.rounds)) + " |",
             "|---|" + "---:|" * args.rounds]
    lines += [f"| {name} | " + " | ".join(f"{m:.3g}" for m in values) + " |" for name, values in medians.items()]
    slug = re.sub(r"[^a-z0-9]+", "-", args.title.lower()).strip("-")[:60]
    out = REPO / "bench" / "results" / f"{date}-interleaved-{slug}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
