"""Pruning benchmark (#15): a text encoder (MiniLM-L6 by default) b1 at one sequence length, one run.

Engines: PyTorch fp32 and dynamic int8 (peers), tvmcomp fp32 and int8, each unpruned and with
--prune-flops 0.7, 0.5 and 0.4; with --tokens, --prune-tokens 0.7, 0.5 and 0.4 instead, and int8
with --prune-flops 0.5 and with both kinds at 0.7 for comparison. For each: latency, library size,
encoder FLOPs kept, accuracy against the unpruned float model on real text. Latency comparisons
between two tvmcomp packages belong to bench/interleaved.py (this machine's timing noise is ~20%).

Run: .venv/bin/python bench/prune.py [--tokens] [--model minilm] [--seq-len 128] [--threads 2] [--repeat 50]
Writes bench/results/<date>-prune[-tokens]-<model>[-s<N>].json and .md.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

# bench/ off sys.path: its kernels.py would hide the `kernels` package transformers imports
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
_spec = importlib.util.spec_from_file_location("bench_int8", Path(__file__).with_name("int8.py"))
int8_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(int8_bench)


def variants(flag: str) -> dict[str, list[str]]:
    """tvmcomp name -> build arguments: fp32 and int8, unpruned and pruned by ``flag`` to 0.7, 0.5, 0.4."""
    return {f"tvmcomp {quant}" + (f" {flag} {kept}" if kept else ""): ["--quant", quant] + ([flag, kept] if kept else [])
            for quant in ("fp32", "int8") for kept in (None, "0.7", "0.5", "0.4")}


TOKEN_VARIANTS = variants("--prune-tokens") | {
    "tvmcomp int8 --prune-flops 0.5": ["--quant", "int8", "--prune-flops", "0.5"],
    "tvmcomp int8 --prune-flops 0.7 --prune-tokens 0.7": ["--quant", "int8", "--prune-flops", "0.7",
                                                          "--prune-tokens", "0.7"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", action="store_true", help="token pruning (--prune-tokens) instead of heads and neurons")
    parser.add_argument("--model", default="minilm", help="a bundled BERT-class text encoder")
    parser.add_argument("--seq-len", type=int, default=int8_bench.SEQ_LEN)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    kind, table = ("prune-tokens", TOKEN_VARIANTS) if args.tokens else ("prune", variants("--prune-flops"))
    int8_bench.run_table(kind, table, args.model, args.seq_len, args.threads, args.repeat, onnx=False,
                         command="bench/prune.py" + (" --tokens" if args.tokens else ""))


if __name__ == "__main__":
    main()
