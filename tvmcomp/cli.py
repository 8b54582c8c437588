"""``tvmcomp`` command line: parses arguments and calls the library; nothing else lives here."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .errors import TvmcompError
from .quant.balance import AUTO, OFF
from .quant.observers import OBSERVERS
from .quant.attn_probs import parse_attn_probs
from .quant.precision import WIDE_BELOW_DB
from .quant.schemes import FLOAT, GROUP_SIZES, WEIGHT_ROUNDINGS, Granularity, get_scheme

DESCRIPTION = """\
tvmcomp compiles a Transformer (a bundled model, an ONNX file or a torch.export .pt2 file) into a
deployable TVM library for a target, with kernels auto-scheduled by MetaSchedule.

typical session:
  tvmcomp build --model minilm --target x86 -o out/minilm             # no records? default schedules
  tvmcomp build --model minilm --target x86 --quant int8 -o out/minilm-int8
  tvmcomp bench out/minilm --compare torch --profile                   # latency, per-kernel time
  tvmcomp eval  out/minilm-int8                                        # accuracy vs the float model
  tvmcomp report out/minilm out/minilm-int8 -o out/report              # one page: markdown + plots
  tvmcomp run   out/minilm --inputs in.npz -o out.npz                  # your inputs, outputs by name
  tvmcomp tune  --model minilm --target x86                            # for the last 2x: records -> schedules/

on an Arm board (or the emulated one: `tvmcomp board start`):
  tvmcomp build --model minilm --target arm --quant int8 -o out/arm
  tvmcomp bench out/arm --rpc 127.0.0.1:9090

see `tvmcomp COMMAND --help` for each command."""


def _add_quant_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quant", default="fp32", help="compression scheme: fp32 (no compression), int8 (W8A8, "
                        "calibrated on real data), pot8 (int8 with power-of-two steps, H-ViT: the Q, K, V and "
                        "attention outputs requantized by integer shifts), w4a8 (int4 weights, two per byte, with a "
                        "scale per group of input channels, rounded by GPTQ; int8 activations; x86 and arm), pwlq4 (w4a8 "
                        "with each group split at a breakpoint into a centre and a tail region of 4-bit codes "
                        "each, PWLQ: more accurate, two int4 accumulations, int8-sized library) or w4 "
                        "(w4a8's int4 weights, float activations: batch 1, short inputs) (default: fp32)")
    parser.add_argument("--group-size", type=int, metavar="G", help="input channels sharing a scale in int4 "
                        f"weights: {', '.join(map(str, GROUP_SIZES))} (default 32; larger: smaller library, "
                        "coarser weights)")
    parser.add_argument("--weight-rounding", choices=WEIGHT_ROUNDINGS, help="how Linear weights are rounded to their "
                        "integer grid: nearest, or gptq (GPTQ: one input channel at a time, each rounding error "
                        "spread over the channels not yet rounded, weighted by the calibration inputs; seconds per "
                        "model, recalibrates on every build) (default: the scheme's; w4a8's is gptq)")
    parser.add_argument("--calibration-samples", type=int, metavar="N", help="batches of inputs to calibrate on "
                        "(default: the scheme's: 128 where weights are rounded by GPTQ, whose second moments want "
                        "more tokens than a Linear has inputs; else 32)")
    parser.add_argument("--calib-data", metavar="PATH", help="your calibration inputs: an .npz with one array per model input "
                        "(named as the input, first axis = samples), a .txt with one text per line (models with a "
                        "tokenizer), a .tsv with LABEL<TAB>TEXT per line, or a folder of images (image models; a file's "
                        "[N,3,H,W] input gets them resized and ImageNet-normalized); needed to quantize a model file; "
                        "with --prune-flops, pruning ranks and tunes on it too, and a .tsv's labels make it rank by "
                        "your task's loss (default for bundled models and folders: the bundled real text or images)")
    parser.add_argument("--observer", help="activation range observer: minmax, percentile, mse, kl, or search "
                        "(AOCQ's step search: each Linear input's step chosen by the error of the Linear's integer "
                        "output on held-out calibration rows; slower calibration) (default: the scheme's: search for "
                        "int8, pot8 and w4a8, else minmax)")
    parser.add_argument("--balance", nargs="?", const=AUTO, metavar="ALPHA",
                        help="channel balancing (SmoothQuant): move Linear inputs' outlier channels into the weights "
                        "by factors max|x_j|^ALPHA / max|W_j|^(1-ALPHA), with no extra op in the graph; without ALPHA "
                        "each Linear gets the ALPHA (or none) whose output is the least noisy, on calibration rows its "
                        "ranges did not see with --observer search; 'off': none. int8, pot8 (power-of-two factors "
                        "where a Linear's input arrives as integer codes) and w4a8 balance by default: it pays on encoders "
                        "with outlier channels (base-size BERT class), and the search leaves it off where the "
                        "calibration rows do not show them")
    parser.add_argument("--wide-inputs", nargs="?", type=float, const=WIDE_BELOW_DB, metavar="SQNR_DB",
                        help="mixed precision: Linears whose int8 output would be noisier than SQNR_DB (estimated from "
                        f"calibration; default {WIDE_BELOW_DB:g} dB) quantize their inputs to 12 bits and run on the "
                        "int16 dot kernel; for encoders whose FFN outputs int8 cannot hold (base-size BERT class)")
    parser.add_argument("--attn-probs", metavar="KIND:B", help="the integer grid of attention probabilities (softmax "
                        "outputs) where they multiply V on the int16 dot kernel: uniform:B (B = 8..15 bit steps; int8's "
                        "default uniform:15) or log2:B (B = 3 or 4; TP-ViT: powers of two below a top level calibrated by "
                        "error, rows renormalized). The grid changes accuracy, not speed")
    parser.add_argument("--integer-only", action="store_true", help="I-BERT: the encoder layers' softmax (i-exp), "
                        "GELU (i-erf), residual adds and LayerNorm (integer square root) on integers too, so that nothing "
                        "between a layer's first quantize and its last LayerNorm is float; post-LayerNorm encoders "
                        "(BERT, MiniLM, DistilBERT, MPNet) with uniform attention probabilities; slower, and costs a "
                        "little accuracy: see docs/quantization.md")
    parser.add_argument("--per-token", action="store_true", help="dynamic activation steps: each token's input to a "
                        "Linear gets its own step and zero point, from its min and max at run time, instead of one step "
                        "per tensor calibrated ahead; for encoders whose activations have outliers (base-size BERT "
                        "class: no --balance needed); int8, w4a8 and pwlq4; costs a min/max over each Linear input")
    parser.add_argument("--keep-float", action="append", metavar="PATTERN", help="keep matching weights in float: a weight-name pattern ('*layer_0*', '*word_embeddings*') or 'bmm_*' for the attention matmuls (repeatable)")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="minilm", help="bundled model name (see `tvmcomp models`), a Hugging Face "
                        "model folder (text or image encoder), or a .onnx/.pt2 file (default: minilm)")
    parser.add_argument("--target", default="x86", help="preset name (see `tvmcomp targets`), a JSON file, or inline TVM target JSON (default: x86)")
    parser.add_argument("--batch", metavar="N[,N...]", help="batch size for a bundled model or folder (default: the "
                        "model's, 1 for minilm); a comma list (1,8) builds one package holding kernels for each")
    parser.add_argument("--seq-len", metavar="N[,N...]", help="sequence length for a text model (default: 128 for "
                        "minilm); a comma list (32,64,128) builds one package holding kernels for each length, sharing "
                        "one copy of the weights: `run` picks the smallest shape that fits and pads")
    parser.add_argument("--input-shape", action="append", metavar="NAME=D1,D2", help="static shape of an ONNX input (repeatable)")
    parser.add_argument("--prune-flops", type=float, metavar="F", help="structured pruning first (Kwon et al. 2022): "
                        "keep at most F (0 < F <= 1) of the encoder's FLOPs, removing the attention heads and FFN "
                        "neurons that matter least to the outputs on calibration inputs (to your task, if --calib-data "
                        "is a labelled .tsv), the rest rescaled to make up for them; BERT-class text models (minilm, "
                        "mpnet-base, Hugging Face BERT/RoBERTa/MPNet/ELECTRA folders) and ViTs (vit-s, Hugging Face "
                        "DINOv2/ViT/DeiT folders)")
    parser.add_argument("--prune-tokens", type=float, metavar="F", help="token pruning (LTP): each layer keeps only "
                        "the tokens that received the most attention in the layer before, so that the encoder runs at "
                        "most F (0 < F <= 1) of its FLOPs (after --prune-flops, if given); how many each layer keeps is "
                        "chosen on calibration text, as fractions of the sequence length, so build the lengths your "
                        "inputs fill (--seq-len 16,32,64). Dropped tokens' output rows hold the kept tokens' mean; "
                        "the text models --prune-flops takes")
    parser.add_argument("--records", metavar="DIR", help="your tuning-records folder: searched before the shipped records, new records written there (default: schedules/ in a checkout, ~/.cache/tvmcomp/schedules when installed)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr (for scripts); errors still print")


def _add_rpc_args(parser: argparse.ArgumentParser, direct: bool) -> None:
    if direct:
        parser.add_argument("--rpc", metavar="HOST:PORT", help="run on the device whose RPC server listens there")
    parser.add_argument("--rpc-tracker", metavar="HOST:PORT", help="RPC tracker that hands out devices (with --rpc-key)")
    parser.add_argument("--rpc-key", metavar="KEY", help="device key registered with the tracker, e.g. rasp4")
    parser.add_argument("--rpc-timeout", type=float, default=600.0, help="seconds an RPC session may last (default: 600)")


def _remote_spec(args):
    from .remote import RemoteSpec, parse_address

    address = getattr(args, "rpc", None)
    if not (address or args.rpc_tracker or args.rpc_key):
        return None
    if address and args.rpc_tracker:
        raise TvmcompError("give either --rpc or --rpc-tracker, not both")
    if args.rpc_tracker and not args.rpc_key:
        raise TvmcompError("--rpc-tracker needs --rpc-key (the device key the board registered)")
    if args.rpc_key and not args.rpc_tracker:
        raise TvmcompError("--rpc-key needs --rpc-tracker HOST:PORT")
    for text, flag in ((address, "--rpc"), (args.rpc_tracker, "--rpc-tracker")):
        if text:
            parse_address(text, flag)  # a malformed address fails before any work
    return RemoteSpec(address=address, tracker=args.rpc_tracker, key=args.rpc_key, timeout_s=args.rpc_timeout)


def _tuning_runner(args):
    """MetaSchedule's RPC runner when the user named a tracker and key, else None (local runner)."""
    remote = _remote_spec(args)
    if remote is None:
        return None
    from .tune.rpc import rpc_runner

    return rpc_runner(remote)


def _command(sub, name: str, summary: str, description: str, example: str | None = None) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=summary, description=description, epilog=f"example: {example}" if example else None)
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON (with the tvmcomp version, host "
                        "CPU and time) to FILE; '-' writes only the JSON, to standard output")
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tvmcomp", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tvmcomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = _command(
        sub,
        "build",
        "compile a model into a deployable package folder",
        "Compile a model for a target into a package folder (model.so + metadata.json). "
        "Kernels come from the target's tuning records (schedules/, see `tvmcomp targets`); kernels with no record get "
        "default schedules (tiled, vectorized, int8 on the CPU's dot-product instruction), within ~2x of tuned. "
        "--trials N tunes the missing ones first.",
        "tvmcomp build --model minilm --target x86 -o out/minilm",
    )
    _add_model_args(build)
    build.add_argument("-o", "--output", required=True, help="package folder to write (replaced if it is a package)")
    _add_quant_args(build)
    build.add_argument("--trials", type=int, default=0, help="tune kernels that have no records with this many trials first (default: 0, never tune)")
    build.add_argument("--dump-code", metavar="FORMS", help="also write the compiled code under the package's code/: a "
                       "comma list of relax (fused graph), tir (scheduled kernels), ll (LLVM IR), asm (assembly)")
    _add_rpc_args(build, direct=False)

    tune = _command(
        sub,
        "tune",
        "auto-schedule a model's kernels with MetaSchedule, records -> schedules/",
        "Tune every kernel of a model with MetaSchedule and its XGBoost cost model. Records go to "
        "schedules/<target>/ as they are measured, so Ctrl-C keeps what was found. With --quant the "
        "model is calibrated and realized first, with the same options a build takes, so the tuned "
        "kernels are the ones that build compiles.",
        "tvmcomp tune --model minilm --target x86 --quant int8 --trials 400",
    )
    _add_model_args(tune)
    _add_quant_args(tune)
    tune.add_argument("--trials", type=int, default=400, help="total measurement trials over all kernels (default: 400)")
    tune.add_argument("--trials-per-task", type=int, help="cap per kernel (default: the larger of 64 and trials / kernels)")
    _add_rpc_args(tune, direct=False)

    bench = _command(
        sub,
        "bench",
        "time a built package on this machine or on a device over RPC",
        "Time a package with TVM's time_evaluator; --compare torch also times the PyTorch source "
        "model on the same inputs and thread count. With --rpc or --rpc-tracker/--rpc-key the package "
        "runs on that device: its outputs are checked against this machine's, then it is timed there.",
        "tvmcomp bench out/minilm --compare torch --json out/minilm-bench.json",
    )
    _add_rpc_args(bench, direct=True)
    bench.add_argument("package", help="package folder written by `tvmcomp build`")
    bench.add_argument("--repeat", type=int, default=50, help="timed runs (default: 50)")
    bench.add_argument("--threads", type=int, help="CPU threads for TVM and PyTorch (default: physical cores)")
    bench.add_argument("--compare", choices=["torch"], help="also time the source model in PyTorch eager mode")
    bench.add_argument("--profile", action="store_true", help="also time each kernel call on the example inputs "
                       "(where the time goes; in the JSON and in `tvmcomp report`)")

    run = _command(
        sub,
        "run",
        "run a package on your inputs and write its outputs",
        "Run a package on the inputs in an .npz (one array per input name, as `np.savez(path, input_ids=..., "
        "attention_mask=...)`; default: the example inputs it was built with), here or on a device over RPC. "
        "Names, shapes and dtypes are checked against the package; the outputs are written by name to -o.",
        "tvmcomp run out/minilm --inputs in.npz -o out.npz --print-time",
    )
    _add_rpc_args(run, direct=True)
    run.add_argument("package", help="package folder written by `tvmcomp build`")
    run.add_argument("--inputs", metavar="PATH", help="inputs by name in an .npz, or a .txt (one text per line) or "
                     "a folder of images, made into inputs by the tokenizer or image processor the package carries "
                     "(default: the package's example inputs)")
    run.add_argument("-o", "--outputs", metavar="FILE.npz", help="write the outputs here, by name")
    run.add_argument("--print-time", action="store_true", help="also time --repeat runs on the same inputs")
    run.add_argument("--repeat", type=int, default=20, help="timed runs with --print-time (default: 20)")

    evaluate = _command(
        sub,
        "eval",
        "measure a package's accuracy against the float model",
        "Compare any package with its float model (PyTorch; ONNX Runtime for an ONNX file): cosine and SQNR of "
        "its outputs per sample. For a text encoder also its embeddings on real text: cosine and a polarity probe on "
        "the Pang & Lee sentences, Spearman on WordSim-353 word similarities; for an image encoder a digit probe; with "
        "labelled data (--data texts.tsv, or a folder of class subfolders of images), the accuracy cost on your task too. The result is kept in the package (eval.json) for `tvmcomp report`.",
        "tvmcomp eval out/minilm-int8 --json out/minilm-int8/eval.json",
    )
    evaluate.add_argument("package", help="package folder written by `tvmcomp build`")
    evaluate.add_argument("--data", metavar="PATH", help="evaluation inputs, as --calib-data takes them (.npz by input name, "
                          ".txt for a text model, a folder of images for an image model); a .tsv of LABEL<TAB>TEXT lines "
                          "or a folder of class subfolders of images also scores your task: a linear probe fitted on "
                          "the float model's embeddings of every other sample of each class, scored on the rest with "
                          "the package's; default: held-out real text or digits, else "
                          "the package's example inputs")

    report = _command(
        sub,
        "report",
        "one page comparing packages: latency, size, accuracy, per-kernel time",
        "Put packages side by side from the results they hold (their metadata, and the bench.json and eval.json "
        "that `tvmcomp bench` and `tvmcomp eval` leave in them): report.md, report.json, a latency-vs-accuracy "
        "plot (marker area = library size) and a per-kernel time breakdown (from `bench --profile`).",
        "tvmcomp report out/minilm-fp32 out/minilm-int8 -o out/report",
    )
    report.add_argument("packages", nargs="+", metavar="PACKAGE", help="package folders written by `tvmcomp build`")
    report.add_argument("-o", "--output", required=True, help="folder to write the report into")

    board = _command(
        sub,
        "board",
        "start/stop an emulated aarch64 board serving TVM RPC on 127.0.0.1",
        "An aarch64 Debian sysroot with the TVM runtime, run under qemu-aarch64-static: an RPC server "
        "for direct connections on --port, one registered with a tracker (on --tracker-port) under "
        "--key on --port + 1. Built on first start (~1 min, ~250 MB). For correctness and the "
        "workflow only: emulated timings are 60-200x slower than a real board.",
        "tvmcomp board start --port 9090",
    )
    board.add_argument("action", choices=["start", "stop", "status"])
    board.add_argument("--port", type=int, default=9090, help="direct RPC server port (default: 9090; tracked server: port + 1)")
    board.add_argument("--tracker-port", type=int, default=9190, help="RPC tracker port (default: 9190)")
    board.add_argument("--key", default="rasp4", help="device key on the tracker (default: rasp4)")
    board.add_argument("--dir", help="where the board lives (default: $TVMCOMP_BOARD_DIR or ~/.cache/tvmcomp/board)")

    _command(sub, "targets", "list target presets and which tuning records serve each",
             "List the target presets, this machine's CPU, and for each preset the tuning records a build would "
             "use (this CPU's, or those of a CPU with the same instruction set), or that it has none.")
    _command(sub, "models", "list bundled models", "List the models tvmcomp bundles.")
    return parser


def _cmd_build(args) -> tuple[str, dict]:
    from .build import build, check_output_location
    from .targets import resolve_target

    check_output_location(Path(args.output))  # before any work: a bad -o fails in a second, not after compiling
    dump = _code_forms(args.dump_code)
    target = resolve_target(args.target)
    target.tvm_target()  # an invalid target (an unknown mcpu, say) fails before the import
    runner = _tuning_runner(args)
    options = _quant_options(args)
    source = _load_source(args)
    result = build(source, target, args.output, options, trials=args.trials, runner=runner,
                   stream=_status_stream(args), dump=dump)
    meta = result.metadata
    return (f"built {result.path}: {meta['model']} ({meta['variant']}) for {meta['target']['schedule_key']}, "
            f"library {meta['library_bytes'] / 2**20:.1f} MiB, {meta['kernels']} kernels "
            f"({meta['default_scheduled_kernels']} on default schedules), {meta['build_seconds']} s",
            {"package": str(result.path), "tuned_now": result.tuned_now, "metadata": meta})


def _quant_options(args):
    """The quantization flags as QuantOptions, each combination checked before any work."""
    from .quant.pipeline import QuantOptions

    calibrates = None if args.prune_flops or args.prune_tokens else args.calib_data  # pruning reads it too
    for given, flag, meaning in ((calibrates, "--calib-data", "calibrates quantization (and pruning, with --prune-flops or --prune-tokens)"),
                                 (args.observer, "--observer", "chooses quantization ranges"),
                                 (args.balance, "--balance", "balances channels for quantization"),
                                 (args.weight_rounding, "--weight-rounding", "rounds quantized weights"),
                                 (args.wide_inputs, "--wide-inputs", "widens quantized inputs"),
                                 (args.attn_probs, "--attn-probs", "quantizes attention probabilities"),
                                 (args.integer_only or None, "--integer-only", "runs the float ops on integers"),
                                 (args.per_token or None, "--per-token", "gives each token its own quantization step")):
        if given is not None and args.quant == FLOAT:
            raise TvmcompError(f"{flag} {meaning}: add --quant int8")
    if args.integer_only and args.prune_tokens is not None:
        raise TvmcompError("--integer-only and --prune-tokens do not go together: the integer softmax and layer norm "
                           "take the attention as exported with SDPA, token pruning needs the eager attention (its "
                           "weights rank the tokens) and gathers rows between layers; build with one of them")
    if args.group_size is not None:
        if args.quant == FLOAT or get_scheme(args.quant).weight.granularity is not Granularity.PER_GROUP:
            raise TvmcompError("--group-size groups int4 weights: add --quant w4a8 or --quant w4")
        if args.group_size not in GROUP_SIZES:
            raise TvmcompError(f"--group-size is one of {', '.join(map(str, GROUP_SIZES))} (the int4 kernels read 8 "
                               f"codes at a time, and BERT's and ViT's widths divide by these), not {args.group_size}")
    if args.observer is not None and args.observer not in OBSERVERS:
        raise TvmcompError(f"unknown observer '{args.observer}'; available: {', '.join(OBSERVERS)}")
    balance = args.balance
    if balance not in (None, AUTO, OFF):
        try:
            balance = float(balance)
            if not 0 <= balance <= 1:
                raise ValueError
        except ValueError:
            raise TvmcompError(f"--balance ALPHA is an exponent between 0 and 1 (SmoothQuant uses 0.5), or nothing "
                               f"to choose it per layer, or off; not '{args.balance}'") from None
    if args.calibration_samples is not None and args.calibration_samples < 1:
        raise TvmcompError(f"--calibration-samples counts batches to calibrate on: 1 or more, not {args.calibration_samples}")
    if args.wide_inputs is not None and not 0 < args.wide_inputs < 100:
        raise TvmcompError(f"--wide-inputs takes an output SQNR in dB (0 to 100; default {WIDE_BELOW_DB:g}), "
                           f"not {args.wide_inputs:g}")
    return QuantOptions(args.quant, args.calibration_samples, args.observer, tuple(args.keep_float or ()), balance,
                        args.wide_inputs, args.attn_probs and parse_attn_probs(args.attn_probs).spec, args.group_size,
                        args.weight_rounding, args.integer_only, args.per_token)


def _load_source(args):
    """The model to build or tune, with the user's calibration data checked before anything is compiled."""
    from .source import load_source

    if args.calib_data and not Path(args.calib_data).exists():
        raise TvmcompError(f"calibration data not found: {args.calib_data}")
    prunes = args.prune_flops is not None or args.prune_tokens is not None
    source = load_source(args.model, args.batch, args.seq_len, args.input_shape, args.prune_flops, _status_stream(args),
                         args.calib_data if prunes else None, args.prune_tokens)
    if args.calib_data:
        source.use_calibration_data(args.calib_data)
    return source


def _code_forms(text: str | None) -> list[str]:
    from .build import check_code_forms

    forms = [form.strip() for form in text.split(",") if form.strip()] if text else []
    check_code_forms(forms)
    return forms


def _status_stream(args):
    """Where progress lines go: stderr, or nowhere with --quiet (errors are still printed)."""
    return open(os.devnull, "w") if args.quiet else sys.stderr


def _cmd_tune(args) -> tuple[str, dict]:
    from .build import prepare
    from .targets import resolve_target
    from .tune import tune

    target = resolve_target(args.target)
    target.tvm_target()
    target.check_toolchain()
    stream = _status_stream(args)
    options = _quant_options(args)
    source = _load_source(args)
    fused = prepare(source, target, options, stream=stream).fused
    runner = _tuning_runner(args)
    if runner is None and target.is_cross:
        raise TvmcompError(f"target '{target.name}' runs on another machine: tune it there over RPC "
                           "(--rpc-tracker HOST:PORT --rpc-key KEY)")
    result = tune(fused, target, total_trials=args.trials, trials_per_task=args.trials_per_task, runner=runner,
                  stream=stream)
    state = "interrupted" if result.interrupted else "done"
    return (f"tuning {state}: {result.tasks} kernels, records in {result.database}",
            {"state": state, "kernels": result.tasks, "trials": result.trials, "records": str(result.database)})


def _cmd_bench(args) -> tuple[str, dict]:
    from .bench import bench_package, format_bench

    result = bench_package(args.package, repeat=args.repeat, threads=args.threads, compare=args.compare,
                           remote=_remote_spec(args), profile=args.profile)
    _keep_in_package(args.package, "bench", result)
    return format_bench(result), result


def _keep_in_package(package: str, command: str, result: dict) -> None:
    """The latest bench/eval result of a package lives in it (``bench.json``, ``eval.json``): what
    `tvmcomp report` reads."""
    from .results import result_document, write_json

    write_json(result_document(command, result), Path(package) / f"{command}.json")


def _cmd_run(args) -> tuple[str, dict]:
    import numpy as np

    from .run import describe_outputs, read_inputs, run_package

    if args.outputs and not Path(args.outputs).resolve().parent.is_dir():
        raise TvmcompError(f"cannot write {args.outputs}: its folder does not exist")
    inputs = read_inputs(args.inputs, None if _remote_spec(args) else args.package) if args.inputs else None
    result = run_package(args.package, inputs, _remote_spec(args), args.repeat if args.print_time else 0)
    outputs = result["outputs"]
    if args.outputs:
        np.savez(args.outputs, **outputs)
    lines = [f"{name}: {value.dtype}{list(value.shape)}, mean {value.mean():.4g}, min {value.min():.4g}, "
             f"max {value.max():.4g}" for name, value in outputs.items()]
    if args.outputs:
        lines.append(f"outputs written to {args.outputs}")
    latency = result["latency"]
    if latency:
        lines.append(f"time: p50 {latency['p50_ms']:.3f} ms, p90 {latency['p90_ms']:.3f} ms, p99 {latency['p99_ms']:.3f} ms "
                     f"over {latency['runs']} runs ({latency['throughput_per_s']:.1f} samples/s)")
    return "\n".join(lines), {"package": args.package, "inputs": args.inputs or "example inputs",
                              "outputs_file": args.outputs, "outputs": describe_outputs(outputs), "latency": latency}


def _cmd_eval(args) -> tuple[str, dict]:
    from .evaluate import evaluate_package, format_eval

    result = evaluate_package(args.package, args.data)
    _keep_in_package(args.package, "eval", result)
    return format_eval(result), result


def _cmd_report(args) -> tuple[str, dict]:
    from .report import write_report

    result = write_report(args.packages, args.output)
    missing = sum(r["p50_ms"] is None or r["accuracy_source"] is None for r in result["packages"])
    text = f"report written to {result['files']['markdown']} ({len(result['files']) - 2} plots)"
    if missing:
        text += f"; {missing} package(s) lack bench or eval results: the report says which"
    return text, result


def _cmd_board(args) -> tuple[str, dict]:
    from .board import Board, default_dir

    board = Board(Path(args.dir) if args.dir else default_dir())
    if args.action == "start":
        state = board.start(port=args.port, tracker_port=args.tracker_port, key=args.key)
        return (f"board up: direct RPC 127.0.0.1:{state['port']}, tracker 127.0.0.1:{state['tracker_port']} "
                f"key '{state['key']}' (pids {', '.join(map(str, state['pids'].values()))})", {"board": state})
    if args.action == "stop":
        stopped = board.stop()
        return "board stopped" if stopped else "no board was running", {"stopped": stopped}
    state = board.state()
    return ("no board running" if state is None else
            f"board running: direct RPC 127.0.0.1:{state['port']}, tracker 127.0.0.1:{state['tracker_port']} "
            f"key '{state['key']}', logs in {state['logs']}", {"board": state})


def _cmd_targets(_args) -> tuple[str, dict]:
    from .targets import host_cpu, preset_names, resolve_target
    from .tune.records import describe_records, isa_features, serving_folders

    host = resolve_target("x86")
    lines = [f"this machine: {host_cpu()} ({', '.join(isa_features(host)) or 'no listed ISA features'})\n"]
    presets = []
    for name in preset_names():
        spec = resolve_target(name)
        folders = serving_folders(spec)
        if folders:
            records = "records: " + describe_records(folders, spec)
        else:
            how = "on the device: --rpc-tracker HOST:PORT --rpc-key KEY" if spec.is_cross else "here: --trials 256"
            records = (f"no records for {spec.schedule_key}: builds use default schedules (within ~2x of tuned); "
                       f"tune for the rest ({how}; ~10 min per MiniLM build on 2 cores)")
        lines.append(f"{name:<12} {spec.description}\n{'':<12} {records}")
        presets.append({"name": name, "description": spec.description, "schedule_key": spec.schedule_key,
                        "records": [{"folder": f.path.name, "cpu": f.cpu, "same_cpu": f.same_cpu} for f in folders]})
    return "\n".join(lines), {"isa_features": list(isa_features(host)), "presets": presets}


def _cmd_models(_args) -> tuple[str, dict]:
    from .models import get_model, model_names

    models = {name: get_model(name).description for name in model_names()}
    return "\n".join(f"{name:<12} {text}" for name, text in models.items()), {"models": models}


# each returns (what to print, what --json writes)
COMMANDS = {"build": _cmd_build, "tune": _cmd_tune, "bench": _cmd_bench, "run": _cmd_run, "eval": _cmd_eval,
            "report": _cmd_report, "board": _cmd_board, "targets": _cmd_targets, "models": _cmd_models}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = _parser().parse_args(argv)
    if getattr(args, "records", None):
        from .tune.records import USER_RECORDS_VARIABLE

        os.environ[USER_RECORDS_VARIABLE] = str(Path(args.records).resolve())
    try:
        if args.json and args.json != "-" and not Path(args.json).resolve().parent.is_dir():
            raise TvmcompError(f"cannot write --json {args.json}: its folder does not exist")
        text, data = COMMANDS[args.command](args)
        if args.json != "-":
            print(text)
        if args.json:
            from .results import result_document, write_json

            write_json(result_document(args.command, data), args.json)
    except TvmcompError as err:
        print(f"tvmcomp: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tvmcomp: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
