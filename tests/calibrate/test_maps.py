"""Calibration maps: agreement with scikit-learn, hand-checked cases, torch parity, save/load, bad input."""

import numpy as np
import pytest
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression

from reprogram.calibrate import (
    MAPS,
    BetaMap,
    HistogramMap,
    IsotonicMap,
    PlattMap,
    TemperatureMap,
    load_calibrator,
    make_map,
)
from reprogram.calibrate.bank import MapBank, Table, table_values
from reprogram.errors import InputError, MissingValuesError, NotFittedError


class PrefitProba(ClassifierMixin, BaseEstimator):
    """A 'classifier' whose input columns are already its class probabilities."""

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return X

    def predict(self, X):
        return self.predict_proba(X).argmax(1)


class PrefitScores(PrefitProba):
    """Binary: the one input column is P(class 1); its logit is the decision function."""

    def predict_proba(self, X):
        return np.column_stack([1 - X[:, 0], X[:, 0]])

    def decision_function(self, X):
        p = X[:, 0]
        return np.log(p) - np.log1p(-p)


def miscalibrated(n=4000, seed=0, shift=0.4):
    """float32-valued scores (what models emit) that are overconfident and shifted."""
    rng = np.random.default_rng(seed)
    true = rng.beta(2, 3, n)
    y = (rng.uniform(size=n) < true).astype(np.int64)
    z = 1.8 * np.log(true / (1 - true)) + shift
    return (1 / (1 + np.exp(-z))).astype(np.float32).astype(np.float64), y


def multiclass(n=3000, c=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, c)) * 2
    true = np.exp(logits / 1.7)
    true /= true.sum(1, keepdims=True)
    y = (true.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return p.astype(np.float32).astype(np.float64), y


@pytest.mark.parametrize("method,ours", [("sigmoid", PlattMap), ("isotonic", IsotonicMap),
                                         ("temperature", TemperatureMap)])
def test_binary_maps_match_scikit_learn_calibration(method, ours):
    p, y = miscalibrated()
    sk = CalibratedClassifierCV(FrozenEstimator(PrefitScores().fit(p[:, None], y)), method=method)
    want = sk.fit(p[:, None], y).predict_proba(p[:, None])[:, 1]
    got = ours().fit(p, y).transform(p)
    assert np.max(np.abs(got - want)) < 1e-6


def test_isotonic_knots_are_scikit_learns():
    p, y = miscalibrated(seed=3)
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
    m = IsotonicMap().fit(p, y)
    assert np.array_equal(m.tables_[0].x, iso.X_thresholds_)
    grid = np.linspace(0, 1, 1001)
    assert np.max(np.abs(m(grid) - iso.predict(grid))) < 1e-12


def test_multiclass_temperature_matches_scikit_learn():
    p, y = multiclass()
    sk = CalibratedClassifierCV(FrozenEstimator(PrefitProba().fit(p, y)), method="temperature").fit(p, y)
    t = TemperatureMap().fit(p, y)
    assert abs(t.temperature_ - 1 / sk.calibrated_classifiers_[0].calibrators[0].beta_) < 1e-5
    assert np.max(np.abs(t.transform(p) - sk.predict_proba(p))) < 1e-6
    assert t.temperature_ == pytest.approx(1.7, rel=0.1)  # the temperature the labels were drawn at


def test_platt_by_hand_on_a_separable_free_case():
    # four points, smoothing off: the fit must zero the gradient of the log-loss
    p = np.array([0.2, 0.4, 0.6, 0.8])
    y = np.array([0, 1, 0, 1])
    m = PlattMap(smoothing=False).fit(p, y)
    q = m.transform(p)
    z = np.log(p / (1 - p))
    assert abs(np.sum(q - y)) < 1e-9 and abs(np.sum((q - y) * z)) < 1e-9
    w1, w2, _ = m.tables_[0].w
    assert w1 == pytest.approx(-w2)


def test_beta_keeps_its_coefficients_non_negative_and_improves_log_loss():
    p, y = miscalibrated(seed=5)
    m = BetaMap().fit(p, y)
    a, minus_b, _ = m.tables_[0].w
    assert a >= 0 and -minus_b >= 0
    q = m(p)
    ll = lambda s: -np.mean(y * np.log(s) + (1 - y) * np.log(1 - s))  # noqa: E731
    assert ll(q) < ll(p) - 0.01
    # beta calibration contains Platt (a = b): it fits at least as well in sample
    assert ll(q) <= ll(PlattMap(smoothing=False).fit(p, y)(p)) + 1e-9


def test_histogram_bins_by_hand():
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9])
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    m = HistogramMap(n_bins=2).fit(p, y)
    assert m.tables_[0].x.tolist() == pytest.approx([0.4])  # the median splits the bins; 0.4 goes up
    assert m.transform(np.array([0.0, 0.39, 0.4, 1.0])).tolist() == pytest.approx([0, 0, 4 / 5, 4 / 5])


@pytest.mark.parametrize("name", sorted(MAPS))
def test_every_map_calibrates_held_out_scores(name):
    from reprogram.metrics import expected_calibration_error

    p, y = miscalibrated(n=20000, seed=1, shift=0.0)  # overconfidence alone: temperature can fix it too
    m = make_map(name).fit(p[:10000], y[:10000])
    before = expected_calibration_error(y[10000:], p[10000:])
    after = expected_calibration_error(y[10000:], m(p[10000:]))
    assert after < before / 2, (before, after)


@pytest.mark.parametrize("name", sorted(MAPS))
def test_multiclass_maps_return_distributions_and_calibrate(name):
    from reprogram.metrics import expected_calibration_error

    p, y = multiclass(n=8000, seed=2)
    m = make_map(name).fit(p[:4000], y[:4000])
    q = m(p[4000:])
    assert q.shape == (4000, 4) and np.allclose(q.sum(1), 1) and (q >= 0).all()
    assert expected_calibration_error(y[4000:], q) < expected_calibration_error(y[4000:], p[4000:])


@pytest.mark.parametrize("name", sorted(MAPS))
@pytest.mark.parametrize("multi", [False, True])
def test_torch_module_matches_numpy(name, multi):
    p, y = multiclass(seed=4) if multi else miscalibrated(seed=4)
    m = make_map(name).fit(p, y)
    grid = p if multi else np.concatenate([p, np.linspace(0, 1, 501), [0.0, 1.0, 1e-12]])
    grid = grid.astype(np.float32).astype(np.float64)
    with torch.no_grad():
        got = m.to_module()(torch.tensor(grid, dtype=torch.float32)).double().numpy()
    assert np.max(np.abs(got - m(grid))) < 1e-6


@pytest.mark.parametrize("multi", [False, True])
@pytest.mark.parametrize("name", sorted(MAPS))
def test_save_and_load_round_trip(name, multi, tmp_path):
    p, y = multiclass(seed=6) if multi else miscalibrated(seed=6)
    m = make_map(name).fit(p, y)
    m.save(tmp_path / "cal")
    back = load_calibrator(tmp_path / "cal")
    assert type(back) is type(m) and back.get_params() == m.get_params()
    assert np.array_equal(back(p), m(p))
    assert type(m).load(tmp_path / "cal").n_classes_ == m.n_classes_


def test_maps_are_scikit_learn_estimators():
    m = HistogramMap(n_bins=7)
    c = clone(m)
    assert c.get_params() == {"n_bins": 7} and not hasattr(c, "tables_")
    with pytest.raises(NotFittedError):
        c.transform([0.5])


def test_bank_lookup_is_exact_with_clustered_and_far_knots():
    # knots packed into a tiny interval next to far ones: many knots share a bucket,
    # so the binary search inside the bucket window must do the work
    rng = np.random.default_rng(0)
    x = np.unique(np.concatenate([0.5 + rng.uniform(0, 1e-4, 300), [0.0, 0.01, 0.99, 1.0]]).astype(np.float32))
    x = x.astype(np.float64)
    y = np.sort(rng.uniform(0, 1, len(x)))
    linear = Table("linear", x=x, y=y)
    step = Table("step", x=x[1:-1], y=np.sort(rng.uniform(size=len(x) - 1)))
    sig = Table("sigmoid", w=(1.3, -0.7, 0.2))
    bank = MapBank([linear, step, sig])
    assert bank.steps >= 8  # ~300 knots in one window: a real search
    pts = np.concatenate([x, (x[1:] + x[:-1]) / 2, rng.uniform(0, 1, 2000), [0.0, 1.0]])
    pts = pts.astype(np.float32).astype(np.float64)
    for k, t in enumerate([linear, step, sig]):
        with torch.no_grad():
            got = bank(torch.tensor(pts, dtype=torch.float32), torch.full((len(pts),), k)).double().numpy()
        assert np.max(np.abs(got - table_values(t, pts))) < 1e-6, t.kind


@pytest.mark.parametrize("bad,err,match", [
    ([0.2, 1.3, 0.5, 0.4], InputError, r"\[0, 1\]"),
    ([0.2, np.nan, 0.5, 0.4], MissingValuesError, "1 row.*NaN"),
    ([[0.2, 0.2], [0.5, 0.5], [0.1, 0.9], [0.3, 0.7]], InputError, "sum to 1"),
])
def test_bad_scores_get_one_line_errors(bad, err, match):
    with pytest.raises(err, match=match) as e:
        PlattMap().fit(bad, [0, 1, 0, 1])
    assert "\n" not in str(e.value)


def test_single_class_and_bad_labels_are_refused():
    with pytest.raises(InputError, match="only class 1"):
        IsotonicMap().fit([0.2, 0.4, 0.6], [1, 1, 1])
    with pytest.raises(InputError, match="0..1"):
        PlattMap().fit([0.2, 0.4, 0.6], [0, 1, 2])
    with pytest.raises(MissingValuesError, match="NaN"):
        PlattMap().fit([0.2, 0.4, 0.6], [0.0, np.nan, 1.0])
    with pytest.raises(InputError, match="one-vs-rest"):
        IsotonicMap().fit([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], [0, 1])
    m = PlattMap().fit([0.2, 0.4, 0.6, 0.8], [0, 1, 0, 1])
    with pytest.raises(InputError, match="fitted on 2"):
        m.transform([[0.3, 0.3, 0.4]])
