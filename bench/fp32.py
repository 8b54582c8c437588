"""fp32 MiniLM-L6 (batch 1, sequence 128) on this machine: tvmcomp (tuned) vs PyTorch eager vs ONNX Runtime.

Run: `make bench` (or .venv/bin/python bench/fp32.py [--threads 2] [--repeat 50]).
Writes bench/results/<date>-fp32.json and .md. Each engine runs on the same real tokenized inputs
with the same thread count. tvmcomp's package is built from the committed tuning records.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def bench_onnxruntime(torch_module, inputs: dict, threads: int, repeat: int, workdir: Path):
    import onnxruntime as ort
    import torch

    from tvmcomp.bench import time_callable
    from tvmcomp.results import latency_stats

    path = workdir / "minilm.onnx"
    torch.onnx.export(torch_module, tuple(torch.from_numpy(v) for v in inputs.values()), str(path),
                      input_names=list(inputs), output_names=["last_hidden_state"], dynamo=True, verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (output,) = session.run(None, inputs)
    return latency_stats(time_callable(lambda: session.run(None, inputs), repeat)), output, ort.__version__


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    from tvmcomp.bench import bench_package
    from tvmcomp.models import get_model

    workdir = Path(tempfile.mkdtemp(prefix="tvmcomp-bench-"))
    package = workdir / "minilm-fp32"
    subprocess.run([sys.executable, "-m", "tvmcomp.cli", "build", "--model", "minilm", "--target", "x86", "-o", str(package)], check=True)
    # ONNX Runtime first, in this process, before TVM's thread pool exists (see tvmcomp.bench).
    entry = get_model("minilm")
    inputs = dict(np.load(package / "example_inputs.npz"))
    ort_stats, ort_out, ort_version = bench_onnxruntime(entry.load_torch(), inputs, args.threads, args.repeat, workdir)
    result = bench_package(package, repeat=args.repeat, threads=args.threads, compare="torch")
    tvm_out = __import__("tvmcomp").load(package).run(**inputs)[0]

    import tvm
    import torch

    date = datetime.date.today().isoformat()
    report = {
        "date": date,
        "machine": {"cpu": result["target"], "processor": platform.processor() or platform.machine(), "threads": args.threads},
        "model": "all-MiniLM-L6-v2, batch 1, seq 128 (real tokenized sentence)",
        "versions": {"tvm": tvm.__version__, "torch": torch.__version__, "onnxruntime": ort_version},
        "latency_ms": {
            "tvmcomp fp32 (tuned)": result["tvmcomp"],
            "pytorch fp32 eager": result["torch"],
            "onnxruntime fp32": ort_stats,
        },
        "library_bytes": result["library_bytes"],
        "max_abs_diff_vs_torch": {"tvmcomp": result["max_abs_err_vs_torch"]},
        "max_abs_diff_tvmcomp_vs_onnxruntime": float(np.abs(tvm_out - ort_out).max()),
    }
    rows = [
        "| engine | median ms | min ms | std ms | vs ONNX Runtime |",
        "|---|---:|---:|---:|---:|",
    ]
    ort_median = ort_stats["median_ms"]
    for name, stats in report["latency_ms"].items():
        rows.append(f"| {name} | {stats['median_ms']:.2f} | {stats['min_ms']:.2f} | {stats['std_ms']:.2f} | {stats['median_ms'] / ort_median:.2f}x |")
    header = (f"# fp32 MiniLM-L6 b1 s128, {args.threads} threads, {report['machine']['cpu']}, {date}\n\n"
              f"tvm {tvm.__version__}, torch {torch.__version__}, onnxruntime {ort_version}; "
              f"tvmcomp max abs diff vs PyTorch {result['max_abs_err_vs_torch']:.1e}\n\n")
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{date}-fp32.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / f"{date}-fp32.md").write_text(header + "\n".join(rows) + "\n")
    print(header + "\n".join(rows))


if __name__ == "__main__":
    main()
