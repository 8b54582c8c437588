"""What each step of pruning buys (#15), in PyTorch, no builds: the mask search alone, with the
mask rearrangement, with the mask tuning, and with both, at several FLOPs budgets; accuracy of
each pruned float model against the unpruned one on real text (tvmcomp.evaluate: embedding cosine
on Pang & Lee sentences, polarity probe, WordSim-353), and the seconds pruning took.

Run: .venv/bin/python bench/prune_steps.py [--model minilm] [--seq-len 128] [--flops 0.7 0.5 0.4]
Writes bench/results/<date>-prune-steps-<model>.md.
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

STEPS = {"search only": {"rearrange": False, "tune": False},
         "search + rearrangement": {"rearrange": True, "tune": False},
         "search + tuning": {"rearrange": False, "tune": True},
         "search + rearrangement + tuning": {"rearrange": True, "tune": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="a bundled BERT-class text encoder")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--flops", type=float, nargs="+", default=[0.7, 0.5, 0.4])
    args = parser.parse_args()

    from tvmcomp.evaluate import accuracy_against_float, torch_runner
    from tvmcomp.models import get_model
    from tvmcomp.prune import prune_encoder
    from tvmcomp.source import PRUNE_SAMPLES
    from tvmcomp.targets import host_cpu

    entry = get_model(args.model)
    batches = entry.make_calibration_inputs(PRUNE_SAMPLES, 1, args.seq_len)
    run_float = torch_runner(entry.load_torch())
    lines = [f"# Pruning steps: {args.model} s{args.seq_len} ({host_cpu()}, {datetime.date.today()})", "",
             f"bench/prune_steps.py --model {args.model}: the pruned PyTorch model (no build) against the unpruned "
             f"one; ranking and tuning on {PRUNE_SAMPLES} calibration inputs, label-free.", "",
             "| FLOPs budget | steps | FLOPs kept | embedding cosine mean / min | probe (float) | WordSim Spearman "
             "vs float | seconds |", "|---:|---|---:|---:|---:|---:|---:|"]
    for flops in args.flops:
        for name, steps in STEPS.items():
            module = entry.load_torch()
            start = time.perf_counter()
            report = prune_encoder(module, batches, flops, args.seq_len, **steps)
            seconds = time.perf_counter() - start
            with redirect_stderr(io.StringIO()):
                result = accuracy_against_float(run_float, torch_runner(module), entry.tokenize, 1, args.seq_len)
            lines.append(f"| {flops:g} | {name} | {report.flops_kept:.3f} | {result['embedding_cosine_mean']:.4f} / "
                         f"{result['embedding_cosine_min']:.4f} | {result['probe_accuracy_package']:.3f} "
                         f"({result['probe_accuracy_float']:.3f}) | {result['wordsim_spearman_float_vs_package']:.4f} "
                         f"| {seconds:.0f} |")
            print(lines[-1], flush=True)
    out = REPO / "bench" / "results" / f"{datetime.date.today()}-prune-steps-{args.model}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
