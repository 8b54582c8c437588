"""Tuning on a device over RPC: candidates are cross-linked here and measured on the board.

The board has no linker, so each candidate is exported as a shared library built with the
target's cross compiler (MetaSchedule's default export is an object tarball the server would link).
"""

from __future__ import annotations

from ..errors import TvmcompError
from ..remote import RemoteSpec, parse_address
from .runner import alloc_measure_arguments_rpc


def cross_linking_export(compiler: str):
    def export(mod) -> str:
        import os
        import tempfile

        from tvm.support import cc

        path = os.path.join(tempfile.mkdtemp(), "candidate.so")
        mod.export_library(path, fcompile=cc.cross_compiler(compiler))
        return path

    return export


def rpc_runner(remote: RemoteSpec):
    """MetaSchedule's RPC runner on the tracker's devices under ``remote.key``."""
    from tvm.s_tir import meta_schedule as ms

    if not (remote.tracker and remote.key):
        raise TvmcompError("RPC tuning goes through a tracker: give --rpc-tracker HOST:PORT and --rpc-key KEY")
    host, port = parse_address(remote.tracker, "--rpc-tracker")
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=remote.key,
                                 session_timeout_sec=int(remote.timeout_s))
    return ms.runner.RPCRunner(config, f_alloc_argument=alloc_measure_arguments_rpc, max_workers=1)
