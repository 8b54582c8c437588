"""How tuning candidates are measured: on inputs every kernel can run on, with the deployed threads.

MetaSchedule's runners fill every argument with random values. For gather kernels (embedding
``take``, ``index_tensor``) random int64 indices are out of bounds and the candidate crashes, so
those kernels never get a record. Integer and bool arguments of a kernel are indices, ids, masks
or integer codes: they get random zeros and ones, valid indices for any table of two or more rows
and masks that take both branches of a select. (All-zero masks, used before, let MetaSchedule
pick a softmax that recomputes each row sum per element, far slower on real masks, because
with every row masked the compiler dropped the work.) Floats stay random, as their values rarely
change a kernel's speed (libm's ``expf`` is the exception seen: see
:mod:`tvmcomp.passes.fast_softmax`).
"""

from __future__ import annotations

import functools


def _alloc(random_fill, device, args_info, alloc_repeat):
    import numpy as np
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    bits = np.random.default_rng(0)

    def fill(tensor):
        dtype = str(tensor.dtype)
        if dtype.startswith(("int", "uint", "bool")):
            tensor.copyfrom(bits.integers(0, 2, tuple(tensor.shape)).astype(dtype))
        else:
            random_fill(tensor)

    return alloc_argument_common(fill, device, args_info, alloc_repeat)


def alloc_measure_arguments(device, args_info, alloc_repeat):
    """``f_alloc_argument`` for the local runner: random 0/1 for integer/bool tensors, random floats."""
    import tvm

    return _alloc(tvm.get_global_func("tvm.contrib.random.random_fill_for_measure"), device, args_info, alloc_repeat)


def alloc_measure_arguments_rpc(session, device, args_info, alloc_repeat):
    """The same for the RPC runner: the fill function is the device's."""
    return _alloc(session.get_function("tvm.contrib.random.random_fill_for_measure"), device, args_info, alloc_repeat)


def safe_local_runner(threads: int):
    """MetaSchedule's local runner, measuring on ``threads`` threads (TVM's own default in its
    worker is half the logical CPUs on x86: one thread on a 2-core machine, not what we deploy)."""
    from tvm.s_tir import meta_schedule as ms

    from ..runtime import set_num_threads

    return ms.runner.LocalRunner(f_alloc_argument=alloc_measure_arguments,
                                 initializer=functools.partial(set_num_threads, threads))
