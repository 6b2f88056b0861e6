"""The tabular trigger: a learned offset added to the encoded features."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from reprogram.errors import InputError

__all__ = ["FeatureTrigger"]


class FeatureTrigger(nn.Module):
    """``x + (θ · scale) ⊙ mask``: an offset on the encoded feature vector.

    ``scale`` is each feature's spread on the training (tuning) data, so one unit of θ
    moves every feature by about one standard deviation, whatever its units (numeric
    columns standardised by the encoder have spread 1, a one-hot column of share p has
    sqrt(p(1 − p))). ``features`` restricts the offset to some feature indices (e.g. the
    columns a regulator allows to be adjusted); the others pass unchanged.
    Build it from data with :meth:`from_data`.
    """

    kind = "tabular"

    def __init__(self, n_features: int, *, scale: Sequence[float] | torch.Tensor | None = None,
                 features: Sequence[int] | None = None):
        super().__init__()
        if int(n_features) < 1:
            raise InputError(f"n_features must be >= 1, got {n_features}")
        self.n_features = int(n_features)
        s = torch.ones(self.n_features) if scale is None else torch.as_tensor(scale, dtype=torch.float32).flatten()
        if s.shape != (self.n_features,) or not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise InputError(f"scale must be {self.n_features} finite values >= 0")
        mask = torch.ones(self.n_features)
        self.features = None
        if features is not None:
            idx = sorted({int(i) for i in features})
            if not idx or idx[0] < 0 or idx[-1] >= self.n_features:
                raise InputError(f"features must be indices in [0, {self.n_features}), got {list(features)}")
            mask = torch.zeros(self.n_features)
            mask[idx] = 1.0
            self.features = idx
        self.register_buffer("scale", s.view(1, -1))
        self.register_buffer("mask", mask.view(1, -1))
        self.theta = nn.Parameter(torch.zeros(1, self.n_features))

    @classmethod
    def from_data(cls, X: torch.Tensor, *, features: Sequence[int] | None = None) -> FeatureTrigger:
        """A trigger scaled by the standard deviation of each column of ``X`` (rows x features)."""
        X = torch.as_tensor(X, dtype=torch.float32)
        if X.dim() != 2 or X.shape[0] < 2:
            raise InputError(f"need a 2-D feature matrix with >= 2 rows, got shape {tuple(X.shape)}")
        return cls(X.shape[1], scale=X.std(dim=0, unbiased=False), features=features)

    def offset(self) -> torch.Tensor:
        return self.theta * self.scale * self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_tracing() and (x.dim() != 2 or x.shape[1] != self.n_features):
            raise InputError(f"FeatureTrigger expects (batch, {self.n_features}) features, got {tuple(x.shape)}")
        return x + self.offset().to(x.dtype)

    def config(self) -> dict:
        return {"n_features": self.n_features, "features": self.features}
