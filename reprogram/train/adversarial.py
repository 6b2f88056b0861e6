"""Adversarial debiasing with a gradient-reversal layer (Ganin et al. 2016, DANN style).

A predictor (the model) and an adversary that tries to recover the group from the
model's representation (``on="representation"``) or its output probabilities
(``on="output"``, optionally with the true label: equalized odds, Zhang et al. 2018).
One backward pass trains both:

    loss = CE(model(x), y) + CE(adversary(GRL_λ(z)), group)

The adversary minimises its cross-entropy; the gradient-reversal layer GRL_λ is the
identity forward and multiplies the gradient by -λ backward, so the model *maximises*
the adversary's loss, scaled by λ: it learns a representation the group cannot be read
from. λ follows ``schedule``: ``"constant"`` (λ = strength) or ``"dann"``
(λ = strength · (2 / (1 + exp(-10 p)) - 1), p the fraction of training done), which
lets the predictor learn the task before the adversary pushes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from reprogram.errors import InputError
from reprogram.train.objective import Objective

__all__ = ["GradientReversal", "AdversarialDebiasing", "grad_reverse"]


class _Reverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, strength):
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.strength * grad, None


def grad_reverse(x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """Identity forward; gradient multiplied by ``-strength`` backward."""
    return _Reverse.apply(x, float(strength))


class GradientReversal(nn.Module):
    """Module form of :func:`grad_reverse`; ``strength`` may be changed during training."""

    def __init__(self, strength: float = 1.0):
        super().__init__()
        self.strength = strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.strength)

    def extra_repr(self) -> str:
        return f"strength={self.strength}"


class AdversarialDebiasing(Objective):
    """Task cross-entropy plus a group adversary behind a gradient-reversal layer.

    Parameters: ``n_groups``; ``input_dim`` (the representation width for
    ``on="representation"``, the number of classes for ``on="output"``); ``with_label``
    feeds the true label (one-hot) to the adversary too (equalized odds); ``hidden``
    width of the adversary MLP (0: linear); ``strength`` and ``schedule`` of λ.
    """

    def __init__(self, n_groups: int, input_dim: int, *, on: str = "representation", with_label: bool = False,
                 n_classes: int | None = None, hidden: int = 64, strength: float = 1.0, schedule: str = "dann"):
        super().__init__()
        if on not in ("representation", "output"):
            raise InputError(f"on must be 'representation' or 'output', got {on!r}")
        if schedule not in ("constant", "dann"):
            raise InputError(f"unknown schedule {schedule!r}; use constant or dann")
        if with_label and not n_classes:
            raise InputError("with_label needs n_classes")
        self.on, self.with_label, self.n_classes = on, with_label, n_classes
        self.needs_representation = on == "representation"
        self.strength, self.schedule = strength, schedule
        self.reversal = GradientReversal(0.0 if schedule == "dann" else strength)
        width = input_dim + (n_classes if with_label else 0)
        self.adversary = (
            nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, n_groups))
            if hidden
            else nn.Linear(width, n_groups)
        )
        self._epoch = {"task": 0.0, "adversary": 0.0, "n": 0}

    def set_progress(self, fraction: float) -> None:
        if self.schedule == "dann":
            self.reversal.strength = self.strength * (2.0 / (1.0 + math.exp(-10.0 * fraction)) - 1.0)

    def forward(self, logits, y, group, index=None, representation=None):
        task = F.cross_entropy(logits, y)
        z = representation if self.on == "representation" else torch.softmax(logits, dim=1)
        if z is None:
            raise InputError("adversarial debiasing on the representation needs the model's representation")
        z = self.reversal(z)
        if self.with_label:
            z = torch.cat([z, F.one_hot(y, self.n_classes).to(z.dtype)], dim=1)
        adv = F.cross_entropy(self.adversary(z), group)
        self._epoch["task"] += task.item()
        self._epoch["adversary"] += adv.item()
        self._epoch["n"] += 1
        return task + adv

    def epoch_logs(self) -> dict[str, float]:
        n = max(self._epoch["n"], 1)
        logs = {
            "task_loss": self._epoch["task"] / n,
            "adversary_loss": self._epoch["adversary"] / n,
            "reversal_strength": self.reversal.strength,
        }
        self._epoch = {"task": 0.0, "adversary": 0.0, "n": 0}
        return logs
