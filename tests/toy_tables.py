"""The small synthetic table many tests train on: a credit-like label that leans on the group.

Group "b" (share 0.4) has its feature ``x1`` shifted by ``shift``; the label is a logistic
draw on ``1.5 x1 + 0.5 x2 + bias``, so a model of the features inherits a group gap.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def group_leaning_table(n: int, seed: int, *, shift: float = 1.0, bias: float = -0.5):
    """Columns x1, x2, group ("a"/"b"), y (0/1); and the generator, for columns a caller adds."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n, p=[0.6, 0.4])
    x1 = rng.normal(size=n) + shift * (group == "b")
    x2 = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * x1 + 0.5 * x2 + bias)))).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "group": group, "y": y}), rng
