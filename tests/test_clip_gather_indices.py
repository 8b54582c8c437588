import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

from tvmcomp.passes.clip_gather_indices import ClipGatherIndices


@tvm.script.ir_module
class Before:
    @R.function
    def main(table: R.Tensor((10, 4), "float32"), ids: R.Tensor((3,), "int64")):
        with R.dataflow():
            rows = R.take(table, ids, axis=0, mode="fast")
            out = R.multiply(rows, R.const(2.0, "float32"))
            R.output(out)
        return out


@tvm.script.ir_module
class Expected:
    @R.function
    def main(table: R.Tensor((10, 4), "float32"), ids: R.Tensor((3,), "int64")):
        with R.dataflow():
            rows = R.take(table, ids, axis=0, mode="clip")
            out = R.multiply(rows, R.const(2.0, "float32"))
            R.output(out)
        return out


def test_fast_take_becomes_clip():
    tvm.ir.assert_structural_equal(ClipGatherIndices(Before), Expected)


def test_clip_take_is_left_alone():
    tvm.ir.assert_structural_equal(ClipGatherIndices(Expected), Expected)


def test_out_of_range_ids_are_clamped_not_read_out_of_bounds():
    executable = tvm.compile(ClipGatherIndices(Before), target=tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    table = np.arange(40, dtype=np.float32).reshape(10, 4)
    ids = np.array([1, 10**9, -5], dtype=np.int64)
    out = vm["main"](tvm.runtime.tensor(table), tvm.runtime.tensor(ids)).numpy()
    np.testing.assert_array_equal(out, 2 * table[[1, 9, 0]])
