"""A non-editable install works outside the repo: presets and shipped records are package data,
and tuning records go to the user's folder, never into the installed package."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_cli import relu_onnx

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(REPO)], check=True, capture_output=True, timeout=300)
    return site


def _tvmcomp(site, cwd, *argv):
    env = {k: v for k, v in os.environ.items() if k not in ("TVMCOMP_SCHEDULES", "TVMCOMP_RECORDS")}
    env |= {"PYTHONPATH": str(site), "HOME": str(cwd), "XDG_CACHE_HOME": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "tvmcomp.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_wheel_ships_presets_and_records(installed, tmp_path):
    package = installed / "tvmcomp"
    assert (package / "_targets" / "x86.json").is_file()
    records = package / "_schedules" / "x86-znver3" / "database_tuning_record.json"
    assert records.stat().st_size == (REPO / "schedules" / "x86-znver3" / "database_tuning_record.json").stat().st_size
    targets = _tvmcomp(installed, tmp_path, "targets")
    assert targets.returncode == 0, targets.stderr
    assert "x86 " in targets.stdout and "arm " in targets.stdout
    models = _tvmcomp(installed, tmp_path, "models")
    assert models.returncode == 0 and "minilm" in models.stdout


def test_installed_build_writes_records_to_the_users_folder(installed, tmp_path):
    relu_onnx(tmp_path / "relu.onnx")
    shipped = sorted(p.name for p in (installed / "tvmcomp" / "_schedules").iterdir())
    built = _tvmcomp(installed, tmp_path, "build", "--model", "relu.onnx", "--trials", "4", "-o", "pkg")
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "pkg" / "model.so").is_file()
    mine = list((tmp_path / "cache" / "tvmcomp" / "schedules").glob("x86-*/database_tuning_record.json"))
    assert len(mine) == 1 and mine[0].stat().st_size > 0
    assert sorted(p.name for p in (installed / "tvmcomp" / "_schedules").iterdir()) == shipped


def test_wheel_ships_every_module_of_the_checkout(installed):
    # a subpackage missing from pyproject's list ships only if setuptools picks its files up as package data
    modules = {path.relative_to(REPO) for path in (REPO / "tvmcomp").rglob("*.py")}
    assert modules <= {path.relative_to(installed) for path in (installed / "tvmcomp").rglob("*.py")}
