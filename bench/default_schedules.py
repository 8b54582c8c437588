"""Default schedules vs tuned records: MiniLM-L6 b1 s128, fp32 and int8, on this machine, one run.

The committed records were tuned for one CPU (schedules/x86-<cpu>/). For that CPU's code (the x86
preset with its mcpu), each variant is built twice: with those records, and with no records at
all (every kernel on a default schedule, tvmcomp.tune.default_schedules). Both run here, so the
ratio is the cost of having no records. Then the x86 preset as this machine resolves it (its
own CPU, for which there may be no records), which is what a new user gets, next to PyTorch
fp32 and ONNX Runtime fp32 / dynamic int8 in the same run.

Packages are timed as a user calls them: ``tvmcomp.load(path).run(**inputs)``, no thread
setting (a package uses the physical cores). PyTorch and ONNX Runtime get the same thread count.

Run: .venv/bin/python bench/default_schedules.py [--records-cpu znver3] [--repeat 50]
Writes bench/results/<date>-default-schedules.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
BATCH, SEQ_LEN = 1, 128


def build_variant(target, quant: str, records: Path, out: Path, calibration_from: Path | None) -> dict:
    """Build MiniLM with only ``records`` visible; reuses a calibration saved in ``calibration_from``."""
    import shutil

    from tvmcomp.build import build
    from tvmcomp.quant.pipeline import QuantOptions
    from tvmcomp.source import load_source

    os.environ["TVMCOMP_SCHEDULES"] = str(records)
    if calibration_from is not None and (calibration_from / "calibration.json").is_file():
        shutil.copytree(calibration_from, out)  # the build reuses the saved ranges, then replaces the package
    return build(load_source("minilm"), target, out, QuantOptions(quant)).metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records-cpu", default="znver3", help="the CPU the committed records were tuned for")
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    import numpy as np
    import torch

    import tvmcomp
    from tvmcomp.bench import time_callable
    from tvmcomp.results import latency_stats
    from tvmcomp.evaluate import evaluate_package, torch_runner
    from tvmcomp.models import get_model
    from tvmcomp.targets import host_cores, host_cpu, resolve_target
    from int8 import onnx_engines

    threads = host_cores()
    torch.set_num_threads(threads)
    entry = get_model("minilm")
    module = entry.load_torch()
    inputs = entry.make_inputs(BATCH, SEQ_LEN)
    workdir = Path(tempfile.mkdtemp(prefix="tvmcomp-default-bench-"))
    no_records = workdir / "no-records"
    no_records.mkdir()

    rows = {}
    peers = {"pytorch fp32": torch_runner(module)}
    engines = onnx_engines(module, inputs, entry.make_calibration_inputs(32, BATCH, SEQ_LEN), workdir, threads)
    peers |= {name: run for name, (run, _) in engines.items() if name != "onnxruntime static QDQ int8"}
    reference = peers["pytorch fp32"](inputs)
    for name, run in peers.items():  # before TVM's thread pool starts: it slows the others afterwards
        print(f"[bench] {name}", file=sys.stderr, flush=True)
        rows[name] = {"latency": latency_stats(time_callable(lambda: run(inputs), args.repeat))}

    x86 = resolve_target("x86")
    records_target = dataclasses.replace(x86, tvm_config=x86.tvm_config | {"mcpu": args.records_cpu})
    builds = [  # name, target, quant, records folder
        (f"fp32, {args.records_cpu} code, tuned records", records_target, "fp32", REPO / "schedules"),
        (f"fp32, {args.records_cpu} code, default schedules", records_target, "fp32", no_records),
        (f"int8, {args.records_cpu} code, tuned records", records_target, "int8", REPO / "schedules"),
        (f"int8, {args.records_cpu} code, default schedules", records_target, "int8", no_records),
        (f"fp32, this CPU ({host_cpu()}), what a build here gets", x86, "fp32", REPO / "schedules"),
        (f"int8, this CPU ({host_cpu()}), what a build here gets", x86, "int8", REPO / "schedules"),
    ]
    first_int8 = None
    for i, (name, target, quant, records) in enumerate(builds):
        print(f"[bench] building {name}", file=sys.stderr, flush=True)
        package = workdir / f"pkg-{i}"
        metadata = build_variant(target, quant, records, package, first_int8 if quant == "int8" else None)
        first_int8 = first_int8 or (package if quant == "int8" else None)
        model = tvmcomp.load(package)
        outputs = model.run(**inputs)
        a, b = np.ravel(outputs[0]).astype(np.float64), np.ravel(reference).astype(np.float64)
        rows[name] = {
            "latency": latency_stats(time_callable(lambda: model.run(**inputs), args.repeat)),
            "kernels": metadata["kernels"], "default_scheduled_kernels": metadata["default_scheduled_kernels"],
            "records": metadata["records_summary"], "library_bytes": metadata["library_bytes"],
            "cosine_vs_pytorch": float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)),
        }
        if quant == "int8":  # accuracy on real text: 200 sentences, padding excluded
            rows[name]["eval"] = evaluate_package(package)

    date = datetime.date.today().isoformat()
    report = {"date": date, "model": "minilm (all-MiniLM-L6-v2)", "batch": BATCH, "seq_len": SEQ_LEN,
              "host_cpu": host_cpu(), "threads": threads, "repeat": args.repeat, "results": rows}
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{date}-default-schedules.json").write_text(json.dumps(report, indent=2) + "\n")
    ms = {name: row["latency"]["median_ms"] for name, row in rows.items()}
    lines = [f"# Default schedules vs tuned records: MiniLM-L6 b{BATCH} s{SEQ_LEN}, {threads} threads, "
             f"on a {host_cpu()}, {date}", "",
             f"Median of {args.repeat} runs, one process, packages called as `tvmcomp.load(p).run(...)` with no thread "
             "setting. bench/default_schedules.py. The cosine is over the whole output of the example sentence, its "
             "padded positions included (where hidden states carry no meaning); accuracy on real text is "
             "`tvmcomp eval`'s.", "",
             "| engine | median ms | vs pytorch fp32 | kernels on default schedules | cosine vs pytorch, example | "
             "cosine mean, 200 sentences |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        defaults = f"{row['default_scheduled_kernels']} of {row['kernels']}" if "kernels" in row else ""
        cosine = f"{row['cosine_vs_pytorch']:.5f}" if "cosine_vs_pytorch" in row else ""
        real_text = f"{row['eval']['embedding_cosine_mean']:.4f}" if "eval" in row else ""
        lines.append(f"| {name} | {ms[name]:.2f} | {ms['pytorch fp32'] / ms[name]:.2f}x | {defaults} | {cosine} | "
                     f"{real_text} |")
    lines.append("")
    for quant in ("fp32", "int8"):
        tuned, default = (ms[f"{quant}, {args.records_cpu} code, {kind}"] for kind in ("tuned records", "default schedules"))
        lines.append(f"- {quant}: default schedules take {default / tuned:.2f}x the time of tuned records "
                     f"({default:.2f} vs {tuned:.2f} ms), same code target, same machine.")
    (out / f"{date}-default-schedules.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
