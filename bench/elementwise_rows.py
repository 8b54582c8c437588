"""One elementwise kernel under two default schedules, on this machine: vit-s's attention
probabilities ([1, 6, 257, 257] float32) quantized into the padded int16 operand of the P.V dot
kernel ([6, 260, 258]), the kernel the pruned vit-s runs as its own (its TIR as the build writes it).

- fused loop: every loop fused, split by the vector width and vectorized, the rest parallel (the
  Elementwise rule before 2026-12-07): rows of 258 are no multiple of 16 lanes, so vectors straddle rows;
- the Elementwise rule now (`tvmcomp.tune.default_schedules`): rows kept whole, the loops above
  them fused and parallel, each row left to LLVM to vectorize.

Both outputs are checked equal. Run: .venv/bin/python bench/elementwise_rows.py [--repeat 5].
Writes bench/results/<date>-elementwise-rows.md.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def quantize_pad():
    """The kernel as an unscheduled PrimFunc (a fresh one per call: scheduling rewrites it)."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def main(probs: T.Buffer((T.int64(1), T.int64(6), T.int64(257), T.int64(257)), "float32"),
             padded: T.Buffer((T.int64(6), T.int64(260), T.int64(258)), "int16")):
        for i0, i1, i2 in T.grid(T.int64(6), T.int64(260), T.int64(258)):
            with T.sblock("PadInput"):
                v0, v1, v2 = T.axis.remap("SSS", [i0, i1, i2])
                # the reshape [1, 6, 257, 257] -> [6, 257, 257] as the build's TIR indexes it
                padded[v0, v1, v2] = T.if_then_else(
                    v1 < T.int64(257) and v2 < T.int64(257),
                    T.Cast("int16", T.max(T.min(T.round(
                        probs[T.int64(0), ((v2 // T.int64(257) + v1) // T.int64(257) + v0) % T.int64(6),
                              (v2 // T.int64(257) + v1) % T.int64(257), v2 % T.int64(257)]
                        / T.float32(3.0517578125e-05)), T.float32(32767)), T.float32(-32768))), T.int16(0))

    return main.with_attr("global_symbol", "main")


def fused_loop_schedule(target):
    from tvm import s_tir

    from tvmcomp.tune.default_schedules import _vector_lanes

    sch = s_tir.Schedule(quantize_pad())
    outer, inner = sch.split(sch.fuse(*sch.get_loops(sch.get_sblock("PadInput"))),
                             factors=[None, _vector_lanes(target, 16)])
    sch.vectorize(inner)
    sch.parallel(outer)
    return sch.mod


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import tvm

    from tvmcomp.targets import host_cpu
    from tvmcomp.tune.default_schedules import apply_default_schedules

    target = tvm.target.Target({"kind": "llvm", "mcpu": host_cpu()})
    probs = tvm.runtime.tensor(np.random.default_rng(0).random((1, 6, 257, 257), np.float32))
    schedules = {"fused loop (before)": fused_loop_schedule(target),
                 "rows kept whole (the rule now)": apply_default_schedules(tvm.IRModule({"main": quantize_pad()}), target)}
    rows, outputs = [], []
    for name, mod in schedules.items():
        lib = tvm.tirx.build(mod, target=target)
        out = tvm.runtime.tensor(np.zeros((6, 260, 258), np.int16))
        timer = lib.time_evaluator("main", tvm.cpu(), number=20, repeat=args.repeat)
        ms = float(np.median(timer(probs, out).results)) * 1e3
        outputs.append(out.numpy())
        rows.append(f"| {name} | {ms:.3f} |")
    if not np.array_equal(*outputs):
        raise SystemExit("the two schedules compute different codes")
    date = datetime.date.today().isoformat()
    text = "\n".join([f"# Elementwise kernel with straddling rows, default schedules ({host_cpu()}, {date})", "",
                      "bench/elementwise_rows.py: vit-s's attention probabilities [1, 6, 257, 257] float32 quantized "
                      "into the padded int16 P.V operand [6, 260, 258]; median of "
                      f"{args.repeat} x 20 calls, TVM's default threads; outputs equal.", "",
                      "| schedule | ms a call |", "|---|---:|", *rows]) + "\n"
    out_dir = REPO / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{date}-elementwise-rows.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
