"""Stratified splits and the train/validation loader."""

import numpy as np
import pandas as pd
import pytest

from reprogram.data import load_train_val, split_frame
from reprogram.errors import InputError


def _frame(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n), "g": rng.choice(["a", "b", "c"], n, p=[0.7, 0.25, 0.05]),
                         "y": rng.integers(0, 2, n)})


def test_fractions_and_strata_are_kept_and_rows_partitioned():
    df = _frame()
    parts = split_frame(df, (0.4, 0.3, 0.3), stratify=["y", "g"], seed=1)
    assert [len(p) for p in parts] == [400, 300, 300]
    assert sorted(np.concatenate([p["x"].to_numpy() for p in parts])) == sorted(df["x"])
    cell = df.groupby(["y", "g"]).size() / len(df)
    for p in parts:  # every (label, group) cell keeps its share to within a row or two
        share = p.groupby(["y", "g"]).size() / len(p)
        assert (share - cell).abs().max() < 0.01
        assert list(p.index) == list(range(len(p)))
    again = split_frame(df, (0.4, 0.3, 0.3), stratify=["y", "g"], seed=1)
    assert all(a.equals(b) for a, b in zip(parts, again))
    other = split_frame(df, (0.4, 0.3, 0.3), stratify=["y", "g"], seed=2)
    assert not parts[0].equals(other[0])


def test_tiny_strata_are_pooled_not_refused():
    df = _frame(200)
    df.loc[0, "g"] = "lonely"  # one row: scikit-learn alone would refuse to stratify
    parts = split_frame(df, (0.5, 0.5), stratify=["g"], seed=0)
    assert sum(len(p) for p in parts) == 200


@pytest.mark.parametrize("fractions", [(0.5,), (0.5, 0.6), (0.0, 1.0), (-0.2, 1.2)])
def test_bad_fractions_raise(fractions):
    with pytest.raises(InputError, match="fractions"):
        split_frame(_frame(), fractions)


def test_load_train_val_reuses_the_training_encodings(tmp_path):
    df = _frame()
    df["kind"] = np.where(df["x"] > 0, "p", "q")
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    train, val = load_train_val(path, label="y", sensitive="g", val_fraction=0.25, seed=0)
    assert (len(train), len(val)) == (750, 250)
    assert val.feature_encoder is train.feature_encoder and val.groups is train.groups
    assert train.n_features == val.n_features
    # a separate validation table works the same way
    df.iloc[:100].to_csv(tmp_path / "v.csv", index=False)
    train2, val2 = load_train_val(path, label="y", sensitive="g", val=tmp_path / "v.csv")
    assert len(train2) == 1000 and len(val2) == 100 and val2.group_names == train2.group_names
    with pytest.raises(InputError, match="val_fraction"):
        load_train_val(path, label="y", sensitive="g", val_fraction=1.5)
