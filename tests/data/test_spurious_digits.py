"""The built-in spurious-digits example: shapes, tint/label correlation, determinism, the shortcut."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch.utils.data import DataLoader

from reprogram.data import load_dataset, spurious_digits, spurious_digits_table
from reprogram.errors import InputError


@pytest.fixture(scope="module")
def splits():
    return {s: spurious_digits(s) for s in ("train", "val", "test")}


def test_shapes_and_names(splits):
    tr = splits["train"]
    sizes = {s: len(d) for s, d in splits.items()}
    assert sizes == {"train": 1078, "val": 359, "test": 360}  # 60/20/20 of sklearn's 1797 digits
    assert tr.images.shape == (1078, 3, 16, 16) and tr.images.dtype == torch.float32
    assert float(tr.images.min()) >= 0.0 and float(tr.images.max()) <= 1.0
    assert tr.classes == ["0-4", "5-9"] and tr.group_names == ["green", "red"]
    assert tr.labels.dtype == np.int64 and set(np.unique(tr.group_ids)) == {0, 1}
    np.testing.assert_array_equal(tr.labels, tr.digits >= 5)
    x, y, g = tr[0]
    assert x.shape == (3, 16, 16) and y.dtype == torch.int64 and g.dtype == torch.int64
    xb, yb, gb = next(iter(DataLoader(tr, batch_size=8)))
    assert xb.shape == (8, 3, 16, 16) and yb.shape == gb.shape == (8,)
    imgs, ys, gs = tr.tensors
    assert imgs is tr.images and ys.tolist() == tr.labels.tolist()
    # the three splits are disjoint and cover the digits
    assert sum(sizes.values()) == 1797
    assert spurious_digits("train", size=8).images.shape == (1078, 3, 8, 8)


def test_tint_follows_the_label_only_in_train(splits):
    for split, want in (("train", 0.9), ("val", 0.5), ("test", 0.5)):
        d = splits[split]
        agree = d.labels == d.group_ids
        for k in (0, 1):  # per class, not only overall
            assert abs(agree[d.labels == k].mean() - want) < 0.01, split
    strong = spurious_digits("train", train_correlation=1.0)
    np.testing.assert_array_equal(strong.labels, strong.group_ids)


def test_tint_is_the_group(splits):
    d = splits["test"]
    red = d.images[:, 0].sum(dim=(1, 2))
    green = d.images[:, 1].sum(dim=(1, 2))
    np.testing.assert_array_equal((red > green).numpy(), d.group_ids == 1)


def test_deterministic_for_a_seed():
    a, b = spurious_digits("val", seed=3), spurious_digits("val", seed=3)
    assert torch.equal(a.images, b.images)
    np.testing.assert_array_equal(a.group_ids, b.group_ids)
    c = spurious_digits("val", seed=4)
    assert not np.array_equal(a.digits, c.digits) or not np.array_equal(a.group_ids, c.group_ids)


def test_bad_arguments():
    with pytest.raises(InputError, match="split"):
        spurious_digits("dev")
    with pytest.raises(InputError, match="train_correlation"):
        spurious_digits(train_correlation=1.5)


def test_a_linear_model_learns_the_shortcut(splits):
    tr, te = splits["train"], splits["test"]
    clf = LogisticRegression(max_iter=2000).fit(tr.images.flatten(1).numpy(), tr.labels)
    pred = clf.predict(te.images.flatten(1).numpy())
    correct = pred == te.labels
    majority = te.labels == te.group_ids
    acc_major, acc_minor = correct[majority].mean(), correct[~majority].mean()
    assert acc_major > 0.9
    assert acc_minor < acc_major - 0.25, (acc_major, acc_minor)


def test_table_round_trips_through_png_and_csv(tmp_path, splits):
    d = splits["test"]
    csv = spurious_digits_table(tmp_path / "digits", "test")
    assert csv == tmp_path / "digits" / "test.csv"
    frame = pd.read_csv(csv)
    assert list(frame.columns) == ["path", "label", "group"] and len(frame) == len(d)
    assert not [p for p in (tmp_path / "digits").iterdir() if p.name.startswith(".")]  # no temp left behind
    ds = load_dataset(csv, image="path", label="label", sensitive="group", image_meta=d.image_meta)
    assert ds.classes == d.classes and ds.group_names == d.group_names
    np.testing.assert_array_equal(ds.labels, d.labels)
    np.testing.assert_array_equal(ds.group_ids, d.group_ids)
    for i in (0, 17, len(d) - 1):
        assert torch.equal(ds[i][0], d.images[i])
    # writing again replaces the split
    again = spurious_digits_table(tmp_path / "digits", "test")
    assert len(list((tmp_path / "digits" / "test").iterdir())) == len(d) and again == csv
