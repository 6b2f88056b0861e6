import numpy as np
import pandas as pd
import pytest

from reprogram.data import load_dataset


def biased_table(n=1200, seed=0):
    """Synthetic credit-like table where the label leans on the group."""
    rng = np.random.default_rng(seed)
    group = rng.choice(["a", "b"], n, p=[0.6, 0.4])
    g = (group == "b").astype(float)
    x1 = rng.normal(size=n) + 1.2 * g
    x2 = rng.normal(size=n)
    logit = 1.5 * x1 + 0.5 * x2 - 0.6
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"x1": x1, "x2": x2, "kind": rng.choice(["p", "q", "r"], n), "group": group, "y": y})


@pytest.fixture(scope="session")
def biased_splits():
    df = biased_table()
    train = load_dataset(df.iloc[:800], label="y", sensitive="group")
    kw = dict(label="y", sensitive="group", feature_encoder=train.feature_encoder, label_classes=train.label_encoder,
              group_encoder=train.groups)
    val = load_dataset(df.iloc[800:1000].reset_index(drop=True), **kw)
    test = load_dataset(df.iloc[1000:].reset_index(drop=True), **kw)
    return train, val, test
