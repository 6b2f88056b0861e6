"""Constrained training by the method of Lagrange multipliers.

Minimise the task loss subject to per-group fairness constraints, each written as
``c_k(θ) <= 0``:

* ``"dp"`` (demographic parity): for every group g, ``m_g - m - ε <= 0`` and
  ``m - m_g - ε <= 0``, with ``m_g`` the mean soft decision for the positive class
  (multi-class: for every class) in group g and ``m`` the batch mean. The soft decision
  is ``softmax(logits / T)``: with T = 1 it is the predicted probability, which a model
  can balance by pulling every score to 0.5 while its thresholded decisions stay unfair;
  a small T (default 0.1) makes it a smooth stand-in for the decision itself;
* ``"eo"`` (equalized odds): the same within the rows of each true class.

The Lagrangian ``L(θ, λ) = loss(θ) + Σ_k λ_k c_k(θ)`` is minimised in θ by the Trainer's
optimizer and maximised in λ >= 0 by projected gradient ascent with a separate SGD
optimizer and learning rate (``∂L/∂λ_k = c_k``: a violated constraint grows its
multiplier). One multiplier per group, direction and constraint (and class).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprogram.errors import InputError
from reprogram.train.objective import Objective

__all__ = ["LagrangianObjective", "LagrangianFairnessTrainer", "group_rate_gaps"]


def group_rate_gaps(prob: torch.Tensor, group: torch.Tensor, n_groups: int, mask: torch.Tensor | None = None):
    """``(m_g - m)`` per group and class, and which groups have rows: (G, K), (G,).

    ``prob`` are predicted class probabilities (n, K); ``mask`` restricts to some rows.
    """
    if mask is not None:
        prob, group = prob[mask], group[mask]
    k = prob.shape[1]
    sums = torch.zeros(n_groups, k, dtype=prob.dtype, device=prob.device).index_add_(0, group, prob)
    counts = torch.bincount(group, minlength=n_groups).to(prob.dtype)
    present = counts > 0
    means = sums / counts.clamp(min=1).unsqueeze(1)
    overall = prob.mean(0, keepdim=True) if len(prob) else torch.zeros(1, k, dtype=prob.dtype, device=prob.device)
    return (means - overall) * present.unsqueeze(1), present


class LagrangianObjective(Objective):
    """Cross-entropy plus multiplier-weighted constraint violations (see module docstring).

    ``history`` gains per-epoch ``primal_loss``, ``max_violation`` and ``max_multiplier``;
    ``multipliers`` holds λ, shaped (constraint blocks, 2 directions, groups, classes).
    """

    def __init__(self, n_groups: int, n_classes: int, *, constraint: str = "dp", eps: float = 0.02,
                 multiplier_lr: float = 0.05, temperature: float = 0.1):
        super().__init__()
        if constraint not in ("dp", "eo"):
            raise InputError(f"unknown constraint {constraint!r}; use dp or eo")
        if eps < 0 or multiplier_lr <= 0:
            raise InputError("eps must be >= 0 and multiplier_lr > 0")
        if temperature <= 0:
            raise InputError("temperature must be > 0")
        self.constraint, self.eps, self.n_groups, self.n_classes = constraint, eps, n_groups, n_classes
        self.temperature, self.multiplier_lr = temperature, multiplier_lr
        blocks = 1 if constraint == "dp" else n_classes
        # binary tasks constrain the positive class only (the other is its mirror image)
        cols = 1 if n_classes == 2 else n_classes
        self.multipliers = nn.Parameter(torch.zeros(blocks, 2, n_groups, cols))
        self._multiplier_opt = torch.optim.SGD([self.multipliers], lr=multiplier_lr)
        self._multipliers_ascend = self.multipliers.register_hook(torch.neg)
        self._epoch = {"primal": 0.0, "violation": 0.0, "n": 0}

    def param_groups(self, lr: float) -> list[dict]:
        return []  # the multipliers have their own optimizer, stepped in after_step

    def violations(self, logits: torch.Tensor, y: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """Constraint values c_k (<= 0 when satisfied), shaped like ``multipliers``."""
        prob = torch.softmax(logits / self.temperature, dim=1)
        if self.n_classes == 2:
            prob = prob[:, 1:]
        masks = [None] if self.constraint == "dp" else [y == c for c in range(self.n_classes)]
        out = []
        for m in masks:
            gap, present = group_rate_gaps(prob, group, self.n_groups, m)
            up = (gap - self.eps) * present.unsqueeze(1)
            down = (-gap - self.eps) * present.unsqueeze(1)
            out.append(torch.stack([up, down]))
        return torch.stack(out)

    def forward(self, logits, y, group, index=None, representation=None):
        primal = F.cross_entropy(logits, y)
        c = self.violations(logits, y, group)
        self._epoch["primal"] += primal.item()
        self._epoch["violation"] = max(self._epoch["violation"], c.max().item())
        self._epoch["n"] += 1
        return primal + (self.multipliers * c).sum()

    def after_step(self) -> None:
        self._multiplier_opt.step()
        self._multiplier_opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.multipliers.clamp_(min=0.0)  # the projection onto λ >= 0

    def epoch_logs(self) -> dict[str, float]:
        n = max(self._epoch["n"], 1)
        logs = {
            "primal_loss": self._epoch["primal"] / n,
            "max_violation": self._epoch["violation"],
            "max_multiplier": float(self.multipliers.detach().max()),
            "multipliers": self.multipliers.detach().cpu().flatten().tolist(),
        }
        self._epoch = {"primal": 0.0, "violation": 0.0, "n": 0}
        return logs


def LagrangianFairnessTrainer(model: nn.Module, n_groups: int, n_classes: int, *, constraint: str = "dp",
                              eps: float = 0.02, multiplier_lr: float = 0.05, temperature: float = 0.1, **trainer_kw):
    """A :class:`~reprogram.train.trainer.Trainer` whose objective is a
    :class:`LagrangianObjective` (the loop is the shared one)."""
    from reprogram.train.trainer import Trainer

    objective = LagrangianObjective(
        n_groups, n_classes, constraint=constraint, eps=eps, multiplier_lr=multiplier_lr, temperature=temperature
    )
    return Trainer(model, objective, **trainer_kw)
