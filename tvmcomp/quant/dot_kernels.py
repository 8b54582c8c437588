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

``"int16_dot"`` is for matmuls of two activations (attention), whose operands are centered codes
in int16 (see :mod:`tvmcomp.quant.realize`); the right-hand one is packed at run time, by a
reshape and transpose that fuse into the kernel producing it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TvmcompError
from ..targets import TargetSpec

_REQUIRED = ("feature", "intrinsic", "weight_block", "activation_dtype")  # "weight_bits" defaults to 8


@dataclass(frozen=True)
class DotKernel:
    feature: str  # LLVM CPU feature the instruction needs (e.g. "avx512vnni", "dotprod")
    intrinsic: str  # TensorIntrin name MetaSchedule tensorizes with
    weight_block: tuple[int, int]  # (output channels, reduction elements) per packed block
    activation_dtype: str  # "uint8" or "int8"
    weight_bits: int = 8  # fewer where the instruction's intermediate sums would saturate

    def fits(self, k: int, n: int) -> bool:
        bn, bk = self.weight_block
        return n % bn == 0 and k % bk == 0


@dataclass(frozen=True)
class DotKernels:
    """A target's dot-product kernels: for int8 Linear layers and for int16 activation matmuls."""

    linear: DotKernel | None = None
    batched: DotKernel | None = None

    @property
    def kernels(self) -> list[DotKernel]:
        return [kernel for kernel in (self.linear, self.batched) if kernel is not None]

    @property
    def intrinsics(self) -> list[str]:
        return [kernel.intrinsic for kernel in self.kernels]


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
    return DotKernels(dot_kernel_for(target, "int8_dot"), dot_kernel_for(target, "int16_dot"))


def pack_weight(weight_kn: np.ndarray, block: tuple[int, int]) -> np.ndarray:
    """``W[K, N]`` -> ``Wp[N/bn, K/bk, bn, bk]`` with ``Wp[i, j, c, r] = W[j*bk + r, i*bn + c]``."""
    k, n = weight_kn.shape
    bn, bk = block
    return np.ascontiguousarray(weight_kn.reshape(k // bk, bk, n // bn, bn).transpose(2, 0, 3, 1))


def pack_operand(x, block: tuple[int, int]):
    """Relax: ``x[..., K, N]`` -> ``[..., N/bn, K/bk, bn, bk]``, as :func:`pack_weight` at run time."""
    from tvm import relax

    *batch, k, n = (int(d) for d in x.ty.shape.values)
    bn, bk = block
    d = len(batch)
    blocked = relax.op.reshape(x, [*batch, k // bk, bk, n // bn, bn])
    return relax.op.permute_dims(blocked, [*range(d), d + 2, d, d + 3, d + 1])


def packed_matmul(x, packed, name: str = "packed_int8_matmul"):
    """TE compute: ``x[..., K]`` times a packed right-hand operand, accumulated in int32 -> ``[..., N]``.

    ``packed`` is ``[N/bn, K/bk, bn, bk]`` (a weight, shared by all rows of ``x``) or has the
    leading batch dimensions of ``x[*batch, M, K]`` in front (the other operand of a batched matmul).
    """
    from tvm import te

    n_blocks, _, bn, bk = packed.shape[-4:]
    batch = len(packed.shape) - 4
    k = te.reduce_axis((0, x.shape[-1]), name="k")
    return te.compute(
        (*x.shape[:-1], n_blocks * bn),
        lambda *i: te.sum(
            x[(*i[:-1], k)].astype("int32")
            * packed[(*i[:batch], i[-1] // bn, k // bk, i[-1] % bn, k % bk)].astype("int32"),
            axis=k,
        ),
        name=name,
    )
