"""Accuracy of a built package against its float model.

For every package: the cosine and SQNR of its outputs against the float model's, per sample, on
evaluation inputs (``--data``, else held-out real text for a text encoder, held-out digits for an
image encoder, else the example inputs). The float model is the PyTorch source (a bundled model, a Hugging Face folder, a .pt2
program) or, for an ONNX file, ONNX Runtime. Padded positions (``attention_mask`` 0) are left out.

For a sentence encoder, task measures too: the embeddings are mean-pooled over the attention
mask, as the model is used, and compared three ways, each float vs package:
- cosine similarity of the embeddings of the Pang & Lee sentences (mean and min);
- a linear probe (logistic regression) fitted once on float embeddings of half of the Pang & Lee
  polarity sentences, scored on the other half with float and with package embeddings;
- Spearman correlation between float and package word similarities on WordSim-353 pairs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .calibration_data import read_labels
from .data import pang_lee_polarity, wordsim353_pairs
from .errors import TvmcompError
from .runtime import Package

EVALUATION_IMAGE_SAMPLES = 64  # held-out digits for the output agreement of an image encoder


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


def read_out(output, batch: dict, readout: str) -> np.ndarray:
    """``[batch, hidden]`` features of the outputs ``[batch, tokens, hidden]`` as the task reads them
    (``readout``): the first (class) token, or the mean over the real tokens (all of them where the
    batch has no attention mask). Pruning's differentiable twin: :func:`tvmcomp.prune.importance.read_out`."""
    output = np.asarray(output)
    if readout == "first":
        return output[:, 0]
    mask = batch.get("attention_mask")
    return output.mean(axis=1) if mask is None else mean_pool(output, mask)


def probe_training_half(labels: np.ndarray) -> np.ndarray:
    """Which samples the probe is fitted on: every other one of each class (for the Pang & Lee
    sentences, sorted by class, every other one); the rest score it. Per class, so that samples in
    class-interleaved order (a folder of class subfolders) leave no class out of either half."""
    from .models.images import rank_in_class

    return rank_in_class(labels) % 2 == 0


def probe_scores(probe, float_x: np.ndarray, other_x: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """A fitted probe's accuracy on float and on other features, and its agreement: the share of
    samples where the other features get the float features' prediction. Agreement measures the
    package's task cost with far less noise than the difference of accuracies, which on a few
    hundred samples moves by a whole point when a few predictions flip either way."""
    float_pred, other_pred = probe.predict(float_x), probe.predict(other_x)
    return (float(np.mean(float_pred == labels)), float(np.mean(other_pred == labels)),
            float(np.mean(other_pred == float_pred)))


def probe_accuracy(float_emb: np.ndarray, other_emb: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """A linear probe (logistic regression) fitted on the float embeddings of the training half
    (:func:`probe_training_half`), scored on the other half (:func:`probe_scores`)."""
    from sklearn.linear_model import LogisticRegression

    train = probe_training_half(labels)
    probe = LogisticRegression(max_iter=2000).fit(float_emb[train], labels[train])
    return probe_scores(probe, float_emb[~train], other_emb[~train], labels[~train])


def labelled_task_accuracy(run_float, run_package, batches: list[dict], labels: np.ndarray,
                           readout: str = "mean") -> dict:
    """For labelled samples (``--data texts.tsv`` or a folder of class subfolders): :func:`probe_accuracy`
    on the outputs as the task reads them (``readout``: the mean over real tokens, or the first, class,
    token), a linear head read off the float embeddings of half of them, as pruning fits its own."""
    embeddings = [np.concatenate([read_out(run(batch), batch, readout) for batch in batches])
                  for run in (run_float, run_package)]
    labels = labels[:len(embeddings[0])]  # batches hold whole batches only
    float_acc, package_acc, agreement = probe_accuracy(*embeddings, labels)
    return {"task_probe_float": float_acc, "task_probe_package": package_acc,
            "task_probe_drop_pt": (float_acc - package_acc) * 100, "task_probe_agreement": agreement,
            "task_probe_samples": len(labels)}


def _check_probe_labels(labels: np.ndarray) -> None:
    half = probe_training_half(labels)
    if len(set(labels[half].tolist())) < 2 or not (~half).any():
        raise TvmcompError("--data: a task probe needs two classes among the samples it is fitted on (every other "
                           "one of each class) and samples left to score it; give more labelled samples")


def _embed(run, tokenize, sentences: list[str], batch: int, seq_len: int) -> np.ndarray:
    out = []
    for start in range(0, len(sentences), batch):
        chunk = list(sentences[start:start + batch])
        padded = chunk + [chunk[-1]] * (batch - len(chunk))  # the package has a fixed batch size
        inputs = tokenize(padded, seq_len)
        out.append(mean_pool(run(inputs), inputs["attention_mask"])[: len(chunk)])
    return np.concatenate(out)


def accuracy_against_float(run_float, run_other, tokenize, batch: int, seq_len: int, stream=None) -> dict:
    """The three measures for any engine: ``run_*(inputs) -> last hidden state [batch, seq, hidden]``
    on inputs made by the model's ``tokenize(sentences, seq_len)`` (``input_ids``, ``attention_mask``)
    of the given fixed shape."""
    from scipy.stats import spearmanr

    stream = stream or sys.stderr
    pairs = pang_lee_polarity()
    sentences = [s for s, _ in pairs]
    labels = np.array([label for _, label in pairs])
    print(f"[eval] embedding {len(sentences)} Pang & Lee sentences (float and package)", file=stream)
    float_emb = _embed(run_float, tokenize, sentences, batch, seq_len)
    other_emb = _embed(run_other, tokenize, sentences, batch, seq_len)
    cosine = (float_emb * other_emb).sum(1) / np.linalg.norm(float_emb, axis=1) / np.linalg.norm(other_emb, axis=1)

    train = probe_training_half(labels)
    float_acc, other_acc, agreement = probe_accuracy(float_emb, other_emb, labels)

    word_pairs = wordsim353_pairs()
    words = sorted({w for a, b, _ in word_pairs for w in (a, b)})
    print(f"[eval] embedding {len(words)} WordSim-353 words", file=stream)
    index = {w: i for i, w in enumerate(words)}

    def similarities(emb):
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        return np.array([emb[index[a]] @ emb[index[b]] for a, b, _ in word_pairs])

    float_sims = similarities(_embed(run_float, tokenize, words, batch, seq_len))
    other_sims = similarities(_embed(run_other, tokenize, words, batch, seq_len))
    human = np.array([score for _, _, score in word_pairs])
    return {
        "embedding_cosine_mean": float(cosine.mean()),
        "embedding_cosine_min": float(cosine.min()),
        "embedding_cosine_mean_scoring_half": float(cosine[~train].mean()),  # sentences the probe did not see
        "probe_accuracy_float": float(float_acc),
        "probe_accuracy_package": float(other_acc),
        "probe_accuracy_drop_pt": float((float_acc - other_acc) * 100),
        "probe_agreement": agreement,
        "wordsim_spearman_float_vs_package": float(spearmanr(float_sims, other_sims).statistic),
        "wordsim_spearman_vs_human": {"float": float(spearmanr(float_sims, human).statistic),
                                      "package": float(spearmanr(other_sims, human).statistic)},
        "sentences": len(sentences),
        "word_pairs": len(word_pairs),
    }


def sentence_encoder_task(tokenize):
    """The text encoders' ``task_metrics``: :func:`accuracy_against_float` with a summary."""

    def task_metrics(run_float, run_package, batch: int, seq_len: int, stream=None) -> dict:
        result = accuracy_against_float(run_float, run_package, tokenize, batch, seq_len, stream)
        result["task_summary"] = [
            f"embedding cosine (Pang & Lee, {result['sentences']} sentences): mean "
            f"{result['embedding_cosine_mean']:.4f}, min {result['embedding_cosine_min']:.4f}",
            f"polarity probe accuracy: float {result['probe_accuracy_float']:.3f}, package "
            f"{result['probe_accuracy_package']:.3f} (drop {result['probe_accuracy_drop_pt']:.1f} pt; "
            f"{result['probe_agreement']:.1%} of predictions as float's)",
            f"WordSim-353 ({result['word_pairs']} pairs) Spearman float vs package: "
            f"{result['wordsim_spearman_float_vs_package']:.4f}"]
        return result

    return task_metrics


def torch_runner(module):
    """``run(inputs) -> first output`` for a PyTorch module taking the inputs as keyword arguments."""
    from .frontend.torch_frontend import torch_reference

    return lambda inputs: torch_reference(module, inputs)[0]


def float_reference(model: str, entry=None):
    """(name, ``run(inputs) -> first output``) of the float model a package was built from: the
    model file, or ``entry``'s source (its ONNX file or its PyTorch module)."""
    if entry is not None and entry.source_file is not None:
        model = str(entry.source_file())
    elif entry is not None:
        return "pytorch", torch_runner(entry.load_torch())
    suffix = Path(model).suffix.lower()
    if not Path(model).is_file():
        raise TvmcompError(f"the package's source model {model} is not on this machine: eval compares with it")
    if suffix == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            raise TvmcompError("eval of an ONNX model runs the float model in ONNX Runtime: "
                               "pip install onnxruntime") from None
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        return "onnxruntime", lambda inputs: session.run(None, inputs)[0]
    from .frontend.torch_frontend import load_program_module

    return "pytorch", torch_runner(load_program_module(model))


def output_agreement(run_float, run_package, batches: list[dict]) -> dict:
    """Per-sample cosine of the package's first output against the float one, and the SQNR over
    all samples (10 log10 of signal over error energy); positions with ``attention_mask`` 0 left out."""
    cosines, signal, error = [], 0.0, 0.0
    for inputs in batches:
        want, got = np.asarray(run_float(inputs), np.float64), np.asarray(run_package(inputs), np.float64)
        mask = inputs.get("attention_mask")
        for i in range(want.shape[0]):
            w, g = want[i], got[i]
            if mask is not None and w.shape[:1] == mask[i].shape:
                w, g = w[mask[i] != 0], g[mask[i] != 0]
            w, g = w.ravel(), g.ravel()
            norms = np.linalg.norm(w) * np.linalg.norm(g)
            cosines.append(float(w @ g / norms) if norms else float(np.array_equal(w, g)))
            signal, error = signal + float(w @ w), error + float((w - g) @ (w - g))
    sqnr = 10 * np.log10(signal / error) if error > 0 else float("inf")
    return {"output_cosine_mean": float(np.mean(cosines)), "output_cosine_min": float(np.min(cosines)),
            "sqnr_db": float(sqnr), "samples": len(cosines)}


def evaluation_batches(package: Package, entry, data: str | Path | None) -> tuple[str, list[dict]]:
    """(what they are, batches): ``data`` (checked as --calib-data is), held-out real text for a text
    encoder (Pang & Lee; calibration uses the Lee corpus), held-out bundled digits for an image
    encoder, else the package's example inputs."""
    from .calibration_data import input_makers, read_calibration_data
    from .frontend import TensorSpec
    from .models.images import CALIBRATION_IMAGES, bundled_images

    specs = [TensorSpec.from_json(spec) for spec in package.inputs]
    batch, _ = _batch_and_seq_len(package)
    tokenize, preprocess = input_makers(entry, specs)
    if data is not None:
        return str(data), read_calibration_data(data, specs, tokenize, preprocess, flag="--data")
    if tokenize is not None:
        sentences = [s for s, _ in pang_lee_polarity()]
        return f"{len(sentences)} Pang & Lee sentences", [tokenize(sentences[i:i + batch])
                                                         for i in range(0, len(sentences) - batch + 1, batch)]
    if entry is not None and preprocess is not None:
        images, _ = bundled_images(CALIBRATION_IMAGES, EVALUATION_IMAGE_SAMPLES - EVALUATION_IMAGE_SAMPLES % batch)
        return f"{len(images)} held-out MNIST digits", [preprocess(images[i:i + batch])
                                                       for i in range(0, len(images), batch)]
    return "the example inputs (give --data for real ones)", [package.example_inputs()]


def _batch_and_seq_len(package: Package) -> tuple[int, int | None]:
    """The package's batch, and its sequence length where its first input is [batch, seq] (text)."""
    shape = package.inputs[0]["shape"]
    return (int(shape[0]) if shape else 1), (int(shape[1]) if len(shape) == 2 else None)


def evaluate_package(path: str | Path, data: str | Path | None = None, stream=None) -> dict:
    """Output agreement with the float model for any package; task measures for a text encoder, and
    the accuracy of a probe on the user's task where ``data`` is a labelled ``.tsv``."""
    from .models import find_model

    package = Package(path)
    model = package.metadata["model"]
    entry = None if Path(model).suffix.lower() in (".onnx", ".pt2") else find_model(model)
    reference, run_float = float_reference(model, entry)
    described, batches = evaluation_batches(package, entry, data)
    labelled = read_labels(data) if data is not None else None
    if labelled is not None:
        _check_probe_labels(labelled[0][:sum(len(next(iter(b.values()))) for b in batches)])
    run_package = lambda inputs: package.run(**inputs)[0]  # noqa: E731
    result = {"package": str(path), "variant": package.metadata["variant"], "reference": reference,
              "data": described, **output_agreement(run_float, run_package, batches)}
    if entry is not None and entry.task_metrics is not None:
        result |= entry.task_metrics(run_float, run_package, *_batch_and_seq_len(package), stream=stream)
    if labelled is not None:
        result |= labelled_task_accuracy(run_float, run_package, batches, labelled[0],
                                         entry.readout if entry is not None else "mean")
    return result


def format_eval(result: dict) -> str:
    lines = [f"accuracy of {result['package']} ({result['variant']}) vs the float model in {result['reference']}",
             f"  outputs on {result['data']} ({result['samples']} samples): cosine mean "
             f"{result['output_cosine_mean']:.4f}, min {result['output_cosine_min']:.4f}, SQNR {result['sqnr_db']:.1f} dB"]
    if "task_probe_float" in result:
        lines.append(f"  your task ({result['task_probe_samples']} labelled samples; a linear probe fitted on the "
                     f"float embeddings of every other one of each class, scored on the rest): float {result['task_probe_float']:.3f}, "
                     f"package {result['task_probe_package']:.3f} (drop {result['task_probe_drop_pt']:.1f} pt; "
                     f"{result['task_probe_agreement']:.1%} of predictions as float's)")
    return "\n".join(lines + [f"  {line}" for line in result.get("task_summary", [])])
