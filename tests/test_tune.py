"""Tuning writes records as it measures; Ctrl-C stops it and keeps them."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from models_for_tests import save_mlp_pt2


@pytest.fixture
def mlp_pt2(tmp_path):
    return save_mlp_pt2(tmp_path / "mlp.pt2")


def test_ctrl_c_keeps_the_records_measured_so_far(tmp_path, mlp_pt2):
    env = dict(os.environ, TVMCOMP_SCHEDULES=str(tmp_path / "schedules"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tvmcomp.cli", "tune", "--model", str(mlp_pt2), "--target", "x86", "--trials", "30"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )
    seen = []
    deadline = time.monotonic() + 300
    for line in proc.stderr:  # press Ctrl-C while the first batch is being built
        seen.append(line)
        if line.startswith("[tune] building") or time.monotonic() > deadline:
            break
    assert any(line.startswith("[tune] building") for line in seen), "".join(seen)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    assert "[tune] measured" in err  # the batch in flight was finished and measured ...
    assert "tuning interrupted" in out  # ... and then tuning stopped cleanly
    assert "[tune] kept the 4 fastest records" in err  # and compacted what it measured
    records = list((tmp_path / "schedules").glob("*/database_tuning_record.json"))
    assert records and records[0].read_text().strip()
    first = json.loads(records[0].read_text().splitlines()[0])
    assert isinstance(first, list) and first  # a MetaSchedule record, readable


def test_only_the_targets_tensor_intrinsics_are_loaded():
    code = (
        "import sys; from tvmcomp.tune.intrinsics import register_tensor_intrinsics; "
        "from tvm.s_tir import TensorIntrin; register_tensor_intrinsics(['x86']); "
        "import tvm.s_tir.tensor_intrin; "  # what TuneContext does: must now be free
        "assert TensorIntrin.get('dot_16x4_vnni') is not None; "
        "assert 'tvm.s_tir.tensor_intrin.cuda' not in sys.modules; print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_candidates_are_measured_on_the_deployed_thread_count():
    from tvmcomp.runtime import num_threads
    from tvmcomp.tune.runner import safe_local_runner

    runner = safe_local_runner(threads=3)  # more than TVM's default on any machine with < 6 CPUs
    assert runner.pool.submit(num_threads).result() == 3


def test_measurement_inputs_are_valid_indices_and_masks_with_both_values():
    import numpy as np
    import tvm

    from tvmcomp.tune.runner import alloc_measure_arguments

    info = [["TENSOR", "int64", [256]], ["TENSOR", "int8", [256]], ["TENSOR", "bool", [256]], ["TENSOR", "float32", [256]]]
    (ids, mask8, mask, floats), = alloc_measure_arguments(tvm.cpu(), info, 1)
    for tensor in (ids, mask8, mask):  # 0 and 1 index any table of 2+ rows; a mask takes both branches
        assert sorted(np.unique(tensor.numpy().astype(np.int64))) == [0, 1]
    assert len(np.unique(floats.numpy())) > 200


def test_the_model_estimate_waits_for_every_kernel_then_weights_each_by_its_calls():
    import io

    from tvmcomp.tune.progress import TuningProgress

    progress = TuningProgress(10, ["matmul", "softmax"], [6.0, 2.0], io.StringIO())
    progress.best = {0: 0.001}  # 1 ms, called 6 times; softmax not measured yet
    assert progress.model_estimate() == "model ~? ms (until every kernel is measured)"
    progress.best[1] = 0.0005  # 0.5 ms, called twice: 6 x 1 + 2 x 0.5 = 7 ms
    assert progress.model_estimate() == "model ~7.00 ms"
