"""tvmcomp: compile compressed Transformers into tuned TVM libraries for x86, aarch64 and CUDA.

Pipeline stages, each a module: ``frontend`` (import) -> ``passes`` (graph rewrites) ->
``lowering`` (fuse into kernels) -> ``tune`` (MetaSchedule) -> ``build`` (package) ->
``runtime`` / ``bench`` (load, run, measure).
"""

from .errors import TvmcompError

__version__ = "0.1.0"
__all__ = ["TvmcompError", "load", "__version__"]


def load(path):
    """Load a package built by ``tvmcomp build``; ``.run(**inputs)`` returns NumPy arrays.

    Kernels run on this machine's physical cores; set ``TVM_NUM_THREADS=n`` (or call
    ``tvmcomp.runtime.set_num_threads(n)``) before the first run to choose another number."""
    from .runtime import load as _load

    return _load(path)
