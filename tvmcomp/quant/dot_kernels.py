"""Integer dot-product instructions a target offers, and the operand layout each one needs.

MetaSchedule tensorizes an integer matmul with a CPU's dot-product instruction (x86 ``vpdpbusd``,
Arm ``sdot``) only when the right-hand operand already sits in the instruction's block layout:
for a block of ``bn`` output channels x ``bk`` reduction elements, ``W[K, N]`` is stored as
``Wp[N/bn, K/bk, bn, bk]``. A plain ``R.matmul`` on int8 gets no dot-product instruction.

Which instruction a target uses is data: its preset lists candidates, each naming the LLVM CPU
feature it needs; the first one the target has is used. ``"int8_dot"`` is for Linear layers,
whose weights are packed at build time::

    "int8_dot": [{"feature": "avx512vnni", "intrinsic": "dot_16x4_vnni",
                  "weight_block": [16, 4], "activation_dtype": "uint8"}]

The activation dtype is the instruction's: ``vpdpbusd`` multiplies u8 x s8, ``sdot`` s8 x s8.
An entry may narrow the weights (``"weight_bits": 7``) where the instruction would otherwise
saturate (AVX2's ``vpmaddubsw`` sums u8 x s8 pairs in int16).

``"int4_dot"`` is for Linear layers with 4-bit weights (:func:`int4_group_matmul`): its
``weight_block`` counts codes, two per byte, so the packed weight is ``[N/bn, K/bk, bn, bk/2]`` bytes.

``"int16_dot"`` is for matmuls of two activations (attention), whose operands are centered codes
in int16 (see :mod:`tvmcomp.quant.realize`); the right-hand one is packed at run time, by a
reshape and transpose that fuse into the kernel producing it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TvmcompError
from ..targets import TargetSpec
from .outliers import plus_outlier_codes

_REQUIRED = ("feature", "intrinsic", "weight_block", "activation_dtype")  # "weight_bits" defaults to 8


@dataclass(frozen=True)
class DotKernel:
    feature: str  # LLVM CPU feature the instruction needs (e.g. "avx512vnni", "dotprod")
    intrinsic: str  # TensorIntrin name MetaSchedule tensorizes with
    weight_block: tuple[int, int]  # (output channels, reduction elements) per packed block
    activation_dtype: str  # "uint8" or "int8"
    weight_bits: int = 8  # fewer where the instruction's intermediate sums would saturate; 4: packed nibbles

    @property
    def packed_block(self) -> tuple[int, int]:
        """The trailing shape of a packed operand: the block, in bytes (two 4-bit codes per byte)."""
        bn, bk = self.weight_block
        return (bn, bk // 2) if self.weight_bits == 4 else (bn, bk)

    def fits(self, k: int, n: int) -> bool:
        bn, bk = self.weight_block
        return n % bn == 0 and k % bk == 0


@dataclass(frozen=True)
class DotKernels:
    """A target's dot-product kernels: for int8 Linear layers, int16 activation matmuls and int4 Linears."""

    linear: DotKernel | None = None
    batched: DotKernel | None = None
    int4: DotKernel | None = None

    @property
    def kernels(self) -> list[DotKernel]:
        return [kernel for kernel in (self.linear, self.batched, self.int4) if kernel is not None]

    @property
    def intrinsics(self) -> list[str]:
        """What MetaSchedule may tensorize with; int4 kernels are scheduled by their own rule, untuned."""
        return [kernel.intrinsic for kernel in (self.linear, self.batched) if kernel is not None]


def dot_kernel_for(target: TargetSpec, kind: str = "int8_dot") -> DotKernel | None:
    """The first ``kind`` entry of the target whose CPU feature the target has, else None."""
    from tvm.target import codegen

    candidates = target.extra.get(kind, [])
    if not candidates:
        return None
    tvm_target = target.tvm_target()
    for entry in candidates:
        missing = [key for key in _REQUIRED if key not in entry]
        if missing:
            raise TvmcompError(f"target '{target.name}': an \"{kind}\" entry lacks {', '.join(missing)} "
                               f"(each needs {', '.join(_REQUIRED)}; see docs/quantization.md)")
        if codegen.target_has_features(entry["feature"], tvm_target):
            return DotKernel(entry["feature"], entry["intrinsic"], tuple(entry["weight_block"]), entry["activation_dtype"],
                             entry.get("weight_bits", 8))
    return None


def dot_kernels_for(target: TargetSpec) -> DotKernels:
    return DotKernels(dot_kernel_for(target, "int8_dot"), dot_kernel_for(target, "int16_dot"),
                      dot_kernel_for(target, "int4_dot"))


def pack_weight(weight_kn: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """``W[K, N]`` -> ``Wp[N/bn, K/bk, bn, bk]`` with ``Wp[i, j, c, r] = W[j*bk + r, i*bn + c]``."""
    k, n = weight_kn.shape
    bn, bk = block
    return np.ascontiguousarray(weight_kn.reshape(k // bk, bk, n // bn, bn).transpose(2, 0, 3, 1))


def pack_int4_weight(codes_kn: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """4-bit codes ``W[K, N]`` -> bytes ``Wp[N/bn, K/bk, bn, bk/2]``: the codes of block ``[j*bk, (j+1)*bk)``
    of a column, two per byte as :func:`~tvmcomp.quant.nibbles.pack_nibbles` stores them: byte ``r``
    holds code ``j*bk + r`` in its low nibble and ``j*bk + bk/2 + r`` in its high one. So one
    load and a mask give the block's first ``bk/2`` codes of ``bn`` channels, a shift the others."""
    from .nibbles import pack_nibbles

    k, n = codes_kn.shape
    bn, bk = block
    rows = pack_nibbles(np.ascontiguousarray(codes_kn.T).reshape(n, k // bk, bk))  # [N, K/bk, bk/2]
    return np.ascontiguousarray(rows.reshape(n // bn, bn, k // bk, bk // 2).transpose(0, 2, 1, 3))


INT4_GROUP_DOT = "int4_group_dot"
INT4_DECODE = "int4_decode"  # the weight-only kernel's decoded panel (Matmul computes it per column panel)
# weight-only int4 (float x): 16 output channels x 2 codes, so a byte holds one code of each of two
# input channels and 16 outputs' bytes are contiguous: one load and a mask give a vector of codes
WEIGHT_ONLY_BLOCK = (16, 2)  # the compute name :class:`~tvmcomp.tune.default_schedules.GroupedMatmul` schedules


def int4_group_matmul(x, packed, scale, group_size: int):
    """TE compute: ``x[..., K]`` times 4-bit codes packed by :func:`pack_int4_weight`, per group::

        acc[..., g, n] = sum_{k in group g} x[..., k] * W[k, n]        (int32: the dot instruction)
        y[..., n]      = sum_g float(acc[..., g, n]) * scale[g, n]      (float: the group scales)

    The reduction is written over (block, byte), each byte's two codes in one sum, so a block is
    the int4 dot intrinsic's description (:mod:`tvmcomp.tune.intrinsics`): codes are read from
    their byte in the loop, never stored unpacked."""
    from tvm import te

    from .nibbles import nibble_code

    n_blocks, k_blocks, bn, half = (int(d) for d in packed.shape)
    *lead, k_total = x.shape
    bk, groups = 2 * half, int(k_total) // group_size
    per_group = group_size // bk
    kb, r = te.reduce_axis((0, per_group), "kb"), te.reduce_axis((0, half), "r")

    def dot(*i):
        *row, g, n = i
        block = g * per_group + kb
        byte = packed[n // bn, block, n % bn, r]
        return te.sum(x[(*row, block * bk + r)].astype("int32") * nibble_code(byte, False)
                      + x[(*row, block * bk + half + r)].astype("int32") * nibble_code(byte, True), axis=[kb, r])

    sums = te.compute((*lead, groups, n_blocks * bn), dot, name=INT4_GROUP_DOT)
    g = te.reduce_axis((0, groups), "g")
    return te.compute((*lead, n_blocks * bn),
                      lambda *i: te.sum(sums[(*i[:-1], g, i[-1])].astype("float32") * scale[g, i[-1]], axis=g),
                      name="int4_group_sum")


def int4_decoded_matmul(x, packed, scale, group_size: int):
    """TE compute, weight-only: float ``x[..., K]`` times 4-bit codes packed in :data:`WEIGHT_ONLY_BLOCK`::

        w[k, n] = code(k, n) * scale[k // group_size, n]       (int4_decode)
        y[..., n] = sum_k x[..., k] * w[k, n]

    The default schedule (:class:`~tvmcomp.tune.default_schedules.Matmul`) decodes ``w`` one column
    panel at a time into a buffer the size of the panel, then runs the float register tiles of
    every row on it: the decode is paid once per weight, not once per row, and no decoded copy of
    the whole weight exists (MLC-LLM's decode-matmul fusion, with the panel as the shared memory)."""
    import tvm
    from tvm import te

    from .nibbles import nibble_code

    n_blocks, k_blocks, bn, half = (int(d) for d in packed.shape)
    bk = 2 * half

    def decode(k, n):
        byte = packed[n // bn, k // bk, n % bn, k % half]
        # which nibble as a choice, not a shift by a loop variable: Relax's loop variables are int64,
        # and the vectors of codes would be widened to int64 with them
        code = tvm.tirx.if_then_else(k % bk < half, nibble_code(byte, False), nibble_code(byte, True))
        return code.astype("float32") * scale[k // group_size, n]

    weight = te.compute((k_blocks * bk, n_blocks * bn), decode, name=INT4_DECODE)
    k = te.reduce_axis((0, k_blocks * bk), name="k")
    return te.compute((*x.shape[:-1], n_blocks * bn), lambda *i: te.sum(x[(*i[:-1], k)] * weight[k, i[-1]], axis=k),
                      name="int4_decoded_matmul")


def pack_operand(x, block: tuple[int, int]):
    """Relax: ``x[..., K, N]`` -> ``[..., N/bn, K/bk, bn, bk]``, as :func:`pack_weight` at run time."""
    from tvm import relax

    *batch, k, n = (int(d) for d in x.ty.shape.values)
    bn, bk = block
    d = len(batch)
    blocked = relax.op.reshape(x, [*batch, k // bk, bk, n // bn, bn])
    return relax.op.permute_dims(blocked, [*range(d), d + 2, d, d + 3, d + 1])


def packed_matmul(x, packed, name: str = "packed_int8_matmul", outlier_inputs=None, outlier_codes=None):
    """TE compute: ``x[..., K]`` times a packed right-hand operand, accumulated in int32 -> ``[..., N]``.

    ``packed`` is ``[N/bn, K/bk, bn, bk]`` (a weight, shared by all rows of ``x``) or has the
    leading batch dimensions of ``x[*batch, M, K]`` in front (the other operand of a batched matmul).
    With ``outlier_inputs`` (``x`` on the outlier channels, gathered), the weight's outlier codes
    are added (:func:`~.outliers.plus_outlier_codes`).
    """
    from tvm import te

    n_blocks, _, bn, bk = packed.shape[-4:]
    batch = len(packed.shape) - 4
    k = te.reduce_axis((0, x.shape[-1]), name="k")
    acc = te.compute(
        (*x.shape[:-1], n_blocks * bn),
        lambda *i: te.sum(
            x[(*i[:-1], k)].astype("int32")
            * packed[(*i[:batch], i[-1] // bn, k // bk, i[-1] % bn, k % bk)].astype("int32"),
            axis=k,
        ),
        name=name,
    )
    return acc if outlier_inputs is None else plus_outlier_codes(acc, outlier_inputs, outlier_codes)


def integer_matmul(x, weight, outlier_inputs, outlier_codes):
    """TE compute: ``x[..., K] @ weight[K, N]`` in int32 plus the weight's outlier codes
    (:func:`~.outliers.plus_outlier_codes`): a Linear with outliers on a target without a dot kernel."""
    from tvm import te

    k = te.reduce_axis((0, x.shape[-1]), name="k")
    acc = te.compute((*x.shape[:-1], weight.shape[1]),
                     lambda *i: te.sum(x[(*i[:-1], k)].astype("int32") * weight[k, i[-1]].astype("int32"), axis=k),
                     name="integer_matmul")
    return plus_outlier_codes(acc, outlier_inputs, outlier_codes)
