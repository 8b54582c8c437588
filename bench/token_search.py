"""How long ``--prune-tokens``'s search takes (#15: pruning MiniLM in at most 3 minutes on 2 cores),
with the layers before each candidate's cut read from the last chosen step's run (as shipped) and
run again for every candidate (``reuse_layers=False``, the search before 2026-12-06), on the
bundled calibration inputs a build uses; both must choose the same tokens.

Run: .venv/bin/python bench/token_search.py [--model minilm] [--seq-len 128] [--flops 0.5]
Writes bench/results/<date>-token-search-<model>-s<seq-len>.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/ off sys.path: its kernels.py would hide the `kernels` package transformers imports
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="a bundled text encoder")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--flops", type=float, nargs="+", default=[0.5])
    args = parser.parse_args()

    import torch

    from tvmcomp.models import get_model
    from tvmcomp.prune.structure import encoder_structure
    from tvmcomp.prune.tokens import choose_tokens
    from tvmcomp.source import PRUNE_SAMPLES
    from tvmcomp.targets import host_cpu

    entry = get_model(args.model)
    batches = entry.make_calibration_inputs(PRUNE_SAMPLES, 1, args.seq_len)
    lines = [f"# Token search: {args.model} s{args.seq_len} ({host_cpu()}, {datetime.date.today()})", "",
             f"bench/token_search.py --model {args.model} --seq-len {args.seq_len}: choose_tokens on the {len(batches)} "
             f"calibration inputs a build uses, {torch.get_num_threads()} PyTorch threads, one run each.", "",
             "| FLOPs budget | layers before the cut | seconds | tokens entering each layer | FLOPs kept |",
             "|---:|---|---:|---|---:|"]
    for flops in args.flops:
        chosen = []
        for reuse, name in ((False, "run again for every candidate"), (True, "read from the chosen step's run")):
            module = entry.load_torch()
            start = time.perf_counter()
            report = choose_tokens(module, encoder_structure(module), batches, flops, args.seq_len, reuse_layers=reuse)
            seconds = time.perf_counter() - start
            chosen.append(report.tokens)
            lines.append(f"| {flops:g} | {name} | {seconds:.1f} | {report.tokens} | {report.flops_kept:.3f} |")
            print(lines[-1], flush=True)
        assert chosen[0] == chosen[1], chosen
    out = REPO / "bench" / "results" / f"{datetime.date.today()}-token-search-{args.model}-s{args.seq_len}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
