"""How long a build takes to open its tuning records, for several records roots, interleaved.

Each round opens the x86 target's records (``tvmcomp.tune.open_database``, what every build does)
once per root, each in a fresh process with ``TVMCOMP_SCHEDULES`` set to that root, and times the
open alone (not the imports).

Run: .venv/bin/python bench/records_open.py NAME=ROOT [NAME=ROOT ...] --title TITLE [--rounds 5]
Writes bench/results/<date>-records-open-<slug of TITLE>.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OPEN_ONCE = (
    "import time; from tvmcomp.targets import resolve_target; from tvmcomp.tune import open_database, serving_folders; "
    "target = resolve_target('x86'); start = time.perf_counter(); open_database(target); "
    "print(time.perf_counter() - start, '; '.join(f.path.name for f in serving_folders(target)))"
)


def open_seconds(root: str) -> tuple[float, str]:
    env = dict(os.environ, TVMCOMP_SCHEDULES=root)
    out = subprocess.run([sys.executable, "-c", OPEN_ONCE], env=env, cwd=REPO, capture_output=True, text=True, check=True)
    seconds, folders = out.stdout.strip().split(" ", 1)
    return float(seconds), folders


def record_count(root: str, folders: str) -> int:
    return sum(1 for name in folders.split("; ") for _ in open(Path(root) / name / "database_tuning_record.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", metavar="NAME=ROOT")
    parser.add_argument("--title", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from tvmcomp.targets import host_cpu

    roots = dict(entry.split("=", 1) for entry in args.roots)
    seconds = {name: [] for name in roots}
    folders = {}
    for _ in range(args.rounds):
        for name, root in roots.items():
            took, folders[name] = open_seconds(root)
            seconds[name].append(took)
    date = datetime.date.today().isoformat()
    lines = [f"# {args.title} ({host_cpu()}, {date})", "",
             f"bench/records_open.py: {args.rounds} interleaved rounds, `open_database(x86)` in a fresh process, s.", "",
             "| records | folders read | records read | " + " | ".join(f"round {i + 1}" for i in range(args.rounds))
             + " | median |", "|---|---|---:|" + "---:|" * (args.rounds + 1)]
    for name, root in roots.items():
        lines.append(f"| {name} | {folders[name]} | {record_count(root, folders[name])} | "
                     + " | ".join(f"{s:.2f}" for s in seconds[name]) + f" | {np.median(seconds[name]):.2f} |")
    slug = re.sub(r"[^a-z0-9]+", "-", args.title.lower()).strip("-")[:60]
    path = REPO / "bench" / "results" / f"{date}-records-open-{slug}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines) + f"\n\nwrote {path}")


if __name__ == "__main__":
    main()
