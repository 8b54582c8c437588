"""Why balancing one FFN down-projection costs a pruned MiniLM its word similarities (#15): int8
simulated on that one Linear of the float PyTorch model, every other op float, for each balancing
the step search chooses among.

MiniLM pruned to 0.7 FLOPs, built int8, scores WordSim 0.80 against 0.90 for the pruned float
model, while its sentence embeddings lose nothing (bench/results/2026-12-06-prune-minilm-phrases.md).
Manual builds that left one Linear unbalanced pointed at layer 0's FFN down-projection. Here that
Linear alone is quantized as realize quantizes it (``balance.linear_input_steps`` for the input's
steps and zero points, ``grids.restored_weight`` for the balanced weight ``f * W`` on int8's grid),
from channel statistics over the 32 bundled calibration texts (every row, padding too, as
calibrate keeps them), through a forward hook. The table also shows the output column with the
largest output (a massive activation of the residual stream): its weight step, how many of its
weights round to zero, and its error on the real tokens of the calibration sentences, the
calibration phrases (every fourth text, ``data.lee_calibration_texts``) and the WordSim words.

Run: .venv/bin/python bench/balance_columns.py [--model minilm] [--flops 0.7] [--layer 0]
Writes bench/results/<date>-balance-columns-<model>.md.
"""

from __future__ import annotations

import argparse
import datetime
import io
import sys
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# bench/ off sys.path: its kernels.py would hide the `kernels` package transformers imports
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

BALANCINGS = ("off", 0.6, 0.7, 0.8)  # the step search's candidates that win or nearly win here
# the "dense and sparse" rows (SqueezeLLM, SpQR): weights past this many times their column's rms stay
# float, as x @ S beside the integer Linear, and leave the column's step to the others
SPARSE_RMS = 8.0
CALIBRATION_TEXTS = 32  # as int8 calibrates


def _inputs_of(module, linear, batches) -> list[np.ndarray]:
    """``linear``'s input rows for each batch ([tokens, channels], padding included)."""
    import torch

    from tvmcomp.evaluate import torch_runner

    seen = []
    hook = linear.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().numpy()[0]))
    try:
        run = torch_runner(module)
        with torch.no_grad():
            for batch in batches:
                run(batch)
    finally:
        hook.remove()
    return seen


def _real(rows: list[np.ndarray], batches) -> np.ndarray:
    return np.concatenate([r[np.asarray(b["attention_mask"]).reshape(-1) != 0] for r, b in zip(rows, batches)])


def _study(module, layer: int, entry, run_float, seq_len: int) -> list[str]:
    import torch
    from dataclasses import replace

    from tvmcomp.data import wordsim353_pairs
    from tvmcomp.evaluate import accuracy_against_float, torch_runner
    from tvmcomp.quant.balance import linear_input_steps
    from tvmcomp.quant.calibrate import SiteRange
    from tvmcomp.quant.dot_kernels import DotKernels
    from tvmcomp.quant.grids import restored_weight
    from tvmcomp.quant.ops.linear import weight_quant_of
    from tvmcomp.quant.outliers import split_outliers
    from tvmcomp.quant.schemes import get_scheme
    from tvmcomp.quant.step_search import restored_input

    scheme = get_scheme("int8")
    activation = scheme.activation
    linear = dict(module.named_modules())[f"encoder.encoder.layer.{layer}.output.dense"]
    weight_kn = linear.weight.detach().numpy().T.astype(np.float32)
    weight_quant = weight_quant_of(scheme, DotKernels(), *weight_kn.shape)
    calibration = entry.make_calibration_inputs(CALIBRATION_TEXTS, 1, seq_len)
    per_batch = _inputs_of(module, linear, calibration)
    rows = np.concatenate(per_batch).astype(np.float64)
    scale, zero = activation.scale_zero_point(np.float64(rows.min()), np.float64(rows.max()))
    site = SiteRange(float(scale), int(zero), float(rows.min()), float(rows.max()), rows.min(0).tolist(),
                     rows.max(0).tolist(), np.sqrt((rows ** 2).mean(0)).tolist())
    phrases = [k % 4 == 3 for k in range(len(calibration))]
    words = sorted({w for a, b, _ in wordsim353_pairs() for w in (a, b)})
    word_batches = [entry.tokenize([w], seq_len) for w in words]
    groups = {"sentences": _real([r for r, p in zip(per_batch, phrases) if not p],
                                 [b for b, p in zip(calibration, phrases) if not p]),
              "phrases": _real([r for r, p in zip(per_batch, phrases) if p],
                               [b for b, p in zip(calibration, phrases) if p]),
              "words": _real(_inputs_of(module, linear, word_batches), word_batches)}
    real_calibration = _real(per_batch, calibration)
    column = int(np.argmax(np.sqrt(((real_calibration @ weight_kn) ** 2).mean(0))))
    sparse = split_outliers(weight_kn, SPARSE_RMS).sparse
    lines = []
    for balance, split in [(balance, False) for balance in BALANCINGS] + [(balance, True) for balance in BALANCINGS]:
        sparse_part = sparse if split else np.zeros_like(sparse)
        dense = weight_kn - sparse_part
        quantized_input = linear_input_steps(replace(site, balance=balance), dense, weight_quant.qmax, activation,
                                             "auto", calibrated=True)
        factors = quantized_input[3]
        balanced = restored_weight(factors[:, None] * dense, weight_quant)
        column_step = np.abs(factors * dense[:, column]).max() / weight_quant.qmax
        zeroed = int(((balanced[:, column] == 0) & (dense[:, column] != 0)).sum())
        # the column's error from its weights alone, in the input's own units: x_j (f_j W_jn restored / f_j - W_jn)
        column_error = balanced[:, column] / factors - dense[:, column]
        errors = " / ".join(f"{np.sqrt(((x @ column_error) ** 2).mean()):.2f}" for x in groups.values())

        def quantized(_m, args, out, quantized_input=quantized_input, balanced=balanced, sparse_part=sparse_part):
            x = args[0].numpy()
            restored = restored_input(x, quantized_input, activation)
            return torch.from_numpy(restored @ balanced.astype(np.float32) + x @ sparse_part) + _m.bias

        hook = linear.register_forward_hook(quantized)
        try:
            with redirect_stderr(io.StringIO()):
                result = accuracy_against_float(run_float, torch_runner(module), entry.tokenize, 1, seq_len)
        finally:
            hook.remove()
        kept_float = f"{int((sparse_part != 0).sum())} of {sparse.size}" if split else "none"
        lines.append(f"| {balance} | {kept_float} | {result['embedding_cosine_mean']:.4f} "
                     f"| {result['wordsim_spearman_float_vs_package']:.4f} "
                     f"| {column} | {column_step:.4f} | {zeroed} of {weight_kn.shape[0]} | {errors} |")
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="a bundled BERT-class text encoder")
    parser.add_argument("--flops", type=float, default=0.7, help="the pruned model's FLOPs budget")
    parser.add_argument("--layer", type=int, default=0, help="the encoder layer whose FFN down-projection is quantized")
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()

    from tvmcomp.evaluate import accuracy_against_float, torch_runner
    from tvmcomp.models import get_model
    from tvmcomp.prune import prune_encoder
    from tvmcomp.source import PRUNE_SAMPLES
    from tvmcomp.targets import host_cpu

    entry = get_model(args.model)
    run_float = torch_runner(entry.load_torch())
    pruned = entry.load_torch()
    prune_encoder(pruned, entry.make_calibration_inputs(PRUNE_SAMPLES, 1, args.seq_len), args.flops, args.seq_len)
    lines = [f"# Balancing one FFN down-projection: {args.model} s{args.seq_len}, layer {args.layer} "
             f"({host_cpu()}, {datetime.date.today()})", "",
             f"bench/balance_columns.py --model {args.model} --flops {args.flops:g} --layer {args.layer}: only that "
             "Linear quantized int8 (simulated in NumPy as realize quantizes it), every other op float; accuracy "
             "against the unpruned float model. Column: the output channel with the largest output on the "
             "calibration texts; its error (rms, from its weights' rounding alone) on the real tokens of the "
             "calibration sentences / calibration phrases / WordSim words. Weights kept float: the weights "
             f"past {SPARSE_RMS:g} times their column's rms, computed as x @ S in float beside the integer Linear "
             "(a dense-and-sparse split, simulated here only).", ""]
    header = ["| balancing | weights kept float | embedding cosine | WordSim Spearman vs float | column "
              "| its weight step | its weights rounded to 0 | its error: sentences / phrases / words |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, module in (("unpruned", entry.load_torch()), (f"pruned to {args.flops:g} FLOPs", pruned)):
        with redirect_stderr(io.StringIO()):
            float_result = accuracy_against_float(run_float, torch_runner(module), entry.tokenize, 1, args.seq_len)
        lines += [f"## {name} (float: embedding cosine {float_result['embedding_cosine_mean']:.4f}, WordSim "
                  f"{float_result['wordsim_spearman_float_vs_package']:.4f})", "", *header,
                  *_study(module, args.layer, entry, run_float, args.seq_len), ""]
    out = REPO / "bench" / "results" / f"{datetime.date.today()}-balance-columns-{args.model}.md"
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
