"""int8 benchmark: a text encoder (MiniLM-L6 by default; --model mpnet-base for the base-size one)
b1 s128 on this machine, one run, fixed threads.

Engines: tvmcomp fp32, int8 (balanced, steps searched), int8 as it was until 2026-12-06 (min-max steps, no
balancing), int8 with wide inputs, int8 with the attention matmuls left float, int8 with the word embedding table
left float, int8 with other attention-probability grids (uniform:8, log2:4, log2:3), pot8 (also with log2:4),
int8 and pot8 with --integer-only
(kernels from schedules/),
PyTorch eager fp32 and dynamic int8 (torch.ao.quantization.quantize_dynamic on the Linear layers), ONNX
Runtime fp32, dynamic int8 and static QDQ int8 (per-channel int8 weights, per-tensor uint8 activations, calibrated on
the same 32 Lee-corpus texts, sentences and phrases, tvmcomp calibrates on). For each: latency, size on disk, and accuracy
against the float model on real text (tvmcomp.evaluate: embedding cosine, polarity probe,
WordSim-353 Spearman).

Run: .venv/bin/python bench/int8.py [--model minilm] [--threads 2] [--repeat 50]
Writes bench/results/<date>-int8-<model>.json and .md. PyTorch and ONNX Runtime are timed before TVM's
thread pool starts (see tvmcomp.bench).
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/ off sys.path (a script's folder is put first): its kernels.py would hide the `kernels` package
sys.path = [str(REPO)] + [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
BATCH, SEQ_LEN = 1, 128
TVMCOMP_VARIANTS = {  # name -> tvmcomp build arguments; kernels come from schedules/
    "tvmcomp fp32": ["--quant", "fp32"],
    "tvmcomp int8": ["--quant", "int8"],  # balanced and its steps searched (the default since 2026-12-06)
    "tvmcomp int8 --balance off --observer minmax": ["--quant", "int8", "--balance", "off", "--observer", "minmax"],
    "tvmcomp int8 --wide-inputs": ["--quant", "int8", "--wide-inputs"],
    "tvmcomp int8, attention float": ["--quant", "int8", "--keep-float", "bmm_*"],
    "tvmcomp int8, word embeddings float": ["--quant", "int8", "--keep-float", "*word_embeddings*"],
    # the scheme table of the quantization-core issue (#13)
    "tvmcomp int8 --attn-probs uniform:8": ["--quant", "int8", "--attn-probs", "uniform:8"],
    "tvmcomp int8 --attn-probs log2:4": ["--quant", "int8", "--attn-probs", "log2:4"],
    "tvmcomp int8 --attn-probs log2:3": ["--quant", "int8", "--attn-probs", "log2:3"],
    "tvmcomp pot8": ["--quant", "pot8"],
    "tvmcomp pot8 --attn-probs log2:4": ["--quant", "pot8", "--attn-probs", "log2:4"],
    "tvmcomp int8 --integer-only": ["--quant", "int8", "--integer-only"],
    "tvmcomp pot8 --integer-only": ["--quant", "pot8", "--integer-only"],
}


def onnx_engines(module, inputs: dict, calibration: list[dict], workdir: Path, threads: int, more_ort=None) -> dict:
    """name -> (run(inputs) -> hidden state, bytes on disk) for the ONNX Runtime variants of a text encoder;
    ``more_ort(fp32_path, workdir, threads)`` adds others (bench/int4.py: the int4 MatMulNBits one)."""
    import torch

    fp32 = workdir / "model.onnx"
    torch.onnx.export(module, tuple(torch.from_numpy(v) for v in inputs.values()), str(fp32),
                      input_names=list(inputs), output_names=["last_hidden_state"], dynamo=True, verbose=False)
    return ort_engines(fp32, calibration, workdir, threads) | (more_ort(fp32, workdir, threads) if more_ort else {})


def ort_engines(fp32: Path, calibration: list[dict], workdir: Path, threads: int) -> dict:
    """name -> (run(inputs) -> first output, bytes on disk) for ONNX Runtime on the float model
    ``fp32``, its dynamic int8 quantization and its static QDQ int8 one (per-channel int8 weights,
    uint8 activations, calibrated on ``calibration``); derived files are written to ``workdir``."""
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_dynamic, quantize_static)

    prepared, dynamic, static = (workdir / f"{fp32.stem}-{kind}.onnx" for kind in ("prep", "dynamic", "qdq"))
    quant_pre_process(str(fp32), str(prepared))
    quantize_dynamic(str(prepared), str(dynamic), weight_type=QuantType.QInt8)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(calibration)

        def get_next(self):
            return next(self.samples, None)

    quantize_static(str(prepared), str(static), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    engines = {}
    for name, path in (("onnxruntime fp32", fp32), ("onnxruntime dynamic int8", dynamic),
                       ("onnxruntime static QDQ int8", static)):
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        engines[name] = (lambda feed, s=session: s.run(None, feed)[0], path.stat().st_size + _external_data(path))
    return engines


def _external_data(path: Path) -> int:
    data = path.with_name(path.name + ".data")
    return data.stat().st_size if data.exists() else 0


def torch_state_bytes(module) -> int:
    import torch

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="a bundled text encoder (minilm, mpnet-base)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    run_table("int8", TVMCOMP_VARIANTS, args.model, SEQ_LEN, args.threads, args.repeat)


def run_table(kind: str, variants: dict, model: str, seq_len: int, threads: int, repeat: int, more_ort=None,
              onnx: bool = True, command: str | None = None) -> None:
    """Time and evaluate the peers (PyTorch; ONNX Runtime unless ``onnx`` is False) and each tvmcomp
    variant (name -> build arguments) on ``model`` at b1 ``seq_len``; writes
    bench/results/<date>-<kind>-<model>[-s<seq_len>].json and .md, which names ``command`` (default
    bench/<kind>.py) as its source. Pruned packages get a FLOPs column."""
    import torch

    from tvmcomp.bench import bench_package, time_callable
    from tvmcomp.results import latency_stats
    from tvmcomp.evaluate import accuracy_against_float, evaluate_package, torch_runner
    from tvmcomp.models import get_model
    from tvmcomp.prune import flops_kept

    torch.set_num_threads(threads)
    entry = get_model(model)
    module = entry.load_torch()
    inputs = entry.make_inputs(BATCH, seq_len)
    calibration = entry.make_calibration_inputs(32, BATCH, seq_len)
    workdir = Path(tempfile.mkdtemp(prefix=f"tvmcomp-{kind}-bench-"))
    run_float = torch_runner(module)

    engines = {
        "pytorch fp32": (run_float, torch_state_bytes(module)),
    }
    dynamic = torch.ao.quantization.quantize_dynamic(entry.load_torch(), {torch.nn.Linear}, dtype=torch.qint8)
    engines["pytorch dynamic int8"] = (torch_runner(dynamic), torch_state_bytes(dynamic))
    if onnx:
        engines.update(onnx_engines(module, inputs, calibration, workdir, threads, more_ort))

    rows = {}
    for name, (run, size) in engines.items():  # everything not TVM first: TVM's pool slows them afterwards
        print(f"[bench] {name}", file=sys.stderr, flush=True)
        rows[name] = {"latency": latency_stats(time_callable(lambda: run(inputs), repeat)), "bytes": size,
                      "accuracy": accuracy_against_float(run_float, run, entry.tokenize, BATCH, seq_len)}

    for i, (name, build_args) in enumerate(variants.items()):
        package = workdir / f"tvmcomp-{i}"
        subprocess.run([sys.executable, "-m", "tvmcomp.cli", "build", "--model", model, "--target", "x86",
                        "--seq-len", str(seq_len), *build_args, "-o", str(package)], check=True)
        timing = bench_package(package, repeat=repeat, threads=threads)
        rows[name] = {"latency": timing["tvmcomp"], "bytes": timing["library_bytes"],
                      "accuracy": {k: v for k, v in evaluate_package(package).items() if k not in ("package", "variant")}}
        pruning = json.loads((package / "metadata.json").read_text()).get("pruning")
        if pruning is not None:
            rows[name]["pruning"] = pruning

    date = datetime.date.today().isoformat()
    report = {"date": date, "model": f"{model} ({entry.description})", "batch": BATCH, "seq_len": seq_len,
              "target": timing["target"], "threads": threads, "repeat": repeat, "results": rows}
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{date}-{kind}-{model}" + ("" if seq_len == SEQ_LEN else f"-s{seq_len}")
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    torch_ms = rows["pytorch fp32"]["latency"]["median_ms"]
    pruned = any("pruning" in row for row in rows.values())
    lines = [
        f"# {kind} benchmark: {model} b{BATCH} s{seq_len}, {threads} threads, {timing['target']}, {date}",
        "",
        f"{repeat} timed runs each, one process; accuracy vs the float PyTorch model on real text "
        f"(200 Pang & Lee sentences, 437 WordSim-353 words). {command or f'bench/{kind}.py'}.",
        "",
        "| engine | median ms | vs pytorch fp32 | MiB |" + (" encoder FLOPs kept |" if pruned else "")
        + " cosine mean | cosine min | probe acc (float) | probe drop pt | WordSim rho |",
        "|---|---:|---:|---:|" + ("---:|" if pruned else "") + "---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        acc, ms = row["accuracy"], row["latency"]["median_ms"]
        flops = f" {flops_kept(row.get('pruning')):.3f} |" if pruned else ""
        lines.append(
            f"| {name} | {ms:.2f} | {torch_ms / ms:.2f}x | {row['bytes'] / 2**20:.1f} |{flops} {acc['embedding_cosine_mean']:.4f} | "
            f"{acc['embedding_cosine_min']:.4f} | {acc['probe_accuracy_package']:.3f} ({acc['probe_accuracy_float']:.3f}) | "
            f"{acc['probe_accuracy_drop_pt']:.1f} | {acc['wordsim_spearman_float_vs_package']:.4f} |")
    (out / f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
