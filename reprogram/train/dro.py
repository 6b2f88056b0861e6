"""Group distributionally robust optimisation (Sagawa et al., ICLR 2020, online algorithm).

With ℓ_g the mean cross-entropy of the batch rows of group g and q a distribution over
the groups (a buffer, uniform at the start, *not* learned by the optimizer), each
training step does::

    ℓ̃_g  = ℓ_g + C / sqrt(n_g)                  (generalisation adjustment; C = adjust, n_g
                                                  the group's training count; ℓ̃ = ℓ without it)
    q_g  <- q_g · exp(step_size · ℓ̃_g)           for every group g present in the batch
    q    <- q / Σ_g q_g
    loss  = Σ_{g present} q_g · ℓ̃_g

(the exponentiated-gradient ascent step of the min-max problem min_θ max_q Σ_g q_g ℓ̃_g;
the update uses the detached losses, so the model's gradient is Σ_g q_g ∇ℓ_g). Groups
absent from a batch keep their q_g (factor exp(0) = 1, as in the reference code without
adjustment) and contribute no term, so a batch missing a group still gives a finite loss.
q is updated only in training mode; ``epoch_logs`` returns the group weights q and the
epoch's mean loss of each group (None for a group that had no rows).

``by="group_class"`` runs the same over the (group, true class) cells, cell id
``group * n_classes + y``, as Sagawa et al. do on Waterbirds and CelebA: the cells where
group and label disagree with the majority pattern are the ones that gain weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from reprogram.errors import InputError
from reprogram.train.objective import Objective, check_ids

__all__ = ["GroupDRO"]


class GroupDRO(Objective):
    """Worst-group loss by exponentiated group weights; the formula is in the module docstring.

    Parameters
    ----------
    n_groups: number of groups.
    step_size: η_q, the step of the exponentiated update of q.
    adjust: C of the generalisation adjustment C / sqrt(n_g) (needs ``group_counts``).
    group_counts: training rows per group (n_g), for ``adjust`` (per cell with
        ``by="group_class"``, in cell-id order).
    by: ``"group"`` or ``"group_class"`` (the weights are over (group, class) cells).
    n_classes: number of classes, needed with ``by="group_class"``.
    """

    def __init__(self, n_groups: int, *, step_size: float = 0.01, adjust: float | None = None,
                 group_counts=None, by: str = "group", n_classes: int | None = None):
        super().__init__()
        if int(n_groups) < 1:
            raise InputError(f"n_groups must be >= 1, got {n_groups}")
        if not step_size >= 0:
            raise InputError(f"step_size must be >= 0, got {step_size}")
        if by not in ("group", "group_class"):
            raise InputError(f"by must be 'group' or 'group_class', got {by!r}")
        if by == "group_class" and not (n_classes and int(n_classes) >= 2):
            raise InputError("GroupDRO(by='group_class') needs n_classes >= 2")
        self.by = by
        self.n_classes = None if n_classes is None else int(n_classes)
        self.n_attribute_groups = int(n_groups)
        n_groups = int(n_groups) * (self.n_classes if by == "group_class" else 1)
        self.n_groups, self.step_size = int(n_groups), float(step_size)
        self.adjust = None if adjust is None else float(adjust)
        self.register_buffer("q", torch.full((self.n_groups,), 1.0 / self.n_groups))
        adj = torch.zeros(self.n_groups)
        if self.adjust is not None:
            if self.adjust < 0:
                raise InputError(f"adjust must be >= 0, got {adjust}")
            if group_counts is None:
                raise InputError("GroupDRO(adjust=...) needs group_counts= (training rows per group)")
            counts = torch.as_tensor(group_counts, dtype=torch.float64).flatten()
            if len(counts) != self.n_groups:
                raise InputError(f"group_counts has {len(counts)} entries for n_groups={self.n_groups}")
            if not bool((counts > 0).all()):
                raise InputError("group_counts must all be > 0 for the adjustment C / sqrt(n_g)")
            adj = (self.adjust / counts.sqrt()).float()
        self.register_buffer("adjustment", adj)
        self._epoch = {"sum": torch.zeros(self.n_groups, dtype=torch.float64),
                       "count": torch.zeros(self.n_groups, dtype=torch.float64)}

    def group_losses(self, logits: torch.Tensor, y: torch.Tensor, group: torch.Tensor):
        """Mean cross-entropy per group (n_groups,) and which groups have rows (bool)."""
        if logits.shape[0] == 0:
            raise InputError("GroupDRO got an empty batch")
        group = check_ids(group, len(logits), n=self.n_groups, name="group", device=logits.device)
        ce = F.cross_entropy(logits, y, reduction="none")
        counts = torch.bincount(group, minlength=self.n_groups)
        sums = torch.zeros(self.n_groups, dtype=ce.dtype, device=ce.device).index_add(0, group, ce)
        return sums / counts.clamp(min=1).to(ce.dtype), counts > 0

    def forward(self, logits, y, group, index=None, representation=None):
        if self.by == "group_class":
            group = torch.as_tensor(group, device=logits.device).long() * self.n_classes + y
        losses, present = self.group_losses(logits, y, group)
        adjusted = losses + self.adjustment.to(losses.dtype)
        if self.training:
            with torch.no_grad():
                step = self.step_size * adjusted.detach().to(self.q.dtype) * present.to(self.q.dtype)
                # in log space, so a large step never overflows exp
                logq = torch.log(self.q.clamp(min=torch.finfo(self.q.dtype).tiny)) + step
                self.q.copy_(torch.softmax(logq, dim=0))
                self._epoch["sum"] += (losses.detach().double() * present).cpu()
                self._epoch["count"] += present.double().cpu()
        q = self.q.to(losses.dtype)
        return (q * adjusted * present.to(losses.dtype)).sum()

    def epoch_logs(self) -> dict:
        count = self._epoch["count"]
        mean = (self._epoch["sum"] / count.clamp(min=1)).tolist()
        logs = {"group_weights": self.q.detach().cpu().tolist(),
                "group_losses": [m if c > 0 else None for m, c in zip(mean, count.tolist())]}
        self._epoch = {"sum": torch.zeros(self.n_groups, dtype=torch.float64),
                       "count": torch.zeros(self.n_groups, dtype=torch.float64)}
        return logs

    def extra_repr(self) -> str:
        return f"n_groups={self.n_groups}, by={self.by!r}, step_size={self.step_size}, adjust={self.adjust}"
