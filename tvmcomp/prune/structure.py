"""The prunable structure of a BERT-class encoder: per layer, its attention heads and FFN neurons,
the Linears that hold them, and what each costs (Kwon et al. 2022's per-head and per-neuron MACs).

Where those Linears live in a layer is data (:data:`NAMINGS`), one entry per family of encoders
that name them alike."""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

from ..errors import TvmcompError


@dataclass(frozen=True)
class Naming:
    """Attribute paths, from one layer of the encoder's ``layers`` list, of what pruning slices and reads."""

    family: str  # the models that name their layers this way
    attention: str  # the self-attention module: it holds the Q, K, V projections and the head count
    query: str  # relative to ``attention``
    key: str
    value: str
    attention_out: str  # from the layer, as the rest
    attention_norm: str  # the LayerNorm that reads the attention block's output + its residual
    ffn_in: str
    ffn_out: str
    # the LayerNorm that reads the FFN block's output + its residual. None: a pre-LN encoder (ViT), where
    # that is the next layer's ``next_norm`` and, after the last layer, the model's ``final_norm``
    ffn_norm: str | None
    # an argument of the self-attention's forward holding a bias per head on axis 1 (MPNet's relative
    # position bias, computed once for all layers): sliced to the heads a layer keeps
    head_bias: str | None = None
    next_norm: str | None = None
    final_norm: str | None = None  # an attribute of the model module that holds the layers
    # modules after the attention and FFN output projections that scale each channel by their ``lambda1``
    # (CaiT / DINOv2 layer scale): folded into those projections before pruning (:func:`fold_layer_scales`)
    layer_scales: tuple[str, str] | None = None
    layers: str = "layer"  # the attribute of the encoder module that lists its layers


NAMINGS = (
    Naming("BERT, RoBERTa, MiniLM, ELECTRA", "attention.self", "query", "key", "value", "attention.output.dense",
           "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"),
    Naming("MPNet", "attention.attn", "q", "k", "v", "attention.attn.o", "attention.LayerNorm", "intermediate.dense",
           "output.dense", "output.LayerNorm", head_bias="position_bias"),
    Naming("DINOv2 (transformers 5)", "attention", "q_proj", "k_proj", "v_proj", "attention.o_proj", "norm2", "mlp.fc1",
           "mlp.fc2", None, next_norm="norm1", final_norm="layernorm", layer_scales=("layer_scale1", "layer_scale2")),
    Naming("ViT, DeiT (transformers 5)", "attention", "q_proj", "k_proj", "v_proj", "attention.o_proj",
           "layernorm_after", "mlp.fc1", "mlp.fc2", None, next_norm="layernorm_before", final_norm="layernorm",
           layers="layers"),
)


@dataclass
class EncoderLayer:
    attention: object  # the self-attention module
    query: object  # torch.nn.Linear [hidden -> heads * head_dim]
    key: object
    value: object
    attention_out: object  # [heads * head_dim -> hidden]
    ffn_in: object  # [hidden -> intermediate]
    ffn_out: object  # [intermediate -> hidden]
    head_dim: int
    # the LayerNorms that read attention_out's and ffn_out's output + the residual (in a pre-LN encoder,
    # the next block's input LayerNorm)
    attention_norm: object
    ffn_norm: object
    module: object  # the layer itself, in which ``naming``'s paths lead to the above
    naming: Naming

    @property
    def heads(self) -> int:
        return self.query.out_features // self.head_dim

    @property
    def neurons(self) -> int:
        return self.ffn_in.out_features


@dataclass
class EncoderStructure:
    layers: list[EncoderLayer]
    hidden: int

    def head_macs(self, seq_len: int) -> int:
        """Multiply-adds per token of one head: its Q, K, V and output projections, its scores and context."""
        head_dim = self.layers[0].head_dim
        return 4 * self.hidden * head_dim + 2 * seq_len * head_dim

    def neuron_macs(self) -> int:
        """Multiply-adds per token of one FFN neuron: its row of the up and column of the down projection."""
        return 2 * self.hidden

    def macs(self, seq_len: int, heads: list[int] | None = None, neurons: list[int] | None = None) -> int:
        """The encoder's multiply-adds per token with the given heads and neurons per layer (default: its own)."""
        heads = heads if heads is not None else [layer.heads for layer in self.layers]
        neurons = neurons if neurons is not None else [layer.neurons for layer in self.layers]
        return sum(heads) * self.head_macs(seq_len) + sum(neurons) * self.neuron_macs()


def encoder_structure(module) -> EncoderStructure:
    """The structure of ``module``'s encoder (a module with a ``layer`` list named as one of
    :data:`NAMINGS`); other models are refused with what is needed."""
    for naming in NAMINGS:
        encoder = next((m for m in module.modules() if _named(m, naming)), None)
        if encoder is not None:
            modules = getattr(encoder, naming.layers)
            layers = [_layer(layer, naming) for layer in modules]
            if naming.ffn_norm is None:
                owner = next(m for m in module.modules()
                             if hasattr(m, naming.final_norm) and any(x is encoder for x in m.modules()))
                norms = [attrgetter(naming.next_norm)(layer) for layer in modules[1:]]
                for layer, norm in zip(layers, norms + [attrgetter(naming.final_norm)(owner)]):
                    layer.ffn_norm = norm
            return EncoderStructure(layers, layers[0].query.in_features)
    paths = "; ".join(f"{n.family}: {n.attention}.{n.query}/{n.key}/{n.value}, {n.attention_out}, {n.ffn_in}, "
                      f"{n.ffn_out}" for n in NAMINGS)
    raise TvmcompError(f"pruning needs a BERT-class or ViT PyTorch encoder whose layers hold ({paths}); "
                       "this model has none")


def _layer(layer, naming: Naming) -> EncoderLayer:
    attention = attrgetter(naming.attention)(layer)
    query, key, value = (getattr(attention, name) for name in (naming.query, naming.key, naming.value))
    attention_out, attention_norm, ffn_in, ffn_out = attrgetter(
        naming.attention_out, naming.attention_norm, naming.ffn_in, naming.ffn_out)(layer)
    ffn_norm = attrgetter(naming.ffn_norm)(layer) if naming.ffn_norm else None  # pre-LN: set by the caller
    head_dim = getattr(attention, "attention_head_size", None) or attention.head_dim
    return EncoderLayer(attention, query, key, value, attention_out, ffn_in, ffn_out, head_dim,
                        attention_norm, ffn_norm, layer, naming)


def fold_layer_scales(structure: EncoderStructure) -> None:
    """``(x W^T + b) * lambda`` -> ``x (lambda W)^T + lambda b`` and ``lambda`` = 1, in place: the same
    function, with each output projection's result added to the residual as it is, as mask tuning
    and the block's removal assume."""
    import torch

    for layer in structure.layers:
        if layer.naming.layer_scales is None:  # the family has none
            continue
        for linear, path in zip((layer.attention_out, layer.ffn_out), layer.naming.layer_scales):
            scale = attrgetter(path)(layer.module).lambda1
            with torch.no_grad():
                linear.weight.mul_(scale[:, None])
                if linear.bias is not None:
                    linear.bias.mul_(scale)
                scale.fill_(1.0)


def _named(module, naming: Naming) -> bool:
    layers = getattr(module, naming.layers, None)
    if layers is None or not hasattr(layers, "__iter__"):
        return False
    paths = [f"{naming.attention}.{naming.query}", naming.attention_out, naming.attention_norm, naming.ffn_in,
             naming.ffn_out, naming.ffn_norm or naming.next_norm]
    try:
        return all(attrgetter(path)(layer) is not None for layer in layers for path in paths)
    except AttributeError:
        return False
