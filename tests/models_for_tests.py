"""Small PyTorch models shared by the build, runtime and CLI tests."""

import numpy as np
import torch

from tvmcomp.frontend import import_torch
from tvmcomp.models import ModelEntry
from tvmcomp.source import ModelSource


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.GELU(), torch.nn.Linear(512, 64))

    def forward(self, x):
        return self.net(x)


def mlp_source() -> ModelSource:
    torch.manual_seed(0)
    model = MLP().eval()
    inputs = {"x": np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)}

    def calibration(count, batch, _width):
        rng = np.random.default_rng(1)
        return [{"x": rng.standard_normal((batch, 64)).astype(np.float32)} for _ in range(count)]

    entry = ModelEntry("mlp", "test MLP", lambda: model, None, ("output_0",), make_calibration_inputs=calibration)
    return ModelSource("mlp", import_torch(model, inputs), inputs, model, entry)


def save_mlp_pt2(path):
    """The test MLP as a torch.export program file (x: [8, 64] -> [8, 64]): a user's model file."""
    source = mlp_source()
    inputs = {k: torch.from_numpy(v) for k, v in source.example_inputs.items()}
    torch.export.save(torch.export.export(source.torch_module, (), inputs), str(path))
    return path


def int8_linear_reference(x, weight_nk, bias, scale, zero_point, activation, weight_quant):
    """What a realized Linear must compute, in NumPy integers: quantize x (round half to even),
    u8 x s8 -> s32 matmul, subtract the zero-point term, rescale, add the bias."""
    from tvmcomp.quant.grids import quantize_weight

    xq = activation.quantize(x, np.float32(scale), zero_point)
    wq, w_scale = quantize_weight(np.ascontiguousarray(weight_nk.T), weight_quant)
    acc = xq.astype(np.int32) @ wq.astype(np.int32) - zero_point * wq.astype(np.int32).sum(axis=0)
    return acc.astype(np.float32) * (np.float32(scale) * w_scale).astype(np.float32) + bias


def save_tiny_vit(folder, kind: str = "vit"):
    """A randomly initialised 2-block ViT / DeiT / DINOv2 / Swin at 32 px, saved with ``save_pretrained``
    beside an image processor (ViT's: mean and std 0.5) into ``folder``. DINOv2's layer scales are
    drawn from N(0, 0.5), negative ones included (initialised, they are all 1)."""
    from transformers import DeiTConfig, DeiTModel, Dinov2Config, Dinov2Model, SwinConfig, SwinModel, ViTConfig, ViTModel
    from transformers.models.vit.image_processing_vit import ViTImageProcessor

    torch.manual_seed(0)
    blocks = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                  patch_size=8)
    if kind == "vit":
        model = ViTModel(ViTConfig(**blocks), add_pooling_layer=False)
    elif kind == "deit":
        model = DeiTModel(DeiTConfig(**blocks), add_pooling_layer=False)
    elif kind == "dinov2":
        dinov2_blocks = {key: value for key, value in blocks.items() if key != "intermediate_size"}
        model = Dinov2Model(Dinov2Config(**dinov2_blocks, mlp_ratio=2))
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if name.endswith("lambda1"):
                    parameter.copy_(torch.randn_like(parameter) * 0.5)
    else:
        model = SwinModel(SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 2],
                                     window_size=4), add_pooling_layer=False)
    model.eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder
