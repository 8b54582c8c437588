"""Register only the tensor intrinsics a target can use, with fixes for the ones 0.27 ships broken.

MetaSchedule's TuneContext imports the package ``tvm.s_tir.tensor_intrin``, whose ``__init__``
registers every backend's intrinsics: 80 s on a 2-core machine, 61 s of it CUDA's, paid by every
CPU tune. Here the package is entered without running its ``__init__`` and only the submodules
named by the target preset (``"tensor_intrinsics": ["x86"]``) are imported.

TVM 0.27's ``dot_16x4_vnni`` passes ``<16 x i32>`` operands to ``llvm.x86.avx512.vpdpbusd.512``,
which the bundled LLVM declares as ``(<16 x i32>, <64 x i8>, <64 x i8>)``: every kernel using it
fails LLVM's module verification. It is re-registered under the same name with byte operands.

0.27 has no int8 dot product for AVX2-only CPUs (Zen3, pre-Ice Lake Intel), so ``dot_8x4_avx2`` is
added: ``vpmaddubsw`` (u8 x s8 pairs summed to s16, saturating) then ``vpmaddwd`` by ones (s16
pairs summed to s32), the sequence fbgemm and oneDNN use. The s16 sum of a pair saturates unless
``2 * 255 * max|w| <= 32767``: kernels using it need 7-bit weights (``"weight_bits": 7``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

PACKAGE = "tvm.s_tir.tensor_intrin"
VNNI_INTRIN = "dot_16x4_vnni"
AVX2_INTRIN = "dot_8x4_avx2"


def _vnni_16x4_u8i8i32():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            # the 4 activation bytes, repeated for each of the 16 output lanes
            a_u8x64 = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16), dtype="uint8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                a_u8x64,
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    return impl


def _avx2_8x4_desc_and_impl():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((8, 4), "int8", offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:8, 0:4])
            T.writes(C[0:8])
            for i in T.serial(0, 8):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((8, 4), "int8", offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:4], B[0:8, 0:4])
            T.writes(C[0:8])
            a_u8x32 = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 8), dtype="uint8x32")
            pairs_i16x16 = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"), a_u8x32, B.vload([0, 0], dtype="int8x32"),
                dtype="int16x16",
            )
            C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), pairs_i16x16, T.broadcast(T.int16(1), 16),
                dtype="int32x8",
            )

    return desc, impl


def _x86_intrinsics(module) -> None:
    from tvm.s_tir import TensorIntrin

    TensorIntrin.register(VNNI_INTRIN, module.dot_product_16x4_u8i8i32_desc, _vnni_16x4_u8i8i32(), override=True)
    TensorIntrin.register(AVX2_INTRIN, *_avx2_8x4_desc_and_impl(), override=True)


# run after importing the named backend module: fixes and additions to its intrinsics
_AFTER_IMPORT = {"x86": _x86_intrinsics}


def register_tensor_intrinsics(modules: list[str]) -> None:
    """Import ``tvm.s_tir.tensor_intrin.<m>`` for each name; a later plain import of the package is free."""
    if PACKAGE not in sys.modules:
        import tvm.s_tir

        spec = importlib.util.find_spec(PACKAGE)
        package = importlib.util.module_from_spec(spec)  # an empty package: __path__ set, __init__ not run
        sys.modules[PACKAGE] = package
        tvm.s_tir.tensor_intrin = package
    for name in modules:
        module = importlib.import_module(f"{PACKAGE}.{name}")
        if name in _AFTER_IMPORT:
            _AFTER_IMPORT[name](module)
