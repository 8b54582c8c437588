"""Which operand to narrow to 7 bits for AVX2's vpmaddubsw: weights or activations.

vpmaddubsw sums two u8 x s8 products in int16, which overflows for 8-bit operands on both sides
(2 x 255 x 127 = 64770). One side must lose a bit. This script simulates each choice on MiniLM
in PyTorch (quantize-dequantize of every Linear's weight, per output channel, and input, per
tensor with min-max ranges from the 32 calibration sentences tvmcomp uses) and scores it with
tvmcomp's accuracy measures against the float model. A simulation, not a deliverable: it only
decides which bit the integer kernel gives up.

Run: .venv/bin/python bench/int8_narrowing.py
Writes bench/results/<date>-int8-narrowing.md.
"""

from __future__ import annotations

import copy
import datetime
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CHOICES = [(8, 8), (7, 8), (8, 7)]  # (weight bits, activation bits)


def activation_ranges(model, samples) -> dict:
    import torch

    ranges = {}

    def observe(layer, inputs):
        lo, hi = ranges.get(layer, (0.0, 0.0))  # ranges always include 0, as the scheme's do
        ranges[layer] = (min(lo, inputs[0].min().item()), max(hi, inputs[0].max().item()))

    hooks = [m.register_forward_pre_hook(observe) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.inference_mode():
        for sample in samples:
            model(**{k: torch.from_numpy(v) for k, v in sample.items()})
    for hook in hooks:
        hook.remove()
    return ranges


def simulated(model, ranges: dict, weight_bits: int, activation_bits: int):
    import torch

    copied = copy.deepcopy(model)
    originals = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    copies = [m for m in copied.modules() if isinstance(m, torch.nn.Linear)]
    for original, layer in zip(originals, copies):
        wmax = 2 ** (weight_bits - 1) - 1
        w_scale = layer.weight.data.abs().amax(1, keepdim=True) / wmax
        layer.weight.data = torch.round(layer.weight.data / w_scale).clamp(-wmax, wmax) * w_scale
        lo, hi = ranges[original]
        amax = 2**activation_bits - 1
        scale = (hi - lo) / amax
        zero = min(max(round(-lo / scale), 0), amax)
        layer.register_forward_pre_hook(
            lambda _, inputs, s=scale, z=zero, q=amax: (torch.clamp(torch.round(inputs[0] / s) + z, 0, q) - z) * s)
    return copied


def main() -> None:
    import torch

    from tvmcomp.evaluate import accuracy_against_float, torch_runner
    from tvmcomp.models import get_model

    torch.set_num_threads(2)
    entry = get_model("minilm")
    model = entry.load_torch()
    ranges = activation_ranges(model, entry.make_calibration_inputs(32, 1, 128))
    lines = [f"# 7-bit narrowing for AVX2 int8, simulated on MiniLM ({datetime.date.today().isoformat()})", "",
             "Quantize-dequantize simulation in PyTorch (bench/int8_narrowing.py); accuracy vs float on "
             "200 Pang & Lee sentences and WordSim-353.", "",
             "| weight bits | activation bits | cosine mean | cosine min | probe drop pt | WordSim rho |",
             "|---:|---:|---:|---:|---:|---:|"]
    for weight_bits, activation_bits in CHOICES:
        quantized = simulated(model, ranges, weight_bits, activation_bits)
        acc = accuracy_against_float(torch_runner(model), torch_runner(quantized), entry.tokenize, 1, 128, stream=open(os.devnull, "w"))
        lines.append(f"| {weight_bits} | {activation_bits} | {acc['embedding_cosine_mean']:.4f} | "
                     f"{acc['embedding_cosine_min']:.4f} | {acc['probe_accuracy_drop_pt']:.1f} | "
                     f"{acc['wordsim_spearman_float_vs_package']:.4f} |")
    out = REPO / "bench" / "results" / f"{datetime.date.today().isoformat()}-int8-narrowing.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
