"""``--model DIR``: a Hugging Face model folder becomes a text or an image encoder entry, by what
it carries (a tokenizer, or an image processor)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import TvmcompError
from . import ModelEntry

from .hf_image import PROCESSOR_FILE, image_encoder
from .hf_text import TOKENIZER_FILES, text_encoder


def folder_entry(path: Path) -> ModelEntry:
    """The entry for a Hugging Face model folder, or a one-line error saying what it lacks."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    config_file = path / "config.json"
    if not config_file.is_file():
        raise TvmcompError(f"{path} is a folder but not a Hugging Face model: it has no config.json "
                           "(save one with model.save_pretrained(folder))")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise TvmcompError(f"{config_file} is not valid JSON: {err}") from None
    folder = str(path.resolve())
    if (path / PROCESSOR_FILE).is_file():
        return image_encoder(str(path), folder, config)
    if any((path / name).is_file() for name in TOKENIZER_FILES):
        return text_encoder(str(path), lambda: folder, f"Hugging Face {config.get('model_type', 'unknown')} "
                            f"text encoder from {path}", config.get("max_position_embeddings"))
    raise TvmcompError(f"{path} has neither a tokenizer nor an image processor, so tvmcomp cannot make inputs for "
                       "it: save one beside the model (tokenizer.save_pretrained(folder) or "
                       "image_processor.save_pretrained(folder)), or export to .pt2/.onnx and give --calib-data")
