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
    """Attribute paths, from one layer of ``encoder.layer``, of what pruning slices and reads."""

    family: str  # the models that name their layers this way
    attention: str  # the self-attention module: it holds the Q, K, V projections and the head count
    query: str  # relative to ``attention``
    key: str
    value: str
    attention_out: str  # from the layer, as the rest
    attention_norm: str
    ffn_in: str
    ffn_out: str
    ffn_norm: str
    # an argument of the self-attention's forward holding a bias per head on axis 1 (MPNet's relative
    # position bias, computed once for all layers): sliced to the heads a layer keeps
    head_bias: str | None = None


NAMINGS = (
    Naming("BERT, RoBERTa, MiniLM, ELECTRA", "attention.self", "query", "key", "value", "attention.output.dense",
           "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm"),
    Naming("MPNet", "attention.attn", "q", "k", "v", "attention.attn.o", "attention.LayerNorm", "intermediate.dense",
           "output.dense", "output.LayerNorm", head_bias="position_bias"),
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
    # the LayerNorms after attention_out and ffn_out: each normalizes its Linear's output + the residual
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
            layers = [_layer(layer, naming) for layer in encoder.layer]
            return EncoderStructure(layers, layers[0].query.in_features)
    paths = "; ".join(f"{n.family}: {n.attention}.{n.query}/{n.key}/{n.value}, {n.attention_out}, {n.ffn_in}, "
                      f"{n.ffn_out}" for n in NAMINGS)
    raise TvmcompError(f"pruning needs a BERT-class PyTorch encoder whose layers (encoder.layer[i]) hold ({paths}); "
                       "this model has none")


def _layer(layer, naming: Naming) -> EncoderLayer:
    attention = attrgetter(naming.attention)(layer)
    query, key, value = (getattr(attention, name) for name in (naming.query, naming.key, naming.value))
    attention_out, attention_norm, ffn_in, ffn_out, ffn_norm = attrgetter(
        naming.attention_out, naming.attention_norm, naming.ffn_in, naming.ffn_out, naming.ffn_norm)(layer)
    return EncoderLayer(attention, query, key, value, attention_out, ffn_in, ffn_out, attention.attention_head_size,
                        attention_norm, ffn_norm, layer, naming)


def _named(module, naming: Naming) -> bool:
    layers = getattr(module, "layer", None)
    if layers is None or not hasattr(layers, "__iter__"):
        return False
    paths = [f"{naming.attention}.{naming.query}", naming.attention_out, naming.attention_norm, naming.ffn_in,
             naming.ffn_out, naming.ffn_norm]
    try:
        return all(attrgetter(path)(layer) is not None for layer in layers for path in paths)
    except AttributeError:
        return False
