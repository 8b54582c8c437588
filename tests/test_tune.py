"""Tuning writes records as it measures; Ctrl-C stops it and keeps them."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from models_for_tests import mlp_source


@pytest.fixture
def mlp_pt2(tmp_path):
    source = mlp_source()
    path = tmp_path / "mlp.pt2"
    inputs = {k: torch.from_numpy(v) for k, v in source.example_inputs.items()}
    torch.export.save(torch.export.export(source.torch_module, (), inputs), str(path))
    return path


def test_ctrl_c_keeps_the_records_measured_so_far(tmp_path, mlp_pt2):
    env = dict(os.environ, TVMCOMP_SCHEDULES=str(tmp_path / "schedules"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tvmcomp.cli", "tune", "--model", str(mlp_pt2), "--target", "x86", "--trials", "2000"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    seen = []
    deadline = time.monotonic() + 300
    for line in proc.stderr:  # wait until a batch has been measured, then press Ctrl-C
        seen.append(line)
        if line.startswith("[tune] measured") or time.monotonic() > deadline:
            break
    assert any(line.startswith("[tune] measured") for line in seen), "".join(seen)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130), err
    assert "interrupted" in (out + err)
    records = list((tmp_path / "schedules").glob("*/database_tuning_record.json"))
    assert records and records[0].read_text().strip()
    first = json.loads(records[0].read_text().splitlines()[0])
    assert isinstance(first, list) and first  # a MetaSchedule record, readable
