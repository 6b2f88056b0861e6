"""Where and how models run: the ``--device auto|cpu|cuda`` choice, moving batches, seeding."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from torch import nn

from reprogram.errors import InputError

__all__ = ["DEVICE_CHOICES", "resolve_device", "move_to", "call_model", "seed_everything"]

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` is CUDA when a GPU is visible, else CPU; ``"cuda"`` without a GPU is an error.

    Also accepts an explicit ``torch.device`` or ``"cuda:1"``-style names.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(f"--device {name} asked for, but no CUDA GPU is available here (use --device cpu or auto)")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise InputError(f"unknown device {name!r}; use one of {', '.join(DEVICE_CHOICES)}")


def move_to(x: Any, device: torch.device) -> Any:
    """A batch (a tensor, or a dict of tensors such as a tokenizer's output) on ``device``."""
    if isinstance(x, dict):
        return {k: move_to(v, device) for k, v in x.items()}
    return x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x


def call_model(model: nn.Module, x: Any) -> torch.Tensor:
    """The logits of ``model`` on a batch: ``model(**x)`` for a dict batch, ``model(x)`` otherwise."""
    out = model(**x) if isinstance(x, dict) else model(x)
    return out.logits if hasattr(out, "logits") else out


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a generator for the data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
