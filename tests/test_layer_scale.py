import numpy as np
import pytest
import tvm
from tvm import relax
from tvm.script import relax as R

from tvmcomp.passes.layer_scale import FoldLayerScale

RNG = np.random.default_rng(0)
PARAMS = {"w": RNG.normal(size=(8, 4)).astype("float32"), "b": RNG.normal(size=4).astype("float32"),
          "scale": np.array([0.5, -2.0, 0.1, 3.0], "float32")}


@tvm.script.ir_module
class Before:
    @R.function
    def main(x: R.Tensor((3, 8), "float32"), w: R.Tensor((8, 4), "float32"), b: R.Tensor((4,), "float32"),
             scale: R.Tensor((4,), "float32")):
        with R.dataflow():
            y = R.add(b, R.matmul(x, w))
            out = R.multiply(y, scale)
            R.output(out)
        return out


@tvm.script.ir_module
class Expected:
    @R.function
    def main(x: R.Tensor((3, 8), "float32"), w: R.Tensor((8, 4), "float32"), b: R.Tensor((4,), "float32")):
        with R.dataflow():
            out = R.add(b, R.matmul(x, w))
            R.output(out)
        return out


@tvm.script.ir_module
class TorchBefore:  # torch.export's Linear: the weight [N, K] transposed, the input flattened and the output reshaped
    @R.function
    def main(x: R.Tensor((1, 3, 8), "float32"), w: R.Tensor((4, 8), "float32"), b: R.Tensor((4,), "float32"),
             scale: R.Tensor((4,), "float32")):
        with R.dataflow():
            y = R.add(R.matmul(R.reshape(x, (3, 8)), R.permute_dims(w, axes=[1, 0])), b)
            out = R.multiply(R.reshape(y, (1, 3, 4)), scale)
            R.output(out)
        return out


@tvm.script.ir_module
class TorchExpected:
    @R.function
    def main(x: R.Tensor((1, 3, 8), "float32"), w: R.Tensor((4, 8), "float32"), b: R.Tensor((4,), "float32")):
        with R.dataflow():
            out = R.reshape(R.add(R.matmul(R.reshape(x, (3, 8)), R.permute_dims(w, axes=[1, 0])), b), (1, 3, 4))
            R.output(out)
        return out


@tvm.script.ir_module
class SharedWeight:  # w is read twice: scaling it would change the other product
    @R.function
    def main(x: R.Tensor((3, 8), "float32"), w: R.Tensor((8, 4), "float32"), b: R.Tensor((4,), "float32"),
             scale: R.Tensor((4,), "float32")):
        with R.dataflow():
            out = R.add(R.multiply(R.add(b, R.matmul(x, w)), scale), R.matmul(x, w))
            R.output(out)
        return out


def _normalized(mod):
    return relax.transform.Normalize()(mod)


@pytest.mark.parametrize("before, expected, torch_layout", [(Before, Expected, False),
                                                            (TorchBefore, TorchExpected, True)])
def test_layer_scale_goes_into_the_linear_weight_and_bias(before, expected, torch_layout):
    params = dict(PARAMS, w=PARAMS["w"].T.copy() if torch_layout else PARAMS["w"])
    fold = FoldLayerScale(params)
    tvm.ir.assert_structural_equal(fold(_normalized(before)), _normalized(expected))
    assert sorted(fold.params) == ["b", "w"] and fold.folded == 1
    # output channel n of the weight (its column, or its row where the graph transposes it) times scale[n]
    want = (PARAMS["w"] * PARAMS["scale"][None, :]).T if torch_layout else PARAMS["w"] * PARAMS["scale"][None, :]
    np.testing.assert_array_equal(fold.params["w"], want)
    np.testing.assert_array_equal(fold.params["b"], PARAMS["b"] * PARAMS["scale"])
    assert params["w"] is not fold.params["w"]  # the caller's weights are left as they were


def test_a_weight_read_elsewhere_is_not_folded():
    fold = FoldLayerScale(PARAMS)
    tvm.ir.assert_structural_equal(fold(_normalized(SharedWeight)), _normalized(SharedWeight))
    assert fold.folded == 0 and sorted(fold.params) == ["b", "scale", "w"]


def test_the_folded_linear_computes_what_the_scaled_one_did():
    x = RNG.normal(size=(3, 8)).astype("float32")
    want = (x @ PARAMS["w"] + PARAMS["b"]) * PARAMS["scale"]
    fold = FoldLayerScale(PARAMS)
    mod = fold(_normalized(Before))
    executable = tvm.compile(mod, tvm.target.Target({"kind": "llvm"}))
    vm = relax.VirtualMachine(executable, tvm.cpu())
    got = vm["main"](*(tvm.runtime.tensor(v) for v in (x, fold.params["w"], fold.params["b"]))).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_an_imported_dinov2_keeps_no_layer_scale(tmp_path):
    from models_for_tests import save_tiny_vit
    from tvmcomp.source import load_source

    imported = load_source(str(save_tiny_vit(tmp_path / "dinov2", "dinov2"))).imported
    assert not [name for name in imported.params if "lambda" in name]
    assert "lambda" not in imported.mod["main"].script()
