"""Annotate -> calibrate -> realize on small graphs: structure, exact integer numerics, errors."""

import numpy as np
import pytest
import torch
import tvm
from tvm import relax
from tvm.script import relax as R

from conftest import run_imported
from tvmcomp.errors import TvmcompError
from tvmcomp.frontend import TensorSpec, import_torch
from tvmcomp.quant.annotate import annotate, quant_sites
from tvmcomp.quant.calibrate import SiteRange, calibrate
from tvmcomp.quant.dot_kernels import DotKernel, pack_weight
from tvmcomp.quant.realize import quantize_weight, realize
from tvmcomp.quant.schemes import get_scheme

INT8 = get_scheme("int8")


@tvm.script.ir_module
class Linear:
    @R.function
    def main(x: R.Tensor((2, 8), "float32"), w: R.Tensor((16, 8), "float32"), b: R.Tensor((16,), "float32")):
        R.func_attr({"num_input": 1})
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            y = R.matmul(x, wt, out_dtype="float32")
            z = R.add(b, y)
            R.output(z)
        return z


@tvm.script.ir_module
class LinearAnnotated:
    @R.function
    def main(x: R.Tensor((2, 8), "float32"), w: R.Tensor((16, 8), "float32"), b: R.Tensor((16,), "float32")):
        R.func_attr({"num_input": 1, "tvmcomp.quant_sites": ["w:T"]})
        with R.dataflow():
            wt = R.permute_dims(w, axes=[1, 0])
            xs = R.call_pure_packed("tvmcomp.quant_site", x, R.prim_value(0), ty_args=(R.Tensor((2, 8), dtype="float32"),))
            y = R.matmul(xs, wt, out_dtype="float32")
            z = R.add(b, y)
            R.output(z)
        return z


def test_annotate_marks_the_linear_activation():
    tvm.ir.assert_structural_equal(annotate(Linear, ["w", "b"]), LinearAnnotated)
    assert [(s.weight, s.transposed) for s in quant_sites(LinearAnnotated)] == [("w", True)]


def test_annotate_skips_by_weight_name_and_ignores_activation_matmuls():
    assert quant_sites(annotate(Linear, ["w", "b"], skip=["w"])) == []
    assert quant_sites(annotate(Linear, [])) == []  # w is not a weight: x @ w.T is left in float


def _linear_params(seed=0):
    rng = np.random.default_rng(seed)
    return {"w": rng.standard_normal((16, 8)).astype(np.float32), "b": rng.standard_normal(16).astype(np.float32)}


def test_realize_emits_u8_s8_s32_integer_matmul():
    params, ranges = _linear_params(), {0: SiteRange(scale=0.02, zero_point=131, lo=-2.6, hi=2.5)}
    realized = realize(LinearAnnotated, params, ranges, INT8)
    text = realized["main"].script()
    assert "call_pure_packed" not in text and "tvmcomp.quant_sites" not in text
    calls = [b.value for b in realized["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    ops = [c.op.name for c in calls]
    assert ops == ["relax.quantize", "relax.matmul", "relax.subtract", "relax.astype", "relax.multiply", "relax.add"]
    matmul = calls[1]
    assert str(matmul.args[0].ty.dtype) == "uint8" and str(matmul.args[1].value.dtype) == "int8"
    assert str(matmul.attrs.out_dtype) == "int32"
    wq, w_scale = quantize_weight(params["w"].T, INT8)
    np.testing.assert_array_equal(matmul.args[1].value.numpy(), wq)
    np.testing.assert_array_equal(calls[2].args[1].value.numpy(), 131 * wq.astype(np.int32).sum(axis=0))
    np.testing.assert_array_equal(calls[4].args[1].value.numpy(), (np.float32(0.02) * w_scale).astype(np.float32))


VNNI = DotKernel("avx512vnni", "dot_16x4_vnni", (16, 4), "uint8")
SDOT = DotKernel("dotprod", "dot_4x4_i8i8s32_sdot", (4, 4), "int8")


def test_realize_packs_weights_for_the_targets_dot_kernel():
    params, ranges = _linear_params(), {0: SiteRange(scale=0.02, zero_point=131, lo=-2.6, hi=2.5)}
    realized = realize(LinearAnnotated, params, ranges, INT8, SDOT)
    calls = [b.value for b in realized["main"].body.blocks[0].bindings if isinstance(b.value, relax.Call)]
    assert [c.op.name for c in calls] == ["relax.quantize", "relax.call_tir", "relax.subtract", "relax.astype",
                                          "relax.multiply", "relax.add"]
    quantize, matmul = calls[0], calls[1]
    # sdot multiplies s8 x s8: the uint8 codes and zero point move down by 128 together
    assert str(quantize.attrs.out_dtype) == "int8"
    np.testing.assert_array_equal(quantize.args[2].value.numpy(), np.full(8, 131 - 128))
    wq, _ = quantize_weight(params["w"].T, INT8)
    packed = matmul.args[1].fields[1].value.numpy()
    assert packed.shape == (4, 2, 4, 4) and packed.dtype == np.int8
    np.testing.assert_array_equal(packed, pack_weight(wq, (4, 4)))
    np.testing.assert_array_equal(calls[2].args[1].value.numpy(), 3 * wq.astype(np.int32).sum(axis=0))


@pytest.mark.parametrize("kernel", [None, VNNI, SDOT], ids=["plain", "vnni-layout", "sdot-layout"])
def test_realized_linear_matches_the_numpy_integer_reference_exactly(kernel):
    params, ranges = _linear_params(1), {0: SiteRange(scale=0.021, zero_point=120, lo=-2.5, hi=2.8)}
    x = np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32) * 1.5  # some values clip
    realized = realize(LinearAnnotated, params, ranges, INT8, kernel)
    target = tvm.target.Target({"kind": "llvm"})
    executable = tvm.compile(relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized), target=target)
    got = relax.VirtualMachine(executable, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()

    act = INT8.activation
    xq = act.quantize(x, np.float32(0.021), 120)
    wq, w_scale = quantize_weight(params["w"].T, INT8)
    acc = xq.astype(np.int32) @ wq.astype(np.int32) - 120 * wq.astype(np.int32).sum(axis=0)
    want = acc.astype(np.float32) * (np.float32(0.021) * w_scale).astype(np.float32) + params["b"]
    np.testing.assert_array_equal(got, want)


class TwoLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(32, 64), torch.nn.Linear(64, 16)

    def forward(self, x):
        return self.b(torch.nn.functional.gelu(self.a(x)))


def _samples(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(n)]


def test_calibrated_int8_model_stays_close_to_float():
    torch.manual_seed(0)
    model, calibration, held_out = TwoLayer().eval(), _samples(16), _samples(4, seed=99)
    imported = import_torch(model, calibration[0])
    annotated = annotate(imported.mod, imported.params)
    ranges = calibrate(annotated, imported.params, imported.inputs, calibration, INT8)
    assert sorted(ranges) == [0, 1] and ranges[1].lo >= -0.2  # GELU output: nearly non-negative
    imported.mod = realize(annotated, imported.params, ranges, INT8)
    for sample in held_out:
        (got,) = run_imported(imported, sample)
        want = model(torch.from_numpy(sample["x"])).detach().numpy()
        assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()
        cosine = (got * want).sum() / np.linalg.norm(got) / np.linalg.norm(want)
        assert cosine > 0.999


def test_calibration_errors():
    specs = [TensorSpec("x", (2, 8), "float32")]
    params = _linear_params()
    with pytest.raises(TvmcompError, match=r"input 'x' is float64\[2, 8\], the model takes float32\[2, 8\]"):
        calibrate(LinearAnnotated, params, specs, [{"x": np.zeros((2, 8))}], INT8)
    with pytest.raises(TvmcompError, match=r"input 'x' is float32\[3, 8\]"):
        calibrate(LinearAnnotated, params, specs, [{"x": np.zeros((3, 8), np.float32)}], INT8)
    with pytest.raises(TvmcompError, match="has no input 'x'"):
        calibrate(LinearAnnotated, params, specs, [{"y": np.zeros((2, 8), np.float32)}], INT8)
    with pytest.raises(TvmcompError, match="nothing to quantize"):
        calibrate(Linear, params, specs, [{"x": np.zeros((2, 8), np.float32)}], INT8)
