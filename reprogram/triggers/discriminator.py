"""The adversary: recovers the sensitive group from the frozen model's output.

For demographic parity it reads the class probabilities s = softmax(logits / T); for
equalized odds it also reads the true label, as in the paper's code: [s, s ⊗ onehot(y)]
(the probabilities, and the probabilities placed in the block of the true class), so it
can tell groups apart *within* each class. T is learnable (``learn_temperature``): the
adversary can sharpen saturated probabilities, which the paper found helps it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reprogram.errors import InputError

__all__ = ["Discriminator", "CRITERIA"]

CRITERIA = ("dp", "eo")


class Discriminator(nn.Module):
    """An MLP from the model's logits (and, for "eo", the true label) to group logits.

    Parameters: ``n_classes`` of the task, ``n_groups`` to recover (intersectional groups
    are simply more groups), ``criterion`` "dp" or "eo", ``hidden`` widths,
    ``learn_temperature``.
    """

    def __init__(self, n_classes: int, n_groups: int, *, criterion: str = "dp", hidden=(64, 64),
                 learn_temperature: bool = True):
        super().__init__()
        if criterion not in CRITERIA:
            raise InputError(f"criterion must be 'dp' or 'eo', got {criterion!r}")
        if int(n_classes) < 2 or int(n_groups) < 2:
            raise InputError(f"need >= 2 classes and >= 2 groups, got {n_classes} and {n_groups}")
        self.n_classes, self.n_groups, self.criterion = int(n_classes), int(n_groups), criterion
        width = self.n_classes * (1 + self.n_classes if criterion == "eo" else 1)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, self.n_groups))
        self.net = nn.Sequential(*layers)
        self.log_temperature = nn.Parameter(torch.zeros(()), requires_grad=bool(learn_temperature))

    def features(self, logits: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """What the adversary reads: s, or [s, s ⊗ onehot(y)] for "eo"."""
        if logits.dim() != 2 or logits.shape[1] != self.n_classes:
            raise InputError(f"expected logits of shape (batch, {self.n_classes}), got {tuple(logits.shape)}")
        s = F.softmax(logits / self.log_temperature.exp(), dim=1)
        if self.criterion == "dp":
            return s
        if y is None:
            raise InputError("an equalized-odds discriminator needs the true labels")
        onehot = F.one_hot(y.long(), self.n_classes).to(s.dtype)
        return torch.cat([s, (onehot.unsqueeze(2) * s.unsqueeze(1)).flatten(1)], dim=1)

    def forward(self, logits: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(self.features(logits, y))
