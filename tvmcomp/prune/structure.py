"""The prunable structure of a BERT-class encoder: per layer, its attention heads and FFN neurons,
the Linears that hold them, and what each costs (Kwon et al. 2022's per-head and per-neuron MACs)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import TvmcompError


@dataclass
class EncoderLayer:
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
    """The structure of ``module``'s BERT-class encoder (``encoder.layer[i].attention.self.query``...,
    ``attention.output.LayerNorm``, as BERT, RoBERTa, MiniLM, ELECTRA name them); other models are
    refused with what is needed."""
    encoder = next((m for m in module.modules() if _bert_layers(m)), None)
    if encoder is None:
        raise TvmcompError("pruning needs a BERT-class PyTorch encoder (encoder.layer[i].attention.self.query/key/"
                           "value, attention.output.dense/LayerNorm, intermediate.dense, output.dense/LayerNorm: "
                           "BERT, RoBERTa, MiniLM); this model has none")
    layers = []
    for layer in encoder.layer:
        attention = layer.attention.self
        layers.append(EncoderLayer(attention.query, attention.key, attention.value, layer.attention.output.dense,
                                   layer.intermediate.dense, layer.output.dense, attention.attention_head_size,
                                   layer.attention.output.LayerNorm, layer.output.LayerNorm))
    return EncoderStructure(layers, layers[0].query.in_features)


def _bert_layers(module) -> bool:
    layers = getattr(module, "layer", None)
    if layers is None or not hasattr(layers, "__iter__"):
        return False
    return all(hasattr(l, "attention") and hasattr(getattr(l.attention, "self", None), "query")
               and hasattr(getattr(l.attention, "output", None), "LayerNorm") and hasattr(l, "intermediate")
               and hasattr(getattr(l, "output", None), "LayerNorm") for l in layers)
