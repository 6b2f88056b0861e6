"""What one training step minimises: the protocol every torch method plugs into the Trainer.

The shared :class:`~reprogram.train.trainer.Trainer` owns the loop (batches, device,
optimizer, schedule, early stopping, history). A method is an :class:`Objective`: an
``nn.Module`` that turns one batch's model outputs into a scalar loss. Objectives with
learnable state (FAS group scales, an adversary, Lagrange multipliers) expose it through
:meth:`Objective.param_groups`, so the Trainer's one optimizer updates it too; an
objective that needs gradient *ascent* on some parameter registers a hook that negates
that parameter's gradient (``p.register_hook(torch.neg)``), so no second loop is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprogram.errors import InputError

__all__ = ["Objective", "CrossEntropy", "per_sample_ce", "check_ids", "plain_settings"]


def check_ids(ids, rows: int, *, n: int | None = None, name: str = "group", device=None) -> torch.Tensor:
    """``ids`` (group ids, dataset positions...) as a 1-D long tensor of ``rows`` entries in
    ``[0, n)`` (``[0, ∞)`` without ``n``), or a one-line InputError saying what is wrong."""
    ids = torch.as_tensor(ids, device=device)
    if ids.dim() != 1 or ids.shape[0] != rows:
        raise InputError(f"{name} must be a 1-D tensor with one id per row ({rows}), got shape {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise InputError(f"{name} must hold integer ids, got dtype {ids.dtype}")
    if rows:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or (n is not None and hi >= n):
            bound = f"[0, {n})" if n is not None else ">= 0"
            raise InputError(f"{name} must lie in {bound}, got values in [{lo}, {hi}]")
    return ids.long()


def per_sample_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row (no reduction)."""
    return F.cross_entropy(logits, y, reduction="none")


class Objective(nn.Module):
    """Base class of training objectives.

    ``forward(logits, y, group, index=None, representation=None)`` returns a scalar
    loss. ``index`` holds the rows' positions in the training set (for per-sample state
    such as FAS's loss EMA); ``representation`` is the model's penultimate activation
    and is passed only when ``needs_representation`` is True (adversarial debiasing).
    """

    needs_representation: bool = False
    #: public attributes that are running state, not settings (left out of :meth:`config`)
    state_attributes: tuple[str, ...] = ()

    def forward(
        self,
        logits: torch.Tensor,
        y: torch.Tensor,
        group: torch.Tensor,
        index: torch.Tensor | None = None,
        representation: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} must define forward()")

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups for the objective's own learnable parameters."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": lr}] if params else []

    def set_progress(self, fraction: float) -> None:
        """Told the fraction of training done before each step (for schedules such as
        the reversal strength of adversarial debiasing)."""

    def after_step(self) -> None:
        """Called after each optimizer step (e.g. to project multipliers back to >= 0)."""

    def epoch_logs(self) -> dict[str, float]:
        """Figures to keep in the Trainer's per-epoch history (multipliers, weights...)."""
        return {}

    def config(self) -> dict:
        """The objective's hyperparameters, for the Trainer to refuse resuming a checkpoint
        made with other ones: its public plain attributes (numbers, strings, flags and lists
        of them), and the config of any objective it wraps. Learnable state and buffers
        are in the state dict instead; a subclass whose fixed setting lives in a buffer adds
        it (see :class:`~reprogram.train.reweighting.WeightedCrossEntropy`)."""
        return {"class": type(self).__name__, **plain_settings(self, skip=("training", *self.state_attributes))}


def plain_settings(obj, *, skip=()) -> dict:
    """``obj``'s public attributes that are plain settings (None, bool, int, float, str, or
    lists/tuples of them), and the :meth:`Objective.config` of attributes that are objectives."""
    def plain(v):
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        return v is None or isinstance(v, (bool, int, float, str))

    out = {}
    for k, v in vars(obj).items():
        if k.startswith("_") or k in skip:
            continue
        if isinstance(v, Objective):
            out[k] = v.config()
        elif plain(v):
            out[k] = list(v) if isinstance(v, tuple) else v
    return out


class CrossEntropy(Objective):
    """Plain (optionally class-weighted) cross-entropy: empirical risk minimisation."""

    def __init__(self, class_weight: torch.Tensor | None = None):
        super().__init__()
        self.register_buffer("class_weight", None if class_weight is None else torch.as_tensor(class_weight).float())

    def forward(self, logits, y, group, index=None, representation=None):
        return F.cross_entropy(logits, y, weight=self.class_weight)
