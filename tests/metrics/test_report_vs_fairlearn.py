"""fairness_report against fairlearn on every figure fairlearn also computes (to 1e-9)."""

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    count,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from sklearn.metrics import accuracy_score

from reprogram.metrics import fairness_report

TOL = 1e-9


def _fairlearn_frame(y, p, sensitive):
    return MetricFrame(
        metrics={
            "count": count,
            "accuracy": accuracy_score,
            "selection_rate": selection_rate,
            "tpr": true_positive_rate,
            "fpr": false_positive_rate,
        },
        y_true=y,
        y_pred=p,
        sensitive_features=sensitive,
    )


def _check_against_fairlearn(y, p, sensitive, expected_names):
    report = fairness_report(y, p, sensitive=sensitive, min_group_size=0)
    frame = _fairlearn_frame(y, p, sensitive).by_group
    assert report.groups == expected_names
    assert len(frame) == len(report.groups)
    for name, fl_row in zip(report.groups, frame.itertuples(index=False)):
        ours = report.by_group.loc[name]
        assert ours["count"] == fl_row.count
        for metric in ("accuracy", "selection_rate", "tpr", "fpr"):
            assert abs(ours[metric] - getattr(fl_row, metric)) < TOL, (name, metric)
    kw = {"sensitive_features": sensitive}
    ov = report.overall
    assert abs(ov["demographic_parity_difference"] - demographic_parity_difference(y, p, **kw)) < TOL
    assert abs(ov["demographic_parity_ratio"] - demographic_parity_ratio(y, p, **kw)) < TOL
    assert abs(ov["equalized_odds_difference"] - equalized_odds_difference(y, p, **kw)) < TOL
    assert abs(ov["equal_opportunity_difference"] - equal_opportunity_difference(y, p, **kw)) < TOL
    assert abs(ov["accuracy"] - accuracy_score(y, p)) < TOL
    return report


@pytest.mark.parametrize("n_groups", [2, 5, 17])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_binary_single_column(n_groups, seed):
    rng = np.random.default_rng(seed)
    n = 5000
    g = rng.integers(0, n_groups, n)
    y = (rng.random(n) < 0.3 + 0.4 * g / n_groups).astype(int)
    p = np.where(rng.random(n) < 0.8, y, 1 - y)
    _check_against_fairlearn(y, p, g, [str(i) for i in range(n_groups)])


def test_random_intersectional_string_labels_and_groups():
    rng = np.random.default_rng(3)
    n = 4000
    sens = pd.DataFrame(
        {"sex": rng.choice(["Female", "Male"], n), "race": rng.choice(["Black", "White", "Asian"], n, p=[0.3, 0.6, 0.1])}
    )
    y = rng.choice(["deny", "grant"], n)
    p = np.where(rng.random(n) < 0.7, y, rng.choice(["deny", "grant"], n))
    names = [f"sex={s}|race={r}" for s in ["Female", "Male"] for r in ["Asian", "Black", "White"]]
    # fairlearn needs a pos_label for strings: compare on the 0/1 coding of "grant"
    report = fairness_report(y, p, sensitive=sens)
    assert report.positive_class == "grant"
    yb, pb = (y == "grant").astype(int), (p == "grant").astype(int)
    ref = _check_against_fairlearn(yb, pb, sens, names)
    pd.testing.assert_frame_equal(report.by_group, ref.by_group)


def test_real_digits_multiclass_one_vs_rest_matches_fairlearn_per_class():
    # real data: scikit-learn's handwritten digits, a real classifier, a real-valued group
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    X, y = load_digits(return_X_y=True)
    ink = np.where(X.sum(axis=1) > np.median(X.sum(axis=1)), "heavy", "light")
    clf = LogisticRegression(max_iter=200).fit(X[::2], y[::2])
    p = clf.predict(X[1::2])
    yt, g = y[1::2], ink[1::2]
    report = fairness_report(yt, p, sensitive=g)
    assert report.task == "multiclass" and report.classes == list(range(10))
    dp, eo, eop = [], [], []
    for c in range(10):
        yc, pc = (yt == c).astype(int), (p == c).astype(int)
        frame = _fairlearn_frame(yc, pc, g).by_group
        for name in report.groups:
            assert abs(report.by_group.loc[name, f"selection_rate[{c}]"] - frame.loc[name, "selection_rate"]) < TOL
            assert abs(report.by_group.loc[name, f"tpr[{c}]"] - frame.loc[name, "tpr"]) < TOL
            assert abs(report.by_group.loc[name, f"fpr[{c}]"] - frame.loc[name, "fpr"]) < TOL
        dp.append(demographic_parity_difference(yc, pc, sensitive_features=g))
        eo.append(equalized_odds_difference(yc, pc, sensitive_features=g))
        eop.append(equal_opportunity_difference(yc, pc, sensitive_features=g))
    assert abs(report.overall["demographic_parity_difference"] - max(dp)) < TOL
    assert abs(report.overall["equalized_odds_difference"] - max(eo)) < TOL
    assert abs(report.overall["equal_opportunity_difference"] - max(eop)) < TOL
    acc = MetricFrame(metrics=accuracy_score, y_true=yt, y_pred=p, sensitive_features=g).by_group
    for name in report.groups:
        assert abs(report.by_group.loc[name, "accuracy"] - acc[name]) < TOL


@pytest.mark.slow
def test_real_adult_against_fairlearn():
    from sklearn.linear_model import LogisticRegression

    from reprogram.data import load_real_dataset

    ds = load_real_dataset("adult")
    frame = ds.frame
    y = frame[ds.label].to_numpy()
    X = pd.get_dummies(frame.drop(columns=[ds.label]), dtype=float).to_numpy()
    X = (X - X.mean(0)) / (X.std(0) + 1e-9)
    half = len(y) // 2
    clf = LogisticRegression(max_iter=300).fit(X[:half], y[:half])
    p = clf.predict(X[half:])
    sens = frame[["sex", "race"]].iloc[half:].reset_index(drop=True)
    yt = y[half:]
    pos = sorted(set(yt))[1]
    yb, pb = (yt == pos).astype(int), (p == pos).astype(int)
    report = fairness_report(yb, pb, sensitive=sens)
    _check_against_fairlearn(yb, pb, sens, report.groups)
    assert report.overall["demographic_parity_difference"] > 0.05  # Adult's sex gap is real


def test_fpr_gap_and_selection_rate_deviation_match_fairlearn():
    from fairlearn.metrics import MetricFrame, false_positive_rate, selection_rate

    rng = np.random.default_rng(5)
    y, p = rng.integers(0, 2, 3000), rng.integers(0, 2, 3000)
    s = rng.choice(["a", "b", "c"], 3000, p=[0.5, 0.3, 0.2])
    ov = fairness_report(y, p, sensitive=s).overall
    fpr = MetricFrame(metrics=false_positive_rate, y_true=y, y_pred=p, sensitive_features=s)
    assert abs(ov["false_positive_rate_difference"] - fpr.difference()) < TOL
    # fairlearn's DemographicParity bounds each group's rate minus the overall rate
    sel = MetricFrame(metrics=selection_rate, y_true=y, y_pred=p, sensitive_features=s)
    assert abs(ov["max_selection_rate_deviation"] - (sel.by_group - sel.overall).abs().max()) < TOL
