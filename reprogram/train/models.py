"""Model builders for the base models: an MLP (tabular), a small CNN and ResNet-18 (images),
and a Hugging Face encoder with a classification head (text).

Models built here split into ``features`` (input -> representation) and ``head``
(representation -> logits), so that adversarial debiasing can look at the
representation; ``forward`` is ``head(features(x))`` and returns logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reprogram.errors import InputError

__all__ = ["SplitModel", "LinearMixture", "mlp", "small_cnn", "resnet18", "hf_classifier", "build_model", "ARCHES"]

ARCHES = ("mlp", "cnn", "resnet18")


class SplitModel(nn.Module):
    """``head(features(x))``: a classifier whose representation can be read."""

    def __init__(self, features: nn.Module, head: nn.Module, representation_dim: int):
        super().__init__()
        self.features = features
        self.head = head
        self.representation_dim = representation_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LinearMixture(nn.Module):
    """A randomized mixture of linear classifiers (what the reductions approach returns).

    Member t votes ``1[a_t · x + b_t > 0]`` with weight ``w_t`` (Σ w = 1); the mixture's
    probability of class 1 is ``p = Σ_t w_t · vote_t`` and the logits are
    ``[log(1 - p), log p]`` (p clipped to [1e-6, 1 - 1e-6]). One member is the plain
    linear classifier, logits ``[0, a · x + b]``.
    """

    def __init__(self, coef: torch.Tensor, bias: torch.Tensor, weights: torch.Tensor):
        super().__init__()
        self.register_buffer("coef", coef)
        self.register_buffer("bias", bias)
        self.register_buffer("weights", weights)
        self.single = coef.shape[0] == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.to(self.coef.dtype) @ self.coef.T + self.bias
        if self.single:
            return torch.cat([torch.zeros_like(z), z], dim=1)
        p = ((z > 0).to(z.dtype) @ self.weights).clamp(1e-6, 1.0 - 1e-6)
        return torch.stack([torch.log1p(-p), torch.log(p)], dim=1)


def mlp(n_features: int, n_classes: int, hidden: Sequence[int] = (512, 256, 64), dropout: float = 0.2) -> SplitModel:
    """ReLU MLP with dropout (FFB's tabular model is 512-256-64)."""
    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    return SplitModel(nn.Sequential(*layers), nn.Linear(width, n_classes), width)


def small_cnn(n_classes: int, channels: int = 3, width: int = 32) -> SplitModel:
    """Three conv blocks and global average pooling: trains in seconds on small images."""
    feats = nn.Sequential(
        nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.BatchNorm2d(2 * width), nn.ReLU(),
        nn.Conv2d(2 * width, 4 * width, 3, padding=1, stride=2), nn.BatchNorm2d(4 * width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )  # fmt: skip
    return SplitModel(feats, nn.Linear(4 * width, n_classes), 4 * width)


def resnet18(n_classes: int, channels: int = 3) -> SplitModel:
    """torchvision's ResNet-18 without pretrained weights (nothing is downloaded)."""
    from reprogram.models import import_torchvision

    net = import_torchvision().models.resnet18(weights=None, num_classes=n_classes)
    if channels != 3:
        net.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    head, net.fc = net.fc, nn.Identity()
    return SplitModel(net, head, head.in_features)


def hf_classifier(model_dir: str, n_classes: int, *, freeze_encoder: bool = False) -> nn.Module:
    """A Hugging Face encoder from a local folder with a fresh classification head.

    ``freeze_encoder`` trains the head only (fast, and what a small label budget needs).
    The returned module maps ``(input_ids, attention_mask)`` to logits.
    """
    from reprogram.models import prepare_transformers

    transformers = prepare_transformers()
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            model_dir, num_labels=n_classes, local_files_only=True
        )
    except (OSError, ValueError) as e:
        raise InputError(f"cannot load a Hugging Face model from {model_dir!r}: {str(e).splitlines()[0]}") from None
    if freeze_encoder:
        base = getattr(model, model.base_model_prefix, None)
        if base is not None:
            for p in base.parameters():
                p.requires_grad_(False)
    return model


def build_model(arch: str, *, input_kind: str, n_classes: int, n_features: int | None = None, channels: int = 3,
                hidden: Sequence[int] = (512, 256, 64), dropout: float = 0.2, freeze_encoder: bool = False) -> nn.Module:
    """Build ``arch`` ("mlp", "cnn", "resnet18" or a Hugging Face folder) for the data's input kind."""
    if input_kind == "tabular":
        if arch != "mlp":
            raise InputError(f"--arch {arch} does not take tabular data; use mlp")
        if not n_features:
            raise InputError("an MLP needs the number of features")
        return mlp(n_features, n_classes, hidden, dropout)
    if input_kind == "image":
        if arch == "cnn":
            return small_cnn(n_classes, channels)
        if arch == "resnet18":
            return resnet18(n_classes, channels)
        raise InputError(f"--arch {arch} does not take images; use cnn or resnet18")
    if input_kind == "text":
        if arch in ARCHES:
            raise InputError(f"--arch {arch} does not take text; give a Hugging Face model folder")
        return hf_classifier(arch, n_classes, freeze_encoder=freeze_encoder)
    raise InputError(f"unknown input kind {input_kind!r}")
