"""ReductionsWrapper: scikit-learn conventions, fairlearn constraints, routing, errors, Adult.

Everything here fits real models (fairlearn + LogisticRegression); nothing is mocked.
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import sklearn
from fairlearn.reductions import (
    BoundedGroupLoss,
    DemographicParity,
    EqualizedOdds,
    ErrorRateParity,
    FalsePositiveRateParity,
    TruePositiveRateParity,
    ZeroOneLoss,
)
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from reprogram.errors import (
    GroupError,
    InputError,
    LengthMismatchError,
    MissingValuesError,
    ReprogramError,
)
from reprogram.metrics import fairness_report
from reprogram.train.reductions import CONSTRAINT_NAMES, ReductionsWrapper, _row_uniforms


# ----------------------------------------------------------------------------- helpers


def make_biased(n=800, seed=0):
    """Features, labels and a binary group where the label rate differs by group."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    X = np.column_stack([rng.normal(size=(n, 3)), a + rng.normal(scale=0.5, size=n)])
    y = (X[:, 0] + X[:, 3] + rng.normal(scale=0.5, size=n) > 0.8).astype(int)
    return X, y, np.where(a == 1, "g1", "g0")


@pytest.fixture(scope="module")
def biased():
    return make_biased()


def gap_vs_overall(y_true, y_pred, groups, positive, within=None):
    """fairlearn's reading of a bound: max over groups of |rate in group - overall rate|.

    ``within=None``: selection rate (demographic parity); ``within=[labels...]``: the same
    inside the rows of each true label (equalized odds), max over labels.
    """
    y_true, groups = np.asarray(y_true), np.asarray(groups)
    pos = np.asarray(y_pred) == positive
    worst = 0.0
    for lab in [None] if within is None else within:
        rows = np.ones(len(pos), bool) if lab is None else y_true == lab
        overall = pos[rows].mean()
        for g in np.unique(groups):
            worst = max(worst, abs(pos[rows & (groups == g)].mean() - overall))
    return worst


def fit_fast(X, y, s, sample_weight=None, **kw):
    kw.setdefault("max_iter", 10)
    return ReductionsWrapper(**kw).fit(X, y, sensitive_features=s, sample_weight=sample_weight)


# ----------------------------------------------------------------------------- sklearn API


def test_clone_get_params_round_trip():
    dp = DemographicParity(difference_bound=0.02)
    est = ReductionsWrapper(LogisticRegression(C=0.5), dp, eps=0.05, max_iter=7, random_state=3)
    params = est.get_params(deep=False)
    assert params["constraints"] is dp and params["eps"] == 0.05 and params["max_iter"] == 7
    assert est.get_params(deep=True)["estimator__C"] == 0.5  # tunable from GridSearchCV

    twin = clone(est)
    tp = twin.get_params(deep=False)
    assert set(tp) == set(params)
    assert type(tp["constraints"]) is DemographicParity and tp["constraints"] is not dp
    assert tp["constraints"].eps == 0.02
    assert {k: v for k, v in tp.items() if k not in ("estimator", "constraints")} == {
        k: v for k, v in params.items() if k not in ("estimator", "constraints")
    }

    twin.set_params(constraints="equalized_odds", difference_bound=0.1, estimator__C=2.0)
    assert twin.constraints == "equalized_odds" and twin.estimator.C == 2.0
    assert est.estimator.C == 0.5  # the original is untouched
    # No work in __init__: parameters are stored as given, even invalid ones.
    odd = ReductionsWrapper(constraints="nonsense", eps=-1)
    assert odd.get_params()["constraints"] == "nonsense"


def test_fitted_clone_is_unfitted(biased):
    X, y, s = biased
    est = fit_fast(X, y, s)
    twin = clone(est)
    assert not hasattr(twin, "mitigator_")
    with pytest.raises(SklearnNotFittedError):
        twin.predict(X)


def test_constraint_object_is_not_mutated_and_reusable(biased):
    X, y, s = biased
    dp = DemographicParity(difference_bound=0.03)
    est = fit_fast(X, y, s, constraints=dp)
    assert est.constraints is dp
    assert not getattr(dp, "data_loaded", False)  # no data was loaded into the parameter
    assert est.constraints_ is not dp and est.constraints_.eps == 0.03
    # The same object serves a second fit and a second estimator.
    est.fit(X, y, sensitive_features=s)
    fit_fast(X, y, s, constraints=dp)
    assert not getattr(dp, "data_loaded", False)


@pytest.mark.parametrize(
    "constraints, expected",
    [
        ("demographic_parity", DemographicParity),
        ("equalized_odds", EqualizedOdds),
        ("true_positive_rate_parity", TruePositiveRateParity),
        ("error_rate_parity", ErrorRateParity),
        ("false_positive_rate_parity", FalsePositiveRateParity),
        ("dp", DemographicParity),
        ("Equalized-Odds", EqualizedOdds),
        (EqualizedOdds(difference_bound=0.05), EqualizedOdds),
        (TruePositiveRateParity(), TruePositiveRateParity),
        (ErrorRateParity, ErrorRateParity),  # a class is instantiated
    ],
)
def test_names_and_objects_accepted(biased, constraints, expected):
    X, y, s = biased
    est = fit_fast(X, y, s, constraints=constraints, max_iter=5)
    assert type(est.constraints_) is expected
    pred = est.predict(X)
    assert pred.shape == (len(y),) and set(np.unique(pred)) <= {0, 1}
    assert est.n_iter_ >= 1 and len(est.predictors_) == len(est.weights_)
    assert np.isclose(est.weights_.sum(), 1.0)


def test_constraint_names_listed():
    assert set(CONSTRAINT_NAMES) >= {
        "demographic_parity", "equalized_odds", "true_positive_rate_parity", "error_rate_parity"
    }


def test_difference_bound_passes_through_and_name_equals_object(biased):
    X, y, s = biased
    by_name = fit_fast(X, y, s, constraints="demographic_parity", difference_bound=0.04)
    assert by_name.constraints_.eps == 0.04
    by_object = fit_fast(X, y, s, constraints=DemographicParity(difference_bound=0.04))
    np.testing.assert_array_equal(by_name.predict(X), by_object.predict(X))
    np.testing.assert_allclose(by_name.predict_proba(X), by_object.predict_proba(X))


def test_constraint_lowers_dp_and_meets_fairlearn_bound(biased):
    X, y, s = biased
    base = LogisticRegression(max_iter=1000).fit(X, y).predict(X)
    est = ReductionsWrapper(difference_bound=0.02).fit(X, y, sensitive_features=s)
    pred = est.predict(X)
    dp_base = fairness_report(y, base, sensitive=s).overall["demographic_parity_difference"]
    dp_fair = fairness_report(y, pred, sensitive=s).overall["demographic_parity_difference"]
    assert dp_base > 0.25
    assert dp_fair < dp_base / 3
    # On the training rows the bound holds (group vs overall, fairlearn's definition)
    # up to EG's approximation and the randomized rounding of 800 predictions.
    assert gap_vs_overall(y, pred, s, 1) <= 0.02 + 0.03


def test_equalized_odds_lowers_eo(biased):
    X, y, s = biased
    base = LogisticRegression(max_iter=1000).fit(X, y).predict(X)
    pred = fit_fast(X, y, s, constraints="equalized_odds", difference_bound=0.02).predict(X)
    eo_base = fairness_report(y, base, sensitive=s).overall["equalized_odds_difference"]
    eo_fair = fairness_report(y, pred, sensitive=s).overall["equalized_odds_difference"]
    assert eo_fair < eo_base / 2


def test_score_is_accuracy(biased):
    X, y, s = biased
    est = fit_fast(X, y, s)
    assert est.score(X, y) == pytest.approx(np.mean(est.predict(X) == y))


# ----------------------------------------------------------------------------- predictions


def test_predict_proba_is_the_randomized_classifiers_pmf(biased):
    X, y, s = biased
    est = fit_fast(X, y, s, difference_bound=0.02)
    proba = est.predict_proba(X)
    assert proba.shape == (len(y), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # The same as fairlearn's (private) probability mass function of its predictor.
    np.testing.assert_allclose(proba, est.mitigator_._pmf_predict(X), atol=1e-12)
    assert ((proba[:, 1] > 0) & (proba[:, 1] < 1)).any(), "expected a genuine mixture here"


def test_predict_is_deterministic_per_row_and_unbiased():
    X, y, s = make_biased(n=3000, seed=1)
    est = fit_fast(X, y, s, difference_bound=0.02)
    pred = est.predict(X)
    np.testing.assert_array_equal(pred, est.predict(X))
    perm = np.random.default_rng(0).permutation(len(y))
    np.testing.assert_array_equal(est.predict(X[perm]), pred[perm])  # batch order
    np.testing.assert_array_equal([est.predict(X[i : i + 1])[0] for i in range(20)], pred[:20])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(est)).predict(X), pred)
    # Each row is positive with probability p(x): the rounding is unbiased overall and
    # within each group (what the fairness guarantee is about).
    p1 = est.predict_proba(X)[:, 1]
    for rows in [np.ones(len(y), bool), s == "g0", s == "g1"]:
        sd = np.sqrt(np.sum(p1[rows] * (1 - p1[rows]))) / rows.sum()
        assert abs(pred[rows].mean() - p1[rows].mean()) <= 4 * sd + 1e-12
    # Another seed rounds the mixed rows differently; the pmf does not change.
    other = clone(est).set_params(random_state=1).fit(X, y, sensitive_features=s)
    np.testing.assert_allclose(other.predict_proba(X), est.predict_proba(X))
    mixed = (p1 > 0.05) & (p1 < 0.95)
    assert mixed.sum() > 20 and (other.predict(X)[mixed] != pred[mixed]).any()
    # Rows where the mixture agrees are not affected by the rounding.
    sure = (p1 == 0) | (p1 == 1)
    np.testing.assert_array_equal(pred[sure], (p1[sure] == 1).astype(int))


def test_row_uniforms_are_uniform():
    u = _row_uniforms(np.arange(20000.0).reshape(-1, 1), seed=0)
    assert u.min() >= 0 and u.max() < 1
    counts, _ = np.histogram(u, bins=10, range=(0, 1))
    assert counts.min() > 1800 and counts.max() < 2200


def test_grid_search_method(biased):
    X, y, s = biased
    est = ReductionsWrapper(method="grid_search", grid_size=7).fit(X, y, sensitive_features=s)
    best = est.mitigator_.predictors_[est.mitigator_.best_idx_]
    assert est.predictors_ == [best] and est.n_iter_ == 7
    np.testing.assert_array_equal(est.predict(X), best.predict(X))
    np.testing.assert_allclose(est.predict_proba(X), best.predict_proba(X))
    base = LogisticRegression(max_iter=1000).fit(X, y).predict(X)
    dp = lambda p: fairness_report(y, p, sensitive=s).overall["demographic_parity_difference"]  # noqa: E731
    assert dp(est.predict(X)) < dp(base)


# ----------------------------------------------------------------------------- labels and inputs


@pytest.mark.parametrize("method", ["exponentiated_gradient", "grid_search"])
def test_string_labels_round_trip(biased, method):
    X, y, s = biased
    words = np.where(y == 1, "approved", "denied")
    est_s = fit_fast(X, pd.Series(words, dtype="str"), s, method=method, constraints="true_positive_rate_parity")
    est_i = fit_fast(X, y, s, method=method, constraints="true_positive_rate_parity")
    assert list(est_s.classes_) == ["approved", "denied"]
    # Sorted classes: "denied" is classes_[1], the class the constraint calls positive,
    # so the string model solves the problem with the roles of the labels swapped.
    flipped = fit_fast(X, 1 - y, s, method=method, constraints="true_positive_rate_parity")
    expected = np.where(flipped.predict(X) == 1, "denied", "approved")
    np.testing.assert_array_equal(est_s.predict(X), expected)
    assert est_s.predict_proba(X).shape == (len(y), 2)
    assert set(est_i.classes_) == {0, 1}


def test_bool_labels_and_dataframe_inputs(biased):
    X, y, s = biased
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    sens = pd.DataFrame({"grp": s, "half": np.arange(len(y)) % 2})  # intersectional groups
    est = fit_fast(frame, y.astype(bool), sens)
    assert list(est.feature_names_in_) == ["a", "b", "c", "d"] and est.n_features_in_ == 4
    assert est.predict(frame).dtype == bool
    assert len(est.mitigator_.constraints_.index) == 2 * 4  # +/- for each of 4 groups
    with pytest.raises(InputError, match="feature names"):
        est.predict(frame.rename(columns={"a": "z"}))
    with pytest.raises(InputError, match="features"), pytest.warns(UserWarning, match="feature names"):
        est.predict(X[:, :3])
    # A mapping of columns works as a DataFrame does.
    est2 = fit_fast(frame, y, {"grp": s, "half": np.arange(len(y)) % 2})
    np.testing.assert_array_equal(est2.predict(frame), est.predict(frame).astype(int))


def test_sample_weight_is_row_repetition(biased):
    X, y, s = biased
    w = np.random.default_rng(3).integers(0, 3, len(y))
    rows = np.repeat(np.arange(len(y)), w)
    weighted = fit_fast(X, y, s, sample_weight=w)
    repeated = fit_fast(X[rows], y[rows], s[rows])
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X))
    np.testing.assert_array_equal(weighted.predict(X), repeated.predict(X))


# ----------------------------------------------------------------------------- Pipeline / GridSearchCV


def test_pipeline_with_and_without_routing(biased):
    X, y, s = biased
    X = X * 10 + 3  # so that scaling matters

    def pipe(**kw):
        return Pipeline([("scale", StandardScaler()), ("fair", ReductionsWrapper(max_iter=10, **kw))])

    manual = ReductionsWrapper(max_iter=10).fit(StandardScaler().fit_transform(X), y, sensitive_features=s)
    expected = manual.predict(StandardScaler().fit(X).transform(X))

    # Without routing: scikit-learn's step__param form.
    plain = pipe().fit(X, y, fair__sensitive_features=s)
    np.testing.assert_array_equal(plain.predict(X), expected)

    with sklearn.config_context(enable_metadata_routing=True):
        explicit = Pipeline([
            ("scale", StandardScaler()),
            ("fair", ReductionsWrapper(max_iter=10).set_fit_request(sensitive_features=True)),
        ]).fit(X, y, sensitive_features=s)
        np.testing.assert_array_equal(explicit.predict(X), expected)
        # The request is on by default: fit cannot run without the groups.
        default = pipe().fit(X, y, sensitive_features=s)
        np.testing.assert_array_equal(default.predict(X), expected)
        assert default.score(X, y) == pytest.approx(np.mean(expected == y))


def test_gridsearchcv_routes_sensitive_features(biased):
    X, y, s = biased
    grid = {"fair__difference_bound": [0.01, 0.2], "fair__constraints": ["dp", "eo"]}
    with sklearn.config_context(enable_metadata_routing=True):  # set_*_request needs it on
        est = Pipeline([
            ("scale", StandardScaler()),
            ("fair", ReductionsWrapper(max_iter=5).set_fit_request(sensitive_features=True)),
        ])
        search = GridSearchCV(est, grid, cv=3, error_score="raise")
        # error_score="raise": a fold that got the whole (unsplit) column would fail
        # with a LengthMismatchError, so passing proves the column is split by fold.
        search.fit(X, y, sensitive_features=s)
        assert len(search.cv_results_["params"]) == 4
        assert np.isfinite(search.cv_results_["mean_test_score"]).all()
        assert search.best_estimator_.named_steps["fair"].constraints_ is not None
        assert search.predict(X).shape == (len(y),)
        # Without the groups every fit fails, with our error.
        with pytest.raises(InputError, match="sensitive_features"):
            GridSearchCV(est, grid, cv=3, error_score="raise").fit(X, y)


def test_gridsearchcv_tunes_inner_estimator_without_routing(biased):
    X, y, s = biased
    search = GridSearchCV(
        ReductionsWrapper(LogisticRegression(), max_iter=5),
        {"estimator__C": [0.01, 1.0]}, cv=3, error_score="raise",
    ).fit(X, y, sensitive_features=s)
    assert search.best_params_["estimator__C"] in (0.01, 1.0)


def test_inner_pipeline_with_string_columns(biased):
    X, y, s = biased
    frame = pd.DataFrame(X, columns=list("abcd")).assign(city=np.where(X[:, 1] > 0, "north", "south"))
    # fairlearn calls estimator.fit(X, y, sample_weight=w); an inner Pipeline forwards it
    # only with metadata routing on and its classifier asking for it.
    with sklearn.config_context(enable_metadata_routing=True):
        inner = Pipeline([
            ("enc", ColumnTransformer([("oh", OneHotEncoder(), ["city"])], remainder="passthrough")),
            ("lr", LogisticRegression(max_iter=1000).set_fit_request(sample_weight=True)),
        ])
        est = fit_fast(frame, y, s, estimator=inner, max_iter=5)
        assert est.predict(frame).shape == (len(y),)


# ----------------------------------------------------------------------------- errors


BAD_FITS = {
    "no sensitive_features": (lambda X, y, s: ((X, y, None), {}), InputError, "sensitive_features"),
    "unknown name": (lambda X, y, s: ((X, y, s), {"constraints": "parity"}), InputError, "demographic_parity"),
    "not a constraint": (lambda X, y, s: ((X, y, s), {"constraints": 3}), InputError, "ClassificationMoment"),
    "regression moment": (
        lambda X, y, s: ((X, y, s), {"constraints": BoundedGroupLoss(ZeroOneLoss())}), InputError, "regression"
    ),
    "bound with object": (
        lambda X, y, s: ((X, y, s), {"constraints": DemographicParity(), "difference_bound": 0.1}),
        InputError, "set it on the DemographicParity",
    ),
    "bad method": (lambda X, y, s: ((X, y, s), {"method": "lp"}), InputError, "method"),
    "bad eps": (lambda X, y, s: ((X, y, s), {"eps": 0}), InputError, "eps"),
    "bad max_iter": (lambda X, y, s: ((X, y, s), {"max_iter": 0}), InputError, "max_iter"),
    "bad bound": (lambda X, y, s: ((X, y, s), {"difference_bound": 2}), InputError, "difference_bound"),
    "three classes": (lambda X, y, s: ((X, np.arange(len(y)) % 3, s), {}), InputError, "Only binary"),
    "one class": (lambda X, y, s: ((X, np.ones_like(y), s), {}), InputError, "1 class"),
    "nan label": (lambda X, y, s: ((X, np.where(np.arange(len(y)) < 3, np.nan, y), s), {}), MissingValuesError, "3"),
    "nan group": (lambda X, y, s: ((X, y, np.where(np.arange(len(y)) < 2, None, s)), {}), MissingValuesError, "2 row"),
    "one group": (lambda X, y, s: ((X, y, np.full(len(y), "g")), {}), GroupError, "one group"),
    "short y": (lambda X, y, s: ((X, y[:-1], s), {}), LengthMismatchError, "rows"),
    "short groups": (lambda X, y, s: ((X, y, s[:-5]), {}), LengthMismatchError, "sensitive_features"),
    "1-d X": (lambda X, y, s: ((X[:, 0], y, s), {}), InputError, "2-D"),
    "no sample_weight in estimator": (
        lambda X, y, s: ((X, y, s), {"estimator": KNeighborsClassifier()}), InputError, "sample_weight"
    ),
}


@pytest.mark.parametrize("case", list(BAD_FITS))
def test_bad_input_raises_one_line_reprogram_error(biased, case):
    X, y, s = biased
    make, err, fragment = BAD_FITS[case]
    (Xb, yb, sb), params = make(X, y, s)
    with pytest.raises(err) as info:
        ReductionsWrapper(**{"max_iter": 3, **params}).fit(Xb, yb, sensitive_features=sb)
    assert isinstance(info.value, ReprogramError) and isinstance(info.value, ValueError)
    assert "\n" not in str(info.value) and fragment in str(info.value)


@pytest.mark.parametrize("weights, fragment", [([0.5] * 800, "whole numbers"), ([0] * 800, "zero"), ([1] * 10, "shape")])
def test_bad_sample_weight(biased, weights, fragment):
    X, y, s = biased
    with pytest.raises(InputError, match=fragment):
        fit_fast(X, y, s, sample_weight=np.array(weights))


def test_unfitted_error_is_ours_and_sklearns(biased):
    X, _, _ = biased
    with pytest.raises(ReprogramError) as info:
        ReductionsWrapper().predict_proba(X)
    assert isinstance(info.value, SklearnNotFittedError) and "\n" not in str(info.value)


def test_groups_equal_to_labels_explained():
    # Groups that coincide with separable labels: some multipliers cancel every row's
    # error weight and fairlearn divides by their zero sum (NaN weights for the learner).
    X, y = make_blobs(n_samples=30, centers=[[0, 0, 0], [1, 1, 1]], random_state=0, cluster_std=0.1)
    with pytest.raises(InputError, match="single label") as info:
        ReductionsWrapper(max_iter=10).fit(X, y, sensitive_features=np.where(y == 1, "a", "b"))
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- sklearn's check_estimator


class _SelfGroupingWrapper(ReductionsWrapper):
    """Test-only: when ``sensitive_features`` is not passed, derive it from the rows.

    scikit-learn's generic checks call ``fit(X, y)`` and have no groups to give. The group
    is a pseudo-random function of each row's values (independent of the label), so it
    travels with a row through shuffles, subsets and repetitions, as the checks require.
    """

    def fit(self, X, y, *, sensitive_features=None, sample_weight=None):
        if sensitive_features is None:
            try:
                rows = np.asarray(X, dtype=np.float64)
                sensitive_features = np.where(_row_uniforms(rows, 7) < 0.5, "a", "b")
                if len(np.unique(sensitive_features)) < 2:
                    sensitive_features = np.arange(len(rows)) % 2
            except (TypeError, ValueError):  # malformed X: let fit report it
                sensitive_features = np.arange(len(X)) % 2 if hasattr(X, "__len__") else [0, 1]
        return super().fit(X, y, sensitive_features=sensitive_features, sample_weight=sample_weight)


def _expected_failures(est):
    failures = {}
    if est.method == "grid_search":
        failures["check_sample_weight_equivalence_on_dense_data"] = (
            "fairlearn's GridSearch builds its grid from the group that appears first in the "
            "rows; the check shuffles the weighted rows, so another grid point can win"
        )
    elif est.max_iter > 2:
        # With 2 iterations the 200-row check problem ends in a single classifier.
        failures["check_classifiers_train"] = (
            "EG's predict rounds a randomized classifier, so it need not equal argmax of "
            "predict_proba, and the constrained mixture can score below the check's 0.83"
        )
    return failures


# Every check scikit-learn 1.9 runs for a classifier; the shim is the only concession.
# max_iter=2 keeps the EG suite fast; a slow run below repeats it with real mixtures.
@parametrize_with_checks(
    [_SelfGroupingWrapper(max_iter=2), _SelfGroupingWrapper(method="grid_search", grid_size=5)],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_check_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


@pytest.mark.slow
@parametrize_with_checks([_SelfGroupingWrapper(max_iter=10)], expected_failed_checks=_expected_failures)
def test_sklearn_check_estimator_full_eg(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


# ----------------------------------------------------------------------------- Adult (real data)


@pytest.fixture(scope="module")
def adult():
    """Adult, sex as the group: one-hot + standardized features, 40/30/30 stratified split."""
    from reprogram.data import load_real_dataset

    ds = load_real_dataset("adult")
    f = ds.frame
    X, y, sex = f[ds.features], f[ds.label].to_numpy(), f["sex"].to_numpy()
    cat = [c for c in ds.features if not pd.api.types.is_numeric_dtype(X[c])]
    num = [c for c in ds.features if c not in cat]
    idx = np.arange(len(f))
    train, rest = train_test_split(idx, train_size=0.4, stratify=y, random_state=0)
    _val, test = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=0)
    enc = ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat),
        ("num", StandardScaler(), num),
    ]).fit(X.iloc[train])
    return {
        "Xtr": enc.transform(X.iloc[train]), "ytr": y[train], "str": sex[train],
        "Xte": enc.transform(X.iloc[test]), "yte": y[test], "ste": sex[test],
    }


def _overall(d, pred):
    return fairness_report(d["yte"], pred, sensitive=d["ste"]).overall


@pytest.mark.slow
def test_adult_demographic_parity(adult):
    d, bound = adult, 0.05
    base = LogisticRegression(max_iter=1000).fit(d["Xtr"], d["ytr"]).predict(d["Xte"])
    est = ReductionsWrapper(constraints="demographic_parity", difference_bound=bound)
    pred = est.fit(d["Xtr"], d["ytr"], sensitive_features=d["str"]).predict(d["Xte"])
    base_o, fair_o = _overall(d, base), _overall(d, pred)
    # What difference_bound promises (fairlearn): each group's selection rate within the
    # bound of the overall rate; here it must hold on the test split, +0.02.
    assert gap_vs_overall(d["yte"], pred, d["ste"], 1) <= bound + 0.02
    # The max - min gap over the two groups that fairness_report prints is then at most
    # bound / (share of the larger group) on the training rows (0.05 / 0.68 = 0.074).
    share = max(np.mean(d["str"] == g) for g in np.unique(d["str"]))
    assert fair_o["demographic_parity_difference"] <= bound / share + 0.02
    assert fair_o["demographic_parity_difference"] <= base_o["demographic_parity_difference"] / 2
    assert fair_o["accuracy"] >= base_o["accuracy"] - 0.03


@pytest.mark.slow
def test_adult_demographic_parity_max_min_target(adult):
    # To hold fairness_report's max - min DP gap to d with two groups, give fairlearn the
    # bound d * (share of the larger group).
    d, target = adult, 0.05
    share = max(np.mean(d["str"] == g) for g in np.unique(d["str"]))
    est = ReductionsWrapper(constraints="demographic_parity", difference_bound=target * share)
    pred = est.fit(d["Xtr"], d["ytr"], sensitive_features=d["str"]).predict(d["Xte"])
    assert _overall(d, pred)["demographic_parity_difference"] <= target + 0.02


@pytest.mark.slow
def test_adult_equalized_odds(adult):
    d, bound = adult, 0.05
    base = LogisticRegression(max_iter=1000).fit(d["Xtr"], d["ytr"]).predict(d["Xte"])
    est = ReductionsWrapper(constraints="equalized_odds", difference_bound=bound)
    pred = est.fit(d["Xtr"], d["ytr"], sensitive_features=d["str"]).predict(d["Xte"])
    base_o, fair_o = _overall(d, base), _overall(d, pred)
    assert gap_vs_overall(d["yte"], pred, d["ste"], 1, within=[0, 1]) <= bound + 0.02
    assert fair_o["equalized_odds_difference"] <= base_o["equalized_odds_difference"]
    assert fair_o["accuracy"] >= base_o["accuracy"] - 0.03


@pytest.mark.parametrize("method", ["exponentiated_gradient", "grid_search"])
def test_to_module_reproduces_predict_proba_and_scripts(method):
    import torch

    rng = np.random.default_rng(3)
    X = rng.normal(size=(500, 4))
    g = rng.integers(0, 2, 500)
    y = (X[:, 0] + 1.5 * g + rng.normal(size=500) > 0.7).astype(int)
    w = ReductionsWrapper(method=method, difference_bound=0.02, grid_size=5).fit(X, y, sensitive_features=g)
    module = w.to_module()
    xt = torch.tensor(X, dtype=torch.float32)
    p = torch.softmax(module(xt), 1)[:, 1].numpy()
    assert np.abs(p - w.predict_proba(X)[:, 1]).max() < 1e-5
    traced = torch.jit.trace(module, xt[:2])
    assert torch.equal(traced(xt), module(xt))


def test_to_module_refuses_non_linear_members():
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    X, g = rng.normal(size=(200, 2)), rng.integers(0, 2, 200)
    y = (X[:, 0] + g > 0.5).astype(int)
    w = ReductionsWrapper(DecisionTreeClassifier(max_depth=2), max_iter=5).fit(X, y, sensitive_features=g)
    with pytest.raises(InputError, match="linear"):
        w.to_module()
