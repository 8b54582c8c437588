"""Small PyTorch models shared by the build, runtime and CLI tests."""

import numpy as np
import torch

from tvmcomp.frontend import import_torch
from tvmcomp.source import ModelSource


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 64))

    def forward(self, x):
        return self.net(x)


def mlp_source() -> ModelSource:
    torch.manual_seed(0)
    model = MLP().eval()
    inputs = {"x": np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)}
    return ModelSource("mlp", import_torch(model, inputs), inputs, model)
