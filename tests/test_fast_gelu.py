import math

import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from tvmcomp.passes.fast_gelu import fast_gelu_legalize_map


@tvm.script.ir_module
class Gelu:
    @R.function
    def main(x: R.Tensor((64, 256), "float32")):
        with R.dataflow():
            y = R.nn.gelu(x)
            R.output(y)
        return y


@tvm.script.ir_module
class OnnxGelu:  # how ONNX exports spell GELU out
    @R.function
    def main(x: R.Tensor((64, 256), "float32")):
        with R.dataflow():
            e = R.erf(R.divide(x, R.const(1.4142135381698608, "float32")))
            y = R.multiply(R.multiply(x, R.add(e, R.const(1.0, "float32"))), R.const(0.5, "float32"))
            R.output(y)
        return y


def _legalized(mod=Gelu):
    return relax.transform.LegalizeOps(customize_legalize_map=fast_gelu_legalize_map())(mod)


def test_gelu_kernel_calls_no_erf():
    stock = relax.transform.LegalizeOps()(Gelu)
    assert "erf" in stock.script()  # the scalar libm call we replace
    fast = _legalized()
    assert "erf" not in fast["gelu"].script()
    assert len([gv for gv in fast.get_global_vars() if gv.name_hint != "main"]) == 1


@pytest.mark.parametrize("mod", [Gelu, OnnxGelu], ids=["gelu", "erf"])
def test_gelu_matches_exact_erf(mod):
    x = np.linspace(-10, 10, 64 * 256, dtype=np.float32).reshape(64, 256)
    exact = 0.5 * x.astype(np.float64) * (1 + np.vectorize(math.erf)(x.astype(np.float64) / math.sqrt(2)))
    executable = tvm.compile(_legalized(mod), target=tvm.target.Target({"kind": "llvm"}))
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    assert np.abs(got - exact).max() <= 2e-6  # |x| up to 10: a few float32 ulps
    near_zero = np.abs(x) < 3
    assert np.abs(got - exact)[near_zero].max() <= 5e-7


@pytest.mark.parametrize("mod", [Gelu, OnnxGelu], ids=["gelu", "erf"])
def test_gelu_kernel_is_vectorized(mod):
    target = tvm.target.Target({"kind": "llvm", "mcpu": "haswell"})  # AVX2: 8 x float32 per ymm register
    executable = tvm.compile(_legalized(mod), target=target)
    asm = executable.mod.imports[0].inspect_source("asm")
    assert "vdivps" in asm and "ymm" in asm
    assert "erff" not in asm
