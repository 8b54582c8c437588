"""ONNX -> Relax through TVM's ONNX importer, after a small graph clean-up."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np

from ..errors import TvmcompError
from .model import ImportedModel, from_relax_with_weights

_ONNX_DTYPES = {1: "float32", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64", 2: "uint8", 3: "int8"}


def fold_constant_of_shape(model):
    """Replace ``ConstantOfShape`` nodes whose shape is a constant by a ``Constant`` node.

    The legacy TorchScript exporter emits them with a constant (often 0-d) shape; TVM's converter
    lowers them to ``broadcast_to`` of the 1-element ``value`` and fails when the shape has rank 0.
    """
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    consts = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                consts[node.output[0]] = numpy_helper.to_array(value.t)
    for index, node in enumerate(graph.node):
        if node.op_type != "ConstantOfShape" or node.input[0] not in consts:
            continue
        fill = next((numpy_helper.to_array(a.t) for a in node.attribute if a.name == "value"), np.zeros(1, np.float32))
        shape = [int(d) for d in consts[node.input[0]].reshape(-1)]
        tensor = numpy_helper.from_array(np.full(shape, fill.reshape(-1)[0], dtype=fill.dtype), node.output[0])
        graph.node[index].CopyFrom(onnx.helper.make_node("Constant", [], list(node.output), value=tensor, name=node.name))
    return model


def _graph_inputs(model) -> list[tuple[str, list, str]]:
    initializers = {init.name for init in model.graph.initializer}
    found = []
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        ttype = inp.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in ttype.shape.dim]
        found.append((inp.name, dims, _ONNX_DTYPES.get(ttype.elem_type, "float32")))
    return found


def from_onnx_file(path: Path, input_shapes: dict[str, list[int]] | None = None) -> ImportedModel:
    import onnx
    from tvm.relax.frontend.onnx import from_onnx

    try:
        model = onnx.load(str(path))
    except Exception as err:
        raise TvmcompError(f"{path} is not a readable ONNX file: {err}") from None
    if not model.graph.node or not model.graph.output:  # an empty file parses as an empty model
        raise TvmcompError(f"{path} is not a readable ONNX file: it holds no graph (no nodes or no outputs)")
    input_shapes = dict(input_shapes or {})
    graph_inputs = _graph_inputs(model)
    unknown = sorted(set(input_shapes) - {name for name, _, _ in graph_inputs})
    if unknown:
        raise TvmcompError(
            f"--input-shape names {unknown}, but the ONNX inputs are {sorted(name for name, _, _ in graph_inputs)}"
        )
    shape_dict, dtype_dict = {}, {}
    for name, dims, dtype in graph_inputs:
        shape = input_shapes.get(name, dims)
        if any(not isinstance(d, int) or d <= 0 for d in shape):
            raise TvmcompError(
                f"ONNX input '{name}' has dynamic shape {dims}; give it with --input-shape {name}=1,128"
            )
        shape_dict[name], dtype_dict[name] = list(shape), dtype
    model = fold_constant_of_shape(model)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            mod = from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict, keep_params_in_input=True)
    except Exception as err:
        failed = re.search(r"Error converting operator (\w+)", printed.getvalue())
        unsupported = re.search(r"not supported for frontend ONNX: (.*)", str(err))
        if unsupported:
            raise TvmcompError(f"{path}: ONNX operators not supported by the Relax importer: {unsupported.group(1)}") from None
        op = failed.group(1) if failed else "an operator"
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise TvmcompError(
            f"{path}: importing ONNX operator {op} failed ({reason}); "
            "if the file came from torch.onnx.export, re-export it with dynamo=True"
        ) from None
    return from_relax_with_weights(mod, [out.name for out in model.graph.output], str(path))
