"""Accuracy of a built package against its float PyTorch model, on real text.

For a sentence encoder (MiniLM) the embeddings are mean-pooled over the attention mask, as the
model is used. Three measures, each float vs package:
- cosine similarity of the embeddings of the Pang & Lee sentences (mean and min);
- a linear probe (logistic regression) fitted once on float embeddings of half of the Pang & Lee
  polarity sentences, scored on the other half with float and with package embeddings;
- Spearman correlation between float and package word similarities on WordSim-353 pairs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .data import pang_lee_polarity, wordsim353_pairs
from .errors import TvmcompError
from .runtime import Package


def mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float32)
    return (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)


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
    from sklearn.linear_model import LogisticRegression

    stream = stream or sys.stderr
    pairs = pang_lee_polarity()
    sentences = [s for s, _ in pairs]
    labels = np.array([label for _, label in pairs])
    print(f"[eval] embedding {len(sentences)} Pang & Lee sentences (float and package)", file=stream)
    float_emb = _embed(run_float, tokenize, sentences, batch, seq_len)
    other_emb = _embed(run_other, tokenize, sentences, batch, seq_len)
    cosine = (float_emb * other_emb).sum(1) / np.linalg.norm(float_emb, axis=1) / np.linalg.norm(other_emb, axis=1)

    train = np.arange(len(sentences)) % 2 == 0
    probe = LogisticRegression(max_iter=2000).fit(float_emb[train], labels[train])
    float_acc = probe.score(float_emb[~train], labels[~train])
    other_acc = probe.score(other_emb[~train], labels[~train])

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
        "probe_accuracy_float": float(float_acc),
        "probe_accuracy_package": float(other_acc),
        "probe_accuracy_drop_pt": float((float_acc - other_acc) * 100),
        "wordsim_spearman_float_vs_package": float(spearmanr(float_sims, other_sims).statistic),
        "wordsim_spearman_vs_human": {"float": float(spearmanr(float_sims, human).statistic),
                                      "package": float(spearmanr(other_sims, human).statistic)},
        "sentences": len(sentences),
        "word_pairs": len(word_pairs),
    }


def torch_runner(module):
    """``run(inputs)`` for a PyTorch module taking MiniLM's inputs as keyword arguments."""
    import torch

    def run(inputs):
        with torch.inference_mode():
            return module(**{k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()

    return run


def evaluate_package(path: str | Path, stream=None) -> dict:
    from .models import find_model

    package = Package(path)
    model = package.metadata["model"]
    entry = None if Path(model).suffix.lower() in (".onnx", ".pt2") else find_model(model)
    if entry is None or entry.tokenize is None:
        raise TvmcompError(f"eval measures sentence-encoder accuracy on real text and supports text encoders "
                           f"(bundled, or a Hugging Face folder), not '{model}'")
    batch, seq_len = package.inputs[0]["shape"][:2]
    run_float = torch_runner(entry.load_torch())
    metrics = accuracy_against_float(run_float, lambda inputs: package.run(**inputs)[0], entry.tokenize, batch,
                                     seq_len, stream)
    return {"package": str(path), "variant": package.metadata["variant"], **metrics}


def format_eval(result: dict) -> str:
    return "\n".join([
        f"accuracy of {result['package']} ({result['variant']}) vs the float PyTorch model",
        f"  embedding cosine (Pang & Lee, {result['sentences']} sentences): mean {result['embedding_cosine_mean']:.4f}, "
        f"min {result['embedding_cosine_min']:.4f}",
        f"  polarity probe accuracy: float {result['probe_accuracy_float']:.3f}, package "
        f"{result['probe_accuracy_package']:.3f} (drop {result['probe_accuracy_drop_pt']:.1f} pt)",
        f"  WordSim-353 ({result['word_pairs']} pairs) Spearman float vs package: "
        f"{result['wordsim_spearman_float_vs_package']:.4f}",
    ])
