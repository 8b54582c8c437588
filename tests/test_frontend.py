"""Importers reproduce the source model: max abs error <= 1e-4 against PyTorch on the same inputs."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from conftest import max_abs_diff, run_imported
from tvmcomp.errors import TvmcompError
from tvmcomp.frontend import import_file, import_torch
from tvmcomp.frontend.onnx_frontend import fold_constant_of_shape
from tvmcomp.frontend.torch_frontend import torch_reference

TOL = 1e-4


class Attention(torch.nn.Module):
    """A pre-LN Transformer block: LayerNorm, softmax attention with a mask, Linear, exact GELU."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(dim), torch.nn.LayerNorm(dim)
        self.qkv, self.proj = torch.nn.Linear(dim, 3 * dim), torch.nn.Linear(dim, dim)
        self.ffn = torch.nn.Sequential(torch.nn.Linear(dim, 4 * dim), torch.nn.GELU(), torch.nn.Linear(4 * dim, dim))

    def forward(self, x, mask):
        b, s, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).reshape(b, s, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5 + (1.0 - mask[:, None, None, :]) * -1e4
        x = x + self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, s, d))
        return x + self.ffn(self.ln2(x))


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.head = torch.nn.Linear(8, 5)

    def forward(self, image):
        return self.head(torch.relu(self.conv(image)).mean(dim=(2, 3)))


def attention_inputs():
    rng = np.random.default_rng(0)
    mask = np.ones((2, 16), np.float32)
    mask[1, 10:] = 0
    return {"x": rng.standard_normal((2, 16, 32)).astype(np.float32), "mask": mask}


def conv_inputs():
    return {"image": np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)}


@pytest.mark.parametrize("make_model, make_inputs", [(Attention, attention_inputs), (ConvNet, conv_inputs)])
def test_torch_import_matches_pytorch(make_model, make_inputs):
    torch.manual_seed(0)
    model, inputs = make_model().eval(), make_inputs()
    imported = import_torch(model, inputs)
    assert [s.name for s in imported.inputs] == list(inputs)
    assert max_abs_diff(run_imported(imported, inputs), torch_reference(model, inputs)) <= TOL


@pytest.mark.parametrize("make_model, make_inputs", [(Attention, attention_inputs), (ConvNet, conv_inputs)])
def test_onnx_import_matches_pytorch(tmp_path, make_model, make_inputs):
    torch.manual_seed(0)
    model, inputs = make_model().eval(), make_inputs()
    path = tmp_path / "model.onnx"
    torch.onnx.export(model, tuple(torch.from_numpy(v) for v in inputs.values()), str(path),
                      input_names=list(inputs), output_names=["out"], dynamo=True, verbose=False)
    imported = import_file(path)
    assert imported.outputs == ["out"]
    assert max_abs_diff(run_imported(imported, inputs), torch_reference(model, inputs)) <= TOL


def test_pt2_import_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model, inputs = ConvNet().eval(), conv_inputs()
    path = tmp_path / "convnet.pt2"
    torch.export.save(torch.export.export(model, (), {k: torch.from_numpy(v) for k, v in inputs.items()}), str(path))
    imported = import_file(path)
    assert max_abs_diff(run_imported(imported, inputs), torch_reference(model, inputs)) <= TOL


def _constant_of_shape_model(shape):
    """out = x + ConstantOfShape(shape, 2.0), the node the legacy TorchScript exporter emits."""
    shape_node = helper.make_node("Constant", [], ["shape"], value=helper.make_tensor("s", TensorProto.INT64, [len(shape)], shape))
    fill = helper.make_node("ConstantOfShape", ["shape"], ["filled"], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0]))
    add = helper.make_node("Add", ["x", "filled"], ["out"])
    graph = helper.make_graph(
        [shape_node, fill, add], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 3])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_fold_constant_of_shape_rewrites_to_constant():
    before = _constant_of_shape_model([])  # 0-d shape: what breaks TVM's converter
    after = fold_constant_of_shape(before)
    assert [n.op_type for n in after.graph.node] == ["Constant", "Constant", "Add"]
    folded = onnx.numpy_helper.to_array(after.graph.node[1].attribute[0].t)
    assert folded.shape == () and folded == 2.0


@pytest.mark.parametrize("shape", [[], [2, 3]])
def test_constant_of_shape_model_imports_and_runs(tmp_path, shape):
    path = tmp_path / "cos.onnx"
    onnx.save(_constant_of_shape_model(shape), str(path))
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    (out,) = run_imported(import_file(path), {"x": x})
    np.testing.assert_allclose(out, x + 2.0)


def test_onnx_unsupported_operator_is_named(tmp_path):
    node = helper.make_node("MyCustomOp", ["x"], ["out"], domain="com.example")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2])])
    path = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)]), str(path))
    with pytest.raises(TvmcompError, match="MyCustomOp"):
        import_file(path)


def test_onnx_dynamic_input_needs_a_shape(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["out"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(TvmcompError, match="--input-shape x="):
        import_file(path)
    imported = import_file(path, {"x": [3, 4]})
    assert imported.inputs[0].shape == (3, 4)
    with pytest.raises(TvmcompError, match="the ONNX inputs are"):
        import_file(path, {"y": [3, 4]})
