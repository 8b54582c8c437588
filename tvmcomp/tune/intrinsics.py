"""Register only the tensor intrinsics a target can use, with fixes for the ones 0.27 ships broken.

MetaSchedule's TuneContext imports the package ``tvm.s_tir.tensor_intrin``, whose ``__init__``
registers every backend's intrinsics: 80 s on a 2-core machine, 61 s of it CUDA's, paid by every
CPU tune. Here the package is entered without running its ``__init__`` and only the submodules
named by the target preset (``"tensor_intrinsics": ["x86"]``) are imported.

TVM 0.27's ``dot_16x4_vnni`` passes ``<16 x i32>`` operands to ``llvm.x86.avx512.vpdpbusd.512``,
which the bundled LLVM declares as ``(<16 x i32>, <64 x i8>, <64 x i8>)``: every kernel using it
fails LLVM's module verification. It is re-registered under the same name with byte operands.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

PACKAGE = "tvm.s_tir.tensor_intrin"
VNNI_INTRIN = "dot_16x4_vnni"


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


def _fix_x86(module) -> None:
    from tvm.s_tir import TensorIntrin

    TensorIntrin.register(VNNI_INTRIN, module.dot_product_16x4_u8i8i32_desc, _vnni_16x4_u8i8i32(), override=True)


_FIXES = {"x86": _fix_x86}


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
        if name in _FIXES:
            _FIXES[name](module)
