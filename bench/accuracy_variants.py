"""Accuracy of build variants, no timing: library size and accuracy against the float model
(tvmcomp.evaluate) of each variant of a study, one build each, default schedules where records lack.

Studies:
- ``embedding-bits`` (#14: "int4 rows with a scale per row, or int8 where int4 costs too much
  accuracy -- measure and choose"): int8 as shipped (int8 vocabulary rows), the same with the rows
  in 4 bits (two codes a byte, tvmcomp.quant.nibbles), and with the word table left float;
- ``pot8`` (#13): what each part of pot8 buys: power-of-two steps alone, with power-of-two
  balancing factors, and with step search too (pot8's defaults), next to int8;
- ``int4`` (#14): int8, w4a8 with nearest and GPTQ rounding, groups of 32 and 128, and w4
  (weight-only): for models bench/int4.py does not take (vit-s);
- ``w4a8-rows`` (#14 item 3 again, for w4a8, whose library an int8 word table dominates): w4a8
  with int8 rows, 4-bit rows with a scale per row, and 4-bit rows with a scale per 64 or (shipped
  since 2026-12-05) 32 entries of a row;
- ``pwlq4`` (#14: "pwlq4 more accurate than w4a8 at the same group size"): w4a8 and pwlq4 side by
  side at groups of 32 and 128, each rounded to nearest and by GPTQ, next to int8;
- ``wide4`` (#14, mpnet-base's 4-bit gap): w4a8 and pwlq4 with ``--wide-inputs``, whose Linears
  estimated too noisy in int8 take 12-bit inputs and int8 weights, next to w4a8 and int8 with it;
- ``balance`` (#14: "--balance makes static per-tensor W8A8 at least as accurate as today's int8 on
  every model and closes at least half of w4a8's cosine gap to int8"): int8 and w4a8, each without
  balancing, balanced with the alpha the noise estimate picks, and with the balancing (none or an
  alpha) and the step chosen by each Linear's output error (``--observer search``);
- ``defaults`` (#14: "--balance makes static per-tensor W8A8 at least as accurate as today's int8"):
  int8 as it was built until 2026-12-06 (min-max steps, no balancing) and as it is built now
  (balancing and each Linear input's step searched on held-out calibration rows), and w4a8 both ways;
- ``outliers`` (#15: pruned MiniLM's WordSim in int8): int8 with every Linear weight in int8, and with the
  weights past 8x their column's rms split off as int16 codes (tvmcomp.quant.outliers), unpruned and
  pruned to 0.7 and 0.5 FLOPs; ``outliers-integer``: the same split with ``--integer-only`` and in pot8;
- ``per-token`` (#13's per-token granularity, #14's 4-bit gap on mpnet-base): int8, w4a8 and pwlq4
  with ``--per-token`` (each token's Linear inputs on a step of its own, computed at run time), next
  to int8 calibrated per tensor with and without balancing and w4a8;
- ``schemes`` (#13's scheme table, accuracy only: for models bench/int8.py is too slow to time here,
  mpnet-base): int8, pot8, each with log2:4 attention probabilities, and int8 with log2:3;
- ``integer-only`` (#13's stretch): int8 and pot8, each with ``--integer-only`` (I-BERT's integer
  softmax, GELU, residual adds and LayerNorm);
- ``pot8-codes`` (#13: pot8 within 0.002 of int8, missed on mpnet-base): where pot8's gap to int8
  comes from. int8 and pot8, each with symmetric signed activation codes (pot8's until 2026-12-06)
  and with unsigned codes and a zero point (int8's, and pot8's since), and pot8 with GPTQ-rounded
  weights;
- ``gptq-samples`` (#14's 4-bit gap): the GPTQ schemes calibrated on 32 batches (their default until
  2026-12-07) and on 128 (since), GPTQ's second moments then coming from about four times the tokens,
  w4a8 with and without balancing and the step search, next to int8.

Run: .venv/bin/python bench/accuracy_variants.py STUDY [--model minilm] [--balance auto] [--skip PATTERN ...]
``--balance A`` is added to every build of the study, before its own arguments, which win (mpnet-base's
FFN outputs need balancing in 8 bits). ``--skip`` leaves out the variants whose names match (fnmatch),
for models too slow to build them all.
Writes bench/results/<date>-<study>-<model>[-balance-A][-TAG].md (``--tag TAG``: a rerun's file beside
the run it follows; an existing file is never overwritten).
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import io
import sys
import tempfile
from contextlib import redirect_stderr
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# bench/ off sys.path: its kernels.py would hide the `kernels` package transformers imports
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(REPO))  # tvmcomp.cli.main, run first, keeps the model hub offline for the process


STUDIES = {  # study -> variant name -> tvmcomp build arguments
    "embedding-bits": {"int8 rows in 8 bits (shipped)": ["--quant", "int8"],
                       "int8 rows in 4 bits": ["--quant", "int8-rows4"],
                       "int8, word table float": ["--quant", "int8", "--keep-float", "*word_embeddings*"]},
    "pot8": {"int8": ["--quant", "int8"],
             "pot8 steps only (--balance off --observer minmax)": ["--quant", "pot8", "--balance", "off",
                                                                    "--observer", "minmax"],
             "pot8 + power-of-two balancing (--observer minmax)": ["--quant", "pot8", "--observer", "minmax"],
             "pot8 + balancing + step search (pot8's defaults)": ["--quant", "pot8"]},
    "int4": {"int8": ["--quant", "int8"],
             "w4a8 g32, nearest rounding": ["--quant", "w4a8", "--weight-rounding", "nearest"],
             "w4a8 g32 (GPTQ)": ["--quant", "w4a8"],
             "w4a8 g128 (GPTQ)": ["--quant", "w4a8", "--group-size", "128"],
             "w4 g32 (GPTQ), weight-only": ["--quant", "w4"]},
    "w4a8-rows": {"w4a8, rows int8": ["--quant", "w4a8-rows8"],
                  "w4a8, rows in 4 bits, a scale per row": ["--quant", "w4a8-rows4"],
                  "w4a8, rows in 4 bits, a scale per 64 entries": ["--quant", "w4a8-rows4g64"],
                  "w4a8, rows in 4 bits, a scale per 32 entries (shipped)": ["--quant", "w4a8"]},
    "pwlq4": {"int8": ["--quant", "int8"],
              "w4a8 g32, nearest rounding": ["--quant", "w4a8", "--weight-rounding", "nearest"],
              "pwlq4 g32, nearest rounding": ["--quant", "pwlq4", "--weight-rounding", "nearest"],
              "w4a8 g32 (GPTQ)": ["--quant", "w4a8"],
              "pwlq4 g32 (GPTQ)": ["--quant", "pwlq4"],
              "w4a8 g128 (GPTQ)": ["--quant", "w4a8", "--group-size", "128"],
              "pwlq4 g128 (GPTQ)": ["--quant", "pwlq4", "--group-size", "128"]},
    "wide4": {"int8 --wide-inputs": ["--quant", "int8", "--wide-inputs"],
              "w4a8": ["--quant", "w4a8"],
              "w4a8 --wide-inputs": ["--quant", "w4a8", "--wide-inputs"],
              "pwlq4 --wide-inputs": ["--quant", "pwlq4", "--wide-inputs"]},
    "schemes": {"int8": ["--quant", "int8"],
                "pot8": ["--quant", "pot8"],
                "int8 --attn-probs log2:4": ["--quant", "int8", "--attn-probs", "log2:4"],
                "pot8 --attn-probs log2:4": ["--quant", "pot8", "--attn-probs", "log2:4"],
                "int8 --attn-probs log2:3": ["--quant", "int8", "--attn-probs", "log2:3"]},
    "integer-only": {"int8": ["--quant", "int8"],
                     "int8 --integer-only": ["--quant", "int8", "--integer-only"],
                     "pot8": ["--quant", "pot8"],
                     "pot8 --integer-only": ["--quant", "pot8", "--integer-only"]},
    "pot8-codes": {"int8 (unsigned codes, a zero point)": ["--quant", "int8"],
                   "int8, symmetric signed codes": ["--quant", "int8-symmetric"],
                   "pot8, symmetric signed codes (until 2026-12-06)": ["--quant", "pot8-symmetric"],
                   "pot8 (unsigned codes, a zero point)": ["--quant", "pot8"],
                   "pot8, GPTQ-rounded weights": ["--quant", "pot8", "--weight-rounding", "gptq"]},
    "balance": {"int8": ["--quant", "int8"],
                "int8 --balance (alpha by the noise estimate)": ["--quant", "int8", "--balance"],
                "int8 --balance --observer search (balancing and step by the output error)":
                    ["--quant", "int8", "--balance", "--observer", "search"],
                "w4a8": ["--quant", "w4a8"],
                "w4a8 --balance": ["--quant", "w4a8", "--balance"],
                "w4a8 --balance --observer search": ["--quant", "w4a8", "--balance", "--observer", "search"]},
    "defaults": {"int8 until 2026-12-06 (--balance off --observer minmax)": ["--quant", "int8", "--balance", "off",
                                                                             "--observer", "minmax"],
                 "int8 (balancing and steps searched on held-out rows)": ["--quant", "int8"],
                 "w4a8 (--balance off --observer minmax)": ["--quant", "w4a8", "--balance", "off",
                                                            "--observer", "minmax"],
                 "w4a8 (balancing and steps searched on held-out rows)": ["--quant", "w4a8", "--balance", "auto",
                                                                          "--observer", "search"]},
    "outliers": {"int8, every weight in int8 (until 2026-12-06)": ["--quant", "int8-whole"],
                 "int8, weights past 8x their column's rms as int16 codes": ["--quant", "int8"],
                 "int8 --prune-flops 0.7, every weight in int8": ["--quant", "int8-whole", "--prune-flops", "0.7"],
                 "int8 --prune-flops 0.7, split": ["--quant", "int8", "--prune-flops", "0.7"],
                 "int8 --prune-flops 0.5, every weight in int8": ["--quant", "int8-whole", "--prune-flops", "0.5"],
                 "int8 --prune-flops 0.5, split": ["--quant", "int8", "--prune-flops", "0.5"]},
    "outliers-integer": {"int8 --integer-only, every weight in int8": ["--quant", "int8-whole", "--integer-only"],
                         "int8 --integer-only, split": ["--quant", "int8", "--integer-only"],
                         "pot8 (every weight in int8)": ["--quant", "pot8"],
                         "pot8, split": ["--quant", "pot8-outliers"],
                         "pot8 --integer-only, split": ["--quant", "pot8-outliers", "--integer-only"]},
    "clip": {"w4a8 g32, steps max|w| / 7 (until 2026-12-06)": ["--quant", "w4a8-unclipped"],
             "w4a8 g32, steps searched by the squared error": ["--quant", "w4a8"],
             "w4a8 g128, steps max|w| / 7": ["--quant", "w4a8-unclipped", "--group-size", "128"],
             "w4a8 g128, steps searched": ["--quant", "w4a8", "--group-size", "128"],
             "w4 g32, steps max|w| / 7": ["--quant", "w4-unclipped"],
             "w4 g32, steps searched": ["--quant", "w4"],
             "pwlq4 g32 (its breakpoint searched)": ["--quant", "pwlq4"]},
    "clip-per-token": {"w4a8 g32 --per-token, steps max|w| / 7": ["--quant", "w4a8-unclipped", "--per-token"],
                       "w4a8 g32 --per-token, steps searched": ["--quant", "w4a8", "--per-token"]},
    "gptq-samples": {"int8": ["--quant", "int8"],
                     "w4a8 g32, 32 batches": ["--quant", "w4a8", "--balance", "off", "--observer", "minmax",
                                              "--calibration-samples", "32"],
                     "w4a8 g32, 128 batches": ["--quant", "w4a8", "--balance", "off", "--observer", "minmax",
                                               "--calibration-samples", "128"],
                     "w4a8 g128, 32 batches": ["--quant", "w4a8", "--group-size", "128", "--balance", "off",
                                               "--observer", "minmax", "--calibration-samples", "32"],
                     "w4a8 g128, 128 batches": ["--quant", "w4a8", "--group-size", "128", "--balance", "off",
                                                "--observer", "minmax", "--calibration-samples", "128"],
                     "w4a8 g32 --balance --observer search, 32 batches": ["--quant", "w4a8", "--balance", "--observer",
                                                                          "search", "--calibration-samples", "32"],
                     "w4a8 g32 --balance --observer search, 128 batches": ["--quant", "w4a8", "--balance",
                                                                           "--observer", "search",
                                                                           "--calibration-samples", "128"],
                     "pwlq4 g32, 32 batches": ["--quant", "pwlq4", "--balance", "off", "--observer", "minmax",
                                               "--calibration-samples", "32"],
                     "pwlq4 g32, 128 batches": ["--quant", "pwlq4", "--balance", "off", "--observer", "minmax",
                                                "--calibration-samples", "128"],
                     "pwlq4 g32 --balance --observer search, 128 batches": ["--quant", "pwlq4", "--balance",
                                                                            "--observer", "search",
                                                                            "--calibration-samples", "128"],
                     "w4 g32, 32 batches": ["--quant", "w4", "--calibration-samples", "32"],
                     "w4 g32, 128 batches": ["--quant", "w4", "--calibration-samples", "128"]},
    "per-token": {"int8": ["--quant", "int8"],
                  "int8 --balance auto": ["--quant", "int8", "--balance"],
                  "int8 --per-token": ["--quant", "int8", "--per-token"],
                  "w4a8": ["--quant", "w4a8"],
                  "w4a8 --per-token": ["--quant", "w4a8", "--per-token"],
                  "pwlq4 --per-token": ["--quant", "pwlq4", "--per-token"]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", choices=sorted(STUDIES))
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--balance", help="channel balancing for every build: an alpha or 'auto'")
    parser.add_argument("--skip", nargs="+", default=[], metavar="PATTERN", help="variants left out (fnmatch)")
    parser.add_argument("--tag", help="appended to the result's file name and title (a rerun after a change)")
    args = parser.parse_args()
    suffix = (f"-balance-{args.balance}" if args.balance else "") + (f"-{args.tag}" if args.tag else "")
    out = REPO / "bench" / "results" / f"{datetime.date.today()}-{args.study}-{args.model}{suffix}.md"
    if out.exists():
        sys.exit(f"{out.relative_to(REPO)} exists (results are cited by name): rerun with --tag")

    from tvmcomp.cli import main as tvmcomp_main
    from tvmcomp.evaluate import evaluate_package
    from tvmcomp.quant.schemes import TensorQuant, get_scheme, register_scheme
    from tvmcomp.targets import host_cpu

    int8 = get_scheme("int8")
    register_scheme(replace(int8, name="int8-rows4", description="int8, vocabulary rows in 4 bits",
                            embedding=replace(int8.embedding, bits=4)))
    w4a8, int8_rows = get_scheme("w4a8"), int8.embedding
    register_scheme(replace(w4a8, name="w4a8-rows8", description="w4a8, vocabulary rows int8", embedding=int8_rows))
    register_scheme(replace(w4a8, name="w4a8-rows4", description="w4a8, vocabulary rows in 4 bits, a scale per row",
                            embedding=replace(int8_rows, bits=4)))
    register_scheme(replace(w4a8, name="w4a8-rows4g64", description="w4a8, rows in 4 bits by 64",
                            embedding=replace(w4a8.embedding, group_size=64)))
    symmetric = TensorQuant(bits=8, signed=True, symmetric=True)
    register_scheme(replace(int8, name="int8-symmetric", description="int8, symmetric signed activations",
                            activation=symmetric))
    register_scheme(replace(get_scheme("pot8"), name="pot8-symmetric", description="pot8, symmetric signed activations",
                            activation=replace(symmetric, power_of_two=True)))
    register_scheme(replace(int8, name="int8-whole", description="int8, every Linear weight in int8",
                            weight_outliers=None))
    register_scheme(replace(get_scheme("pot8"), name="pot8-outliers", description="pot8, outlier weights split off",
                            weight_outliers=int8.weight_outliers))
    for scheme in (w4a8, get_scheme("w4")):
        register_scheme(replace(scheme, name=f"{scheme.name}-unclipped", description=f"{scheme.name}, steps max|w| / 7",
                                weight=replace(scheme.weight, mse_clip=False),
                                embedding=replace(scheme.embedding, mse_clip=False)))
    common = ["--balance", args.balance] if args.balance else []
    skipped = ["--skip", *(f"'{pattern}'" for pattern in args.skip)] if args.skip else []
    tagged = ["--tag", args.tag] if args.tag else []
    lines = [f"# Accuracy variants, {args.study}{', ' + args.tag if args.tag else ''}: {args.model} ({host_cpu()}, "
             f"{datetime.date.today()})", "",
             f"bench/accuracy_variants.py {args.study} --model {args.model} {' '.join(common + skipped + tagged)}: one build "
             "each "
             f"{'with ' + ' '.join(common) + ', ' if common else ''}default schedules where "
             "records lack; accuracy against the float model (tvmcomp.evaluate; text: embeddings of real sentences, "
             "images: held-out digits).", "",
             "| build | library MiB | output cosine mean | output SQNR dB | embedding cosine mean / min | probe (float) | "
             "probe predictions as float's | WordSim Spearman vs float |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as work:
        variants = {name: build_args for name, build_args in STUDIES[args.study].items()
                    if not any(fnmatch.fnmatch(name, pattern) for pattern in args.skip)}
        for i, (name, build_args) in enumerate(variants.items()):
            package = Path(work) / f"p{i}"
            with redirect_stderr(io.StringIO()):
                assert tvmcomp_main(["build", "--model", args.model, "--target", "x86", "-q", *common, *build_args,
                                     "-o", str(package)]) == 0
                result = evaluate_package(package)
            library = sum(f.stat().st_size for f in package.glob("*.so")) / 2**20
            embedding = (f"{result['embedding_cosine_mean']:.4f} / {result['embedding_cosine_min']:.4f}"
                         if "embedding_cosine_mean" in result else "-")
            wordsim = (f"{result['wordsim_spearman_float_vs_package']:.4f}"
                       if "wordsim_spearman_float_vs_package" in result else "-")
            lines.append(f"| {name} | {library:.1f} | {result['output_cosine_mean']:.4f} | {result['sqnr_db']:.1f} | "
                         f"{embedding} | {result['probe_accuracy_package']:.3f} ({result['probe_accuracy_float']:.3f}) | "
                         f"{result['probe_agreement']:.1%} | {wordsim} |")
            print(lines[-1], flush=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
