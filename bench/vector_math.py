"""Transcendental kernels of MiniLM, untuned, on this machine: TVM's stock lowering (one libm call
per element) vs tvmcomp's vectorizable lowering, with the max abs error against float64.

Cases: exact GELU on the FFN activation (128x1536) and softmax on the attention scores
(12x128x128, keys past the 21st masked with float32's lowest value, as the HF models mask padding).

Run: .venv/bin/python bench/vector_math.py. Writes bench/results/<date>-vector-math.md.
"""

from __future__ import annotations

import datetime
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def one_op_module(op, shape):
    """``main(x) = op(x)`` over a float32 tensor of ``shape``."""
    from tvm import relax

    x = relax.Var("x", relax.TensorType(shape, "float32"))
    bb = relax.BlockBuilder()
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit_output(op(x))
        bb.emit_func_output(y)
    return bb.get()


def gelu_case():
    from tvm import relax

    from tvmcomp.passes.fast_gelu import fast_gelu_legalize_map

    x = np.linspace(-8, 8, 128 * 1536, dtype=np.float32).reshape(128, 1536)
    exact = 0.5 * x.astype(np.float64) * (1 + np.vectorize(math.erf)(x.astype(np.float64) / math.sqrt(2)))
    return "exact GELU 128x1536", one_op_module(relax.op.nn.gelu, x.shape), x, exact, fast_gelu_legalize_map()


def softmax_case():
    from tvm import relax

    from tvmcomp.passes.fast_softmax import fast_softmax_legalize_map

    x = np.random.default_rng(0).normal(0.0, 4.0, (12, 128, 128)).astype(np.float32)
    x[..., 21:] = np.finfo(np.float32).min
    shifted = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    exact = shifted / shifted.sum(-1, keepdims=True)
    return ("softmax 12x128x128, masked", one_op_module(lambda t: relax.op.nn.softmax(t, axis=-1), x.shape),
            x, exact, fast_softmax_legalize_map())


def main() -> None:
    import tvm
    from tvm import relax

    from tvmcomp.targets import resolve_target

    target = resolve_target("x86")
    rows = []
    for case, mod, x, exact, ours in (gelu_case(), softmax_case()):
        for lowering, legalize in (("TVM stock (libm)", None), ("tvmcomp", ours)):
            legalized = relax.transform.LegalizeOps(customize_legalize_map=legalize)(mod)
            vm = relax.VirtualMachine(tvm.compile(legalized, target=target.tvm_target()), tvm.cpu())
            xt = tvm.runtime.tensor(x)
            error = float(np.abs(vm["main"](xt).numpy() - exact).max())
            median_ms = vm.time_evaluator("main", tvm.cpu(), number=20, repeat=5)(xt).median * 1e3
            rows.append(f"| {case} | {lowering} | {median_ms:.3f} | {error:.1e} |")
    date = datetime.date.today().isoformat()
    text = "\n".join([f"# Transcendental kernels, fp32, untuned, {target.schedule_key}, {date}", "",
                      "| kernel | lowering | median ms | max abs error vs float64 |", "|---|---|---:|---:|",
                      *rows]) + "\n"
    (REPO / "bench" / "results" / f"{date}-vector-math.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
