"""End to end on the emulated aarch64 board: cross-compile, serve over RPC, check outputs, stop.

The board is built once per machine (cached in $TVMCOMP_BOARD_DIR or ~/.cache/tvmcomp/board) and
started once for this module on free ports.
"""

import gc
import socket

import numpy as np
import psutil
import pytest
import tvm
from tvm import relax
from tvm.s_tir.meta_schedule.testing.dummy_object import DummyRunner

from models_for_tests import int8_linear_reference, mlp_source
from test_quant_passes import SDOT, LinearAnnotated, _linear_params
from tvmcomp.quant.dot_kernels import DotKernels
from tvmcomp.quant.pipeline import QuantOptions
from tvmcomp.bench import bench_package
from tvmcomp.board import Board, default_dir
from tvmcomp.build import build
from tvmcomp.errors import TvmcompError
from tvmcomp.quant.calibrate import SiteRange
from tvmcomp.quant.realize import Realize
from tvmcomp.quant.schemes import get_scheme
from tvmcomp.remote import RemoteSpec, connect, open_remote_package
from tvmcomp.targets import resolve_target

AARCH64 = 183  # ELF e_machine


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def board():
    board = Board(default_dir())
    port = _free_port()
    while True:  # the tracked server takes port + 1
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port + 1)) != 0:
                break
        port = _free_port()
    state = board.start(port=port, tracker_port=_free_port(), key="tvmcomp-test")
    yield state
    assert board.stop()
    assert board.state() is None


def _direct(state):
    return RemoteSpec(address=f"127.0.0.1:{state['port']}", timeout_s=300)


def _tracked(state, key=None):
    return RemoteSpec(tracker=f"127.0.0.1:{state['tracker_port']}", key=key or state["key"], timeout_s=300)


@pytest.fixture(scope="module")
def arm_fp32(tmp_path_factory):
    path = tmp_path_factory.mktemp("arm") / "fp32"
    build(mlp_source(), resolve_target("arm"), path)
    return path


def test_cross_compiled_package_is_an_aarch64_library(arm_fp32):
    header = (arm_fp32 / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == AARCH64


def test_direct_rpc_outputs_match_the_host_build(board, arm_fp32):
    result = bench_package(arm_fp32, repeat=3, remote=_direct(board))
    assert result["max_abs_err_vs_host"] <= 1e-4 and result["tvmcomp"]["runs"] == 3


def test_tracker_rpc_runs_the_package(board, arm_fp32):
    result = bench_package(arm_fp32, repeat=2, remote=_tracked(board))
    assert result["max_abs_err_vs_host"] <= 1e-4


def test_int8_sdot_linear_on_the_board_matches_the_integer_reference_exactly(board, tmp_path):
    int8 = get_scheme("int8")
    params, ranges = _linear_params(1), {0: SiteRange(scale=0.021, zero_point=120, lo=-2.5, hi=2.8)}
    realized = Realize(params, ranges, int8, DotKernels(SDOT))(LinearAnnotated)
    bound = relax.transform.BindParams("main", {k: tvm.runtime.tensor(v) for k, v in params.items()})(realized)
    target = resolve_target("arm")
    executable = tvm.compile(bound, target=target.tvm_target())
    library = tmp_path / "linear.so"
    from tvm.support import cc

    executable.export_library(str(library), fcompile=cc.cross_compiler(target.cross_compiler))
    session = connect(_direct(board))
    session.upload(str(library), "tvmcomp-test-linear.so")
    vm = relax.VirtualMachine(session.load_module("tvmcomp-test-linear.so"), session.cpu())
    x = np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32) * 1.5
    vm.set_input("main", tvm.runtime.tensor(x, session.cpu()))
    vm.invoke_stateful("main")
    got = vm.get_outputs("main").numpy()
    vm = session = None
    gc.collect()  # end the session: the server takes one client at a time

    want = int8_linear_reference(x, params["w"], params["b"], 0.021, 120, int8.activation, int8.weight)
    np.testing.assert_array_equal(got, want)


@pytest.mark.slow  # (60 s) default schedules of int8 run on the board in the default suite; these are tuned ones
def test_int8_arm_package_runs_on_the_board(board, empty_schedules, tmp_path):
    path = tmp_path / "int8"
    build(mlp_source(), resolve_target("arm"), path, QuantOptions("int8", samples=4), trials=6, runner=DummyRunner())
    result = bench_package(path, repeat=2, remote=_direct(board))
    assert result["max_abs_err_vs_host"] is not None  # checked against the host inside, with int8's tolerance


def test_rpc_errors_are_one_line_and_say_what_is_missing(board):
    with pytest.raises(TvmcompError, match=r"cannot open an RPC session with 127\.0\.0\.1:\d+ .*tvmcomp board start"):
        connect(RemoteSpec(address=f"127.0.0.1:{_free_port()}", timeout_s=10))
    with pytest.raises(TvmcompError, match=r"no device with key 'nope' \(keys: tvmcomp-test\)"):
        connect(_tracked(board, key="nope"))
    with pytest.raises(TvmcompError, match=r"no RPC tracker at 127\.0\.0\.1"):
        connect(RemoteSpec(tracker=f"127.0.0.1:{_free_port()}", key="x"))


def test_board_keeps_serving_after_a_session_dies(board, arm_fp32):
    session = connect(_direct(board))
    server = psutil.Process(board["pids"]["server"])
    (session_process,) = server.children()  # each session runs in a forked child
    session_process.kill()
    with pytest.raises(Exception):
        open_remote_package(arm_fp32, session)
    session = None
    gc.collect()
    result = bench_package(arm_fp32, repeat=2, remote=_direct(board))
    assert result["max_abs_err_vs_host"] <= 1e-4


def test_board_refuses_a_second_start(board):
    with pytest.raises(TvmcompError, match="already running"):
        Board(default_dir()).start(port=_free_port(), tracker_port=_free_port())


def test_rpc_tuning_measures_on_the_board_and_writes_records(board, empty_schedules):
    from tvmcomp.lowering import fuse_for_tuning
    from tvmcomp.tune import database_dir, tune
    from tvmcomp.tune.rpc import rpc_runner

    target = resolve_target("arm")
    fused = fuse_for_tuning(mlp_source().imported.bound(), target.tvm_target())
    result = tune(fused, target, total_trials=4, runner=rpc_runner(_tracked(board)))
    assert result.tasks >= 2 and not result.interrupted
    records = (database_dir(target) / "database_tuning_record.json").read_text().splitlines()
    assert len(records) >= 2
    # measured, not failed: MetaSchedule stores a failed candidate's run time as 1e10 s
    assert any("1000000000" not in line for line in records)


@pytest.mark.parametrize("preset, scheme", [("arm", "int8"), ("rpi4", "int8"),  # sdot, and NEON without dotprod
                                            ("arm", "w4a8"),  # nibbles unpacked into sdot
                                            ("arm", "pwlq4")])  # two planes of nibbles, two sdot accumulations
def test_quantized_on_default_schedules_runs_on_the_board_and_agrees_with_the_host(board, tmp_path, empty_schedules,
                                                                                   preset, scheme):
    """No records, no tuning: the default schedules' tensorized kernels run on the (emulated) device."""
    path = tmp_path / preset
    package = build(mlp_source(), resolve_target(preset), path, QuantOptions(scheme, samples=4))
    assert package.metadata["default_scheduled_kernels"] == package.metadata["kernels"]
    result = bench_package(path, repeat=2, remote=_direct(board))
    assert result["max_abs_err_vs_host"] is not None  # checked within the int8 tolerance, else bench raises


def test_integer_only_encoder_runs_on_the_board_and_agrees_with_the_host(board, tmp_path, empty_schedules):
    """--integer-only's kernels (i_softmax, i_gelu, i_layer_norm: int64 and int32 arithmetic, clz)
    cross-compiled for aarch64, on the (emulated) device, against the host's outputs."""
    from test_hf_folder import SEQ_LEN, _save_tiny_encoder
    from tvmcomp.source import load_source

    folder = _save_tiny_encoder(tmp_path / "bert", "bert")
    path = tmp_path / "arm"
    build(load_source(str(folder), seq_len=SEQ_LEN), resolve_target("arm"), path,
          QuantOptions("pot8", samples=2, integer_only=True))
    result = bench_package(path, repeat=2, remote=_direct(board))
    assert result["max_abs_err_vs_host"] is not None  # checked within the int8 tolerance, else bench raises
