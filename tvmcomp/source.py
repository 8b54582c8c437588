"""What the user named with ``--model``: a bundled model or a file, imported with example inputs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import TvmcompError
from .frontend import ImportedModel, TensorSpec, import_file, import_torch
from .frontend.torch_frontend import program_module

MAIN = "main"  # the function of the largest shape; other shapes are ``b{batch}_s{seq_len}``


@dataclass
class ModelSource:
    name: str  # registry name or file path, as recorded in the package metadata
    imported: ImportedModel
    example_inputs: dict[str, np.ndarray]
    torch_module: object | None = None  # the float reference, when the source is PyTorch
    entry: object | None = None  # the registry entry, for bundled models
    calibration_data: list[dict[str, np.ndarray]] | None = None  # the user's (--calib-data), as batches
    # the same model at the other shapes the package serves (function name -> import); ``imported``,
    # compiled as ``main``, is the largest: calibration runs there and every shape reuses its ranges
    variants: dict[str, ImportedModel] = field(default_factory=dict)
    # what --prune-flops kept (:class:`~tvmcomp.prune.PruneReport`) and, under "tokens", --prune-tokens
    # (:class:`~tvmcomp.prune.tokens.TokenReport`)
    pruning: dict | None = None

    def shapes(self) -> dict[str, ImportedModel]:
        """Every compiled shape by function name, ``main`` first."""
        return {MAIN: self.imported} | self.variants

    def use_calibration_data(self, path: str | Path) -> None:
        """Calibrate on the user's data (:mod:`tvmcomp.calibration_data`); checked here, before any work."""
        from .calibration_data import input_makers, read_calibration_data

        self.calibration_data = read_calibration_data(path, self.imported.inputs,
                                                      *input_makers(self.entry, self.imported.inputs))

    def calibration_key(self) -> str:
        """Which data calibrates: the bundled data, or a fingerprint of the user's."""
        from .calibration_data import fingerprint

        return "bundled" if self.calibration_data is None else f"user:{fingerprint(self.calibration_data)}"

    def calibration_samples(self, count: int) -> list[dict[str, np.ndarray]]:
        """Real inputs to calibrate quantization on, shaped like the example inputs: the user's
        (at most ``count`` batches), else the bundled model's own."""
        if self.calibration_data is not None:
            return self.calibration_data[:count]
        if self.entry is None or self.entry.make_calibration_inputs is None:
            raise TvmcompError(
                f"quantizing '{self.name}' needs calibration data: give --calib-data FILE.npz (one array per model "
                f"input, named as the input, first axis = samples; inputs: "
                f"{', '.join(f'{s.name}{list(s.shape)}' for s in self.imported.inputs)})")
        shape = self.imported.inputs[0].shape
        return self.entry.make_calibration_inputs(count, shape[0], shape[1] if len(shape) == 2 else None)


def _parse_input_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    shapes = {}
    for spec in specs or []:
        name, sep, dims = spec.partition("=")
        try:
            if not sep:
                raise ValueError
            shapes[name.strip()] = [int(d) for d in dims.split(",")]
            if not name.strip() or min(shapes[name.strip()]) <= 0:
                raise ValueError
        except ValueError:
            raise TvmcompError(f"--input-shape '{spec}' is not NAME=D1,D2,... with positive sizes (e.g. input_ids=1,128)") from None
    return shapes


def synthetic_inputs(specs: list[TensorSpec], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic inputs for a user's file: small non-negative ints (ids, masks) or N(0, 1)."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in specs:
        if spec.dtype.startswith(("int", "uint")):
            inputs[spec.name] = rng.integers(0, 2 if "mask" in spec.name else 100, spec.shape).astype(spec.dtype)
        elif spec.dtype == "bool":
            inputs[spec.name] = np.ones(spec.shape, dtype=bool)
        else:
            inputs[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
    return inputs


def parse_sizes(text: str | int | None, flag: str) -> list[int]:
    """``--seq-len 32,64,128`` -> [32, 64, 128] (ascending, no repeats); None -> []."""
    if text is None:
        return []
    try:
        sizes = sorted({int(part) for part in str(text).split(",") if part.strip()})
    except ValueError:
        sizes = []
    if not sizes or sizes[0] <= 0:
        raise TvmcompError(f"{flag} must be a positive number or a comma list of them, not '{text}'")
    return sizes


def variant_name(batch: int, seq_len: int | None) -> str:
    return f"b{batch}" + (f"_s{seq_len}" if seq_len else "")


def load_source(model: str, batch: str | int | None = None, seq_len: str | int | None = None,
                input_shapes: list[str] | None = None, prune_flops: float | None = None, stream=None,
                prune_data: str | Path | None = None, prune_tokens: float | None = None) -> ModelSource:
    """Import ``model`` (a registry name, a Hugging Face model folder, or a .onnx/.pt2 path) with its
    example inputs. ``batch`` and ``seq_len`` may be comma lists: the model is imported at every
    combination, the largest as ``imported`` and the others as ``variants``. With ``prune_flops``,
    the PyTorch model is pruned first (:mod:`tvmcomp.prune`) to that fraction of its encoder FLOPs,
    ranked and tuned on ``prune_data`` (as --calib-data takes it) or the model's bundled text. With
    ``prune_tokens``, it then drops tokens layer by layer (:mod:`tvmcomp.prune.tokens`) to that
    fraction of its encoder FLOPs, the counts chosen on the same data."""
    from .models import find_model

    for flag, value in (("--prune-flops", prune_flops), ("--prune-tokens", prune_tokens)):
        if value is not None and not 0 < value <= 1:
            raise TvmcompError(f"{flag} is the fraction of the encoder's FLOPs to keep, in (0, 1]; not {value:g}")

    batches, seq_lens = parse_sizes(batch, "--batch"), parse_sizes(seq_len, "--seq-len")
    named_as_file = Path(model).suffix.lower() in (".onnx", ".pt2")
    if (Path(model).is_dir() and not named_as_file) or not (named_as_file or "/" in model):
        if input_shapes:
            raise TvmcompError("--input-shape applies to model files; for a bundled model use --batch/--seq-len")
        entry = find_model(model)  # an unknown name raises, listing the registry
        if seq_lens and entry.default_seq_len is None:
            raise TvmcompError(f"--seq-len applies to text models; {model} takes images (use --batch)")
        if seq_lens and entry.max_seq_len and seq_lens[-1] > entry.max_seq_len:
            raise TvmcompError(f"--seq-len {seq_lens[-1]} is longer than {model}'s {entry.max_seq_len} positions")
        batches, seq_lens = batches or [entry.default_batch], seq_lens or [entry.default_seq_len]
        pruned = prune_flops is not None or prune_tokens is not None
        # a model bundled as an ONNX file is pruned in its PyTorch form, then imported from that
        module = entry.load_torch() if entry.source_file is None or (pruned and entry.load_torch) else None
        pruning = None
        if pruned:
            pruning = _prune(model, entry, module, prune_flops, prune_tokens, seq_lens[-1], stream, prune_data)
        source = _import_entry(model, entry, module, batches[-1], seq_lens[-1])
        source.pruning = pruning
        for b in batches:
            for s in seq_lens:
                if (b, s) != (batches[-1], seq_lens[-1]):
                    source.variants[variant_name(b, s)] = _import_entry(model, entry, module, b, s).imported
        return source
    if prune_flops is not None or prune_tokens is not None:
        flag = "--prune-flops" if prune_flops is not None else "--prune-tokens"
        raise TvmcompError(f"{flag} needs the model's PyTorch source, to rank heads and neurons by gradients and to "
                           f"rewrite its layers: a bundled text model or a Hugging Face folder, not the file {model}")
    if batch or seq_len:
        raise TvmcompError("--batch/--seq-len apply to bundled models; for a file use --input-shape NAME=D1,D2,...")
    imported = import_file(model, _parse_input_shapes(input_shapes))
    program = imported.meta.get("exported_program")  # .pt2: the float reference, loaded once
    torch_module = program_module(program) if program is not None else None
    return ModelSource(str(model), imported, synthetic_inputs(imported.inputs), torch_module)


# calibration texts the label-free importance and the mask tuning are computed on: the refit's least
# squares wants tokens (MiniLM at 0.5 FLOPs, embedding cosine 0.767 with 32, 0.799 with 128, in 63 s:
# bench/results/2026-12-06-prune-samples-minilm.md)
PRUNE_SAMPLES = 128
# images: 257 tokens each at ViT-S/14's 224 px, but the class token the task reads is one per image:
# vit-s at 0.5 FLOPs dropped 8.4 pt of probe top-1 ranked and tuned on 32, 4.4 on 64 (manual runs)
PRUNE_IMAGES = 64
TOKEN_PRUNE_SAMPLES = 32  # inputs the token counts are chosen on
LABELLED_PRUNE_SAMPLES = 256  # labelled texts or images: one gradient each, and a linear head to fit on them


def _prune(model: str, entry, module, flops: float | None, tokens: float | None, seq_len: int | None, stream,
           data: str | Path | None) -> dict:
    """Prune ``module`` in place on ``data`` (as --calib-data takes it, a .tsv's labels giving the
    task loss; None: the entry's calibration inputs), one input per batch: heads and neurons to
    ``flops``, then tokens to ``tokens``; returns what was kept."""
    import sys

    from .calibration_data import input_makers, read_calibration_data, read_labels
    from .prune.structure import encoder_structure

    flag = "--prune-flops" if flops is not None else "--prune-tokens"
    if module is None:
        raise TvmcompError(f"{flag} needs the model's PyTorch source, to rank heads and neurons by gradients; "
                           f"{model} has none")
    if tokens is not None and seq_len is None:
        raise TvmcompError("--prune-tokens ranks tokens by a text encoder's attention over its real tokens; "
                           f"{model} takes images (--prune-flops prunes its heads and neurons)")
    encoder_structure(module)  # a model pruning cannot take is refused before any work
    labels = None
    if data is None:
        samples = TOKEN_PRUNE_SAMPLES if flops is None else PRUNE_SAMPLES if seq_len else PRUNE_IMAGES
        batches, where = entry.make_calibration_inputs(samples, 1, seq_len), "calibration inputs, label-free"
    else:
        inputs = [TensorSpec(name, tuple(value.shape), str(value.dtype))
                  for name, value in entry.make_inputs(1, seq_len).items()]
        batches = read_calibration_data(data, inputs, *input_makers(entry, inputs))
        labelled = read_labels(data) if flops is not None else None
        if labelled is None:
            batches, where = batches[:PRUNE_SAMPLES], f"inputs of {data}, label-free"
        else:
            batches = batches[:LABELLED_PRUNE_SAMPLES]
            labels, classes = labelled[0][:len(batches)], labelled[1]
            if len(set(labels.tolist())) < 2:
                raise TvmcompError(f"--calib-data {data}: pruning reads its first {LABELLED_PRUNE_SAMPLES} samples, "
                                   f"and they hold one class ({classes[labels[0]]}); mix the classes in the file")
            where = f"labelled samples of {data}, by the task loss of a linear head on {len(classes)} classes"
    stream = stream or sys.stderr
    pruning = {}
    if flops is not None:
        import torch

        from .prune import prune_encoder
        from .prune.masks import run

        print(f"[prune] ranking heads and neurons of {model} on {len(batches)} {where}", file=stream)
        if seq_len is None:  # images: the FLOPs per token count the attention over all the model's tokens
            with torch.no_grad():
                seq_len = run(module, batches[0]).shape[1]
        report = prune_encoder(module, batches, flops, seq_len, labels=labels, readout=entry.readout)
        print(f"[prune] kept {report.flops_kept:.3f} of the encoder's FLOPs and {report.params_kept:.3f} of the "
              f"parameters: heads {report.heads}, neurons {report.neurons}", file=stream)
        pruning = report.to_json()
    if tokens is not None:
        from .prune.tokens import choose_tokens

        batches = batches[:TOKEN_PRUNE_SAMPLES]
        print(f"[prune] choosing how many tokens each layer of {model} keeps, on {len(batches)} inputs", file=stream)
        try:
            structure = encoder_structure(module)
        except TvmcompError:  # a layer's attention went whole: nothing there ranks the tokens
            raise TvmcompError(f"--prune-tokens ranks tokens by each layer's attention, and --prune-flops {flops:g} "
                               f"left a layer with no head (heads {pruning['heads']}): keep more FLOPs") from None
        report = choose_tokens(module, structure, batches, tokens, seq_len, stream)
        print(f"[prune] tokens entering each layer at {seq_len}: {report.tokens}, {report.flops_kept:.3f} of the "
              f"encoder's FLOPs", file=stream)
        pruning["tokens"] = report.to_json()
    return pruning


def _import_entry(model: str, entry, module, batch: int, seq_len: int | None) -> ModelSource:
    """The registry entry ``entry`` imported at one shape."""
    example = entry.make_inputs(batch, seq_len)
    if module is None:  # the model is an ONNX file: import it at the entry's shapes
        imported = import_file(entry.source_file(), entry.input_shapes(batch))
        imported.outputs = list(entry.output_names)
        return ModelSource(model, imported, example, None, entry)
    return ModelSource(model, import_torch(module, example, list(entry.output_names)), example, module, entry)
