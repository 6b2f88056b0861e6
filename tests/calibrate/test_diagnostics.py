"""Calibration diagnostics: tables agree with fairness_report and scikit-learn, plots are
real PNGs, and bad input gets one clear error."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from rich.console import Console
from rich.table import Table
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score

from reprogram.calibrate.diagnostics import (
    calibration_rich_table,
    calibration_summary,
    calibration_table,
    compare_calibration,
    reliability_diagram,
)
from reprogram.errors import InputError, LengthMismatchError, MissingValuesError
from reprogram.metrics import fairness_report


def _binary(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    s = rng.random(n)
    sex = rng.choice(["F", "M"], n)
    race = rng.choice(["A", "B", "C"], n)
    true_p = np.where(sex == "F", s, np.clip(s + 0.25, 0, 1))  # group M is under-confident
    y = (rng.random(n) < true_p).astype(int)
    return y, s, sex, race


def _multiclass(n=2000, k=3, seed=1):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(k), n)
    y = np.array([rng.choice(k, p=row) for row in p])
    g = rng.choice(["u", "v"], n)
    return y, p, g


def test_table_matches_fairness_report_and_sklearn():
    y, s, sex, race = _binary()
    sens = {"sex": sex, "race": race}
    df = calibration_table(y, s, sens, n_bins=15)
    rep = fairness_report(y, y_score=s, sensitive=sens, n_bins=15)
    assert list(df.index) == [*rep.groups, "overall"]
    assert list(df.columns) == [
        "n", "positive_rate", "accuracy", "mean_score", "ece", "ece_equal_mass", "brier", "log_loss"
    ]
    groups = df.index[:-1]
    np.testing.assert_allclose(df.loc[groups, "ece"], rep.by_group["ece"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(df.loc[groups, "ece_equal_mass"], rep.by_group["ece_equal_mass"], atol=1e-12)
    np.testing.assert_allclose(df.loc[groups, "accuracy"], rep.by_group["accuracy"], atol=1e-12)
    assert df.loc["overall", "ece"] == pytest.approx(rep.overall["ece"], abs=1e-12)
    key = np.array([f"sex={a}|race={b}" for a, b in zip(sex, race)])
    for name in groups:
        m = key == name
        assert df.loc[name, "n"] == m.sum()
        assert df.loc[name, "positive_rate"] == pytest.approx(y[m].mean())
        assert df.loc[name, "mean_score"] == pytest.approx(s[m].mean())
        assert df.loc[name, "brier"] == pytest.approx(brier_score_loss(y[m], s[m]), abs=1e-12)
        assert df.loc[name, "log_loss"] == pytest.approx(log_loss(y[m], s[m], labels=[0, 1]), abs=1e-9)
    assert df.loc["overall", "n"] == len(y)
    assert df.loc["overall", "brier"] == pytest.approx(brier_score_loss(y, s), abs=1e-12)
    assert df.attrs["task"] == "binary" and df.attrs["sensitive_columns"] == ["sex", "race"]


def test_string_labels_pos_label_and_two_column_scores():
    y, s, sex, _ = _binary(seed=3)
    labels = np.where(y == 1, "yes", "no")
    a = calibration_table(y, s, sex)
    b = calibration_table(labels, np.column_stack([1 - s, s]), sex)
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-12)
    # positive class "no": the score is then P(no) = 1 - s
    c = calibration_table(labels, 1 - s, sex, pos_label="no")
    np.testing.assert_allclose(c["brier"], a["brier"], atol=1e-12)
    np.testing.assert_allclose(c["positive_rate"], 1 - a["positive_rate"], atol=1e-12)


def test_multiclass_table_top_label_and_brier():
    y, p, g = _multiclass()
    df = calibration_table(y, p, g, n_bins=10)
    rep = fairness_report(y, y_score=p, sensitive=g, n_bins=10)
    np.testing.assert_allclose(df.loc[["u", "v"], "ece"], rep.by_group["ece"], atol=1e-12)
    assert df["positive_rate"].isna().all()
    onehot = np.eye(3)[y]
    for name in ("u", "v"):
        m = g == name
        brier = ((p[m] - onehot[m]) ** 2).sum(axis=1).mean()
        assert df.loc[name, "brier"] == pytest.approx(brier, abs=1e-12)
        assert df.loc[name, "log_loss"] == pytest.approx(log_loss(y[m], p[m], labels=[0, 1, 2]), abs=1e-9)
        assert df.loc[name, "mean_score"] == pytest.approx(p[m].max(axis=1).mean())
    try:  # multi-class Brier in scikit-learn >= 1.7 (sum over classes, as here)
        expected = brier_score_loss(y, p, labels=[0, 1, 2])
    except ValueError:
        pytest.skip("this scikit-learn has no multi-class Brier score")
    assert df.loc["overall", "brier"] == pytest.approx(expected, abs=1e-12)


def test_calibrated_group_has_small_ece_shifted_group_does_not():
    rng = np.random.default_rng(7)
    n = 40_000
    s = rng.random(n)
    g = np.repeat(["calibrated", "shifted"], n // 2)
    true_p = np.where(g == "calibrated", s, np.clip(s + 0.15, 0, 1))
    y = (rng.random(n) < true_p).astype(int)
    df = calibration_table(y, s, g)
    assert df.loc["calibrated", "ece"] < 0.02
    assert df.loc["calibrated", "ece_equal_mass"] < 0.02
    assert df.loc["shifted", "ece"] > 0.1
    summ = calibration_summary(y, s, g)
    assert summ["max_group_ece"] == pytest.approx(df.loc["shifted", "ece"])
    assert summ["worst_ece_group"] == "shifted"


def test_summary_matches_report_and_sklearn():
    y, s, sex, race = _binary(seed=5)
    sens = pd.DataFrame({"sex": sex, "race": race})
    summ = calibration_summary(y, s, sens)
    rep = fairness_report(y, y_score=s, sensitive=sens)
    df = calibration_table(y, s, sens)
    assert summ["max_group_ece"] == pytest.approx(rep.overall["max_group_ece"], abs=1e-12)
    assert summ["calibration_disparity"] == pytest.approx(rep.overall["calibration_disparity"], abs=1e-12)
    assert summ["max_group_ece_equal_mass"] == pytest.approx(df["ece_equal_mass"].iloc[:-1].max())
    assert summ["brier"] == pytest.approx(brier_score_loss(y, s))
    assert summ["max_group_brier"] == pytest.approx(df["brier"].iloc[:-1].max())
    assert summ["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert summ["accuracy"] == pytest.approx(((s >= 0.5) == y).mean())
    ym, p, g = _multiclass()
    ms = calibration_summary(ym, p, g)
    assert ms["task"] == "multiclass" and np.isnan(ms["roc_auc"])
    assert ms["accuracy"] == pytest.approx((p.argmax(1) == ym).mean())


def test_one_group_or_no_sensitive():
    y, s, _, _ = _binary(n=500)
    df = calibration_table(y, s)  # everyone in one group "all"
    assert list(df.index) == ["all", "overall"]
    assert df.loc["all", "ece"] == pytest.approx(df.loc["overall", "ece"])
    summ = calibration_summary(y, s, np.zeros(len(y)))
    assert summ["calibration_disparity"] == 0.0


def test_compare_calibration_columns_and_rich_table():
    y, s, sex, _ = _binary(seed=2)
    after = np.clip(s + np.where(sex == "M", 0.2, 0.0), 0, 1)  # closer to the truth for M
    df = compare_calibration(y, s, after, sex)
    assert list(df.index) == ["F", "M", "overall"]
    for f in ("accuracy", "mean_score", "ece", "ece_equal_mass", "brier", "log_loss"):
        assert f"{f}_before" in df.columns and f"{f}_after" in df.columns
    assert {"n", "positive_rate"} <= set(df.columns)
    before_t, after_t = calibration_table(y, s, sex), calibration_table(y, after, sex)
    np.testing.assert_allclose(df["ece_before"], before_t["ece"])
    np.testing.assert_allclose(df["brier_after"], after_t["brier"])
    assert df.loc["M", "ece_after"] < df.loc["M", "ece_before"]
    np.testing.assert_allclose(df.loc["F", "ece_after"], df.loc["F", "ece_before"])
    assert df.attrs["summary_after"]["max_group_ece"] == pytest.approx(after_t["ece"].iloc[:-1].max())

    table = calibration_rich_table(df, title="before/after")
    assert isinstance(table, Table) and table.title == "before/after"
    assert [c.header for c in table.columns] == ["group", "n", "ECE", "ECE (mass)", "Brier"]
    assert table.row_count == 3
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "→" in text and "overall" in text

    plain = calibration_rich_table(before_t)
    assert plain.row_count == 3 and "log loss" in [c.header for c in plain.columns]
    with pytest.raises(InputError, match="no column"):
        calibration_rich_table(before_t, columns=["nope"])


def test_rich_table_marks_small_groups_and_drops_undefined_columns():
    y, p, g = _multiclass(n=300)
    g = g.astype(object)
    g[:5] = "tiny"
    df = calibration_table(y, p, g)
    t = calibration_rich_table(df, min_group_size=30)
    assert "pos. rate" not in [c.header for c in t.columns]  # all NaN for multi-class
    assert "tiny" in str(t.caption)


def test_reliability_diagram_png(tmp_path):
    y, s, sex, race = _binary(n=2000)
    path = tmp_path / "plots" / "reliability.png"
    fig = reliability_diagram(y, s, {"sex": sex, "race": race}, n_bins=10, path=path, title="demo")
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    assert path.stat().st_size > 0
    assert not [p for p in path.parent.iterdir() if p.name != "reliability.png"]  # no temp file left
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 6  # 2 sexes x 3 races
    assert all("n=" in t and "ECE=" in t for t in legend)
    assert len(ax.get_lines()) == 6 + 1  # one curve per group and the diagonal
    assert len(fig.axes) == 2  # reliability and counts


def test_reliability_diagram_before_after_and_multiclass(tmp_path):
    y, s, sex, _ = _binary(n=2000, seed=4)
    fig = reliability_diagram(y, s, sex, scores_after=np.clip(s + 0.1, 0, 1), strategy="quantile",
                              log_counts=True, path=tmp_path / "ba.png")
    assert len(fig.axes) == 4
    titles = [ax.get_title() for ax in fig.axes]
    assert "before" in titles and "after" in titles
    for ax in fig.axes:
        if ax.get_legend() is not None:
            assert len(ax.get_legend().get_texts()) == 2
            assert all("ECE (mass)=" in t.get_text() for t in ax.get_legend().get_texts())
    with Image.open(tmp_path / "ba.png") as im:
        assert im.format == "PNG" and im.size[0] > im.size[1]  # two panels side by side

    ym, p, _ = _multiclass(n=800)
    fig = reliability_diagram(ym, p)  # no groups, no file
    assert len(fig.axes[0].get_lines()) == 2
    assert "top" in fig.axes[1].get_xlabel()


@pytest.mark.parametrize(
    "scores, error, match",
    [
        (np.full(10, 1.5), InputError, r"\[0, 1\].*logits"),
        (np.r_[np.full(8, 0.5), np.nan, np.nan], MissingValuesError, "2 row"),
        (np.full(9, 0.5), LengthMismatchError, "10 rows.*9"),
        (np.tile([0.5, 0.3, 0.1], (10, 1)), InputError, "do not sum to 1"),
        (np.array(["a"] * 10), InputError, "numeric"),
    ],
)
def test_bad_scores(scores, error, match):
    y = np.array([0, 1] * 5)
    g = np.array(["a", "b"] * 5)
    with pytest.raises(error, match=match) as info:
        calibration_table(y, scores, g)
    assert "\n" not in str(info.value)


def test_bad_inputs_other():
    y = np.array([0, 1] * 5)
    s = np.full(10, 0.5)
    g = np.array(["a", "b"] * 5)
    # rows summing to 1 within the tolerance pass
    p = np.tile([0.5, 0.3, 0.2 + 5e-4], (10, 1))
    calibration_table(np.arange(10) % 3, p, g)
    with pytest.raises(LengthMismatchError):
        calibration_table(y, s, g[:8])
    with pytest.raises(MissingValuesError, match="1 missing"):
        calibration_table(np.r_[y[:9].astype(float), np.nan], s, g)
    with pytest.raises(MissingValuesError):
        calibration_table(y, s, np.r_[g[:9], None].astype(object))
    with pytest.raises(InputError, match="n_bins"):
        calibration_table(y, s, g, n_bins=0)
    with pytest.raises(InputError, match="strategy"):
        reliability_diagram(y, s, g, strategy="median")
    with pytest.raises(InputError, match="after"):
        compare_calibration(y, s, np.full(10, 2.0), g)
    with pytest.raises(InputError, match="same shape"):
        compare_calibration(y, s, np.column_stack([1 - s, s]), g)
