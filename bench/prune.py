"""Pruning benchmark (#15): a text encoder (MiniLM-L6 by default) b1 at one sequence length, one run.

Engines: PyTorch fp32 and dynamic int8 (peers), tvmcomp fp32 and int8, each unpruned and with
--prune-flops 0.7, 0.5 and 0.4. For each: latency, library size, encoder FLOPs kept, accuracy
against the unpruned float model on real text. Latency comparisons between two tvmcomp packages
belong to bench/interleaved.py (this machine's timing noise is ~20%).

Run: .venv/bin/python bench/prune.py [--model minilm] [--seq-len 128] [--threads 2] [--repeat 50]
Writes bench/results/<date>-prune-<model>[-s<N>].json and .md.
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

TVMCOMP_VARIANTS = {
    f"tvmcomp {quant}" + (f" --prune-flops {flops}" if flops else ""): ["--quant", quant]
    + (["--prune-flops", flops] if flops else [])
    for quant in ("fp32", "int8") for flops in (None, "0.7", "0.5", "0.4")
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="a bundled BERT-class text encoder")
    parser.add_argument("--seq-len", type=int, default=int8_bench.SEQ_LEN)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    int8_bench.run_table("prune", TVMCOMP_VARIANTS, args.model, args.seq_len, args.threads, args.repeat, onnx=False)


if __name__ == "__main__":
    main()
