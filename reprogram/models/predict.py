"""The one prediction loop: class probabilities of a model (and trigger) over a dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from reprogram.models.device import call_model, move_to, resolve_device

__all__ = ["iter_proba", "predict_proba"]


def iter_proba(model: nn.Module, ds: Dataset, *, trigger: nn.Module | None = None, device="cpu",
               collate_fn: Callable | None = None, batch_size: int = 512) -> Iterator[np.ndarray]:
    """Softmax of ``model(trigger(x))`` (or ``model(x)``) for the rows of ``ds`` of
    ``(x, y, group)`` items, one batch at a time in dataset order, as float64 (rows x
    classes): a caller that only counts (a streamed report) holds one batch, not all."""
    dev = resolve_device(device)
    was_training = model.training
    model.to(dev).eval()
    if trigger is not None:
        trigger.to(dev).eval()
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate_fn or default_collate)
    try:
        for x, *_ in loader:
            with torch.no_grad():
                x = move_to(x, dev)
                logits = call_model(model, trigger(x) if trigger is not None else x)
                proba = torch.softmax(logits.double(), dim=1).cpu().numpy()
            yield proba
    finally:
        model.train(was_training)


def predict_proba(model: nn.Module, ds: Dataset, *, trigger: nn.Module | None = None, device="cpu",
                  collate_fn: Callable | None = None, batch_size: int = 512) -> np.ndarray:
    """Softmax of ``model(trigger(x))`` (or ``model(x)``) for every row of ``ds`` of
    ``(x, y, group)`` items, in dataset order, as float64 (rows x classes); the batches
    of :func:`iter_proba` stacked."""
    return np.concatenate(list(iter_proba(model, ds, trigger=trigger, device=device, collate_fn=collate_fn,
                                          batch_size=batch_size)))
