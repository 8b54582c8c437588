"""The search space MetaSchedule explores for a target: its default, or tensorized integer rules.

For a target with integer dot-product instructions (:mod:`tvmcomp.quant.dot_kernels`) the space is
MetaSchedule's CPU rules with one tensorizing rule per instruction (a kernel none of them fits
falls through to the plain tiling rule) and one change: the innermost tile of a tensorized
matmul is fixed to 1. MetaSchedule otherwise vectorizes the loops around the tensorized block, and lowering then
fails to widen the instruction's 16-lane vectors ("Cannot broadcast lanes=16 ... to 48"); with
unit innermost tiles the register tile is the level above, which is not vectorized.
"""

from __future__ import annotations

from ..quant.dot_kernels import dot_kernels_for
from ..targets import TargetSpec


def _tensorized_space(intrinsics: list[str]):
    from tvm.s_tir import meta_schedule as ms

    rules = ms.schedule_rule
    write_cache = rules.ReuseType(req="may", levels=[1, 2], scope="global")
    return ms.space_generator.PostOrderApply(
        sch_rules=[
            rules.ApplyCustomRule(),
            rules.InlineConstantScalars(),
            rules.AutoInline(into_producer=False, into_consumer=True, inline_const_tensor=True,
                             disallow_if_then_else=True, require_injective=True, require_ordered=True,
                             disallow_op=["tirx.exp"]),
            rules.AddRFactor(max_jobs_per_core=16, max_innermost_factor=64),
            *(rules.MultiLevelTilingWithIntrin(intrinsic, structure="SSRSRS", max_innermost_factor=1,
                                               reuse_write=write_cache) for intrinsic in intrinsics),
            rules.MultiLevelTiling(structure="SSRSRS", max_innermost_factor=64, reuse_write=write_cache),
            rules.ParallelizeVectorizeUnroll(max_jobs_per_core=16, max_vectorize_extent=64,
                                             unroll_max_steps=[0, 16, 64, 512], unroll_explicit=True),
            rules.RandomComputeLocation(),
        ],
        postprocs=[
            ms.postproc.DisallowDynamicLoop(),
            ms.postproc.RewriteParallelVectorizeUnroll(),
            ms.postproc.RewriteReductionBlock(),
            ms.postproc.RewriteTensorize(vectorize_init_loop=True),
            ms.postproc.RewriteLayout(),
        ],
        mutator_probs="llvm",
    )


def search_space(target: TargetSpec):
    """A MetaSchedule space generator (or its name) for tuning kernels of ``target``."""
    intrinsics = dot_kernels_for(target).intrinsics
    return _tensorized_space(intrinsics) if intrinsics else "post-order-apply"
