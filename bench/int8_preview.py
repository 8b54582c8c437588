"""int8 preview: MiniLM-L6 b1 s128, tvmcomp fp32 vs tvmcomp int8 (both tuned from schedules/) on
this machine: latency, library size, and accuracy against the float model on real text.

Run: .venv/bin/python bench/int8_preview.py [--threads 2] [--repeat 50]
Writes bench/results/<date>-int8-preview.json and .md. The full int8 benchmark with the
PyTorch/ONNX Runtime int8 peers is the int8 issue's; this is the state of the work so far.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    from tvmcomp.bench import bench_package
    from tvmcomp.evaluate import evaluate_package

    workdir = Path(tempfile.mkdtemp(prefix="tvmcomp-int8-"))
    rows = {}
    for variant in ("none", "int8"):
        package = workdir / f"minilm-{variant}"
        subprocess.run([sys.executable, "-m", "tvmcomp.cli", "build", "--model", "minilm", "--target", "x86",
                        "--quant", variant, "-o", str(package)], check=True)
        timing = bench_package(package, repeat=args.repeat, threads=args.threads)
        rows[variant] = {"latency": timing["tvmcomp"], "library_bytes": timing["library_bytes"],
                         "accuracy": evaluate_package(package) if variant != "none" else None}
    date = datetime.date.today().isoformat()
    report = {"date": date, "target": timing["target"], "threads": args.threads, "results": rows}
    out = REPO / "bench" / "results"
    (out / f"{date}-int8-preview.json").write_text(json.dumps(report, indent=2) + "\n")
    acc = rows["int8"]["accuracy"]
    lines = [
        f"# int8 preview: MiniLM-L6 b1 s128, {args.threads} threads, {timing['target']}, {date}",
        "",
        "| variant | median ms | min ms | library MiB |",
        "|---|---:|---:|---:|",
    ] + [
        f"| tvmcomp {v} | {r['latency']['median_ms']:.2f} | {r['latency']['min_ms']:.2f} | {r['library_bytes'] / 2**20:.1f} |"
        for v, r in rows.items()
    ] + [
        "",
        f"int8 vs float (real text): embedding cosine mean {acc['embedding_cosine_mean']:.4f} / min "
        f"{acc['embedding_cosine_min']:.4f}; polarity probe {acc['probe_accuracy_float']:.3f} -> "
        f"{acc['probe_accuracy_package']:.3f} ({acc['probe_accuracy_drop_pt']:.1f} pt); WordSim-353 Spearman "
        f"float vs int8 {acc['wordsim_spearman_float_vs_package']:.4f}",
    ]
    (out / f"{date}-int8-preview.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
