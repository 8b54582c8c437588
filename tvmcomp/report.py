"""``tvmcomp report``: one page comparing packages (fp32, int8, ...) from what they hold.

Each package folder keeps its build metadata and its latest ``bench.json`` and ``eval.json``
(written by ``tvmcomp bench`` / ``tvmcomp eval``). The report puts them side by side:

- ``report.md``: a table per variant (latency p50/p90, speedup vs PyTorch, library size, accuracy
  against the float model, kernels on default schedules), the plots, and what is missing;
- ``report.json``: the same rows;
- ``latency_accuracy.png``: latency vs accuracy, marker area proportional to library size;
- ``kernels.png``: where each package's time goes, per kernel (from ``bench --profile``).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import TvmcompError
from .runtime import read_metadata

TOP_KERNELS = 8  # kernels named in the breakdown; the rest are summed as "other"


def _read_result(package: Path, name: str) -> dict | None:
    path = package / f"{name}.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TvmcompError(f"{path} is corrupt: {err}") from None


def package_row(path: str | Path) -> dict:
    """What the report shows of one package; None where the package holds no such result."""
    path = Path(path)
    metadata = read_metadata(path)
    bench, evaluation = _read_result(path, "bench"), _read_result(path, "eval")
    latency = (bench or {}).get("tvmcomp") or {}
    return {
        "package": str(path),
        "name": f"{metadata['variant']} ({path.name})",
        "model": metadata["model"],
        "variant": metadata["variant"],
        "target": metadata["target"]["schedule_key"],
        "library_mib": metadata["library_bytes"] / 2**20,
        "kernels": metadata["kernels"],
        "default_scheduled_kernels": metadata.get("default_scheduled_kernels"),
        "where_timed": (bench or {}).get("device") or (f"{bench['threads']} threads" if bench else None),
        "p50_ms": latency.get("median_ms"),
        "p90_ms": latency.get("p90_ms"),
        "torch_p50_ms": (bench or {}).get("torch", {}).get("median_ms"),
        "speedup_vs_torch": (bench or {}).get("speedup_vs_torch"),
        "cosine_vs_float": (evaluation or {}).get("embedding_cosine_mean", (evaluation or {}).get(
            "output_cosine_mean", (bench or {}).get("cosine_vs_torch"))),
        "sqnr_db": (evaluation or {}).get("sqnr_db"),
        "accuracy_source": "eval" if evaluation else ("bench" if bench and "cosine_vs_torch" in bench else None),
        "probe_drop_pt": (evaluation or {}).get("probe_accuracy_drop_pt"),
        "wordsim_spearman": (evaluation or {}).get("wordsim_spearman_float_vs_package"),
        "profile": (bench or {}).get("profile"),
        "pruning": metadata.get("pruning"),
        "task": _task_probe(evaluation),
        "shapes": (bench or {}).get("shapes"),  # latency of each shape of a --seq-len / --batch list package
    }


def _task_probe(evaluation: dict | None) -> dict | None:
    """What eval measured on the user's labelled samples (``--data texts.tsv``, or a folder of class
    subfolders), if it did."""
    if not evaluation or "task_probe_float" not in evaluation:
        return None
    return {key: evaluation.get(key) for key in ("task_probe_samples", "task_probe_float", "task_probe_package",
                                                 "task_probe_drop_pt", "task_probe_agreement")}


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _latency_accuracy_plot(rows: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["p50_ms"] is not None and r["cosine_vs_float"] is not None]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    largest = max(r["library_mib"] for r in points)
    for i, row in enumerate(points):
        area = 150 + 1600 * row["library_mib"] / largest
        ax.scatter(row["p50_ms"], row["cosine_vs_float"], s=area, alpha=0.55, color=f"C{i}", edgecolors="black")
        ax.annotate(f"{row['name']}\n{row['library_mib']:.1f} MiB", (row["p50_ms"], row["cosine_vs_float"]),
                    textcoords="offset points", xytext=(14, -4), fontsize=9)
    torch_ms = [r["torch_p50_ms"] for r in points if r["torch_p50_ms"]]
    if torch_ms:
        ax.axvline(sum(torch_ms) / len(torch_ms), color="grey", linestyle="--", linewidth=1)
        ax.annotate("PyTorch fp32", (sum(torch_ms) / len(torch_ms), ax.get_ylim()[0]), textcoords="offset points",
                    xytext=(4, 6), fontsize=8, color="grey")
    ax.set_xlim(left=0, right=max([r["p50_ms"] for r in points] + torch_ms) * 1.35)
    low = min(r["cosine_vs_float"] for r in points)
    ax.set_ylim(min(low - 0.2 * (1 - low) - 1e-3, 0.999), 1.0 + 0.1 * (1 - low) + 5e-4)
    ax.set_xlabel("latency, median ms (lower is better)")
    ax.set_ylabel("cosine similarity to the float model (higher is better)")
    ax.set_title(f"{points[0]['model']} on {points[0]['target']}: latency vs accuracy (area = library size)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _kernel_plot(rows: list[dict], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    profiled = [r for r in rows if r["profile"]]
    if not profiled:
        return False
    fig, axes = plt.subplots(len(profiled), 1, figsize=(9, 1.2 + 2.4 * len(profiled)), dpi=110, squeeze=False)
    for ax, row in zip(axes[:, 0], profiled):
        kernels = row["profile"]["kernels"]
        shown = kernels[:TOP_KERNELS]
        names = [k["name"][:48] for k in shown] + (["other"] if len(kernels) > TOP_KERNELS else [])
        times = [k["ms_per_run"] for k in shown] + ([sum(k["ms_per_run"] for k in kernels[TOP_KERNELS:])]
                                                    if len(kernels) > TOP_KERNELS else [])
        ax.barh(range(len(names)), times, color=[f"C{i}" for i in range(len(names))])
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.invert_yaxis()
        for y, ms in enumerate(times):
            ax.annotate(f"{ms:.2f} ms", (ms, y), textcoords="offset points", xytext=(3, -3), fontsize=8)
        ax.set_xlim(right=max(times) * 1.2)
        ax.set_title(f"{row['name']}: {row['profile']['instrumented_ms']:.1f} ms per run by kernel", fontsize=10)
        ax.set_xlabel("ms per run")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_report(packages: list[str | Path], out_dir: str | Path) -> dict:
    """Write report.md, report.json and the PNG plots for ``packages`` into ``out_dir``."""
    if not packages:
        raise TvmcompError("name at least one package folder")
    rows = [package_row(p) for p in packages]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plots = {name: out / f"{name}.png" for name in ("latency_accuracy", "kernels")}
    drawn = {"latency_accuracy": _latency_accuracy_plot(rows, plots["latency_accuracy"]),
             "kernels": _kernel_plot(rows, plots["kernels"])}
    lines = [f"# {rows[0]['model']}: {', '.join(r['variant'] for r in rows)}", "",
             "| package | target | timed on | p50 ms | p90 ms | vs PyTorch fp32 | library MiB | cosine vs float | "
             "SQNR dB | probe drop pt | WordSim rho | default-scheduled kernels |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        speedup = _fmt(r["speedup_vs_torch"], ".2f") + ("x" if r["speedup_vs_torch"] else "")
        lines.append(f"| {r['name']} | {r['target']} | {r['where_timed'] or '-'} | {_fmt(r['p50_ms'], '.2f')} | "
                     f"{_fmt(r['p90_ms'], '.2f')} | {speedup} | {r['library_mib']:.1f} | "
                     f"{_fmt(r['cosine_vs_float'], '.4f')} | {_fmt(r['sqnr_db'], '.1f')} | {_fmt(r['probe_drop_pt'], '.1f')} | "
                     f"{_fmt(r['wordsim_spearman'], '.4f')} | {r['default_scheduled_kernels']} of {r['kernels']} |")
    lines.append("")
    by_shape = [r for r in rows if r["shapes"]]
    if by_shape:
        lines += ["## Latency by input shape", "", "| package | input shape | p50 ms | p90 ms | per s |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['name']} | {' '.join(f'{n} {dims}' for n, dims in shape['inputs'].items())} | "
                  f"{shape['p50_ms']:.2f} | {shape['p90_ms']:.2f} | {shape['throughput_per_s']:.1f} |"
                  for r in by_shape for shape in r["shapes"]]
        lines.append("")
    tasks = [r for r in rows if r["task"]]
    if tasks:  # eval --data texts.tsv or a folder of class subfolders: the user's own task
        lines += ["## Your task (eval --data, labelled samples)", "", "| package | labelled samples | probe accuracy, float | "
                  "probe accuracy, package | drop pt | predictions as float's |", "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['name']} | {r['task']['task_probe_samples']} | {r['task']['task_probe_float']:.3f} | "
                  f"{r['task']['task_probe_package']:.3f} | {r['task']['task_probe_drop_pt']:.1f} | "
                  f"{_fmt(r['task']['task_probe_agreement'], '.1%')} |" for r in tasks]
        lines.append("")
    pruned = [r for r in rows if r["pruning"]]
    if pruned:  # what pruning removed; the table above gives each package's accuracy cost
        from .prune import flops_kept

        lines += ["## Pruning", "", "| package | encoder FLOPs kept | parameters kept | heads per layer | "
                  "FFN neurons per layer | tokens entering each layer |", "|---|---:|---:|---|---|---|"]
        for r in pruned:
            pruning = r["pruning"]
            units = " | ".join(" ".join(map(str, pruning[key])) if key in pruning else "all" for key in ("heads", "neurons"))
            tokens = " ".join(map(str, pruning["tokens"]["tokens"])) if "tokens" in pruning else "all"
            lines.append(f"| {r['name']} | {flops_kept(pruning):.3f} | {pruning.get('params_kept', 1.0):.3f} | {units} | "
                         f"{tokens} |")
        lines.append("")
    for name, title in (("latency_accuracy", "Latency vs accuracy"), ("kernels", "Where the time goes")):
        if drawn[name]:
            lines += [f"## {title}", "", f"![{title}]({plots[name].name})", ""]
    missing = [f"- {r['name']}: no bench result (`tvmcomp bench {r['package']} --compare torch --profile`)"
               for r in rows if r["p50_ms"] is None]
    missing += [f"- {r['name']}: no accuracy result (`tvmcomp eval {r['package']}`)"
                for r in rows if r["accuracy_source"] is None]
    missing += [f"- {r['name']}: no per-kernel times (`tvmcomp bench {r['package']} --profile`)"
                for r in rows if r["p50_ms"] is not None and not r["profile"]]
    if missing:
        lines += ["## Not measured yet", "", *missing, ""]
    lines += ["Cosine is the mean per-sentence cosine of a text encoder's embeddings against the float model on real "
              "text (`tvmcomp eval`), else the mean per-sample cosine of the outputs (`tvmcomp eval`), or, where no "
              "eval was run, of its outputs on the example inputs (`tvmcomp bench --compare torch`). SQNR: signal "
              "over error energy of the outputs, from `tvmcomp eval`."]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    files = {"markdown": str(out / "report.md"), "json": str(out / "report.json")}
    files |= {f"{name}_png": str(plots[name]) for name in plots if drawn[name]}
    (out / "report.json").write_text(json.dumps({"packages": rows, "files": files}, indent=2) + "\n")
    return {"packages": rows, "files": files}
