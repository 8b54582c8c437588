"""After tuning, a records folder keeps each kernel's fastest few records, and a build reads the same."""

import json
import shutil
from pathlib import Path

from tvmcomp.tune.compact import KEEP_PER_KERNEL, compact_records

COMMITTED = Path(__file__).resolve().parents[1] / "schedules"


def _record(workload, seconds, target="znver3", trace="t"):
    return json.dumps([workload, [[trace], seconds, {"kind": "llvm", "mcpu": target}, []]])


def test_keeps_the_fastest_runs_of_each_kernel_and_target_in_file_order(tmp_path):
    lines = [
        _record(0, [5e-3], trace="a"),
        _record(0, [1e-3, 3e-3], trace="b"),  # mean 2e-3: second fastest
        _record(0, [1e10], trace="failed"),
        _record(1, [1e10], trace="only failed"),
        _record(0, [1e-3], trace="c"),  # fastest
        _record(0, [1e-3], target="znver4", trace="d"),  # another target: ranked on its own
        _record(0, [4e-3], trace="e"),
    ]
    (tmp_path / "database_tuning_record.json").write_text("\n".join(lines) + "\n")
    result = compact_records(tmp_path, keep=2)
    kept = (tmp_path / "database_tuning_record.json").read_text().splitlines()
    assert kept == [lines[1], lines[4], lines[5]]
    assert (result.records_before, result.records_after, result.kernels) == (7, 3, 2)


def test_the_database_answers_as_before(tmp_path):
    """One kernel's committed znver3 records, each also measured slower and failed: MetaSchedule's
    own database gives the same fastest records before and after compaction."""
    from tvm.s_tir import meta_schedule as ms

    from tvmcomp.targets import resolve_target
    from tvmcomp.tune.intrinsics import register_tensor_intrinsics

    source = COMMITTED / "x86-znver3"
    with open(source / "database_workload.json") as workloads:
        workload = next(workloads)
    committed = [json.loads(line)[1] for line in open(source / "database_tuning_record.json")
                 if json.loads(line)[0] == 0]
    lines = [json.dumps([0, [trace, [seconds * slower if slower else 1e10], target, args]])
             for slower in (1.7, None, 1.0, 2.5) for trace, (seconds,), target, args in committed]
    full = tmp_path / "full"
    full.mkdir()
    (full / "database_workload.json").write_text(workload)
    (full / "database_tuning_record.json").write_text("\n".join(lines) + "\n")
    compacted = tmp_path / "compacted"
    shutil.copytree(full, compacted)
    register_tensor_intrinsics(list(resolve_target("x86").tensor_intrinsics))

    def fastest(folder):
        database = ms.database.JSONDatabase(work_dir=str(folder), module_equality="structural")
        best = database.get_top_k(database.get_all_tuning_records()[0].workload, KEEP_PER_KERNEL)
        return [(str(r.trace), [float(s) for s in r.run_secs]) for r in best]

    assert compact_records(compacted).records_after == KEEP_PER_KERNEL < len(lines)
    assert fastest(compacted) == fastest(full)


def test_the_committed_records_are_compacted():
    for folder in COMMITTED.iterdir():
        counts = {}
        for line in open(folder / "database_tuning_record.json"):
            workload, record = json.loads(line)
            key = (workload, json.dumps(record[2], sort_keys=True))
            counts[key] = counts.get(key, 0) + 1
        assert max(counts.values()) <= KEEP_PER_KERNEL, folder.name
