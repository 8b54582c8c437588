"""Exact GELU on MiniLM's FFN activation (128x1536 fp32): TVM's stock lowering (libm erf) vs
tvmcomp's rational-erf lowering, untuned, on this machine; plus the max abs error vs exact erf.

Run: .venv/bin/python bench/gelu.py. Writes bench/results/<date>-gelu.md.
"""

from __future__ import annotations

import datetime
import math
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    import tvm
    from tvm import relax
    from tvm.script import relax as R

    from tvmcomp.passes.fast_gelu import fast_gelu_legalize_map
    from tvmcomp.targets import resolve_target

    @tvm.script.ir_module
    class Gelu:
        @R.function
        def main(x: R.Tensor((128, 1536), "float32")):
            with R.dataflow():
                y = R.nn.gelu(x)
                R.output(y)
            return y

    target = resolve_target("x86")
    x = np.linspace(-8, 8, 128 * 1536, dtype=np.float32).reshape(128, 1536)
    exact = 0.5 * x.astype(np.float64) * (1 + np.vectorize(math.erf)(x.astype(np.float64) / math.sqrt(2)))
    rows = []
    for name, legalize in (("TVM stock (libm erf)", None), ("tvmcomp rational erf", fast_gelu_legalize_map())):
        mod = relax.transform.LegalizeOps(customize_legalize_map=legalize)(Gelu)
        vm = relax.VirtualMachine(tvm.compile(mod, target=target.tvm_target()), tvm.cpu())
        xt = tvm.runtime.tensor(x)
        error = float(np.abs(vm["main"](xt).numpy() - exact).max())
        median_ms = vm.time_evaluator("main", tvm.cpu(), number=20, repeat=5)(xt).median * 1e3
        rows.append(f"| {name} | {median_ms:.3f} | {error:.1e} |")
    date = datetime.date.today().isoformat()
    text = "\n".join([f"# Exact GELU 128x1536 fp32, untuned, {target.schedule_key}, {date}", "",
                      "| lowering | median ms | max abs error vs exact |", "|---|---:|---:|", *rows]) + "\n"
    (REPO / "bench" / "results" / f"{date}-gelu.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
