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
