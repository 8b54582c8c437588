"""Which tuning records serve a target: exact CPU first, then CPUs of the same ISA, never another ISA."""

import dataclasses

from tvm.s_tir.meta_schedule.testing.dummy_object import DummyRunner

from models_for_tests import mlp_source
from tvmcomp.build import build
from tvmcomp.targets import resolve_target
from tvmcomp.tune.records import isa_features, serving_folders


def _x86(cpu):
    spec = resolve_target("x86")
    return dataclasses.replace(spec, tvm_config=dict(spec.tvm_config, mcpu=cpu))


def _records(root, folder, lines=1):
    path = root / folder
    path.mkdir(parents=True)
    (path / "database_tuning_record.json").write_text("[0]\n" * lines)
    (path / "database_workload.json").write_text("")


def test_isa_features_are_llvms_for_the_cpu_name():
    assert isa_features(_x86("znver2")) == isa_features(_x86("znver3")) == ("avx2", "fma")
    assert "avx512vnni" in isa_features(_x86("icelake-server"))
    assert isa_features(_x86("znver3"), cpu="znver4") == isa_features(_x86("znver4"))


def test_exact_cpu_first_then_same_isa(empty_schedules):
    for folder in ("x86-znver3", "x86-haswell", "x86-znver2", "x86-icelake-server", "arm"):
        _records(empty_schedules, folder)
    folders = serving_folders(_x86("znver2"))
    assert [(f.path.name, f.same_cpu) for f in folders] == [
        ("x86-znver2", True), ("x86-haswell", False), ("x86-znver3", False)]
    assert folders[2].describe(_x86("znver2")) == "x86-znver3, same ISA as this znver2 (avx2, fma)"


def test_same_isa_when_the_exact_folder_is_missing_or_empty(empty_schedules):
    _records(empty_schedules, "x86-znver3")
    _records(empty_schedules, "x86-znver2", lines=0)
    assert [f.path.name for f in serving_folders(_x86("znver2"))] == ["x86-znver3"]


def test_another_isa_does_not_borrow(empty_schedules):
    _records(empty_schedules, "x86-znver3")
    assert serving_folders(_x86("znver4")) == []  # AVX-512 + VNNI: different kernels, different schedules
    assert serving_folders(_x86("skylake-avx512")) == []


def test_a_build_reads_same_isa_records_and_says_so(empty_schedules, tmp_path, capsys):
    """Records tuned "on" znver3 serve a znver2 build: nothing is left untuned, none re-tuned."""
    source = mlp_source()
    # dummy run times: which records are read is under test here, not what they measured
    tuned = build(source, _x86("znver3"), tmp_path / "tuned", trials=12, runner=DummyRunner())
    assert tuned.metadata["default_scheduled_kernels"] == 0
    borrowed = build(source, _x86("znver2"), tmp_path / "borrowed", trials=12)
    assert borrowed.tuned_now == 0 and borrowed.metadata["default_scheduled_kernels"] == 0
    assert borrowed.metadata["records"] == [{"folder": "x86-znver3", "cpu": "znver3", "same_cpu": False}]
    assert "[build] records: x86-znver3, same ISA as this znver2 (avx2, fma)" in capsys.readouterr().err
    assert not (empty_schedules / "x86-znver2").exists()  # nothing was written for znver2


def test_a_build_with_no_records_creates_no_folder(empty_schedules, tmp_path):
    build(mlp_source(), _x86("znver3"), tmp_path / "pkg")
    assert not (empty_schedules / "x86-znver3").exists()
