"""Build a deployable package: import -> lower -> (tune missing kernels) -> compile -> export.

The package is written to a temporary sibling folder and renamed into place at the end, so a
failed build never leaves a half-written package behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import tune as tuning
from .errors import TvmcompError
from .lowering import fuse_for_tuning
from .quant.dot_kernels import dot_kernels_for
from .quant.pipeline import CALIBRATION, QuantOptions, quantize_model
from .quant.schemes import Granularity
from .remote import REFERENCE_OUTPUTS
from .runtime import EXAMPLE_INPUTS, LIBRARY, METADATA, PREPROCESSING_DIR
from .source import ModelSource
from .targets import TargetSpec
from .tune.default_schedules import apply_default_schedules

@dataclass
class BuildResult:
    path: Path
    metadata: dict
    tuned_now: int  # kernels tuned during this build (0 when the database had them all)


def model_hash(source: ModelSource) -> str:
    digest = hashlib.sha256()
    for name in sorted(source.imported.params):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(source.imported.params[name]).tobytes())
    digest.update(str(source.imported.mod["main"].script()).encode())
    return digest.hexdigest()[:16]


def all_shapes_module(source: ModelSource):
    """One module with a Relax function per shape (``main``: the largest; :mod:`tvmcomp.source`).
    Shapes share their weights: the VM stores equal constants once, so each added shape costs
    only its kernels' code. A shape's own TIR functions (emitted by realize) get its name as suffix."""
    from tvm import relax

    builder = relax.BlockBuilder(source.imported.bound())
    for name, imported in source.variants.items():
        shape_mod = imported.bound()
        renamed = {gv: builder.add_func(shape_mod[gv], f"{gv.name_hint}_{name}") for gv in shape_mod.get_global_vars()
                   if gv.name_hint != "main"}
        main = _global_var_renamer()(renamed).visit_expr(shape_mod["main"])
        builder.add_func(main.with_attr("global_symbol", name), name)
    return builder.get()


def _global_var_renamer():
    from tvm import relax

    @relax.expr_functor.mutator
    class GlobalVarRenamer(relax.PyExprMutator):
        """Replaces the GlobalVars a function calls (``call_tir`` targets) by the given ones."""

        def __init__(self, renamed: dict):
            super().__init__()
            self.renamed = renamed

        def visit_global_var_(self, op):
            return self.renamed.get(op, op)

    return GlobalVarRenamer


def _output_shapes(struct_info) -> list[list[int]]:
    if hasattr(struct_info, "fields"):
        return [shape for field in struct_info.fields for shape in _output_shapes(field)]
    return [[int(dim) for dim in struct_info.shape.values]]


def shape_table(source: ModelSource, fused) -> list[dict]:
    """The shapes the package serves, smallest first: each one's function, input and output shapes
    (what :mod:`tvmcomp.shape_choice` picks from at run time)."""
    rows = [{"function": name, "inputs": {spec.name: list(spec.shape) for spec in imported.inputs},
             "outputs": _output_shapes(fused[name].ret_ty)} for name, imported in source.shapes().items()]
    return sorted(rows, key=lambda row: sum(int(np.prod(shape)) for shape in row["inputs"].values()))


@dataclass
class Prepared:
    fused: object  # the fused IRModule: what tune extracts tasks from and build compiles
    model_hash: str
    calibration: dict | None  # the calibration document of a quantized build


def prepare(source: ModelSource, target: TargetSpec, options: QuantOptions = QuantOptions(),
            previous_package: Path | None = None, stream=None) -> Prepared:
    """Quantize (as ``options`` say), merge the shapes and fuse: the one preparation build and tune
    share, so that the kernels tune records are made for are the kernels a build looks up."""
    digest = model_hash(source)
    calibration = None
    if options.quantizes:
        calibration = quantize_model(source, options, digest, previous_package, dot_kernels_for(target), stream)
    return Prepared(fuse_for_tuning(all_shapes_module(source), target.tvm_target()), digest, calibration)


def check_output_location(out_dir: Path) -> None:
    """Fail before any work when the package folder could not be written (checked, not created)."""
    if out_dir.exists() and not (out_dir / METADATA).is_file():
        raise TvmcompError(f"{out_dir} exists and is not a tvmcomp package; refusing to overwrite it")
    parent = out_dir.parent.resolve()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise TvmcompError(f"cannot write the package {out_dir}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TvmcompError(f"cannot write the package {out_dir}: no write permission in {parent}")


def _default_schedules_line(missing: int, total: int, target: TargetSpec, model: str) -> str:
    """What the build says when some kernels have no record: they get default schedules; how to tune."""
    tune = f"tvmcomp tune --model {model} --target {target.name}"
    if target.is_cross:  # candidates must be measured on the device itself
        tune += " --rpc-tracker HOST:PORT --rpc-key KEY"
    return (f"[build] {missing} of {total} kernels have no tuning record for {target.schedule_key}: "
            f"default schedules (within ~2x of tuned); to tune them: `{tune}`, or build with --trials N")


def schedule_kernels(fused_mod, target: TargetSpec, database):
    """Apply the best schedule of every kernel found in ``database`` and a default schedule to every
    other kernel (:mod:`tvmcomp.tune.default_schedules`)."""
    import tvm
    from tvm import relax

    tvm_target = target.tvm_target()
    tuning.register_tensor_intrinsics(list(target.tensor_intrinsics))  # the records' traces tensorize with them
    with tvm_target, database, tvm.transform.PassContext(opt_level=3):
        scheduled = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(fused_mod)
    return apply_default_schedules(scheduled, tvm_target, dot_kernels_for(target).kernels)


def compile_scheduled(scheduled_mod, target: TargetSpec):
    import tvm

    tvm_target = target.tvm_target()
    with tvm_target, tvm.transform.PassContext(opt_level=3):
        return tvm.compile(scheduled_mod, target=tvm_target)


def compile_with_database(fused_mod, target: TargetSpec, database):
    """Schedule (records, then defaults) and compile for ``target``."""
    return compile_scheduled(schedule_kernels(fused_mod, target, database), target)


CODE_DIR = "code"
CODE_FORMS = {  # --dump-code form -> file under the package's code/ folder
    "relax": "model.relax.py",  # the graph after fusion: which kernels run, in what order
    "tir": "kernels.tir.py",  # each kernel as scheduled (tiles, vectorized and parallel loops, tensorized calls)
    "ll": "kernels.ll",  # LLVM IR
    "asm": "kernels.s",  # the target's assembly: look for vpdpbusd / sdot here
}


def check_code_forms(forms: list[str]) -> None:
    unknown = sorted(set(forms) - set(CODE_FORMS))
    if unknown:
        raise TvmcompError(f"--dump-code takes {', '.join(CODE_FORMS)}, not {', '.join(unknown)}")


def dump_code(forms: list[str], fused_mod, scheduled_mod, executable, folder: Path) -> list[str]:
    """Write each requested form of the compiled model under ``folder``; returns the files' names."""
    from tvm import tirx

    folder.mkdir(exist_ok=True)
    kernels = [f"# {gv.name_hint}\n{func.script()}" for gv, func in scheduled_mod.functions_items()
               if isinstance(func, tirx.PrimFunc)]
    text = {
        "relax": lambda: fused_mod["main"].script(),
        "tir": lambda: "\n\n".join(kernels),
        "ll": lambda: executable.mod.imports[0].inspect_source("ll"),
        "asm": lambda: executable.mod.imports[0].inspect_source("asm"),
    }
    for form in forms:
        (folder / CODE_FORMS[form]).write_text(text[form]())
    return [f"{CODE_DIR}/{CODE_FORMS[form]}" for form in forms]


def host_reference_outputs(fused_mod, inputs: dict[str, np.ndarray], input_names: list[str]) -> dict[str, np.ndarray]:
    """Outputs of the same (unscheduled) kernels compiled for this machine: what a cross-compiled
    package must reproduce on its device (see :mod:`tvmcomp.remote`)."""
    import tvm
    from tvm import relax

    from .runtime import flatten_outputs

    host = tvm.target.Target({"kind": "llvm"})
    vm = relax.VirtualMachine(tvm.compile(fused_mod, target=host), tvm.cpu())
    outputs = flatten_outputs(vm["main"](*[tvm.runtime.tensor(inputs[name]) for name in input_names]))
    return {f"output_{i}": t.numpy() for i, t in enumerate(outputs)}


def export_library(executable, path: Path, target: TargetSpec) -> None:
    if target.is_cross:
        from tvm.support import cc

        executable.export_library(str(path), fcompile=cc.cross_compiler(target.cross_compiler))
    else:
        executable.export_library(str(path))


def carry_preprocessing(source: ModelSource, folder: Path) -> list[str]:
    """Copy the model's tokenizer or image-processor files into the package, so that a deployed
    package turns texts or images into inputs without the source model; their names."""
    entry = source.entry
    files = entry.preprocessing_files() if entry is not None and entry.preprocessing_files is not None else []
    if files:
        folder.mkdir()
        for file in files:
            shutil.copyfile(file, folder / file.name)
    return [file.name for file in files]


def build(
    source: ModelSource,
    target: TargetSpec,
    out_dir: str | Path,
    quant: QuantOptions = QuantOptions(),
    trials: int = 0,
    runner=None,
    stream=None,
    dump: list[str] = (),
) -> BuildResult:
    """Compile ``source`` for ``target`` into the package folder ``out_dir``.

    Kernels come from the target's tuning database; with ``trials > 0`` the kernels that have no
    record are tuned first (with that many trials in total), measured by ``runner`` (MetaSchedule's
    local runner by default). Kernels still without a record get default schedules. ``dump`` names
    forms of the compiled code to write under the package's ``code/`` (:data:`CODE_FORMS`).
    """
    import tvm

    stream = stream or sys.stderr
    if quant.quantizes:
        scheme = quant.resolve_scheme()  # an unknown name fails before any work
        if (scheme.weight.granularity is Granularity.PER_GROUP and scheme.activation is not None
                and dot_kernels_for(target).int4 is None):
            raise TvmcompError(f"{scheme.name} needs an int4 dot kernel (an \"int4_dot\" entry in the target preset "
                               f"whose CPU feature the target has); '{target.name}' has none: use --quant int8")
    check_code_forms(list(dump))
    target.check_toolchain()
    if trials > 0 and target.is_cross and runner is None:
        raise TvmcompError(f"--trials for '{target.name}' measures candidates on the device: "
                           "add --rpc-tracker HOST:PORT --rpc-key KEY (docs/arm.md)")
    out_dir = Path(out_dir)
    check_output_location(out_dir)

    started = time.monotonic()
    prepared = prepare(source, target, quant, out_dir if out_dir.exists() else None, stream)
    fused, calibration = prepared.fused, prepared.calibration
    folders = tuning.serving_folders(target)
    database = tuning.open_database(target, folders)
    tasks = tuning.extract_tasks(fused, target)
    missing = tuning.tasks_without_records(tasks, database, target)
    tuned_now = 0
    if missing and trials > 0:
        print(f"[build] {len(missing)} of {len(tasks)} kernels have no tuning records: tuning them", file=stream)
        tuning.tune(fused, target, total_trials=trials, only_missing=True, runner=runner, stream=stream)
        tuned_now = len(missing)
        folders = tuning.serving_folders(target)
        database = tuning.open_database(target, folders)
        missing = tuning.tasks_without_records(tasks, database, target)
    if missing:
        print(_default_schedules_line(len(missing), len(tasks), target, source.name), file=stream)
    print(f"[build] records: {tuning.describe_records(folders, target)}", file=stream)

    print(f"[build] compiling {len(tasks)} kernels for {target.schedule_key}", file=stream)
    scheduled = schedule_kernels(fused, target, database)
    executable = compile_scheduled(scheduled, target)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        export_library(executable, staging / LIBRARY, target)
        np.savez(staging / EXAMPLE_INPUTS, **source.example_inputs)
        if target.is_cross:
            print("[build] computing reference outputs on this machine for the device check", file=stream)
            np.savez(staging / REFERENCE_OUTPUTS, **host_reference_outputs(
                fused, source.example_inputs, [spec.name for spec in source.imported.inputs]))
        code = dump_code(list(dump), fused, scheduled, executable, staging / CODE_DIR) if dump else []
        if calibration is not None:
            (staging / CALIBRATION).write_text(json.dumps(calibration, indent=1) + "\n")
        preprocessing = carry_preprocessing(source, staging / PREPROCESSING_DIR)
        metadata = {
            "model": source.name,
            "model_hash": prepared.model_hash,
            "variant": quant.variant,
            "target": target.to_json() | {"schedule_key": target.schedule_key},
            "inputs": [spec.to_json() for spec in source.imported.inputs],
            "outputs": list(source.imported.outputs),
            "shapes": shape_table(source, fused),
            "tvm_version": tvm.__version__,
            "kernels": len(tasks),
            "default_scheduled_kernels": len(missing),
            "records": [{"folder": f.path.name, "cpu": f.cpu, "same_cpu": f.same_cpu} for f in folders],
            "records_summary": tuning.describe_records(folders, target),
            "library_bytes": (staging / LIBRARY).stat().st_size,
            "float_weight_bytes": int(sum(v.nbytes for v in source.imported.params.values())),
            "code": code,
            "preprocessing": preprocessing,
            "build_seconds": round(time.monotonic() - started, 1),
        }
        if source.pruning is not None:
            metadata["pruning"] = source.pruning
        (staging / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return BuildResult(out_dir, metadata, tuned_now)
