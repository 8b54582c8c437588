"""Relax graph -> fused primitive functions: the form MetaSchedule tunes and the builder compiles."""

from __future__ import annotations


def fuse_for_tuning(mod, target):
    """Decompose, legalize and fuse a bound Relax module into TIR kernels.

    MetaSchedule extracts one tuning task per fused TIR function, so these passes must run before
    task extraction ("No tasks to tune" otherwise) and the build must see the same kernels.
    Exact GELU and softmax are lowered to kernels that vectorize (:mod:`tvmcomp.passes.fast_gelu`,
    :mod:`tvmcomp.passes.fast_softmax`) and embedding lookups clamp their ids
    (:mod:`tvmcomp.passes.clip_gather_indices`).
    """
    import tvm
    from tvm import relax

    from .passes.clip_gather_indices import ClipGatherIndices
    from .passes.fast_gelu import fast_gelu_legalize_map
    from .passes.fast_softmax import fast_softmax_legalize_map

    passes = [
        ClipGatherIndices,
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.LegalizeOps(customize_legalize_map=fast_gelu_legalize_map() | fast_softmax_legalize_map()),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
    ]
    with target:
        return tvm.transform.Sequential(passes)(mod)
