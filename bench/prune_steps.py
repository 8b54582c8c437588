"""What each step of pruning buys (#15), in PyTorch, no builds; accuracy of each pruned float model
against the unpruned one on real text (tvmcomp.evaluate: embedding cosine on Pang & Lee sentences,
polarity probe, WordSim-353), and the seconds pruning took. Three studies:

- steps: the mask search alone, with the mask rearrangement, with the mask tuning, with both, and
  with both and the refit of the kept output-projection columns (the default since 2026-12-06),
  ranked and tuned label-free on the bundled calibration text (Lee corpus);
- samples: all steps, label-free, on 32 and on 128 of the bundled calibration texts (the default
  since 2026-12-06);
- data: all steps, ranked and tuned on the bundled Lee text, on the probe's training half of the
  Pang & Lee sentences without their labels, and on the same half with their polarity labels (the
  task loss; what `--calib-data labelled.tsv` does). The probe is scored on the other half.

Run: .venv/bin/python bench/prune_steps.py [steps|samples|data] [--model minilm] [--seq-len 128] [--flops 0.7 0.5 0.4]
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
                   "Lee sentences without their labels, or on the same half with their polarity labels (task loss)"}
STEPS = {"search only": {"rearrange": False, "tune": False},
         "search + rearrangement": {"rearrange": True, "tune": False},
         "search + tuning": {"rearrange": False, "tune": True, "refit": False},
         "search + rearrangement + tuning": {"rearrange": True, "tune": True, "refit": False},
         "search + rearrangement + tuning + refit": {"rearrange": True, "tune": True, "refit": True}}


def _variants(study: str, entry, seq_len: int) -> dict[str, dict]:
    """Row name -> prune_encoder's keyword arguments besides the model, budget and length."""
    import numpy as np

    from tvmcomp.data import pang_lee_polarity
    from tvmcomp.evaluate import probe_training_half
    from tvmcomp.source import PRUNE_SAMPLES

    lee = entry.make_calibration_inputs(PRUNE_SAMPLES, 1, seq_len)
    if study == "steps":
        return {name: {"batches": lee, **steps} for name, steps in STEPS.items()}
    if study == "samples":
        return {f"label-free, {count} calibration texts": {"batches": entry.make_calibration_inputs(count, 1, seq_len)}
                for count in (32, 128)}
    pairs = pang_lee_polarity()
    half = [pair for pair, train in zip(pairs, probe_training_half(len(pairs))) if train]
    texts = [entry.tokenize([sentence], seq_len) for sentence, _ in half]
    return {f"label-free, {len(lee)} Lee calibration texts": {"batches": lee},
            f"label-free, {len(texts)} Pang & Lee training-half sentences": {"batches": texts},
            f"task loss, the same {len(texts)} with their labels": {
                "batches": texts, "labels": np.array([label for _, label in half])}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", choices=list(STUDIES), default="steps")
    parser.add_argument("--model", default="minilm", help="a bundled BERT-class text encoder")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--flops", type=float, nargs="+", default=[0.7, 0.5, 0.4])
    args = parser.parse_args()

    from tvmcomp.evaluate import accuracy_against_float, torch_runner
    from tvmcomp.models import get_model
    from tvmcomp.prune import prune_encoder
    from tvmcomp.targets import host_cpu

    entry = get_model(args.model)
    variants = _variants(args.study, entry, args.seq_len)
    run_float = torch_runner(entry.load_torch())
    lines = [f"# Pruning {args.study}: {args.model} s{args.seq_len} ({host_cpu()}, {datetime.date.today()})", "",
             f"bench/prune_steps.py {args.study} --model {args.model}: the pruned PyTorch model (no build) against "
             f"the unpruned one; {STUDIES[args.study]}. "
             "Cosine is over all Pang & Lee sentences and over the probe's scoring half (sentences no pruning "
             "run saw).", "",
             "| FLOPs budget | pruned with | FLOPs kept | embedding cosine mean / min / scoring half | probe (float) "
             "| WordSim Spearman vs float | seconds |", "|---:|---|---:|---:|---:|---:|---:|"]
    for flops in args.flops:
        for name, options in variants.items():
            module = entry.load_torch()
            start = time.perf_counter()
            report = prune_encoder(module, flops=flops, seq_len=args.seq_len, **options)
            seconds = time.perf_counter() - start
            with redirect_stderr(io.StringIO()):
                result = accuracy_against_float(run_float, torch_runner(module), entry.tokenize, 1, args.seq_len)
            lines.append(f"| {flops:g} | {name} | {report.flops_kept:.3f} | {result['embedding_cosine_mean']:.4f} / "
                         f"{result['embedding_cosine_min']:.4f} / {result['embedding_cosine_mean_scoring_half']:.4f} | "
                         f"{result['probe_accuracy_package']:.3f} ({result['probe_accuracy_float']:.3f}) | "
                         f"{result['wordsim_spearman_float_vs_package']:.4f} | {seconds:.0f} |")
            print(lines[-1], flush=True)
    out = REPO / "bench" / "results" / f"{datetime.date.today()}-prune-{args.study}-{args.model}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
