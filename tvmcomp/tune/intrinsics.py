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
``dot_8x2_i16_avx2`` is ``vpmaddwd`` alone, s16 x s16 pairs summed to s32, for the attention
matmuls of centered int16 codes: twice the multiply-adds per instruction of an fp32 FMA.

The int4 intrinsics take weights two codes per byte (:func:`~tvmcomp.quant.dot_kernels.pack_int4_weight`):
one load gives a block's bytes, a mask (``vpand``) its first codes and a shift (``vpsrlw``, or GFNI)
the others, each offset back by 8 (``vpsubb``), feeding the same dot instructions as int8.
``dot_16x8_w4_vnni`` is two ``vpdpbusd``, Arm's ``dot_4x8_w4_sdot`` two ``sdot`` (s8 x s8); ``dot_8x8_w4_avx2`` adds the two ``vpmaddubsw`` pair sums
in int16 before one ``vpmaddwd``: with codes in [-8, 7] nothing saturates (2 * 2 * 255 * 8 < 32767),
so int4 weights need no narrowing on AVX2. The vectors are written as one expression: a named
temporary in TVMScript is a buffer, allocated per call.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

PACKAGE = "tvm.s_tir.tensor_intrin"
VNNI_INTRIN = "dot_16x4_vnni"
AVX2_INTRIN = "dot_8x4_avx2"
AVX2_I16_INTRIN = "dot_8x2_i16_avx2"
VNNI_W4_INTRIN = "dot_16x8_w4_vnni"
AVX2_W4_INTRIN = "dot_8x8_w4_avx2"
SDOT_W4_INTRIN = "dot_4x8_w4_sdot"


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


def _dot_desc(a_dtype: str, b_dtype: str, lanes: int, reduce: int):
    """``C[i] += A[k] * B[i, k]`` in int32 over ``lanes`` outputs and ``reduce`` elements: the
    computation a dot-product instruction replaces."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((reduce,), a_dtype, offset_factor=1),
        B: T.Buffer((lanes, reduce), b_dtype, offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:reduce], B[0:lanes, 0:reduce])
            T.writes(C[0:lanes])
            for i in T.serial(0, lanes):
                for k in T.serial(0, reduce):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


def _avx2_8x4_u8i8i32():
    from tvm.script import tirx as T

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

    return impl


def _avx2_8x2_i16i16i32():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((2,), "int16", offset_factor=1),
        B: T.Buffer((8, 2), "int16", offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:2], B[0:8, 0:2])
            T.writes(C[0:8])
            # the 2 activation values, repeated for each of the 8 output lanes
            a_i16x16 = T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int16x2"), dtype="int32"), 8), dtype="int16x16")
            C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"), a_i16x16, B.vload([0, 0], dtype="int16x16"),
                dtype="int32x8",
            )

    return impl


def _int4_dot_desc(a_dtype: str, lanes: int, codes: int):
    """``C[i] += A[k] * W[i, k]`` over ``lanes`` outputs and ``codes`` elements, ``W`` read from
    bytes ``B[i, r]``: code ``r`` in the low nibble, code ``codes/2 + r`` in the high one."""
    from tvm.script import tirx as T

    from ..quant.nibbles import nibble_code

    half = codes // 2

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((codes,), a_dtype, offset_factor=1),
        B: T.Buffer((lanes, half), "uint8", offset_factor=1),
        C: T.Buffer((lanes,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:codes], B[0:lanes, 0:half])
            T.writes(C[0:lanes])
            for i, r in T.grid(lanes, half):
                with T.sblock("update"):
                    vi, vr = T.axis.remap("SR", [i, r])
                    C[vi] = C[vi] + (T.Cast("int32", A[vr]) * nibble_code(B[vi, vr], False)
                                     + T.Cast("int32", A[half + vr]) * nibble_code(B[vi, vr], True))

    return desc


def _repeated(A, start: int, lanes: int, dtype: str):
    """4 activation bytes from ``A[start]``, repeated for each of ``lanes`` 32-bit output lanes."""
    from tvm.script import tirx as T

    return T.reinterpret(T.broadcast(T.reinterpret(A.vload([start], f"{dtype}x4"), dtype="int32"), lanes),
                         dtype=f"{dtype}x{4 * lanes}")


def _codes(B, size: int, high: bool):
    """The signed codes of the low or high nibbles of ``size`` bytes of ``B``, as int8 lanes."""
    from tvm.script import tirx as T

    data = B.vload([0, 0], f"uint8x{size}")
    nibbles = T.shift_right(data, T.broadcast(T.uint8(4), size)) if high else T.bitwise_and(
        data, T.broadcast(T.uint8(15), size))
    return T.reinterpret(nibbles, dtype=f"int8x{size}") - T.broadcast(T.int8(8), size)


def _vnni_16x8_u8w4i32():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((8,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "uint8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:8], B[0:16, 0:4])
            T.writes(C[0:16])
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                                        C.vload([0], dtype="int32x16"), _repeated(A, 0, 16, "uint8"),
                                        _codes(B, 64, False), dtype="int32x16"),
                _repeated(A, 4, 16, "uint8"), _codes(B, 64, True), dtype="int32x16",
            )

    return impl


def _avx2_8x8_u8w4i32():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((8,), "uint8", offset_factor=1),
        B: T.Buffer((8, 4), "uint8", offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:8], B[0:8, 0:4])
            T.writes(C[0:8])
            C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                                        _repeated(A, 0, 8, "uint8"), _codes(B, 32, False), dtype="int16x16")
                + T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                                          _repeated(A, 4, 8, "uint8"), _codes(B, 32, True), dtype="int16x16"),
                T.broadcast(T.int16(1), 16),
                dtype="int32x8",
            )

    return impl


def _sdot_4x8_s8w4i32():
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def impl(
        A: T.Buffer((8,), "int8", offset_factor=1),
        B: T.Buffer((4, 4), "uint8", offset_factor=1),
        C: T.Buffer((4,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:4], A[0:8], B[0:4, 0:4])
            T.writes(C[0:4])
            C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                T.call_llvm_pure_intrin(T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                                        C.vload([0], dtype="int32x4"), _repeated(A, 0, 4, "int8"),
                                        _codes(B, 16, False), dtype="int32x4"),
                _repeated(A, 4, 4, "int8"), _codes(B, 16, True), dtype="int32x4",
            )

    return impl


def _arm_intrinsics(_module) -> None:
    from tvm.s_tir import TensorIntrin

    TensorIntrin.register(SDOT_W4_INTRIN, _int4_dot_desc("int8", 4, 8), _sdot_4x8_s8w4i32(), override=True)


def _x86_intrinsics(module) -> None:
    from tvm.s_tir import TensorIntrin

    TensorIntrin.register(VNNI_INTRIN, module.dot_product_16x4_u8i8i32_desc, _vnni_16x4_u8i8i32(), override=True)
    TensorIntrin.register(AVX2_INTRIN, _dot_desc("uint8", "int8", 8, 4), _avx2_8x4_u8i8i32(), override=True)
    TensorIntrin.register(AVX2_I16_INTRIN, _dot_desc("int16", "int16", 8, 2), _avx2_8x2_i16i16i32(), override=True)
    TensorIntrin.register(VNNI_W4_INTRIN, _int4_dot_desc("uint8", 16, 8), _vnni_16x8_u8w4i32(), override=True)
    TensorIntrin.register(AVX2_W4_INTRIN, _int4_dot_desc("uint8", 8, 8), _avx2_8x8_u8w4i32(), override=True)


# run after importing the named backend module: fixes and additions to its intrinsics
_AFTER_IMPORT = {"x86": _x86_intrinsics, "arm_cpu": _arm_intrinsics}


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
