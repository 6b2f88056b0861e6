"""Choosing the torch device from the ``--device auto|cpu|cuda`` option."""

from __future__ import annotations

import torch

from reprogram.errors import InputError

__all__ = ["DEVICE_CHOICES", "resolve_device"]

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
