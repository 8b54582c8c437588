"""Register only the tensor intrinsics a target can use.

MetaSchedule's TuneContext imports the package ``tvm.s_tir.tensor_intrin``, whose ``__init__``
registers every backend's intrinsics: 80 s on a 2-core machine, 61 s of it CUDA's, paid by every
CPU tune. Here the package is entered without running its ``__init__`` and only the submodules
named by the target preset (``"tensor_intrinsics": ["x86"]``) are imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

PACKAGE = "tvm.s_tir.tensor_intrin"


def register_tensor_intrinsics(modules: list[str]) -> None:
    """Import ``tvm.s_tir.tensor_intrin.<m>`` for each name; a later plain import of the package is free."""
    if PACKAGE not in sys.modules:
        import tvm.s_tir

        spec = importlib.util.find_spec(PACKAGE)
        package = importlib.util.module_from_spec(spec)  # an empty package: __path__ set, __init__ not run
        sys.modules[PACKAGE] = package
        tvm.s_tir.tensor_intrin = package
    for name in modules:
        importlib.import_module(f"{PACKAGE}.{name}")
