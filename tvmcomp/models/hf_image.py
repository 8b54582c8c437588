"""Hugging Face image encoders (ViT, DeiT, DINOv2, Swin class) as model entries.

A model folder (``config.json``, weights, ``preprocessor_config.json``), loaded offline with
transformers, is a model entry: its image processor's size, mean and standard deviation turn the
bundled real images (MNIST digits, :mod:`.images`) into example, calibration and evaluation
inputs, and the task metric is a linear probe on its features, so a user's own folder builds,
quantizes and evaluates with no other flag.
"""

from __future__ import annotations

import json
from pathlib import Path

from . import ModelEntry
from .hf_text import pretrained_encoder
from .images import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocessor, calibration_inputs, example_inputs, probe_task

INPUT = "pixel_values"
PROCESSOR_FILE = "preprocessor_config.json"
MEAN_POOLED = ("swin", "swinv2", "convnext")  # no class token: the probe reads the token mean


def image_preprocessor(model_dir: str | Path, config: dict) -> ImagePreprocessor:
    """The folder's ``preprocessor_config.json`` (size, mean, std) as an :class:`ImagePreprocessor`.

    Read as data rather than through ``AutoImageProcessor``, whose default backend wants torchvision."""
    settings = json.loads((Path(model_dir) / PROCESSOR_FILE).read_text())
    size, side = settings.get("size") or {}, config.get("image_size", 224)
    if isinstance(size, int):
        size = {"height": size, "width": size}
    height = size.get("height", size.get("shortest_edge", side))
    width = size.get("width", size.get("shortest_edge", side))
    if settings.get("do_normalize", True):
        mean, std = settings.get("image_mean", IMAGENET_MEAN), settings.get("image_std", IMAGENET_STD)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    return ImagePreprocessor(INPUT, (int(height), int(width)), tuple(mean), tuple(std))


def _load_torch(model_dir: str):
    import torch

    class LastHiddenState(torch.nn.Module):
        """The encoder returning only ``last_hidden_state`` (the token features)."""

        def __init__(self):
            super().__init__()
            self.encoder = pretrained_encoder(model_dir)

        def forward(self, pixel_values):
            return self.encoder(pixel_values=pixel_values).last_hidden_state

    return LastHiddenState().eval()


def image_encoder(path: str, model_dir: str, config: dict) -> ModelEntry:
    kind = config.get("model_type", "unknown")
    preprocess = image_preprocessor(model_dir, config)
    readout = "mean" if kind in MEAN_POOLED else "first"
    return ModelEntry(name=path, description=f"Hugging Face {kind} image encoder from {path}",
                      load_torch=lambda: _load_torch(model_dir), make_inputs=example_inputs(preprocess),
                      output_names=("last_hidden_state",), make_calibration_inputs=calibration_inputs(preprocess),
                      default_seq_len=None,
                      task_metrics=probe_task(preprocess, readout), readout=readout,
                      preprocess_images=preprocess, preprocessing_files=lambda: [Path(model_dir) / PROCESSOR_FILE])
