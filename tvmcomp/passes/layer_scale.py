"""Fold a ViT's layer scale into the Linear before it.

CaiT, DINOv2 and the bundled vit-s multiply each block's output by a learned vector before the
residual add (``LayerScale``): ``(x @ W + b) * lambda``. That is the Linear with its output
channel ``n`` scaled::

    y = x @ W + b;   y * lambda          becomes          x @ (W lambda) + b lambda

with ``W lambda`` the weight's columns scaled (its rows, for a weight that is transposed in the
graph, as PyTorch's ``Linear`` stores it). The multiply leaves the graph, and with it a float
op on every residual branch; a quantized Linear then carries the scale in its per-channel weight
steps, so in pot8 (power-of-two steps everywhere) the branch's requantization onto the residual
stream is a shift again instead of a multiply (H-ViT folds it the same way). The values are the
same up to float rounding. The weights are the ImportedModel's parameters, so the pass takes
them: it rewrites the module and returns the folded weights, the scales' parameters dropped.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_op, rewrite_call, wildcard


def _uses(func: relax.Function) -> dict:
    """How many times each parameter of ``func`` is read."""
    counts: dict = {}

    def count(expr):
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    relax.analysis.post_order_visit(func.body, count)
    return counts


class FoldLayerScale:
    """``(x @ W + b) * lambda`` -> ``x @ (W lambda) + b lambda`` where ``W``, ``b`` and ``lambda`` are
    weights (``params``, by parameter name) read by this Linear only, ``lambda`` one value per output
    channel. Call with a module; :attr:`params` then holds the weights it needs."""

    def __init__(self, params: dict[str, np.ndarray]):
        self.params = dict(params)
        self.folded = 0

    def __call__(self, mod: tvm.IRModule) -> tvm.IRModule:
        func = mod["main"]
        uses, scales = _uses(func), {}
        x, weight, bias, scale = wildcard(), wildcard(), wildcard(), wildcard()
        transposed = is_op("relax.permute_dims")(weight)
        product = is_op("relax.matmul")(x, transposed | weight)  # transposed first: a wildcard takes anything
        linear = is_op("relax.add")(bias, product) | is_op("relax.add")(product, bias)
        # torch.export flattens a Linear's input to 2-D and reshapes its output back
        pattern = is_op("relax.multiply")(linear | is_op("relax.reshape")(linear, wildcard()), scale)

        def weight_of(var) -> np.ndarray | None:
            return self.params.get(var.name) if isinstance(var, relax.Var) and uses.get(var) == 1 else None

        def rewrite(call, matched):
            w, b, s = (weight_of(matched[p]) for p in (weight, bias, scale))
            width = int(call.ty.shape.values[-1])
            channel_axis = 0 if transposed in matched else 1
            # a reshape keeps every channel where both sides end in the channel axis
            if w is None or b is None or s is None or w.ndim != 2 or w.shape[channel_axis] != width \
                    or b.shape != (width,) or s.shape != (width,) or int(matched[product].ty.shape.values[-1]) != width:
                return call
            scales[matched[weight].name] = (np.expand_dims(s, 1 - channel_axis), matched[scale].name)
            scales[matched[bias].name] = (s, matched[scale].name)
            return call.args[0]

        body = rewrite_call(pattern, rewrite, func)
        dropped = {name for _, name in scales.values()}
        for name, (factor, _) in scales.items():
            self.params[name] = (self.params[name] * factor).astype(self.params[name].dtype)
        for name in dropped:
            del self.params[name]
        self.folded = len(dropped)
        kept = [var for var in body.params if var.name not in dropped]
        mod = mod.clone()
        mod["main"] = relax.Function(kept, body.body, body.ret_ty, body.is_pure, body.attrs, body.span)
        return mod
