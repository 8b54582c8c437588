"""The search space MetaSchedule explores for a target: its default, or tensorized int8 rules.

For a target with an int8 dot-product instruction (:mod:`tvmcomp.quant.dot_kernels`) the space is
MetaSchedule's CPU rules with one change: the innermost tile of the tensorized matmul is fixed to
1. MetaSchedule otherwise vectorizes the loops around the tensorized block, and lowering then
fails to widen the instruction's 16-lane vectors ("Cannot broadcast lanes=16 ... to 48"); with
unit innermost tiles the register tile is the level above, which is not vectorized.
"""

from __future__ import annotations

from ..quant.dot_kernels import dot_kernel_for
from ..targets import TargetSpec


def _tensorized_int8_space(intrinsic: str):
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
            rules.MultiLevelTilingWithIntrin(intrinsic, structure="SSRSRS", max_innermost_factor=1,
                                             reuse_write=write_cache),
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
    kernel = dot_kernel_for(target)
    return "post-order-apply" if kernel is None else _tensorized_int8_space(kernel.intrinsic)
