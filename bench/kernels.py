"""Where the time goes: each kernel of a model, its best measured latency in the tuning database,
how often the model runs it, and its share of the total.

Run: .venv/bin/python bench/kernels.py [--model minilm] [--target x86] [--quant int8 [--calibration DIR]]
Writes bench/results/<date>-kernels-<model>[-<quant>]-<target key>.md. ``--calibration`` names a
package whose saved calibration is reused (else the model is calibrated first).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--target", default="x86")
    parser.add_argument("--quant", default="fp32")
    parser.add_argument("--calibration", type=Path, help="package folder whose calibration.json to reuse")
    args = parser.parse_args()

    from tvm.s_tir.analysis import estimate_tir_flops

    from tvmcomp.build import prepare
    from tvmcomp.quant.pipeline import QuantOptions
    from tvmcomp.source import load_source
    from tvmcomp.targets import resolve_target
    from tvmcomp.tune import extract_tasks, open_database

    target = resolve_target(args.target)
    source = load_source(args.model)
    fused = prepare(source, target, QuantOptions(args.quant), previous_package=args.calibration).fused
    database = open_database(target)
    rows = []
    for task in extract_tasks(fused, target):
        mod = task.dispatched[0]
        record = database.query_tuning_record(mod, target.tvm_target(), task.task_name)
        secs = None
        if record is not None and record.run_secs:
            secs = sum(float(s) for s in record.run_secs) / len(record.run_secs)
        flops = float(estimate_tir_flops(mod))
        rows.append((task.task_name, int(task.weight), secs, flops))
    total = sum(w * s for _, w, s, _ in rows if s is not None)
    rows.sort(key=lambda r: -(r[1] * (r[2] or 0)))
    variant = "" if args.quant == "fp32" else f" {args.quant}"
    lines = [
        f"# Kernels of {args.model}{variant} on {target.schedule_key} ({datetime.date.today().isoformat()})",
        "",
        f"Sum of best measured kernel latencies x occurrences: {total * 1e3:.2f} ms",
        "",
        "| kernel | runs | best us | total ms | share | GFLOP/s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, weight, secs, flops in rows:
        if secs is None:
            lines.append(f"| {name} | {weight} | no record | | | |")
            continue
        lines.append(
            f"| {name} | {weight} | {secs * 1e6:.1f} | {weight * secs * 1e3:.2f} | {weight * secs / total:.1%} "
            f"| {flops / secs / 1e9:.1f} |"
        )
    out = REPO / "bench" / "results" / f"{datetime.date.today().isoformat()}-kernels-{args.model}{variant.replace(' ', '-')}-{target.schedule_key}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
