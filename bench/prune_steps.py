"""What each step of pruning buys (#15), in PyTorch, no builds; accuracy of each pruned float model
against the unpruned one on real text (tvmcomp.evaluate: embedding cosine on Pang & Lee sentences,
polarity probe, WordSim-353; for an image encoder the digit probe), and the seconds pruning took.
Five studies:

- steps: the mask search alone, with the mask rearrangement, with the mask tuning, with both, and
  with both and the refit of the kept output-projection columns (the default since 2026-12-06),
  ranked and tuned label-free on the bundled calibration text (Lee corpus);
- samples: all steps, label-free, on 32 and on 128 of the bundled calibration texts (the default
  since 2026-12-06);
- data: all steps, ranked and tuned on the bundled Lee text, on the probe's training half of the
  Pang & Lee sentences without their labels, and on the same half with their polarity labels (the
  task loss; what `--calib-data labelled.tsv` does). The probe is scored on the other half.
- images (an image encoder, vit-s): all steps on the first ``--images`` bundled calibration digits,
  label-free and with their labels (what `--calib-data` with class subfolders does); the probe is
  scored on held-out digits (``task_metrics``, float features computed once).
- refit: all steps, label-free on the default calibration data, the refit's ridge fixed at 1.0 of
  the mean diagonal (the default until 2026-12-08), fixed at 0.03, or chosen per Linear on held-out
  calibration samples (the default since).

Run: .venv/bin/python bench/prune_steps.py [steps|samples|data] [--model minilm] [--seq-len 128] [--flops 0.7 0.5 0.4]
     .venv/bin/python bench/prune_steps.py images --model vit-s --flops 0.5 --images 64
     .venv/bin/python bench/prune_steps.py refit --model vit-s --flops 0.5 --eval-images 2000
Writes bench/results/<date>-prune-<study>-<model>.md.
"""

from __future__ import annotations

import argparse
import datetime
import io
import sys
import time
from contextlib import redirect_stderr
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/ off sys.path: its kernels.py would hide the `kernels` package transformers imports
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

STUDIES = {"steps": "ranked and tuned label-free on the bundled Lee calibration text",
           "samples": "all steps, ranked and tuned label-free on 32 and on 128 of the bundled calibration texts",
           "data": "all steps; ranked and tuned on the bundled Lee text, on the probe's training half of the Pang & "
                   "Lee sentences without their labels, or on the same half with their polarity labels (task loss)",
           "images": "all steps; ranked and tuned on the first bundled calibration digits, label-free or by the task "
                     "loss of a linear head on the class token with their digit labels",
           "refit": "all steps, label-free on the default calibration data; the refit's ridge fixed at 1.0 or 0.03 of "
                    "the mean diagonal, or chosen per Linear among tuning.REFIT_RIDGES on held-out calibration samples"}
STEPS = {"search only": {"rearrange": False, "tune": False},
         "search + rearrangement": {"rearrange": True, "tune": False},
         "search + tuning": {"rearrange": False, "tune": True, "refit": False},
         "search + rearrangement + tuning": {"rearrange": True, "tune": True, "refit": False},
         "search + rearrangement + tuning + refit": {"rearrange": True, "tune": True, "refit": True}}


def _variants(study: str, entry, seq_len: int, images: list[int]) -> dict[str, dict]:
    """Row name -> prune_encoder's keyword arguments besides the model, budget and length."""
    import numpy as np

    from tvmcomp.data import pang_lee_polarity
    from tvmcomp.evaluate import probe_training_half
    from tvmcomp.models.images import bundled_images
    from tvmcomp.prune.tuning import REFIT_RIDGES
    from tvmcomp.source import PRUNE_IMAGES, PRUNE_SAMPLES

    if study == "refit":
        batches = (entry.make_calibration_inputs(PRUNE_IMAGES, 1) if entry.preprocess_images
                   else entry.make_calibration_inputs(PRUNE_SAMPLES, 1, seq_len))
        return {name: {"batches": batches, "readout": entry.readout, "refit_ridges": ridges}
                for name, ridges in (("ridge fixed at 1.0 (before)", (1.0,)), ("ridge fixed at 0.03", (0.03,)),
                                     ("ridge chosen on held-out samples", REFIT_RIDGES))}
    if study == "images":
        return {f"{'labelled' if labelled else 'label-free'}, {count} images": {
            "batches": entry.make_calibration_inputs(count, 1), "readout": entry.readout,
            "labels": bundled_images(0, count)[1] if labelled else None}
            for count in images for labelled in (False, True)}

    lee = entry.make_calibration_inputs(PRUNE_SAMPLES, 1, seq_len)
    if study == "steps":
        return {name: {"batches": lee, **steps} for name, steps in STEPS.items()}
    if study == "samples":
        return {f"label-free, {count} calibration texts": {"batches": entry.make_calibration_inputs(count, 1, seq_len)}
                for count in (32, 128)}
    pairs = pang_lee_polarity()
    training = probe_training_half(np.array([label for _, label in pairs]))
    half = [pair for pair, train in zip(pairs, training) if train]
    texts = [entry.tokenize([sentence], seq_len) for sentence, _ in half]
    return {f"label-free, {len(lee)} Lee calibration texts": {"batches": lee},
            f"label-free, {len(texts)} Pang & Lee training-half sentences": {"batches": texts},
            f"task loss, the same {len(texts)} with their labels": {
                "batches": texts, "labels": np.array([label for _, label in half])}}


def _text_measure(entry, seq_len: int):
    """(columns, ``measure(module) -> cells``) on real text: embedding cosine, probe, WordSim."""
    from tvmcomp.evaluate import accuracy_against_float, torch_runner

    run_float = torch_runner(entry.load_torch())

    def measure(module) -> str:
        with redirect_stderr(io.StringIO()):
            result = accuracy_against_float(run_float, torch_runner(module), entry.tokenize, 1, seq_len)
        return (f"{result['embedding_cosine_mean']:.4f} / {result['embedding_cosine_min']:.4f} / "
                f"{result['embedding_cosine_mean_scoring_half']:.4f} | {result['probe_accuracy_package']:.3f} "
                f"({result['probe_accuracy_float']:.3f}) | {result['wordsim_spearman_float_vs_package']:.4f}")

    return "embedding cosine mean / min / scoring half | probe (float) | WordSim Spearman vs float", measure


def _image_measure(entry, images: int):
    """(columns, ``measure(module) -> cells``): the entry's probe on held-out digits, float features once."""
    import numpy as np

    from tvmcomp.evaluate import torch_runner

    run_float, seen = torch_runner(entry.load_torch()), {}

    def cached_float(inputs):
        key = b"".join(np.ascontiguousarray(v).tobytes() for v in inputs.values())
        if key not in seen:
            seen[key] = run_float(inputs)
        return seen[key]

    def measure(module) -> str:
        with redirect_stderr(io.StringIO()):
            result = entry.task_metrics(cached_float, torch_runner(module), 8, images=images)
        return (f"{result['probe_accuracy_package']:.3f} ({result['probe_accuracy_float']:.3f}) | "
                f"{result['probe_accuracy_drop_pt']:.1f} | {result['probe_agreement']:.1%}")

    return "probe top-1 (float) | drop pt | predictions as float's", measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", choices=list(STUDIES), default="steps")
    parser.add_argument("--model", default="minilm", help="a bundled BERT-class text encoder (vit-s: images)")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--flops", type=float, nargs="+", default=[0.7, 0.5, 0.4])
    parser.add_argument("--images", type=int, nargs="+", default=[64], help="images study: how many digits to prune on")
    parser.add_argument("--eval-images", type=int, default=1000,
                        help="image encoders: digits the probe is fitted on (half) and scored on (half)")
    args = parser.parse_args()

    import torch

    from tvmcomp.models import get_model
    from tvmcomp.prune import prune_encoder
    from tvmcomp.prune.masks import run
    from tvmcomp.targets import host_cpu

    entry = get_model(args.model)
    variants = _variants(args.study, entry, args.seq_len, args.images)
    if entry.preprocess_images:
        columns, measure = _image_measure(entry, args.eval_images)
        with torch.no_grad():  # FLOPs count the attention over all the model's tokens
            tokens = run(entry.load_torch(), entry.make_calibration_inputs(1, 1)[0]).shape[1]
        shape, data = f"{tokens} tokens", f"the probe fitted on {args.eval_images // 2} digits and scored on as many others"
    else:
        (columns, measure), tokens = _text_measure(entry, args.seq_len), args.seq_len
        shape, data = f"s{args.seq_len}", ("real text. Cosine is over all Pang & Lee sentences and over the probe's "
                                           "scoring half (sentences no pruning run saw)")
    lines = [f"# Pruning {args.study}: {args.model} {shape} ({host_cpu()}, {datetime.date.today()})", "",
             f"bench/prune_steps.py {args.study} --model {args.model}: the pruned PyTorch model (no build) against "
             f"the unpruned one; {STUDIES[args.study]}. Measured on {data}.", "",
             f"| FLOPs budget | pruned with | FLOPs kept | {columns} | seconds |",
             "|---:|---|---:|" + "---:|" * (columns.count("|") + 1) + "---:|"]
    for flops in args.flops:
        for name, options in variants.items():
            module = entry.load_torch()
            start = time.perf_counter()
            report = prune_encoder(module, flops=flops, seq_len=tokens, **options)
            seconds = time.perf_counter() - start
            lines.append(f"| {flops:g} | {name} | {report.flops_kept:.3f} | {measure(module)} | {seconds:.0f} |")
            print(lines[-1], flush=True)
    out = REPO / "bench" / "results" / f"{datetime.date.today()}-prune-{args.study}-{args.model}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
