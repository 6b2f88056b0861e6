import pytest

from reprogram.data import load_dataset
from toy_tables import group_leaning_table


def biased_table(n=1200, seed=0):
    """Synthetic credit-like table where the label leans on the group."""
    df, rng = group_leaning_table(n, seed, shift=1.2, bias=-0.6)
    df.insert(2, "kind", rng.choice(["p", "q", "r"], n))
    return df


@pytest.fixture(scope="session")
def biased_splits():
    df = biased_table()
    train = load_dataset(df.iloc[:800], label="y", sensitive="group")
    kw = dict(label="y", sensitive="group", feature_encoder=train.feature_encoder, label_classes=train.label_encoder,
              group_encoder=train.groups)
    val = load_dataset(df.iloc[800:1000].reset_index(drop=True), **kw)
    test = load_dataset(df.iloc[1000:].reset_index(drop=True), **kw)
    return train, val, test
