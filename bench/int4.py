"""int4 benchmark (#14): a text encoder (MiniLM-L6 by default) b1 at one sequence length, one run.

Engines: the peers of bench/int8.py (PyTorch fp32 and dynamic int8, ONNX Runtime fp32, dynamic and
static int8) and ONNX Runtime's int4 ``MatMulNBits`` (its matmul_nbits_quantizer: symmetric, blocks
of 32, accuracy level 4 = int8 compute); tvmcomp fp32, int8 (as shipped: balanced, steps searched; as it was
until 2026-12-06: min-max, unbalanced; rounded by GPTQ), w4a8 with groups of 32 (GPTQ, as shipped; nearest
rounding; balanced and searched) and 128, pwlq4, weight-only w4. For each: latency,
size on disk, accuracy against the float model on real text. Latency comparisons between two
tvmcomp packages belong to bench/interleaved.py (this machine's timing noise is ~20%).

Run: .venv/bin/python bench/int4.py [--model minilm] [--seq-len 128] [--threads 2] [--repeat 50]
Writes bench/results/<date>-int4-<model>[-s<N>].json and .md.
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
    "tvmcomp fp32": ["--quant", "fp32"],
    "tvmcomp int8": ["--quant", "int8"],  # balanced and its steps searched (the default since 2026-12-06)
    "tvmcomp int8 --balance off --observer minmax": ["--quant", "int8", "--balance", "off", "--observer", "minmax"],
    "tvmcomp int8 --weight-rounding gptq": ["--quant", "int8", "--weight-rounding", "gptq"],
    "tvmcomp w4a8 g32 (GPTQ)": ["--quant", "w4a8"],
    "tvmcomp w4a8 g32 --weight-rounding nearest": ["--quant", "w4a8", "--weight-rounding", "nearest"],
    "tvmcomp w4a8 g128 (GPTQ)": ["--quant", "w4a8", "--group-size", "128"],
    "tvmcomp w4a8 g32 (GPTQ) --balance --observer search": ["--quant", "w4a8", "--balance", "--observer", "search"],
    "tvmcomp pwlq4 g32 (GPTQ)": ["--quant", "pwlq4"],
    "tvmcomp w4 g32 (GPTQ), weight-only": ["--quant", "w4"],
}


def matmul_nbits(fp32: Path, workdir: Path, threads: int) -> dict:
    """ONNX Runtime's int4 weights: MatMulNBits with blocks of 32, int8 compute (accuracy level 4)."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), bits=4, block_size=32, is_symmetric=True,
                                     accuracy_level=4)
    quantizer.process()
    path = workdir / "model-int4.onnx"
    quantizer.model.save_model_to_file(str(path), use_external_data_format=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return {"onnxruntime int4 MatMulNBits b32": (lambda feed: session.run(None, feed)[0], path.stat().st_size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="minilm", help="a bundled text encoder (minilm, mpnet-base)")
    parser.add_argument("--seq-len", type=int, default=int8_bench.SEQ_LEN)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    int8_bench.run_table("int4", TVMCOMP_VARIANTS, args.model, args.seq_len, args.threads, args.repeat, matmul_nbits)


if __name__ == "__main__":
    main()
