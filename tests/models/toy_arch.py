"""Small architectures for the model-loading tests, importable as ``toy_arch:ClassName``.

``tests/models/conftest.py`` puts this folder on ``sys.path``, so a state_dict can name
them as its arch and a pickled module can be unpickled.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallConvNet(nn.Module):
    """A tiny image classifier with batch norm, dropout and a non-persistent buffer."""

    def __init__(self, num_classes: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, num_classes)
        # Not in the state_dict, but part of what the model computes with.
        self.register_buffer("gain", torch.full((1,), 1.5), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        h = h.mean(dim=(2, 3)) * self.gain
        return self.fc(self.drop(h))


class TabularMLP(nn.Module):
    """A tiny tabular classifier."""

    def __init__(self, num_classes: int = 2, in_features: int = 5):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class FixedNet(nn.Module):
    """An architecture whose constructor takes no arguments."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)
