import numpy as np
import tvm
from tvm import relax
from tvm.script import relax as R

from tvmcomp.passes.attention_mask import DropEmptyAttentionMasks


def _guarded(mask_kind: str) -> tvm.IRModule:
    """Scores plus a mask, under PyTorch's safe softmax as torch.export writes SDPA. ``mask_kind``:
    ``empty``, Hugging Face's mask of a ViT (``where(arange >= 0, 0, -inf)``: zeros computed at run
    time); ``causal`` (``-inf`` above the diagonal, computed the same way); ``finite`` (the lowest
    float above the diagonal); ``input`` (from the function's own padding mask)."""
    bb = relax.BlockBuilder()
    scores = relax.Var("scores", relax.TensorType((1, 2, 4, 4), "float32"))
    padding = relax.Var("padding", relax.TensorType((1, 1, 1, 4), "bool"))
    zero, neg_inf = relax.const(np.float32(0)), relax.const(np.float32("-inf"))
    with bb.function("main", [scores, padding]):
        with bb.dataflow():
            if mask_kind == "input":
                keep = padding
            else:
                rows = bb.emit(relax.op.expand_dims(relax.op.arange(0, 4, 1, "int64"), axis=[0, 1, 3]))
                cols = bb.emit(relax.op.reshape(relax.op.arange(0, 4, 1, "int64"), [1, 1, 1, 4]))
                keep = bb.emit(relax.op.broadcast_to(relax.op.greater_equal(rows, relax.const(0, "int64")), [1, 1, 4, 4])
                               if mask_kind == "empty" else relax.op.greater_equal(rows, cols))
            lowest = relax.const(np.finfo(np.float32).min) if mask_kind == "finite" else neg_inf
            mask = bb.emit(relax.op.where(keep, zero, lowest))
            masked = bb.emit(relax.op.add(scores, mask))
            probabilities = bb.emit(relax.op.nn.softmax(masked, axis=-1))
            live = bb.emit(relax.op.astype(relax.op.logical_not(relax.op.equal(masked, neg_inf)), "int8"))
            empty_row = bb.emit(relax.op.logical_not(relax.op.astype(relax.op.max(live, axis=[-1], keepdims=True), "bool")))
            zeros = bb.emit(relax.op.full_like(probabilities, zero))
            out = bb.emit_output(relax.op.where(empty_row, zeros, probabilities))
        bb.emit_func_output(out)
    return bb.get()


@tvm.script.ir_module
class Unmasked:
    @R.function
    def main(scores: R.Tensor((1, 2, 4, 4), "float32"), padding: R.Tensor((1, 1, 1, 4), "bool")):
        with R.dataflow():
            out = R.nn.softmax(scores, axis=-1)
            R.output(out)
        return out


def test_a_mask_of_zeros_and_its_guard_leave_the_graph():
    tvm.ir.assert_structural_equal(DropEmptyAttentionMasks()(_guarded("empty")), Unmasked)


def test_the_guard_stays_where_a_row_can_be_fully_masked():
    for kind in ("causal", "input"):
        before = _guarded(kind)
        tvm.ir.assert_structural_equal(DropEmptyAttentionMasks()(before), before)


def test_a_finite_mask_stays_and_its_guard_goes():
    after = DropEmptyAttentionMasks()(_guarded("finite")).script()
    assert after.count("R.nn.softmax") == 1 and after.count("R.where") == 1  # the mask's, not the guard's
    assert "R.max" not in after and "R.equal" not in after


def _run(mod, *args):
    executable = tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"}))
    return relax.VirtualMachine(executable, tvm.cpu())["main"](*(tvm.runtime.tensor(a) for a in args)).numpy()


def test_same_probabilities_as_the_guarded_softmax():
    scores = np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype("float32")
    padding = np.ones((1, 1, 1, 4), bool)
    expected = np.exp(scores - scores.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    for kind in ("empty", "finite"):
        before = _guarded(kind)
        after = _run(DropEmptyAttentionMasks()(before), scores, padding)
        np.testing.assert_allclose(after, _run(before, scores, padding), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(_run(DropEmptyAttentionMasks()(_guarded("empty")), scores, padding), expected,
                               rtol=1e-5, atol=1e-6)
