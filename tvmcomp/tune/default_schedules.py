"""Default schedules for kernels that have no tuning record: rules by kernel kind, as dlight does.

A build applies the records it has, then :func:`apply_default_schedules` to every kernel still
unscheduled. So a target nobody has tuned for (a new CPU, an Arm board) gets fast code at once,
instead of a refusal or untuned scalar loops (~100x slower). The rules, tried in order:

- :class:`Matmul`: one sum-of-products reduction with an injective epilogue (Linear, attention,
  their bias/GELU/dequantize epilogues). Each thread computes tiles of ``rows`` output rows x a
  few vectors of columns, held in registers over the whole reduction, then the epilogue on that
  tile. Where the right-hand operand is packed in a dot-product instruction's block layout
  (:mod:`tvmcomp.quant.dot_kernels`), the innermost block is tensorized with that instruction
  (``vpdpbusd``, ``vpmaddubsw``, ``vpmaddwd``, ``sdot``), so integer kernels run on it unrecorded.
- :class:`GroupedMatmul`: an int4 Linear (:func:`~tvmcomp.quant.dot_kernels.int4_group_matmul`):
  the same register tiles, each group's dot products on the target's int4 dot instruction in int32,
  then added to the float tile with the group's scales. It is not tuned: MetaSchedule cannot
  tensorize the nibble reads, and a tuned scalar kernel would be slower than this one.
- :class:`RowReduction`: softmax and layer norm (row reductions, then elementwise): rows in
  parallel, sums into vectors of partial sums.
- :class:`Elementwise`: everything else (reshapes, quantize, gathers, masks, convolutions):
  producers inlined, loops fused, vectorized innermost, parallel across cores when big enough;
  where a vector would straddle two rows (rows of 257 tokens), the rows are kept whole instead.

Tuning still wins (it searches tile sizes, cache levels and weight layouts). These rules aim at
"within 2x of tuned", so that tuning is an optimization, not a prerequisite.
"""

from __future__ import annotations

from ..quant.dot_kernels import INT4_DECODE, INT4_GROUP_DOT, DotKernel

SPATIAL, REDUCE = 0, 2  # tirx IterVar kinds
MIN_PARALLEL_ELEMENTS = 16384  # below this, waking the thread pool costs more than it saves
REGISTER_ROWS = (4, 3, 2, 1)  # output rows of a register tile: the first that divides the rows
REGISTER_TILE_BITS = 1024  # accumulator bits per tile row: 4 AVX2 / 2 AVX-512 / 8 NEON registers


def _iter_kinds(sch, block) -> list[int]:
    return [int(iv.iter_type) for iv in sch.get(block).iter_vars]


def _extent(sch, loop) -> int | None:
    from tvm import tirx

    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


# x86 vector width by feature: LLVM's own answer (llvm_get_vector_width) is 512 for every x86 CPU
_X86_VECTOR_BITS = (("avx512f", 512), ("avx", 256))


def _vector_bits(target) -> int:
    from tvm.target import codegen

    for feature, bits in _X86_VECTOR_BITS:
        if codegen.target_has_features(feature, target):
            return bits
    width = codegen.llvm_get_vector_width(target)
    return min(width, 128) if width > 0 else 128  # SSE, NEON


def _vector_lanes(target, dtype_bits: int) -> int:
    return max(_vector_bits(target) // dtype_bits, 1)


def _output_bits(sch, block) -> int:
    return sch.get(block).writes[0].source.dtype.bits


def _inline_producers_and_chain(sch) -> list:
    """Inline every block that can be inlined into its consumers; returns the blocks left.

    Repeats until nothing changes: inlining one block can make another inlinable. A weight-only
    kernel's decoded panel (:data:`~tvmcomp.quant.dot_kernels.INT4_DECODE`) is kept: decoded in the
    matmul's loop it would be decoded again for every row.
    """
    changed = True
    while changed:
        changed = False
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            if REDUCE in _iter_kinds(sch, block) or sch.get(block).name_hint == INT4_DECODE:
                continue
            try:
                sch.compute_inline(block)
                changed = True
                break
            except Exception:  # noqa: BLE001 - an output block, or one its consumer reads non-injectively
                continue
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _vectorize(sch, loop, lanes: int) -> None:
    """Vectorize ``loop`` whole if it fits in a vector, else its innermost ``lanes`` when they divide it."""
    extent = _extent(sch, loop)
    if extent is None or extent < 2:
        return
    if extent > lanes:
        if extent % lanes:
            return
        loop = sch.split(loop, factors=[None, lanes])[1]
    sch.vectorize(loop)


class LoopNest:
    """A kernel that TVM's operator library writes as loops already, in one opaque block with no
    block tree under it (scatter, top-k): kept as it is, parallel loops included, less the
    ``pragma_scope`` attribute LLVM's code generation does not know (it warns on every build)."""

    def apply(self, func, target, _tunable):
        from tvm import s_tir
        from tvm.s_tir.stmt import SBlock, SBlockRealize

        try:
            s_tir.Schedule(func).get_sblock("root")
            return None
        except s_tir.ScheduleError:
            pass
        block = func.body.block
        if getattr(block.body, "attr_key", None) == "pragma_scope":
            block = SBlock([], block.reads, block.writes, block.name_hint, block.body.body)
            func = func.with_body(SBlockRealize([], True, block))
        return s_tir.Schedule(func)


class Elementwise:
    """Fused loops per block: vectorized innermost, the rest parallel when the kernel is big.

    A reduction (a conv2d, a masked max) computes a vector of outputs along its innermost spatial
    axis at once, the reduction loops outside it, and up to 4 of the spatial axis above, so they
    share the inputs they read; where that cannot be done, its rows run in parallel.
    """

    def apply(self, func, target, _tunable):
        from tvm import s_tir

        for vector_reductions in (True, False):
            sch = s_tir.Schedule(func)
            try:
                for block in _inline_producers_and_chain(sch):
                    self.schedule_block(sch, block, _vector_lanes(target, _output_bits(sch, block)), vector_reductions)
                return sch
            except Exception:  # noqa: BLE001 - a reduction whose loops cannot be reordered: rows in parallel
                if not vector_reductions:
                    raise
        return None

    @staticmethod
    def schedule_block(sch, block, lanes: int, vector_reductions: bool = True) -> None:
        loops, kinds = sch.get_loops(block), _iter_kinds(sch, block)
        if len(loops) != len(kinds) or not kinds or kinds[0] != SPATIAL:
            return
        leading = kinds.index(REDUCE) if REDUCE in kinds else len(kinds)
        spatial, reduce = loops[:leading], loops[leading:]
        if reduce:
            if not (vector_reductions and Elementwise._vector_reduction(sch, block, spatial, reduce, lanes)):
                fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
                if (_extent(sch, fused) or 0) >= 64:
                    sch.parallel(fused)
            return
        total = 1
        for loop in spatial:
            total *= _extent(sch, loop) or 0
        row = _extent(sch, spatial[-1]) or 0
        if len(spatial) > 1 and row % lanes and not (lanes % row == 0 and total % lanes == 0):
            # vectors along the fused loop would straddle rows: per-lane index arithmetic and gathers.
            # Rows kept whole, LLVM vectorizes each (vit-s's attention probabilities, [6, 257, 257]
            # quantized into [6, 260, 258]: 3.6 -> 0.086 ms, bench/elementwise_rows.py)
            fused = sch.fuse(*spatial[:-1]) if len(spatial) > 2 else spatial[0]
        else:
            fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
            if total >= lanes and total % lanes == 0:
                outer, inner = sch.split(fused, factors=[None, lanes])
                sch.vectorize(inner)
                fused = outer
        if total >= MIN_PARALLEL_ELEMENTS:
            sch.parallel(fused)

    @staticmethod
    def _vector_reduction(sch, block, spatial, reduce, lanes: int) -> bool:
        last = _extent(sch, spatial[-1]) or 0
        if len(spatial) < 2 or last < 2 or (last > lanes and last % lanes) or any(
                k != REDUCE for k in _iter_kinds(sch, block)[len(spatial):]):
            return False
        unroll = next(u for u in (4, 2, 1) if (_extent(sch, spatial[-2]) or 1) % u == 0)
        above_outer, above = sch.split(spatial[-2], factors=[None, unroll])
        vectors, vector = sch.split(spatial[-1], factors=[None, min(lanes, last)])
        sch.reorder(*spatial[:-2], above_outer, vectors, *reduce, above, vector)
        outer = sch.fuse(*spatial[:-2], above_outer, vectors)
        if (_extent(sch, outer) or 0) >= 2:
            sch.parallel(outer)
        sch.unroll(above)
        sch.vectorize(vector)
        init = sch.decompose_reduction(block, reduce[0])
        _vectorize(sch, sch.get_loops(init)[-1], lanes)
        return True


def _is_sum_of_products(sch, block) -> bool:
    """``C[..] = C[..] + A[..] * B[..]`` (with casts): one reduction axis, innermost, two operands."""
    stmt = sch.get(block)
    kinds = _iter_kinds(sch, block)
    if kinds.count(REDUCE) != 1 or kinds[-1] != REDUCE or stmt.init is None or len(stmt.writes) != 1:
        return False
    written = stmt.writes[0].source
    return len([r for r in stmt.reads if not r.source.same_as(written)]) == 2


class Matmul:
    """See the module docstring; ``dot_kernels`` are the target's (tried on packed operands)."""

    def __init__(self, dot_kernels: list[DotKernel] = ()):
        self.dot_kernels = [kernel for kernel in dot_kernels if kernel.weight_bits != 4]  # int4: GroupedMatmul

    def apply(self, func, target, _tunable):
        from tvm import s_tir

        sch = s_tir.Schedule(func)
        reductions = [b for b in sch.get_child_blocks(sch.get_sblock("root")) if REDUCE in _iter_kinds(sch, b)]
        if len(reductions) != 1 or not _is_sum_of_products(sch, reductions[0]):
            return None
        blocks = _inline_producers_and_chain(sch)
        panels = [b for b in blocks if sch.get(b).name_hint == INT4_DECODE]
        blocks = [b for b in blocks if sch.get(b).name_hint != INT4_DECODE]
        # one matmul block, then at most one epilogue block (the rest of the epilogue inlined into it)
        if len(blocks) > 2 or not sch.get(blocks[0]).same_as(sch.get(reductions[0])):
            return None
        main, epilogue = blocks[0], blocks[1:]
        if panels:
            return self._tiled(sch, main, epilogue, target, panels[0])
        for kernel in self._kernels_for(sch, main):
            tensorized = self._packed(sch.copy(), main, epilogue, kernel, target)
            if tensorized is not None:
                return tensorized
        return self._tiled(sch, main, epilogue, target)

    def _kernels_for(self, sch, main) -> list[DotKernel]:
        """Dot kernels whose block layout is the trailing shape of the right-hand operand."""
        stmt = sch.get(main)
        written = stmt.writes[0].source
        operands = [r.source for r in stmt.reads if not r.source.same_as(written)]
        trailing = tuple(int(d) for d in operands[1].shape[-2:]) if len(operands[1].shape) >= 4 else None
        return [k for k in self.dot_kernels if tuple(k.weight_block) == trailing]

    @staticmethod
    def _finish(sch, main, epilogue, outer, tile_loop, lanes) -> None:
        """Epilogue per register tile, vectorized; the loops above the tile run in parallel."""
        for block in epilogue:
            sch.reverse_compute_at(block, tile_loop, preserve_unit_loops=True)
            _vectorize(sch, sch.get_loops(block)[-1], lanes)
        sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])

    @staticmethod
    def _pad_to_tiles(sch, main, epilogue, rows: int, columns: int, lanes: int) -> list:
        """Round rows and columns up to whole tiles (ViT's 257 tokens, say) with zero padding.

        ``pad_einsum`` adds a zero-padded copy of each operand, computed before the matmul
        (vectorized here), and a block copying the valid part out, which becomes the epilogue (or
        is inlined into the existing one). Returns the epilogue blocks."""
        *batch, i, j, _ = sch.get_loops(main)
        sch.pad_einsum(main, [1] * len(batch) + [rows if _extent(sch, i) % rows else 1,
                                                 columns if _extent(sch, j) % columns else 1, 1])
        blocks = list(sch.get_child_blocks(sch.get_sblock("root")))
        position = [index for index, b in enumerate(blocks) if sch.get(b).same_as(sch.get(main))][0]
        for operand_pad in blocks[:position]:
            Elementwise.schedule_block(sch, operand_pad, lanes)
        unpad = blocks[position + 1]
        if not epilogue:
            return [unpad]
        sch.compute_inline(unpad)
        return epilogue

    def _tiled(self, sch, main, epilogue, target, panel=None):
        """Float (or unpacked integer) matmul: [rows x vectors] register tiles, whole reduction.
        ``panel``: a block computing the right-hand operand (a weight-only kernel's decode), computed
        one column panel at a time before the panel's row tiles, which run in one thread."""
        *batch, i, j, k = sch.get_loops(main)
        lanes = _vector_lanes(target, _output_bits(sch, main))
        columns = next((c for c in (REGISTER_TILE_BITS // _output_bits(sch, main), lanes)
                        if (_extent(sch, j) or 0) % c == 0), None)
        rows = next((r for r in REGISTER_ROWS[:-1] if (_extent(sch, i) or 1) % r == 0), None)
        if columns is None or rows is None:
            rows, columns = rows or REGISTER_ROWS[0], columns or REGISTER_TILE_BITS // _output_bits(sch, main)
            epilogue = self._pad_to_tiles(sch, main, epilogue, rows, columns, lanes)
            *batch, i, j, k = sch.get_loops(main)
        i0, i1 = sch.split(i, factors=[None, rows])
        j0, j1 = sch.split(j, factors=[None, columns])
        # column panels outermost: a thread's panel of the right operand stays in cache across rows
        sch.reorder(*batch, j0, i0, k, i1, j1)
        if panel is not None:
            sch.compute_at(panel, j0)
            _vectorize(sch, sch.get_loops(panel)[-1], lanes)
        self._finish(sch, main, epilogue, [*batch, j0] if panel is not None else [*batch, j0, i0], i0, lanes)
        sch.unroll(i1)
        vectors, vector = sch.split(j1, factors=[None, lanes])
        sch.unroll(vectors)
        sch.vectorize(vector)
        init = sch.decompose_reduction(main, k)
        _vectorize(sch, sch.get_loops(init)[-1], lanes)
        return sch

    def _packed(self, sch, main, epilogue, kernel: DotKernel, target):
        """Integer matmul on a packed operand: the [bn x bk] block is one dot-product instruction."""
        bn, bk = kernel.weight_block
        *batch, i, n, k = sch.get_loops(main)
        n_blocks = (_extent(sch, n) or 0) // bn
        per_row = next((b for b in (4, 3, 2, 1) if b * bn * 32 <= REGISTER_TILE_BITS and n_blocks % b == 0), 1)
        rows = next(r for r in REGISTER_ROWS if (_extent(sch, i) or 1) % r == 0)
        try:
            i0, i1 = sch.split(i, factors=[None, rows])
            n0, n1 = sch.split(n, factors=[None, bn])
            n0_outer, n0_inner = sch.split(n0, factors=[None, per_row])
            k0, k1 = sch.split(k, factors=[None, bk])
            sch.reorder(*batch, n0_outer, i0, k0, i1, n0_inner, n1, k1)
            self._finish(sch, main, epilogue, [*batch, n0_outer, i0], i0,
                         _vector_lanes(target, 32))
            instruction = sch.blockize(n1)
            init = sch.decompose_reduction(instruction, k0)
            sch.tensorize(instruction, kernel.intrinsic)
        except Exception:  # noqa: BLE001 - the block does not match the instruction's description
            return None
        for loop in sch.get_loops(instruction)[-2:]:
            sch.unroll(loop)
        sch.vectorize(sch.get_loops(init)[-1])
        return sch


def _has_block(func, name: str) -> bool:
    from tvm import s_tir

    try:
        s_tir.Schedule(func).get_sblock(name)
    except Exception:  # noqa: BLE001 - no such block
        return False
    return True


def keeps_its_default_schedule(func) -> bool:
    """int4 kernels, which tuning leaves alone: MetaSchedule cannot tensorize w4a8's nibble reads,
    and would decode w4's weights per row (the panel decode is what makes it fast)."""
    return _has_block(func, INT4_GROUP_DOT) or _has_block(func, INT4_DECODE)


class GroupedMatmul:
    """See the module docstring; ``dot_kernels``: the target's int4 ones (``weight_bits`` 4)."""

    def __init__(self, dot_kernels: list[DotKernel] = ()):
        self.dot_kernels = [kernel for kernel in dot_kernels if kernel.weight_bits == 4]

    @staticmethod
    def matches(func) -> bool:
        """Whether ``func`` is an int4 Linear kernel."""
        return _has_block(func, INT4_GROUP_DOT)

    def apply(self, func, target, _tunable):
        from tvm import s_tir

        if not self.matches(func):
            return None
        probe = s_tir.Schedule(func)
        packed = next(r.source for r in probe.get(probe.get_sblock(INT4_GROUP_DOT)).reads
                      if r.source.dtype == "uint8" and len(r.source.shape) == 4)
        for kernel in self.dot_kernels:
            if tuple(int(d) for d in packed.shape[-2:]) == kernel.packed_block:
                try:
                    return self._schedule(s_tir.Schedule(func), kernel, target)
                except Exception:  # noqa: BLE001 - the block does not match the instruction's description
                    continue
        return None

    @staticmethod
    def _schedule(sch, kernel: DotKernel, target):
        blocks = _inline_producers_and_chain(sch)
        dot, total, epilogue = blocks[0], blocks[1], blocks[2:]
        bn = kernel.weight_block[0]
        *batch, i, n, g = sch.get_loops(total)
        # two vectors of accumulators per row: the nibble masks, offsets and both halves of the codes
        # need registers too (4 AVX2 vectors per row spilled to the stack)
        tile_bits = min(REGISTER_TILE_BITS, 2 * _vector_bits(target))
        per_row = next(b for b in (4, 2, 1) if b * bn * 32 <= tile_bits and (_extent(sch, n) // bn) % b == 0)
        rows = next(r for r in REGISTER_ROWS if (_extent(sch, i) or 1) % r == 0)
        i0, i1 = sch.split(i, factors=[None, rows])
        n0, n1 = sch.split(n, factors=[None, per_row * bn])
        sch.reorder(*batch, n0, i0, g, i1, n1)
        sch.compute_at(dot, g)
        lanes = _vector_lanes(target, 32)
        Matmul._finish(sch, total, epilogue, [*batch, n0, i0], i0, lanes)
        # the group's dot products: [rows x per_row] instructions per block of codes
        row, column, block, byte = sch.get_loops(dot)[-4:]
        column_block, lane = sch.split(column, factors=[None, bn])
        sch.reorder(block, row, column_block, lane, byte)
        instruction = sch.blockize(lane)
        init = sch.decompose_reduction(instruction, block)
        sch.tensorize(instruction, kernel.intrinsic)
        sch.unroll(row)
        sch.unroll(column_block)
        sch.vectorize(sch.get_loops(init)[-1])
        # the float tile += the group's int32 tile times its scales
        tile_row, tile_column = sch.get_loops(total)[-2:]
        vectors, vector = sch.split(tile_column, factors=[None, lanes])
        sch.vectorize(vector)
        sch.unroll(vectors)
        sch.unroll(tile_row)
        init = sch.decompose_reduction(total, g)
        _vectorize(sch, sch.get_loops(init)[-1], lanes)
        return sch


class RowReduction:
    """Softmax and norms: reductions over one axis per row, then elementwise stages.

    Rows run in parallel, every stage computed per row. Where a reduction's axis divides into
    vectors, it first sums into a vector of partial sums (rfactor: ``lanes`` running sums along
    the row, added up at the end), so the adds are vector adds instead of one chain of scalar adds,
    each waiting for the last; the elementwise stages are vectorized too. In MiniLM int8 (Emerald
    Rapids, 2 threads) that took the 6 attention softmaxes from 1.04 to 0.32 ms a run and the 13
    layer norms from 0.64 to 0.11 ms (the pruned model's, same shapes), against dlight's CPU
    ``Reduction`` rule (scalar, unrolled), which this replaces
    (bench/results/2026-12-05-profile-minilm-int8-row-reductions.md). Rows that do not divide
    into vectors leave their loops to LLVM's vectorizer: dlight's split into vectors and a
    predicated tail was slower there than no schedule at all (softmax pads such rows instead:
    :mod:`tvmcomp.passes.fast_softmax`). A convolution (several
    reduction axes) is not a row reduction: :class:`Elementwise` takes it, as it takes a reduction
    with no elementwise stage after it. A kernel with several outputs (``--per-token``'s codes and
    row steps, :mod:`tvmcomp.quant.token_steps`) gets a parallel row loop per output, each computing
    the stages written since the output before it.
    """

    def apply(self, func, target, _tunable):
        from tvm import s_tir

        sch = s_tir.Schedule(func)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        reductions = [b for b in blocks if REDUCE in _iter_kinds(sch, b)]
        if not reductions or any(_iter_kinds(sch, b).count(REDUCE) > 1 for b in reductions) \
                or REDUCE in _iter_kinds(sch, blocks[-1]):
            return None
        for vector_sums in (True, False):
            try:
                return self._rows_in_parallel(s_tir.Schedule(func), target, vector_sums)
            except Exception:  # noqa: BLE001 - stages that do not share their rows, or sums that do not split
                continue
        return None

    @staticmethod
    def _rows_in_parallel(sch, target, vector_sums: bool):
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        reductions = [b for b in blocks if REDUCE in _iter_kinds(sch, b)]
        rows = min(_iter_kinds(sch, b).index(REDUCE) for b in reductions)
        partial_sums = []
        if vector_sums:
            for block in reductions:
                lanes = _vector_lanes(target, _output_bits(sch, block))
                axis = sch.get_loops(block)[-1]
                if (_extent(sch, axis) or 1) % lanes:
                    raise ValueError("the reduction does not divide into vectors")
                partial_sums.append((sch.rfactor(sch.split(axis, factors=[None, lanes])[1], factor_axis=0), lanes))
        # each output's rows in parallel, the stages since the output before it computed at its row
        # loop (TIR cannot compute an output block at another block's loop)
        blocks = sch.get_child_blocks(sch.get_sblock("root"))  # with the partial sums' blocks now
        internal = list(sch.get(sch.get_sblock("root")).alloc_buffers)
        outputs = [i for i, block in enumerate(blocks)
                   if not any(region.source.same_as(buffer) for region in sch.get(block).writes for buffer in internal)]
        row_loops, start = [], 0
        for anchor in outputs:
            loops = sch.get_loops(blocks[anchor])
            if len(loops) <= rows or REDUCE in _iter_kinds(sch, blocks[anchor]):
                raise ValueError("no row loop to share")
            row = sch.fuse(*loops[:rows]) if rows > 1 else loops[0]
            sch.parallel(row)
            for block in reversed(blocks[start:anchor]):
                sch.compute_at(block, row, preserve_unit_loops=True)
            row_loops.append(row)
            start = anchor + 1
        if not vector_sums:
            return sch
        for block, lanes in partial_sums:  # the lane loop innermost, vectorized
            inner = sch.get_loops(block)[1:]
            # factor_axis=0 made the lane the partial sums' first axis, so its loop comes first
            lane = next(loop for loop in inner if _extent(sch, loop) == lanes)
            sch.reorder(*[loop for loop in inner if loop != lane], lane)
            sch.vectorize(lane)
        for block in (block for row in row_loops for block in sch.get_child_blocks(row)):
            inner = sch.get_loops(block)[1:]  # the elementwise stages (partial sums still reduce)
            if inner and REDUCE not in _iter_kinds(sch, block):
                _vectorize(sch, sch.fuse(*inner) if len(inner) > 1 else inner[0],
                           _vector_lanes(target, _output_bits(sch, block)))
        return sch


def default_rules(target, dot_kernels: list[DotKernel]) -> list:
    """The rules for ``target``'s kind: ours on CPUs; dlight's GPU rules (thread-bound) on GPUs."""
    from tvm.s_tir import dlight

    if target.kind.name == "llvm":
        return [LoopNest(), GroupedMatmul(dot_kernels), Matmul(dot_kernels), RowReduction(), Elementwise()]
    gpu = dlight.gpu
    return [gpu.Matmul(), gpu.GEMV(), gpu.Reduction(), gpu.GeneralReduction(), gpu.Fallback()]


def apply_default_schedules(mod, target, dot_kernels: list[DotKernel] = ()):
    """Schedule every PrimFunc of ``mod`` not yet scheduled (no ``tirx.is_scheduled``) by the
    first rule for ``target`` that applies; returns the new module."""
    from tvm.s_tir import dlight

    with target:
        return dlight.ApplyDefaultSchedule(*default_rules(target, list(dot_kernels)))(mod)


def unscheduled_kernels(mod) -> list[str]:
    """Names of the PrimFuncs of ``mod`` that no record scheduled (what the rules will)."""
    from tvm import tirx

    return [gv.name_hint for gv, f in mod.functions_items()
            if isinstance(f, tirx.PrimFunc) and not f.attrs.get("tirx.is_scheduled", False)]
