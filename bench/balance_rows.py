"""Channel balancing against the number of calibration rows: on a model with no outlier channels,
balancing fits the calibration rows and clips the rows it has not seen, unless its choice is
scored on held-out rows (the step search, int8's default since 2026-12-06).

`--balance` gives each input channel its own range (``balance.balanced_steps``): the per-channel
maxima of the calibration rows. Per tensor, every channel but the widest keeps headroom; balanced,
every channel sits at its calibrated edge, and an unseen row past it is clipped. The noise
estimate that picks each Linear's alpha (``balance.noise_estimate``) counts rounding only.

Model: Linear(64, 512), GELU, Linear(512, 64), random weights (seed 0), standard normal inputs: no
outlier channels. Built int8 with min-max steps unbalanced and balanced (alpha by the noise
estimate), and with the balancing and step scored on held-out rows (``step_search.search_step``),
calibrated on N rows,
evaluated on 256 other rows against the float model (``tvmcomp eval --data``).

Run: .venv/bin/python bench/balance_rows.py
Writes bench/results/<date>-balance-calibration-rows-gaussian-mlp-held-out-search.md.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from interleaved import write_result  # bench/, the script's own folder

REPO = Path(__file__).resolve().parents[1]

ROWS = (32, 128, 512, 2048, 8192)
HELD_OUT = 256
VARIANTS = {"`--balance off --observer minmax`": ["--balance", "off", "--observer", "minmax"],
            "`--balance auto --observer minmax`": ["--balance", "auto", "--observer", "minmax"],
            "`--balance auto --observer search` (int8's default)": ["--balance", "auto", "--observer", "search"]}


def tvmcomp(*args: str) -> None:
    done = subprocess.run([sys.executable, "-c", "import sys; from tvmcomp.cli import main; sys.exit(main())", *args], cwd=REPO,
                          capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"tvmcomp {' '.join(args)} failed:\n{done.stderr}")


def save_mlp(path: Path) -> None:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.GELU(), torch.nn.Linear(512, 64)).eval()
    example = (torch.zeros(8, 64),)
    torch.export.save(torch.export.export(model, example), str(path))


def main() -> None:
    date = datetime.date.today().isoformat()
    rows = np.random.default_rng(1).standard_normal((max(ROWS) + HELD_OUT, 64)).astype(np.float32)
    lines = [f"# Channel balancing against calibration rows: int8 on a Gaussian MLP ({date})", "",
             "bench/balance_rows.py: Linear(64, 512), GELU, Linear(512, 64), standard normal inputs (no outlier "
             f"channels); output against the float model on {HELD_OUT} held-out rows (`tvmcomp eval --data`): "
             "cosine mean / min, SQNR.", "",
             f"| calibration rows | {' | '.join(VARIANTS)} |", "|---:|" + "---|" * len(VARIANTS)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        save_mlp(work / "mlp.pt2")
        np.savez(work / "held_out.npz", input=rows[-HELD_OUT:])
        for count in ROWS:
            np.savez(work / f"calib{count}.npz", input=rows[:count])
            cells = []
            for i, options in enumerate(VARIANTS.values()):
                package = work / f"{i}-{count}"
                tvmcomp("build", "--model", str(work / "mlp.pt2"), "--quant", "int8", *options,
                        "--calib-data", str(work / f"calib{count}.npz"), "--calibration-samples", str(count),
                        "-o", str(package))
                tvmcomp("eval", str(package), "--data", str(work / "held_out.npz"))
                result = json.loads((package / "eval.json").read_text())
                cells.append(f"{result['output_cosine_mean']:.4f} / {result['output_cosine_min']:.4f} / "
                             f"{result['sqnr_db']:.1f} dB")
            lines.append(f"| {count} | " + " | ".join(cells) + " |")
    write_result("balance", "calibration rows gaussian mlp held-out search", date, lines)


if __name__ == "__main__":
    main()
