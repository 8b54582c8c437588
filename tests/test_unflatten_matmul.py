import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

from tvmcomp.passes.unflatten_matmul import UnflattenMatmul


@tvm.script.ir_module
class Before:
    """A Linear and attention's two batched matmuls as torch.export writes them."""

    @R.function
    def main(x: R.Tensor((1, 5, 8), "float32"), w: R.Tensor((4, 8), "float32"), b: R.Tensor((4,), "float32"),
             q: R.Tensor((1, 2, 5, 3), "float32"), k: R.Tensor((1, 2, 3, 5), "float32")):
        with R.dataflow():
            flat = R.reshape(x, R.shape([5, 8]))
            wt = R.permute_dims(w, axes=[1, 0])
            y = R.matmul(flat, wt, out_dtype="float32")
            biased = R.add(b, y)
            linear = R.reshape(biased, R.shape([1, 5, 4]))
            q_same = R.broadcast_to(q, R.shape([1, 2, 5, 3]))
            q_flat = R.reshape(q_same, R.shape([2, 5, 3]))
            k_flat = R.reshape(k, R.shape([2, 3, 5]))
            scores = R.matmul(q_flat, k_flat, out_dtype="float32")
            attention = R.reshape(scores, R.shape([1, 2, 5, 5]))
            R.output(linear, attention)
        return (linear, attention)


@tvm.script.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((1, 5, 8), "float32"), w: R.Tensor((4, 8), "float32"), b: R.Tensor((4,), "float32"),
             q: R.Tensor((1, 2, 5, 3), "float32"), k: R.Tensor((1, 2, 3, 5), "float32")):
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            y = R.matmul(x, wt, out_dtype="float32")
            linear = R.add(b, y)
            attention = R.matmul(q, k, out_dtype="float32")
            R.output(linear, attention)
        return (linear, attention)


@tvm.script.ir_module
class Reordered:
    """Reshapes that move elements between the dimensions the matmul reads: nothing to undo."""

    @R.function
    def main(x: R.Tensor((2, 5, 8), "float32"), w: R.Tensor((8, 4), "float32"),
             a: R.Tensor((2, 3, 4), "float32"), c: R.Tensor((2, 6, 2), "float32")):
        with R.dataflow():
            flat = R.reshape(x, R.shape([10, 8]))
            y = R.matmul(flat, w, out_dtype="float32")
            regrouped = R.reshape(y, R.shape([5, 2, 4]))  # not the rows' own split
            a_flat = R.reshape(a, R.shape([2, 4, 3]))  # its last two dimensions regrouped
            c_flat = R.reshape(c, R.shape([2, 3, 4]))
            z = R.matmul(a_flat, c_flat, out_dtype="float32")
            out = R.reshape(z, R.shape([1, 2, 4, 4]))
            bigger = R.broadcast_to(w, R.shape([2, 8, 4]))
            R.output(regrouped, out, bigger)
        return (regrouped, out, bigger)


def test_matmuls_read_and_write_the_model_shapes():
    tvm.ir.assert_structural_equal(UnflattenMatmul()(Before), Expected)


def test_reshapes_that_regroup_what_the_matmul_reads_stay():
    tvm.ir.assert_structural_equal(UnflattenMatmul()(Reordered), Reordered)


def _run(mod, *args):
    executable = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    outputs = relax.VirtualMachine(executable, tvm.cpu())["main"](*(tvm.runtime.tensor(a) for a in args))
    return [o.numpy() for o in outputs]


def test_same_numbers_as_the_flattened_graph():
    rng = np.random.default_rng(0)
    args = [rng.standard_normal(shape).astype("float32") for shape in ((1, 5, 8), (4, 8), (4,), (1, 2, 5, 3), (1, 2, 3, 5))]
    x, w, b, q, k = args
    linear, attention = _run(UnflattenMatmul()(Before), *args)
    np.testing.assert_allclose(linear, x @ w.T + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(attention, q @ k, rtol=1e-5, atol=1e-5)
    for before, after in zip(_run(Before, *args), (linear, attention)):
        np.testing.assert_allclose(after, before, rtol=1e-6, atol=1e-6)
