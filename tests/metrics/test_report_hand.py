"""fairness_report figures that fairlearn does not compute, checked by hand."""

import json

import numpy as np
import pytest

from reprogram.errors import (
    GroupError,
    InputError,
    LengthMismatchError,
    MissingValuesError,
    ReprogramError,
)
from reprogram.metrics import expected_calibration_error, fairness_report
from reprogram.metrics.counts import count_groups


def test_binary_hand_case():
    # group a: 4 rows, 3 right; group b: 4 rows, 2 right
    y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
    p = np.array([1, 0, 0, 0, 1, 1, 1, 1])
    g = np.array(["a"] * 4 + ["b"] * 4)
    r = fairness_report(y, p, sensitive=g, min_group_size=0)
    bg = r.by_group
    assert bg.loc["a", "accuracy"] == 0.75 and bg.loc["b", "accuracy"] == 0.5
    assert bg.loc["a", "tpr"] == 0.5 and bg.loc["b", "tpr"] == 1.0
    assert bg.loc["a", "fpr"] == 0.0 and bg.loc["b", "fpr"] == 1.0
    # recall sum: a: TPR 0.5 + TNR 1.0 = 1.5; b: 1.0 + 0.0 = 1.0 -> F = 1.0 / 1.5
    assert bg.loc["a", "recall_sum"] == 1.5 and bg.loc["b", "recall_sum"] == 1.0
    ov = r.overall
    assert ov["eo_score_F"] == pytest.approx(2 / 3)
    assert ov["worst_group_accuracy"] == 0.5 and ov["accuracy_gap"] == 0.25
    # acc 0.625; sum |acc_g - acc| = 0.125 + 0.125 -> 0.625 / 1.25
    assert ov["equity_scaled_accuracy"] == pytest.approx(0.5)
    assert ov["demographic_parity_difference"] == 0.75 and ov["demographic_parity_ratio"] == pytest.approx(1 / 4)
    assert ov["equalized_odds_difference"] == 1.0 and ov["equal_opportunity_difference"] == 0.5


def test_multiclass_hand_case_and_F():
    # 3 classes, two groups; group x perfect, group y always predicts class 0
    y = np.array([0, 1, 2, 0, 1, 2])
    p = np.array([0, 1, 2, 0, 0, 0])
    g = np.array(["x", "x", "x", "y", "y", "y"])
    r = fairness_report(y, p, sensitive=g, min_group_size=0)
    assert r.task == "multiclass"
    assert r.by_group.loc["x", "recall_sum"] == 3.0 and r.by_group.loc["y", "recall_sum"] == 1.0
    assert r.overall["eo_score_F"] == pytest.approx(1 / 3)
    # class 0: selection rates 1/3 vs 1 -> gap 2/3; classes 1, 2: 1/3 vs 0
    assert r.overall["demographic_parity_difference"] == pytest.approx(2 / 3)
    assert r.overall["demographic_parity_ratio"] == 0.0
    # class 0 one-vs-rest: TPR 1 vs 1, FPR 0 vs 1 -> 1; classes 1, 2: TPR gap 1
    assert r.overall["equalized_odds_difference"] == 1.0
    assert r.overall["equal_opportunity_difference"] == 1.0


def _naive_ece(conf, correct, n_bins):
    total = 0.0
    edges = np.linspace(0, 1, n_bins + 1)
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        m = (conf >= lo) & ((conf < hi) if b < n_bins - 1 else (conf <= hi))
        if m.any():
            total += m.sum() / len(conf) * abs(conf[m].mean() - correct[m].mean())
    return total


@pytest.mark.parametrize("n_bins", [1, 10, 15])
def test_ece_equal_width_matches_naive_loop(n_bins):
    rng = np.random.default_rng(n_bins)
    n = 3000
    s = rng.random(n) ** 2
    y = (rng.random(n) < s * 0.8 + 0.1).astype(int)
    g = rng.integers(0, 3, n)
    r = fairness_report(y, y_score=s, sensitive=g, n_bins=n_bins)
    assert r.overall["ece"] == pytest.approx(_naive_ece(s, y, n_bins), abs=1e-12)
    for gi in range(3):
        m = g == gi
        assert r.by_group.loc[str(gi), "ece"] == pytest.approx(_naive_ece(s[m], y[m], n_bins), abs=1e-12)
    eces = r.by_group["ece"].to_numpy()
    assert r.overall["max_group_ece"] == eces.max()
    assert r.overall["calibration_disparity"] == pytest.approx(eces.max() - eces.min())
    assert expected_calibration_error(y, s, n_bins=n_bins) == pytest.approx(r.overall["ece"])


def test_ece_multiclass_is_top_label():
    y = np.array([0, 1, 2, 2])
    s = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]])
    # confidences 0.9, 0.7, 0.6, 0.8; correct 1, 1, 0, 1; 1 bin: |0.75 - 0.75| = 0
    assert expected_calibration_error(y, s, n_bins=1) == pytest.approx(0.0)
    # 2 bins: [0.5, 1] holds all -> same; 10 bins: bins 6,7,8,9 hold one each
    assert expected_calibration_error(y, s, n_bins=10) == pytest.approx((0.1 + 0.3 + 0.6 + 0.2) / 4)


def test_ece_equal_mass_hand_case():
    # 8 scores, 2 equal-mass bins: the 4 lowest and the 4 highest
    s = np.array([0.05, 0.1, 0.15, 0.2, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 1, 0, 1, 1, 1, 0])
    low = abs(s[:4].mean() - 0.25)
    high = abs(s[4:].mean() - 0.75)
    assert expected_calibration_error(y, s, n_bins=2, strategy="quantile") == pytest.approx((low + high) / 2)
    # equal width with 2 bins gives the same split here
    assert expected_calibration_error(y, s, n_bins=2) == pytest.approx((low + high) / 2)
    # 4 equal-mass bins of 2 rows each
    want = sum(abs(s[i : i + 2].mean() - y[i : i + 2].mean()) for i in range(0, 8, 2)) / 4
    assert expected_calibration_error(y, s, n_bins=4, strategy="quantile") == pytest.approx(want)


def test_equal_mass_bins_hold_equal_counts_on_skewed_scores():
    from reprogram.metrics.calibration import bin_sums

    rng = np.random.default_rng(0)
    n = 20000
    s = rng.beta(0.3, 3.0, n)  # most mass near 0: equal-width bins would be lopsided
    y = (rng.random(n) < s).astype(int)
    r = fairness_report(y, y_score=s, sensitive=rng.integers(0, 2, n), n_bins=10)
    rows, conf, correct = bin_sums(r.counts.calib_count.sum(0), r.counts.calib_score.sum(0), 10, "quantile")
    np.testing.assert_allclose(rows, n / 10)
    # against the sort-based definition: bins of n/10 consecutive sorted rows
    order = np.argsort(s)
    ref = sum(abs(s[order[i : i + n // 10]].sum() - y[order[i : i + n // 10]].sum()) for i in range(0, n, n // 10)) / n
    assert abs(r.overall["ece_equal_mass"] - ref) < 2e-3
    assert np.allclose(conf.sum(), s.sum()) and correct.sum() == y.sum()


def test_streaming_counts_add_up_to_the_whole():
    rng = np.random.default_rng(5)
    n = 10000
    g, y, s = rng.integers(0, 4, n), rng.integers(0, 2, n), rng.random(n)
    p = (s > 0.5).astype(int)
    whole = count_groups(g, y, p, 4, 2, confidence=s, correct=y == 1)
    parts = [count_groups(g[i::3], y[i::3], p[i::3], 4, 2, confidence=s[i::3], correct=y[i::3] == 1) for i in range(3)]
    summed = parts[0] + parts[1] + parts[2]
    assert np.array_equal(summed.confusion, whole.confusion)
    assert np.array_equal(summed.calib_count, whole.calib_count)
    np.testing.assert_allclose(summed.calib_score, whole.calib_score, rtol=1e-12)


def test_scores_give_predictions_with_threshold_and_pos_label():
    y = np.array(["no", "yes", "yes", "no"])
    s = np.array([0.2, 0.6, 0.4, 0.7])  # P("yes")
    g = np.array([0, 0, 1, 1])
    r = fairness_report(y, y_score=s, sensitive=g, min_group_size=0)
    assert r.positive_class == "yes"
    assert r.by_group["selection_rate"].tolist() == [0.5, 0.5]
    r2 = fairness_report(y, y_score=s, sensitive=g, threshold=0.65, min_group_size=0)
    assert r2.by_group["selection_rate"].tolist() == [0.0, 0.5]
    r3 = fairness_report(y, y_score=1 - s, sensitive=g, pos_label="no", min_group_size=0)
    assert r3.positive_class == "no"
    assert r3.by_group["selection_rate"].tolist() == [0.5, 0.5]


def test_small_groups_are_flagged_not_dropped():
    g = np.array(["big"] * 50 + ["tiny"] * 3)
    y = np.r_[np.zeros(25, int), np.ones(25, int), [1, 0, 1]]
    r = fairness_report(y, y, sensitive=g, min_group_size=10)
    assert r.groups == ["big", "tiny"]
    assert r.small_groups == ["tiny"]


def test_undefined_tpr_is_nan_and_left_out_of_gaps():
    y = np.array([0, 0, 1, 1, 0, 0])
    p = np.array([0, 1, 1, 0, 0, 1])
    g = np.array(["a", "a", "b", "b", "c", "c"])  # a and c have no positives
    r = fairness_report(y, p, sensitive=g, min_group_size=0)
    assert np.isnan(r.by_group.loc["a", "tpr"])
    assert r.overall["equal_opportunity_difference"] == 0.0  # only b has a TPR
    d = json.loads(r.to_json())
    assert d["by_group"]["a"]["tpr"] is None
    assert d["by_group"]["a"]["count"] == 2 and isinstance(d["by_group"]["a"]["count"], int)


def test_json_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    y, s = rng.integers(0, 2, 300), rng.random(300)
    r = fairness_report(y, y_score=s, sensitive={"sex": rng.choice(["F", "M"], 300)})
    out = tmp_path / "r.json"
    text = r.to_json(out)
    assert json.loads(out.read_text()) == json.loads(text)
    assert set(json.loads(text)["overall"]) >= {"ece", "ece_equal_mass", "eo_score_F", "equity_scaled_accuracy"}


@pytest.mark.parametrize(
    "kwargs, err, words",
    [
        (dict(y_true=[0, 1], y_pred=[0, 1, 1], sensitive=["a", "b"]), LengthMismatchError, "3"),
        (dict(y_true=[0, 1, 1], y_pred=[0, 1, 1], sensitive=["a", "b"]), LengthMismatchError, "rows"),
        (dict(y_true=[0, 1], y_pred=[0, 1], sensitive=["a", "a"]), GroupError, "only one group"),
        (dict(y_true=[0.0, np.nan, 1.0], y_pred=[0, 1, 1], sensitive=["a", "b", "a"]), MissingValuesError, "1 missing"),
        (dict(y_true=[0, 1, 1], y_pred=[0, 1, 1], sensitive=["a", None, None]), MissingValuesError, "2 missing"),
        (dict(y_true=[0, 1], y_score=[0.3, 1.7], sensitive=["a", "b"]), InputError, "logits"),
        (dict(y_true=[0, 1], y_score=[0.3, np.nan], sensitive=["a", "b"]), MissingValuesError, "y_score"),
        (dict(y_true=[0, 1], sensitive=["a", "b"]), InputError, "y_pred"),
        (dict(y_true=[0, 1], y_pred=[0, 1]), InputError, "sensitive"),
        (dict(y_true=["x", "x"], y_pred=["x", "x"], sensitive=["a", "b"]), InputError, "one class"),
        (dict(y_true=[0, 1], y_pred=[0, 1], sensitive=["a", "b"], pos_label=7), InputError, "pos_label"),
        (dict(y_true=[0, 1, 2], y_score=[0.2, 0.3, 0.4], sensitive=["a", "b", "b"]), InputError, "(n, 3)"),
    ],
)
def test_bad_input_raises_one_line_errors(kwargs, err, words):
    with pytest.raises(err) as info:
        fairness_report(**kwargs)
    msg = str(info.value)
    assert words in msg and "\n" not in msg
    assert isinstance(info.value, ReprogramError)
