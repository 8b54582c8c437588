"""The integer kernels of --integer-only (tvmcomp.quant.integer_kernels) against the float kernels they
replace, at MiniLM's shapes, on default schedules (what a build without records compiles): time per
call and max abs error against float64.

Cases: softmax over 12x128x128 scores (int32 codes at step 2^-10; i_softmax against TVM's
fast_softmax, the float build's), LayerNorm over 128x384 (int32 at 2^-15 against float layer_norm),
GELU over 128x1536 (an int32 accumulator at 2^-11 against tvmcomp's vectorized exact GELU).

Run: .venv/bin/python bench/integer_kernels.py [--threads 2]. Writes bench/results/<date>-integer-kernels.md.
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RNG = np.random.default_rng(0)
SCORE_STEP, STREAM_STEP, GELU_STEP = 2.0**-10, 2.0**-15, 2.0**-11


def _time(build, inputs, target, threads: int) -> tuple[float, np.ndarray]:
    """(ms a call, output) of the TE kernel ``build(*placeholders)``, default-scheduled."""
    import tvm
    from tvm import te

    from tvmcomp.tune.default_schedules import apply_default_schedules

    placeholders = [te.placeholder(x.shape, str(x.dtype)) for x in inputs]
    out = build(*placeholders)
    func = te.create_prim_func([*placeholders, out]).with_attr("global_symbol", "main")
    lib = tvm.compile(apply_default_schedules(tvm.IRModule({"main": func}), target), target=target)
    args = [tvm.runtime.tensor(x) for x in inputs]
    result = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], str(out.dtype)))
    tvm.get_global_func("runtime.config_threadpool")(1, threads)
    timer = lib.mod.time_evaluator("main", tvm.cpu(), number=50, repeat=7)
    ms = float(np.median(timer(*args, result).results)) * 1e3
    lib["main"](*args, result)
    return ms, result.numpy()


def softmax_case():
    from tvm import topi

    from tvmcomp.quant.integer_kernels import integer_softmax

    scores = RNG.normal(0, 3 / SCORE_STEP, (1, 12, 128, 128)).astype(np.int32)
    keep = np.ones((1, 1, 128, 128), bool)
    keep[..., 100:] = False  # padding
    logits = np.where(keep, scores * SCORE_STEP, -np.inf)
    exact = np.exp(logits - logits.max(-1, keepdims=True))
    exact /= exact.sum(-1, keepdims=True)
    masked = np.where(keep, scores * np.float32(SCORE_STEP), np.finfo(np.float32).min).astype(np.float32)
    return ("softmax 12x128x128, keys past 100 masked",
            (lambda s, k: integer_softmax(s, k, SCORE_STEP, 15), [scores, keep], 2.0**-15),
            (lambda x: topi.nn.fast_softmax(x, -1), [masked]), exact)


def layer_norm_case():
    from tvm import topi

    from tvmcomp.quant.integer_kernels import integer_layer_norm

    x = (RNG.normal(0, 1, (128, 384)) * RNG.uniform(0.2, 4, 384)).astype(np.float32)
    gamma, beta = RNG.uniform(0.5, 2, 384).astype(np.float32), RNG.uniform(-1, 1, 384).astype(np.float32)
    out_step = STREAM_STEP
    exact = (x - x.mean(-1, keepdims=True)) / x.astype(np.float64).std(-1, keepdims=True) * gamma + beta
    codes = np.round(x / STREAM_STEP).astype(np.int32)
    return ("LayerNorm 128x384",
            (integer_layer_norm, [codes, np.round(gamma / out_step).astype(np.int64),
                                  np.round(beta / out_step).astype(np.int64)], out_step),
            (lambda t, g, b: topi.nn.layer_norm(t, g, b, axis=[-1], epsilon=1e-12), [x, gamma, beta]), exact)


def gelu_case():
    from tvm import te, tirx

    from tvmcomp.passes.fast_gelu import erf_rational
    from tvmcomp.quant.integer_kernels import integer_gelu

    acc = RNG.normal(0, 2 / GELU_STEP, (128, 1536)).astype(np.int32)
    x = acc.astype(np.float64) * GELU_STEP
    exact = x * 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    no_shifts = np.zeros(1536, np.int32)  # every channel already on the kernel's step (pot8: shifts, here none)

    def float_gelu(t):  # the float build's GELU (tvmcomp.passes.fast_gelu)
        half, one, rsqrt2 = (tirx.const(v, "float32") for v in (0.5, 1.0, 0.7071067811865476))
        return te.compute(t.shape, lambda *i: half * t(*i) * (one + erf_rational(t(*i) * rsqrt2)), name="gelu")

    return ("GELU 128x1536",
            (lambda a, b, k: integer_gelu(a, b, None, k, GELU_STEP), [acc, np.zeros(1536, np.int32), no_shifts],
             GELU_STEP),
            (float_gelu, [x.astype(np.float32)]), exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from tvmcomp.targets import host_cpu, resolve_target

    target = resolve_target("x86").tvm_target()
    rows = []
    for name, (integer, integer_inputs, out_step), (floating, float_inputs), exact in (
            softmax_case(), layer_norm_case(), gelu_case()):
        integer_ms, integer_out = _time(integer, integer_inputs, target, args.threads)
        float_ms, float_out = _time(floating, float_inputs, target, args.threads)
        rows.append(f"| {name} | {integer_ms:.3f} | {float_ms:.3f} | {np.abs(integer_out * out_step - exact).max():.2e} "
                    f"| {np.abs(float_out - exact).max():.2e} |")
        print(rows[-1], flush=True)
    date = datetime.date.today().isoformat()
    text = "\n".join([
        f"# Integer kernels of --integer-only vs the float kernels they replace ({host_cpu()}, {args.threads} threads, "
        f"{date})", "",
        "bench/integer_kernels.py: one kernel each, MiniLM's shapes, default schedules, median of 7 x 50 calls.", "",
        "| kernel | integer ms | float ms | integer max abs error | float max abs error |",
        "|---|---:|---:|---:|---:|", *rows, ""])
    out = REPO / "bench" / "results" / f"{date}-integer-kernels.md"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
