"""The imported model: a Relax module, its weights, and the names/shapes of its inputs and outputs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, doc: dict) -> "TensorSpec":
        return cls(doc["name"], tuple(doc["shape"]), doc["dtype"])


@dataclass
class ImportedModel:
    """``mod["main"](*inputs, *params.values())`` computes the outputs of the source model."""

    mod: object  # tvm.IRModule
    params: dict[str, np.ndarray]
    inputs: list[TensorSpec]
    outputs: list[str]
    source: str = ""
    meta: dict = field(default_factory=dict)

    def bound(self):
        """The module with the weights bound as constants: what gets compiled."""
        import tvm
        from tvm import relax

        if not self.params:
            return self.mod
        consts = {name: tvm.runtime.tensor(value) for name, value in self.params.items()}
        return relax.transform.BindParams("main", consts)(self.mod)


def from_relax_with_weights(mod, output_names: list[str], source: str) -> ImportedModel:
    """Split a freshly imported module (weights as trailing ``main`` params) into an ImportedModel,
    with the LayerNorms and GELUs an exporter spelled out as single ops (:mod:`..passes.recompose`),
    the reshapes torch.export wraps around matmuls undone (:mod:`..passes.unflatten_matmul`), masks
    that mask nothing dropped (:mod:`..passes.attention_mask`) and a ViT's layer scales folded into
    the Linears before them (:mod:`..passes.layer_scale`)."""
    import tvm
    from tvm import relax

    from ..passes.attention_mask import DropEmptyAttentionMasks
    from ..passes.layer_scale import FoldLayerScale
    from ..passes.recompose import RecomposeNormAndGelu
    from ..passes.unflatten_matmul import UnflattenMatmul

    canonical = tvm.transform.Sequential([RecomposeNormAndGelu(), UnflattenMatmul(), DropEmptyAttentionMasks()])
    mod, weights = relax.frontend.detach_params(canonical(mod))
    func = mod["main"]
    weight_values = weights.get("main", [])
    n_inputs = len(func.params) - len(weight_values)
    fold = FoldLayerScale({var.name: value.numpy() for var, value in zip(func.params[n_inputs:], weight_values)})
    mod = fold(mod)
    return ImportedModel(mod=mod, params=fold.params, inputs=input_specs_of(func)[:n_inputs], outputs=list(output_names),
                         source=source)


def input_specs_of(func) -> list[TensorSpec]:
    """TensorSpecs of a Relax function's parameters (all must have static shapes)."""
    specs = []
    for var in func.params:
        shape = tuple(int(d) for d in var.ty.shape.values)
        specs.append(TensorSpec(var.name, shape, str(var.ty.dtype)))
    return specs
