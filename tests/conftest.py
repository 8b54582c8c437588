import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)


@pytest.fixture(autouse=True, scope="session")
def private_schedules(tmp_path_factory):
    """Tests read a copy of the committed tuning records and never write into the repo."""
    root = tmp_path_factory.mktemp("schedules")
    if (REPO / "schedules").is_dir():
        shutil.copytree(REPO / "schedules", root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("logs"))
    os.environ["TVMCOMP_SCHEDULES"] = str(root)
    yield root


@pytest.fixture
def empty_schedules(tmp_path, monkeypatch):
    monkeypatch.setenv("TVMCOMP_SCHEDULES", str(tmp_path / "schedules"))
    return tmp_path / "schedules"


def run_imported(imported, inputs):
    """Compile an ImportedModel untuned for the host and run it on numpy inputs."""
    import tvm
    from tvm import relax

    from tvmcomp.lowering import fuse_for_tuning
    from tvmcomp.runtime import flatten_outputs

    target = tvm.target.Target({"kind": "llvm"})
    executable = tvm.compile(fuse_for_tuning(imported.bound(), target), target=target)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(inputs[spec.name]) for spec in imported.inputs])
    return [t.numpy() for t in flatten_outputs(result)]


def max_abs_diff(got, want):
    assert len(got) == len(want)
    return max(float(np.abs(g - w).max()) for g, w in zip(got, want))
