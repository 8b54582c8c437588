"""Does the dense-and-sparse outlier split (``tvmcomp/quant/outliers.py``) pay off on 4-bit grids
too, or only on int8's per-channel one (#14)?

int8 and pot8 split off the weights past 8x their column's rms, because on a per-channel grid one
such weight sets the step of its whole column. A 4-bit grouped grid has a step per group of 32 or
128 rows, so an outlier coarsens only its own group, and the group's step is coarse anyway. This
measures that on the float PyTorch model: every Linear's weight rounded to the scheme's grid
(nearest rounding, ``grids.restored_weight``: no GPTQ, activations float), with and without the
split (the split-off weights kept exact, as their int16 codes nearly are), then the accuracy of
the sentence embeddings against the float model (``tvmcomp.evaluate.accuracy_against_float``).

Run: .venv/bin/python bench/weight_outliers.py [--model minilm]
Writes bench/results/<date>-weight-outliers-<model>.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import sys
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# bench/ off sys.path: its kernels.py would hide the `kernels` package transformers imports
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))

TIMES_RMS = 8.0  # int8's and pot8's weight_outliers


def _grids():
    """(label, TensorQuant) of each weight grid compared: int8's per channel, and w4a8's and pwlq4's
    4-bit groups of 32 and 128 rows."""
    from tvmcomp.quant.schemes import get_scheme

    w4, pwlq = get_scheme("w4a8").weight, get_scheme("pwlq4").weight
    return [("int8, per channel", get_scheme("int8").weight),
            ("w4a8 g32", dataclasses.replace(w4, group_size=32)),
            ("w4a8 g128", dataclasses.replace(w4, group_size=128)),
            ("pwlq4 g32", dataclasses.replace(pwlq, group_size=32))]


def _rounded(entry, quant, split: bool):
    """The float model with every Linear's weight rounded to ``quant`` (and how many weights were split off)."""
    import torch

    from tvmcomp.quant.grids import restored_weight
    from tvmcomp.quant.outliers import split_outliers

    module, outliers = entry.load_torch(), 0
    for linear in (m for m in module.modules() if isinstance(m, torch.nn.Linear)):
        weight_kn = np.ascontiguousarray(linear.weight.detach().numpy().T, np.float32)
        if quant.group_size and weight_kn.shape[0] % quant.group_size:
            continue  # realize keeps such a Linear in int8
        parts = split_outliers(weight_kn, TIMES_RMS if split else None)
        outliers += parts.outliers
        rounded = restored_weight(parts.dense, quant) + parts.sparse
        linear.weight.data = torch.from_numpy(np.ascontiguousarray(rounded.T, np.float32))
    return module, outliers


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    args = parser.parse_args()

    from tvmcomp.evaluate import accuracy_against_float, torch_runner
    from tvmcomp.models import get_model
    from tvmcomp.targets import host_cpu

    entry = get_model(args.model)
    run_float = torch_runner(entry.load_torch())
    lines = [f"# Outlier split on int8 and 4-bit weight grids: {args.model} ({host_cpu()}, {datetime.date.today()})",
             "", f"bench/weight_outliers.py --model {args.model}: every Linear's weight of the float PyTorch model "
             "rounded to the grid (nearest, no GPTQ; activations float), with and without the weights past "
             f"{TIMES_RMS:g}x their column's rms kept exact; accuracy of the embeddings against the float model "
             "(200 Pang & Lee sentences, 437 WordSim-353 words).", "",
             "| weight grid | split | weights split off | embedding cosine mean / min | WordSim vs float | probe (float) |",
             "|---|---|---:|---:|---:|---:|"]
    for label, quant in _grids():
        for split in (False, True):
            module, outliers = _rounded(entry, quant, split)
            with redirect_stderr(io.StringIO()):
                result = accuracy_against_float(run_float, torch_runner(module), entry.tokenize, 1, 128)
            row = (f"| {label} | {'yes' if split else 'no'} | {outliers} | {result['embedding_cosine_mean']:.4f} / "
                   f"{result['embedding_cosine_min']:.4f} | {result['wordsim_spearman_float_vs_package']:.4f} | "
                   f"{result['probe_accuracy_package']:.3f} ({result['probe_accuracy_float']:.3f}) |")
            print(row, flush=True)
            lines.append(row)
    out = REPO / "bench" / "results" / f"{datetime.date.today()}-weight-outliers-{args.model}.md"
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
