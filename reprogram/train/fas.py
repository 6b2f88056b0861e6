"""Fair Adaptive Scaling (FAS): per-sample loss weights from sample difficulty and group.

Two variants behind one class, :class:`FASLoss`.

``variant="seed"`` (default), the formulation of the project's seed. With ``ℓ_i`` the
cross-entropy of row i, ``e_i`` its per-sample exponential moving average over training
(kept in a buffer indexed by the row's dataset position), ``g(i)`` its group and ``β`` a
learnable per-group scale (an ``nn.Embedding(n_groups, 1)`` initialised to 1)::

    e_i   <- α · e_i + (1 − α) · ℓ_i            (α = ema_alpha; e_i = ℓ_i on first sight)
    z_i    = (e_i − mean_B e) / (std_B e + 1e-6)   (z-score over the batch, population std)
    ind_i  = 0.5 + sigmoid(z_i)                 (individual scale, in (0.5, 1.5))
    s_i    = c · ind_i + (1 − c) · β_g(i)
    w_i    = clip(s_i / mean_B s, w_min, w_max)
    loss   = mean_B(w_i · ℓ_i)

``variant="softmax"``, the official code of Shi et al. (TVST 2025, repository
Harvard-Ophthalmology-AI-Lab/FairAdaptiveScaling, ``Fair_Loss_Scaler``), with T the
temperature and β initialised to 1::

    w_i   = N · softmax_B(((1 − c) · ℓ_i + c · β_g(i)) / T)     (so Σ_i w_i = N)
    loss  = mean_B(w_i · ℓ_i)

``enable_fas=False`` gives plain cross-entropy (the seed variant still tracks its EMA).

Gradients and the direction of β
--------------------------------
*seed*: the weights are a function of β and of the EMA buffer only; the buffer is
updated from the detached loss, so the model's gradient is exactly the weighted
cross-entropy gradient ``mean_B(w_i ∇ℓ_i)`` (the weights act as constants for the
model). The β path keeps its gradient: with the batch-mean normalisation,
``∂loss/∂β_g = (1 − c)/(N·m) · (Σ_{i∈g} ℓ_i − (n_g/N) Σ_i w_i ℓ_i)`` (m = mean_B s, rows
not clipped): positive when group g's mean loss is above the (weighted) batch loss. Plain
descent would therefore *lower* the scale of an underperforming group; β is instead
updated by gradient **ascent** — a hook negates its gradient, so the Trainer's one
optimizer raises the scale of the group whose loss is high. After each step β is
projected onto β >= 0 (a scale is not negative, and it keeps the batch mean of s > 0).

*softmax*: faithful to the official code, nothing is detached: the weights depend on
ℓ_i, so the model gradient is ``Σ_j p_j (1 + (1 − c)/T · (ℓ_j − loss)) ∇ℓ_j``
(p = softmax_B(...)) — hard samples are emphasised beyond their weight — and β is
minimised like any parameter. ``∂loss/∂β_g = (c/T) Σ_{j∈g} p_j (ℓ_j − loss)`` is positive
for a high-loss group, so plain minimisation drives that group's β *down*: the opposite
of the seed variant's intent. The variant reproduces the published code as it is.
``beta_ascent=True`` (not in the published code; off by default for this variant) flips
it like the seed variant: β then rises for a group whose loss is above the weighted
batch loss and stops where the group's loss meets it (a Group-DRO-like equilibrium), so
the softmax weights favour the underperforming group. No projection: β enters the
softmax additively and may be negative.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprogram.errors import InputError
from reprogram.train.objective import Objective, check_ids

__all__ = ["FASLoss"]

_VARIANTS = ("seed", "softmax")


class FASLoss(Objective):
    """Fair Adaptive Scaling loss; the formulas of both variants are in the module docstring.

    Parameters
    ----------
    n_samples: rows in the training set (size of the per-sample EMA buffer, seed variant).
    n_groups: number of groups (rows of the learnable group scale β).
    variant: ``"seed"`` (default) or ``"softmax"`` (official ``Fair_Loss_Scaler``).
    ema_alpha: weight of the old value in the loss EMA (seed).
    c: mixing coefficient (seed: weight of the individual scale; softmax: weight of β).
    w_min, w_max: clipping range of the normalised weights (seed).
    temperature: softmax temperature T (softmax).
    enable_fas: False gives plain mean cross-entropy.
    beta_lr: learning rate of β (default: the Trainer's rate).
    beta_ascent: update β by gradient ascent (default: True for ``"seed"``, False for
        ``"softmax"``, as the official code minimises it).
    by: ``"group"`` (default) or ``"group_class"``: β is then one scale per (group, true
        class) cell, cell id ``group * n_classes + y``, as GroupDRO's ``by`` does, so a
        group's positives and negatives are scaled apart (an equalized-odds view).
    n_classes: number of classes, needed with ``by="group_class"``.

    ``last_weights`` holds the (detached) weights of the latest batch.
    """

    state_attributes = ("last_weights",)

    def __init__(self, n_samples: int, n_groups: int, *, variant: str = "seed", ema_alpha: float = 0.9,
                 c: float = 0.5, w_min: float = 0.1, w_max: float = 10.0, temperature: float = 1.0,
                 enable_fas: bool = True, beta_lr: float | None = None, by: str = "group",
                 n_classes: int | None = None, beta_ascent: bool | None = None):
        super().__init__()
        if by not in ("group", "group_class"):
            raise InputError(f"by must be 'group' or 'group_class', got {by!r}")
        if by == "group_class" and not (n_classes and int(n_classes) >= 2):
            raise InputError("FASLoss(by='group_class') needs n_classes >= 2")
        self.by, self.n_classes = by, int(n_classes) if by == "group_class" else None
        if variant not in _VARIANTS:
            raise InputError(f"unknown FAS variant {variant!r}; use 'seed' or 'softmax'")
        if int(n_samples) < 1 or int(n_groups) < 1:
            raise InputError(f"n_samples and n_groups must be >= 1, got {n_samples} and {n_groups}")
        if not 0.0 <= ema_alpha < 1.0:
            raise InputError(f"ema_alpha must be in [0, 1), got {ema_alpha}")
        if not 0.0 <= c <= 1.0:
            raise InputError(f"c must be in [0, 1], got {c}")
        if not 0.0 <= w_min <= w_max:
            raise InputError(f"need 0 <= w_min <= w_max, got w_min={w_min}, w_max={w_max}")
        if temperature <= 0:
            raise InputError(f"temperature must be > 0, got {temperature}")
        if beta_lr is not None and beta_lr <= 0:
            raise InputError(f"beta_lr must be > 0, got {beta_lr}")
        self.n_samples = int(n_samples)
        self.n_groups = int(n_groups) * (self.n_classes if by == "group_class" else 1)
        self.variant, self.ema_alpha, self.c = variant, float(ema_alpha), float(c)
        self.w_min, self.w_max, self.temperature = float(w_min), float(w_max), float(temperature)
        self.enable_fas, self.beta_lr = bool(enable_fas), beta_lr
        self.group_scale = nn.Embedding(self.n_groups, 1)
        nn.init.constant_(self.group_scale.weight, 1.0)
        self._ascent = None
        if variant == "seed":
            self.register_buffer("ema", torch.zeros(self.n_samples))
            self.register_buffer("seen", torch.zeros(self.n_samples, dtype=torch.bool))
        self.beta_ascent = (variant == "seed") if beta_ascent is None else bool(beta_ascent)
        if self.beta_ascent:
            # gradient ascent on β: the optimizer steps against the negated gradient
            self._ascent = self.group_scale.weight.register_hook(torch.neg)
        self.last_weights: torch.Tensor | None = None
        self._epoch = {"max_weight": 0.0, "n": 0}

    @property
    def beta(self) -> torch.Tensor:
        """The per-group scales β, shape (n_groups,)."""
        return self.group_scale.weight[:, 0]

    def param_groups(self, lr: float) -> list[dict]:
        return [{"params": [self.group_scale.weight], "lr": self.beta_lr or lr}]

    # -- the two variants ------------------------------------------------------

    def _seed_weights(self, ce: torch.Tensor, group: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        loss = ce.detach().to(self.ema.dtype)
        if self.training:
            with torch.no_grad():
                old = torch.where(self.seen[index], self.ema[index], loss)
                self.ema[index] = self.ema_alpha * old + (1.0 - self.ema_alpha) * loss
                self.seen[index] = True
            e = self.ema[index]
        else:  # evaluation: read the EMA, never write it
            e = torch.where(self.seen[index], self.ema[index], loss)
        e = e.to(ce.dtype)
        z = (e - e.mean()) / (e.std(unbiased=False) + 1e-6) if len(e) > 1 else torch.zeros_like(e)
        individual = 0.5 + torch.sigmoid(z)
        beta = self.group_scale(group)[:, 0].to(ce.dtype)
        s = self.c * individual + (1.0 - self.c) * beta
        return (s / s.mean().clamp(min=1e-12)).clamp(self.w_min, self.w_max)

    def _softmax_weights(self, ce: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        beta = self.group_scale(group)[:, 0].to(ce.dtype)
        score = ((1.0 - self.c) * ce + self.c * beta) / self.temperature
        return torch.softmax(score, dim=0) * ce.shape[0]

    def forward(self, logits, y, group, index=None, representation=None):
        n = logits.shape[0]
        if n == 0:
            raise InputError("FASLoss got an empty batch")
        if self.by == "group_class":
            n_base = self.n_groups // self.n_classes
            group = check_ids(group, n, n=n_base, name="group", device=logits.device) * self.n_classes + y
        group = check_ids(group, n, n=self.n_groups, name="group", device=logits.device)
        ce = F.cross_entropy(logits, y, reduction="none")
        if self.variant == "seed":
            if index is None:
                if self.enable_fas:
                    raise InputError("FASLoss(variant='seed') needs index= (the rows' dataset positions) "
                                     "for its per-sample loss EMA")
            else:
                index = check_ids(index, n, n=self.n_samples, name="index")
        if not self.enable_fas:
            if self.variant == "seed" and index is not None and self.training:
                self._seed_weights(ce, group, index)  # keep the EMA current
            self.last_weights = torch.ones_like(ce.detach())
            return ce.mean()
        if self.variant == "seed":
            w = self._seed_weights(ce, group, index)
        else:
            w = self._softmax_weights(ce, group)
        self.last_weights = w.detach()
        self._epoch["max_weight"] = max(self._epoch["max_weight"], float(w.detach().max()))
        self._epoch["n"] += 1
        return (w * ce).mean()

    def after_step(self) -> None:
        if self.variant == "seed":
            with torch.no_grad():
                self.group_scale.weight.clamp_(min=0.0)

    def epoch_logs(self) -> dict:
        logs = {"group_scales": self.beta.detach().cpu().tolist()}
        if self._epoch["n"]:
            logs["max_weight"] = self._epoch["max_weight"]
        self._epoch = {"max_weight": 0.0, "n": 0}
        return logs

    def extra_repr(self) -> str:
        return (f"variant={self.variant!r}, n_samples={self.n_samples}, n_groups={self.n_groups}, c={self.c}, "
                f"enable_fas={self.enable_fas}, by={self.by!r}")
