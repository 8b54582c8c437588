"""Compilation targets, declared as data in ``targets/*.json`` and looked up by name.

A preset file holds TVM's own JSON target form under ``"tvm"`` plus what tvmcomp needs to
deploy for it (runtime device, cross compiler). Two placeholders are filled in from the
machine loading the preset: ``"@host_cpu"`` (LLVM's name for this CPU) and ``"@host_cores"``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .errors import TvmcompError



def shipped_data(name: str) -> Path:
    """A data folder of the project: ``tvmcomp/_<name>`` in an installed wheel (pyproject maps
    the repo's top-level folder there), else ``<repo>/<name>`` in a source checkout."""
    package = Path(__file__).resolve().parent
    installed = package / f"_{name}"
    return installed if installed.is_dir() else package.parent / name


PRESETS_DIR = shipped_data("targets")


def host_cpu() -> str:
    """LLVM's name for this machine's CPU (what ``-mcpu=native`` would pick)."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def host_cores() -> int:
    """Physical cores available to this process (MetaSchedule's ``num-cores``)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


_PLACEHOLDERS = {"@host_cpu": host_cpu, "@host_cores": host_cores}


def _fill_placeholders(value):
    if isinstance(value, dict):
        return {k: _fill_placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill_placeholders(v) for v in value]
    if isinstance(value, str) and value in _PLACEHOLDERS:
        return _PLACEHOLDERS[value]()
    return value


@dataclass(frozen=True)
class TargetSpec:
    """A resolved target: TVM's config plus deployment facts."""

    name: str
    tvm_config: dict
    description: str = ""
    device: str = "cpu"
    cross_compiler: str | None = None
    cross_compiler_package: str | None = None
    tensor_intrinsics: tuple[str, ...] = ()  # submodules of tvm.s_tir.tensor_intrin the schedules may use
    extra: dict = field(default_factory=dict)

    def tvm_target(self):
        from tvm.target import Target

        try:
            target = Target(self.tvm_config)
        except Exception as err:  # TVM raises ValueError/TVMError with a long message
            first_line = str(err).strip().splitlines()[0]
            raise TvmcompError(f"target '{self.name}' is not a valid TVM target: {first_line}") from None
        self._check_cpu(target)
        return target

    def _check_cpu(self, target) -> None:
        """LLVM only warns on an unknown ``mcpu`` and then compiles for a generic CPU."""
        from tvm.target import codegen

        cpu = self.tvm_config.get("mcpu")
        if target.kind.name != "llvm" or not cpu:
            return
        known = [str(name) for name in codegen.llvm_get_cpu_archlist(target)]
        if known and cpu not in known:
            close = [name for name in known if name[:3] == str(cpu)[:3]][:6] or known[:6]
            raise TvmcompError(f"target '{self.name}': LLVM knows no CPU '{cpu}' for this architecture "
                               f"(e.g. {', '.join(close)}; `llc -mcpu=help` lists them all)")

    @property
    def schedule_key(self) -> str:
        """Folder name under ``schedules/``: records are only valid for the CPU they were tuned on."""
        chip = str(self.tvm_config.get("mcpu") or self.tvm_config.get("arch") or "")
        if not chip or chip.replace("_", "") in self.name.replace("_", ""):
            return self.name
        return f"{self.name}-{chip}"

    @property
    def is_cross(self) -> bool:
        return self.cross_compiler is not None

    def check_toolchain(self) -> None:
        """Fail early, with the fix, when the cross compiler this target needs is missing."""
        if self.cross_compiler and shutil.which(self.cross_compiler) is None:
            pkg = self.cross_compiler_package or self.cross_compiler
            raise TvmcompError(
                f"target '{self.name}' needs the cross compiler '{self.cross_compiler}', which is not on PATH "
                f"(Debian/Ubuntu: apt-get install {pkg})"
            )

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "tvm": self.tvm_config,
            "description": self.description,
            "device": self.device,
            "cross_compiler": self.cross_compiler,
        }


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def _from_document(name: str, doc: dict) -> TargetSpec:
    if "tvm" not in doc:  # a bare TVM target dict, as TVM itself writes it
        doc = {"tvm": doc}
    if not isinstance(doc["tvm"], dict) or "kind" not in doc["tvm"]:
        raise TvmcompError(f"target '{name}' has no TVM target with a \"kind\" (e.g. {{\"kind\": \"llvm\"}})")
    return TargetSpec(
        name=name,
        tvm_config=_fill_placeholders(doc["tvm"]),
        description=doc.get("description", ""),
        device=doc.get("device", "cuda" if doc["tvm"]["kind"] == "cuda" else "cpu"),
        cross_compiler=doc.get("cross_compiler"),
        cross_compiler_package=doc.get("cross_compiler_package"),
        tensor_intrinsics=tuple(doc.get("tensor_intrinsics", _default_intrinsics(doc["tvm"]))),
        extra={k: v for k, v in doc.items() if k not in TargetSpec.__dataclass_fields__ and k != "tvm"},
    )


def _default_intrinsics(tvm_config: dict) -> list[str]:
    """For inline targets: the intrinsics of the target's architecture."""
    if tvm_config["kind"] == "cuda":
        return ["cuda"]
    return ["arm_cpu"] if str(tvm_config.get("mtriple", "")).startswith("aarch64") else ["x86"]


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except OSError as err:
        raise TvmcompError(f"cannot read {what} {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise TvmcompError(f"{what} {path} is not valid JSON: {err}") from None


def resolve_target(spec: str | dict | TargetSpec) -> TargetSpec:
    """Turn a preset name, a path to a JSON file, inline JSON or a dict into a TargetSpec."""
    if isinstance(spec, TargetSpec):
        return spec
    if isinstance(spec, dict):
        return _from_document(_inline_name(spec), spec)
    text = spec.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise TvmcompError(f"inline target is not valid JSON: {err}") from None
        return _from_document(_inline_name(doc), doc)
    preset = PRESETS_DIR / f"{text}.json"
    if preset.is_file():
        return _from_document(text, _read_json(preset, "target preset"))
    if text.endswith(".json") or os.sep in text:
        path = Path(text)
        if not path.is_file():
            raise TvmcompError(f"target file not found: {path}")
        return _from_document(path.stem, _read_json(path, "target file"))
    raise TvmcompError(
        f"unknown target '{text}'; presets: {', '.join(preset_names())} "
        "(or give a JSON file, or inline JSON such as '{\"kind\": \"llvm\", \"mcpu\": \"znver4\"}')"
    )


def _inline_name(doc: dict) -> str:
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:8]
    return f"custom-{digest}"
