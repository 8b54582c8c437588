"""The residual-stream rule, for ``--integer-only`` builds only (not registered: the pipeline adds it
to the rules it passes to Annotate and Realize). It marks each LayerNorm's input (role
``"stream"``, a site named after the LayerNorm's gamma) so that calibration observes the residual stream's range, and
realizes nothing: the LayerNorm stays as it is for :mod:`..integer_only` to rewrite.

A pre-LayerNorm encoder (ViT) adds every block's output to a stream that starts from the patch or
token embeddings, and no LayerNorm bounds it; its integer form needs a step that holds the largest
value calibration saw (:func:`stream_bound`). A post-LayerNorm encoder's stream is a LayerNorm's
output, bounded by its gamma and beta, and does not read it.
"""

from __future__ import annotations

from .registry import Operand, OpRule

STREAM_ROLE = "stream"


class ResidualStream(OpRule):
    name, ops, roles = "residual_stream", ("relax.nn.layer_norm",), (STREAM_ROLE,)

    def match(self, graph, call):
        gamma = call.args[1]
        return [Operand(0, gamma.name if hasattr(gamma, "name") else "layer_norm", STREAM_ROLE)]

    def realize(self, ctx, call, operands):
        return None


def stream_bound(sites, ranges) -> float | None:
    """The largest magnitude calibration saw at any ``stream`` site, or None where there is none."""
    bounds = [max(abs(ranges[site.index].lo), abs(ranges[site.index].hi)) for site in sites
              if site.role == STREAM_ROLE]
    return max(bounds) if bounds else None
