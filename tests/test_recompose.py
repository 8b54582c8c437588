import math

import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

from tvmcomp.passes.recompose import RecomposeNormAndGelu

EPSILON = float(np.float32(1e-6))  # the exported constant is float32


@tvm.script.ir_module
class Before:
    """A pre-LayerNorm block's LayerNorm and FFN activation as an opset-13 ONNX export spells them."""

    @R.function
    def main(x: R.Tensor((2, 5, 8), "float32"), gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32")):
        with R.dataflow():
            mean = R.mean(x, axis=[-1], keepdims=True)
            centred = R.subtract(x, mean)
            squares = R.power(centred, R.const(2.0, "float32"))
            variance = R.mean(squares, axis=[-1], keepdims=True)
            shifted = R.add(variance, R.const(1e-6, "float32"))
            std = R.sqrt(shifted)
            normalized = R.divide(centred, std)
            scaled = R.multiply(normalized, gamma)
            y = R.add(scaled, beta)
            a = R.divide(y, R.const(1.4142135381698608, "float32"))
            e = R.erf(a)
            e1 = R.add(e, R.const(1.0, "float32"))
            g = R.multiply(y, e1)
            out = R.multiply(g, R.const(0.5, "float32"))
            R.output(out)
        return out


@tvm.script.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((2, 5, 8), "float32"), gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32")):
        with R.dataflow():
            y = R.nn.layer_norm(x, gamma, beta, axes=[-1], epsilon=EPSILON)
            out = R.nn.gelu(y)
            R.output(out)
        return out


@tvm.script.ir_module
class OtherAxis:
    """Normalized over the middle axis, with the GELU's 0.5 a 0.25: neither is rewritten."""

    @R.function
    def main(x: R.Tensor((2, 5, 8), "float32"), gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32")):
        with R.dataflow():
            mean = R.mean(x, axis=[1], keepdims=True)
            centred = R.subtract(x, mean)
            squares = R.power(centred, R.const(2.0, "float32"))
            variance = R.mean(squares, axis=[1], keepdims=True)
            shifted = R.add(variance, R.const(1e-6, "float32"))
            std = R.sqrt(shifted)
            normalized = R.divide(centred, std)
            scaled = R.multiply(normalized, gamma)
            y = R.add(scaled, beta)
            a = R.divide(y, R.const(1.4142135381698608, "float32"))
            e = R.erf(a)
            e1 = R.add(e, R.const(1.0, "float32"))
            g = R.multiply(y, e1)
            out = R.multiply(g, R.const(0.25, "float32"))
            R.output(out)
        return out


def test_spelled_out_layer_norm_and_gelu_become_one_op_each():
    tvm.ir.assert_structural_equal(RecomposeNormAndGelu()(Before), Expected)


def test_other_axes_and_other_constants_are_left_alone():
    tvm.ir.assert_structural_equal(RecomposeNormAndGelu()(OtherAxis), OtherAxis)


def test_the_recomposed_ops_compute_what_the_spelled_out_ones_did():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 3, (2, 5, 8)).astype(np.float32)
    gamma, beta = rng.normal(1, 0.2, 8).astype(np.float32), rng.normal(0, 0.5, 8).astype(np.float32)

    def run(mod):
        executable = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
        vm = relax.VirtualMachine(executable, tvm.cpu())
        return vm["main"](*(tvm.runtime.tensor(a) for a in (x, gamma, beta))).numpy()

    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6) * gamma + beta
    expected = y * 0.5 * (1 + np.vectorize(math.erf)(y / math.sqrt(2)))
    np.testing.assert_allclose(run(Before), expected, atol=1e-5)
    np.testing.assert_allclose(run(RecomposeNormAndGelu()(Before)), expected, atol=1e-5)
