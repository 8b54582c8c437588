import math

import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

from tvmcomp.passes.recompose import RecomposeNormAndGelu

EPSILON = float(np.float32(1e-6))  # the exported constant is float32


def _spelled_out(axis: int, half: float, divide: bool = True) -> tvm.IRModule:
    """A pre-LayerNorm block's LayerNorm (over ``axis``) and FFN activation (``y * (erf(y / sqrt 2) + 1)
    * half``) as an opset-13 ONNX export spells them; with ``divide`` False, as other exporters do:
    times ``rsqrt`` of the variance, ``erf(y * (1 / sqrt 2))``."""
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 5, 8), "float32"))
    gamma, beta = (relax.Var(name, relax.TensorType((8,), "float32")) for name in ("gamma", "beta"))

    def const(value):
        return relax.const(np.float32(value))

    with bb.function("main", [x, gamma, beta]):
        with bb.dataflow():
            centred = bb.emit(relax.op.subtract(x, bb.emit(relax.op.mean(x, axis=[axis], keepdims=True))))
            variance = bb.emit(relax.op.mean(bb.emit(relax.op.power(centred, const(2.0))), axis=[axis], keepdims=True))
            shifted = bb.emit(relax.op.add(variance, const(1e-6)))
            normalized = relax.op.divide(centred, bb.emit(relax.op.sqrt(shifted))) if divide else \
                relax.op.multiply(centred, bb.emit(relax.op.rsqrt(shifted)))
            y = bb.emit(relax.op.add(bb.emit(relax.op.multiply(bb.emit(normalized), gamma)), beta))
            scaled = relax.op.divide(y, const(math.sqrt(2))) if divide else relax.op.multiply(y, const(1 / math.sqrt(2)))
            erf = bb.emit(relax.op.erf(bb.emit(scaled)))
            gelu = bb.emit(relax.op.multiply(bb.emit(relax.op.multiply(y, bb.emit(relax.op.add(erf, const(1.0))))),
                                             const(half)))
            out = bb.emit_output(gelu)
        bb.emit_func_output(out)
    return bb.get()


Before = _spelled_out(axis=-1, half=0.5)
OtherAxis = _spelled_out(axis=1, half=0.25)  # normalized over the middle axis, the GELU's 0.5 a 0.25


@tvm.script.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((2, 5, 8), "float32"), gamma: R.Tensor((8,), "float32"), beta: R.Tensor((8,), "float32")):
        with R.dataflow():
            y = R.nn.layer_norm(x, gamma, beta, axes=[-1], epsilon=EPSILON)
            out = R.nn.gelu(y)
            R.output(out)
        return out


def test_spelled_out_layer_norm_and_gelu_become_one_op_each():
    tvm.ir.assert_structural_equal(RecomposeNormAndGelu()(Before), Expected)
    tvm.ir.assert_structural_equal(RecomposeNormAndGelu()(_spelled_out(axis=-1, half=0.5, divide=False)), Expected)


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
    for spelled_out in (Before, _spelled_out(axis=-1, half=0.5, divide=False)):
        np.testing.assert_allclose(run(spelled_out), expected, atol=1e-5)
        np.testing.assert_allclose(run(RecomposeNormAndGelu()(spelled_out)), expected, atol=1e-5)
