"""A MetaSchedule builder whose workers start in seconds, and that reports each batch it builds.

MetaSchedule's default build function imports ``tvm.s_tir.tensor_intrin`` in every fresh worker
process: about a minute on a 2-core machine (the CUDA intrinsics alone take most of it), so with the
default 30 s timeout nearly every candidate dies as "Timeout" and tuning silently learns nothing.
Candidates reach the builder already scheduled (tensorized where it applies), so that import is not
needed to compile them.
"""

from __future__ import annotations

from collections.abc import Callable


def build_candidate(mod, target, _params):
    """Compile one scheduled candidate; what ``default_build`` does, minus the intrinsic import."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def fast_local_builder(max_workers: int, on_batch: Callable[[int], None] | None = None, timeout_sec: float = 120.0,
                       f_export: Callable | None = None):
    """A LocalBuilder using :func:`build_candidate`; ``on_batch(n)`` is called before each batch;
    ``f_export`` replaces MetaSchedule's default export (see :mod:`tvmcomp.tune.rpc`)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms

    @derived_object
    class FastLocalBuilder(ms.builder.LocalBuilder._cls):
        def build(self, build_inputs):
            if on_batch is not None and build_inputs:
                on_batch(len(build_inputs))
            return super().build(build_inputs)

    return FastLocalBuilder(max_workers=max_workers, timeout_sec=timeout_sec, f_build=build_candidate, f_export=f_export)
