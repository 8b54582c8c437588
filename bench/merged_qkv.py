"""Would merging Q, K and V into one GEMM pay on the int8 kernels? MiniLM's shapes, s128, hidden 384.

Two models with the same weights: three Linears 384 -> 384 reading one input (as an attention
block's Q, K and V projections), and one Linear 384 -> 1152 whose output is split in three. Each
is exported with torch.export, built as int8 for this CPU with no tuning records (default
schedules, what a new user gets), calibrated on the same standard-normal inputs, then timed
interleaved by bench/interleaved.py as a user calls a package.

Run: .venv/bin/python bench/merged_qkv.py [--rounds 4]
Writes bench/results/<date>-interleaved-minilm-shapes-q-k-v-three-linears-vs-one-merged.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HIDDEN, SEQ_LEN = 384, 128


def models():
    import torch

    class Separate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = (torch.nn.Linear(HIDDEN, HIDDEN) for _ in range(3))

        def forward(self, x):
            return self.q(x), self.k(x), self.v(x)

    class Merged(torch.nn.Module):
        def __init__(self, separate: Separate):
            super().__init__()
            self.qkv = torch.nn.Linear(HIDDEN, 3 * HIDDEN)
            with torch.no_grad():
                self.qkv.weight.copy_(torch.cat([separate.q.weight, separate.k.weight, separate.v.weight]))
                self.qkv.bias.copy_(torch.cat([separate.q.bias, separate.k.bias, separate.v.bias]))

        def forward(self, x):
            return tuple(torch.split(self.qkv(x), HIDDEN, dim=-1))

    torch.manual_seed(0)
    separate = Separate().eval()
    return {"three-linears": separate, "merged-qkv": Merged(separate).eval()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    import torch

    work = Path(tempfile.mkdtemp(prefix="merged-qkv-"))
    rng = np.random.default_rng(0)
    np.savez(work / "calib.npz", x=rng.standard_normal((16, SEQ_LEN, HIDDEN)).astype(np.float32))
    example = (torch.from_numpy(rng.standard_normal((1, SEQ_LEN, HIDDEN)).astype(np.float32)),)
    packages = []
    for name, module in models().items():
        torch.export.save(torch.export.export(module, example), work / f"{name}.pt2")
        subprocess.run([str(REPO / ".venv/bin/tvmcomp"), "build", "--model", str(work / f"{name}.pt2"), "--quant",
                        "int8", "--calib-data", str(work / "calib.npz"), "--target", "x86", "-o", str(work / name)],
                       check=True, env={**os.environ, "TVMCOMP_SCHEDULES": str(work / "no-records")})
        packages.append(f"{name}={work / name}")
    subprocess.run([sys.executable, str(REPO / "bench/interleaved.py"), *packages, "--rounds", str(args.rounds),
                    "--runs", "200", "--title", "minilm shapes: Q, K, V three linears vs one merged"], check=True)


if __name__ == "__main__":
    main()
