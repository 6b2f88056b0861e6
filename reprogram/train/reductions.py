"""The reductions approach to fair classification, as a scikit-learn estimator.

:class:`ReductionsWrapper` wraps fairlearn's ``ExponentiatedGradient`` (Agarwal et al.,
ICML 2018, "A Reductions Approach to Fair Classification") or its ``GridSearch`` (section
3.4 of the same paper) so that it behaves like any scikit-learn classifier: parameters are
stored untouched by ``__init__`` and checked in ``fit``, it passes ``sklearn.base.clone``,
works as the last step of a ``Pipeline`` and inside ``GridSearchCV``, and takes the groups
through the ``sensitive_features=`` keyword of ``fit``, which scikit-learn's metadata
routing forwards (the request is on by default, since ``fit`` cannot run without it).

What the wrapper adds to fairlearn: constraint names as well as constraint objects, any
two class labels (fairlearn's classification moments need 0/1), ``sample_weight`` (by
repetition, see ``fit``), a ``predict`` that is deterministic although the fitted
``ExponentiatedGradient`` classifier is randomized, and errors that are
:class:`reprogram.ReprogramError` subclasses with one-line messages.
"""

from __future__ import annotations

import copy
import inspect
import warnings
from collections.abc import Mapping
from numbers import Integral, Real

import numpy as np
import pandas as pd
from fairlearn.reductions import (
    ClassificationMoment,
    DemographicParity,
    EqualizedOdds,
    ErrorRateParity,
    ExponentiatedGradient,
    FalsePositiveRateParity,
    GridSearch,
    Moment,
    TruePositiveRateParity,
)
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from reprogram.errors import (
    GroupError,
    InputError,
    LengthMismatchError,
    MissingValuesError,
    NotFittedError,
    first_line,
)

__all__ = ["ReductionsWrapper", "CONSTRAINT_NAMES", "fit_reductions", "reductions_report"]

# Canonical names -> fairlearn classification moments.
_CONSTRAINTS: dict[str, type[ClassificationMoment]] = {
    "demographic_parity": DemographicParity,
    "equalized_odds": EqualizedOdds,
    "true_positive_rate_parity": TruePositiveRateParity,
    "false_positive_rate_parity": FalsePositiveRateParity,
    "error_rate_parity": ErrorRateParity,
}
# Short names the rest of reprogram uses (the CLI's --criterion dp|eo).
_ALIASES = {
    "dp": "demographic_parity",
    "eo": "equalized_odds",
    "equal_opportunity": "true_positive_rate_parity",
    "tpr_parity": "true_positive_rate_parity",
    "fpr_parity": "false_positive_rate_parity",
}
#: The constraint names :class:`ReductionsWrapper` accepts (aliases aside).
CONSTRAINT_NAMES = tuple(_CONSTRAINTS)

_METHODS = ("exponentiated_gradient", "grid_search")

# pandas 3 names its deprecations Pandas4Warning; older pandas used FutureWarning.
_PANDAS_DEPRECATION = getattr(pd.errors, "Pandas4Warning", FutureWarning)


class _NotFitted(NotFittedError, _SklearnNotFittedError):
    """Unfitted use: a reprogram error for the CLI, scikit-learn's own for sklearn tools."""


class _InputTypeError(InputError, TypeError):
    """A value of the wrong type in the data (a dict in X): still a TypeError for callers."""


def _wrap(e: Exception, prefix: str = "") -> InputError:
    """One-line InputError for a third-party ValueError/TypeError, keeping the built-in type."""
    cls = _InputTypeError if isinstance(e, TypeError) else InputError
    return cls(prefix + first_line(e))


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on a uint64 array (wrapping arithmetic): a well-mixed hash."""
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _row_uniforms(X, seed: int) -> np.ndarray:
    """One number in [0, 1) per row of X, a function of the row's values and ``seed`` only.

    The same row gets the same number in any batch, at any position, in any process.
    """
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X))
    h = pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)
    key = _splitmix64(np.array([seed], dtype=np.uint64))
    mixed = _splitmix64(h ^ key)
    # The top 53 bits as a double in [0, 1), as numpy's own random doubles are made.
    return (mixed >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _is_real(v) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and np.isfinite(v)


class ReductionsWrapper(ClassifierMixin, BaseEstimator):
    """Binary classifier trained under a fairness constraint by fairlearn's reductions.

    The reductions approach turns "minimise error subject to a fairness constraint" into a
    sequence of cost-sensitive classification problems that ``estimator`` solves (refitted
    with per-row ``sample_weight`` and relabelled targets), steered by Lagrange
    multipliers. ``method="exponentiated_gradient"`` (default) runs fairlearn's
    ``ExponentiatedGradient``: it returns a *randomized* classifier, a mixture of the
    fitted estimators with weights ``weights_``, which satisfies the constraint (up to
    the approximation fairlearn guarantees) when each prediction is drawn from the
    mixture. ``method="grid_search"`` runs fairlearn's ``GridSearch``: ``grid_size``
    multiplier values, one fitted estimator each, and keeps the single one with the best
    trade-off of error and violation (deterministic, but with no guarantee that the
    bound is met).

    Parameters
    ----------
    estimator : scikit-learn classifier or None
        The learner the reduction refits; its ``fit`` must take ``sample_weight``.
        Default ``LogisticRegression(max_iter=1000)``. Cloned in ``fit``, never fitted
        itself.
    constraints : str, fairlearn ``ClassificationMoment`` (instance or class)
        The fairness constraint: one of ``"demographic_parity"``, ``"equalized_odds"``,
        ``"true_positive_rate_parity"``, ``"false_positive_rate_parity"``,
        ``"error_rate_parity"`` (aliases ``"dp"``, ``"eo"``, ``"equal_opportunity"``), or
        a fairlearn object such as ``EqualizedOdds(difference_bound=0.02)``. An object is
        deep-copied in ``fit``; the parameter itself is never changed.
    eps : float, default 0.01
        ``ExponentiatedGradient``'s ``eps``: since fairlearn 0.5 it only sets the bound
        ``B = 1 / eps`` on the L1 norm of the multipliers (how hard violations are
        pushed back), not the allowed violation; that is ``difference_bound``.
    max_iter, nu, eta0 :
        ``ExponentiatedGradient``'s iteration cap, duality-gap tolerance (None: fairlearn's
        automatic, statistical setting) and initial learning rate.
    method : {"exponentiated_gradient", "grid_search"}
    grid_size : int, default 10
        Number of multiplier values ``GridSearch`` tries.
    difference_bound : float or None
        Allowed violation of a constraint given by name (fairlearn's default, 0.01, when
        None). In fairlearn's moments the bound applies to each group's rate *minus the
        overall rate*, so the max - min gap over groups that ``fairness_report`` prints
        can be larger (up to about twice the bound, more with unequal group sizes).
        Must be None when ``constraints`` is an object: set it on the object.
    random_state : int, numpy RandomState / Generator or None
        Seed of the rounding in ``predict`` (``ExponentiatedGradient`` only). None means
        0, so that predictions are reproducible by default.

    Attributes
    ----------
    classes_ : ndarray of the two class labels, sorted; ``classes_[1]`` is the class the
        constraints call positive (for TPR/FPR parity and equalized odds).
    n_features_in_, feature_names_in_ : as scikit-learn (names only for a DataFrame X).
    mitigator_ : the fitted ``ExponentiatedGradient`` or ``GridSearch``.
    constraints_ : the ``ClassificationMoment`` the mitigator was built from.
    n_iter_ : iterations run (EG), or estimators fitted (``GridSearch``).
    predictors_ : list of the fitted estimators of the mixture (``GridSearch``: the
        selected one).
    weights_ : ndarray, their mixture weights (``GridSearch``: ``[1.0]``).

    Notes
    -----
    *Randomized predictions.* ``predict_proba(X)[:, 1]`` is, for EG, the probability
    ``p(x) = sum_t weights_[t] * predictors_[t].predict(x)`` with which the randomized
    classifier says ``classes_[1]`` (what fairlearn's private ``_pmf_predict`` returns);
    it is not a calibrated probability of the label. fairlearn's own
    ``ExponentiatedGradient.predict`` draws a fresh uniform number per row, so two calls
    disagree, and with a fixed ``random_state`` a row's prediction still depends on its
    position in the batch. ``predict`` here draws the uniform number ``u(x)`` from a hash
    of the row's values and the seed, and predicts ``classes_[1]`` when ``u(x) < p(x)``:
    deterministic for each row, independent of batching, identical rows get identical
    predictions, and over a population each row is still positive with probability
    ``p(x)``, which is what the fairness guarantee is about. Thresholding ``p(x)`` at 0.5
    instead would be deterministic too but can break the constraint.

    *sample_weight.* fairlearn's moments weigh every row equally, so ``fit`` honours
    whole-number weights by repeating row i ``sample_weight[i]`` times (exactly
    scikit-learn's meaning of a weight); fractional weights are refused.

    *scikit-learn checks.* ``tests/train/test_reductions.py`` runs scikit-learn's
    ``check_estimator`` on a test subclass that derives ``sensitive_features`` from the
    first column of X when it is not passed; the checks that cannot apply (multi-class
    targets, fractional weights) are listed there as expected failures.
    """

    # The groups are not optional for fit, so routing asks for them by default: a
    # Pipeline or GridSearchCV with metadata routing enabled forwards
    # ``sensitive_features=`` to this step without a set_fit_request call.
    __metadata_request__fit = {"sensitive_features": True}

    def __init__(
        self,
        estimator=None,
        constraints="demographic_parity",
        *,
        eps=0.01,
        max_iter=50,
        nu=None,
        eta0=2.0,
        method="exponentiated_gradient",
        grid_size=10,
        difference_bound=None,
        random_state=None,
    ):
        self.estimator = estimator
        self.constraints = constraints
        self.eps = eps
        self.max_iter = max_iter
        self.nu = nu
        self.eta0 = eta0
        self.method = method
        self.grid_size = grid_size
        self.difference_bound = difference_bound
        self.random_state = random_state

    # ------------------------------------------------------------------ parameters

    def _check_params(self) -> None:
        if self.method not in _METHODS:
            raise InputError(f"method must be one of {', '.join(_METHODS)}; got {self.method!r}")
        if not (_is_real(self.eps) and self.eps > 0):
            raise InputError(f"eps must be a number > 0; got {self.eps!r}")
        if not (isinstance(self.max_iter, Integral) and not isinstance(self.max_iter, bool) and self.max_iter >= 1):
            raise InputError(f"max_iter must be an integer >= 1; got {self.max_iter!r}")
        if self.nu is not None and not (_is_real(self.nu) and self.nu > 0):
            raise InputError(f"nu must be None or a number > 0; got {self.nu!r}")
        if not (_is_real(self.eta0) and self.eta0 > 0):
            raise InputError(f"eta0 must be a number > 0; got {self.eta0!r}")
        if not (isinstance(self.grid_size, Integral) and not isinstance(self.grid_size, bool) and self.grid_size >= 1):
            raise InputError(f"grid_size must be an integer >= 1; got {self.grid_size!r}")
        db = self.difference_bound
        if db is not None and not (_is_real(db) and 0 <= db <= 1):
            raise InputError(f"difference_bound must be None or a number in [0, 1]; got {db!r}")
        rs = self.random_state
        if not (rs is None or isinstance(rs, (np.random.RandomState, np.random.Generator))
                or (isinstance(rs, Integral) and not isinstance(rs, bool) and rs >= 0)):
            raise InputError(f"random_state must be None, an integer >= 0 or a numpy random generator; got {rs!r}")

    def _resolve_constraints(self) -> ClassificationMoment:
        """A fresh ClassificationMoment for one fit; never the parameter object itself."""
        c = self.constraints
        kwargs = {} if self.difference_bound is None else {"difference_bound": float(self.difference_bound)}
        valid = ", ".join(CONSTRAINT_NAMES)
        if isinstance(c, str):
            key = c.strip().lower().replace("-", "_").replace(" ", "_")
            key = _ALIASES.get(key, key)
            if key not in _CONSTRAINTS:
                raise InputError(f"unknown constraints {c!r}; valid names: {valid} (or a fairlearn ClassificationMoment)")
            return _CONSTRAINTS[key](**kwargs)
        if isinstance(c, type) and issubclass(c, ClassificationMoment):
            try:
                return c(**kwargs)
            except (TypeError, ValueError) as e:
                raise InputError(f"cannot build {c.__name__}: {first_line(e)}") from e
        if isinstance(c, Moment):
            if not isinstance(c, ClassificationMoment):
                raise InputError(
                    f"constraints {type(c).__name__} is a loss moment for regression; ReductionsWrapper "
                    f"is a classifier: use a ClassificationMoment or one of {valid}"
                )
            if self.difference_bound is not None:
                raise InputError(
                    "difference_bound applies only to constraints given by name; set it on the "
                    f"{type(c).__name__} object instead (difference_bound=...)"
                )
            if getattr(c, "data_loaded", False):
                raise InputError(f"the {type(c).__name__} object already holds data (load_data was called); pass a fresh one")
            return copy.deepcopy(c)
        raise InputError(f"constraints must be a name ({valid}) or a fairlearn ClassificationMoment; got {c!r}")

    def _make_estimator(self):
        if self.estimator is None:
            return LogisticRegression(max_iter=1000)
        est = self.estimator
        if not (hasattr(est, "fit") and hasattr(est, "predict")):
            raise InputError(f"estimator must have fit and predict methods; got {type(est).__name__}")
        try:
            params = inspect.signature(est.fit).parameters
        except (TypeError, ValueError):  # a builtin or C-level fit: let fairlearn try
            params = None
        if params is not None and "sample_weight" not in params and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()
        ):
            raise InputError(
                f"estimator {type(est).__name__}.fit does not take sample_weight, which the "
                "reductions need to reweight rows; choose one that does (e.g. LogisticRegression)"
            )
        # safe=False: an estimator without get_params is deep-copied rather than refused.
        return clone(est, safe=False)

    # ------------------------------------------------------------------ data checks

    def _check_X(self, X, *, reset: bool):
        try:
            if isinstance(X, pd.DataFrame):
                # Keep the frame as it is: the estimator may be a pipeline that selects
                # columns by name or encodes string columns itself.
                validate_data(self, X, reset=reset, skip_check_array=True)
                if X.shape[0] == 0:
                    raise InputError("X has 0 rows; fit and predict need at least one")
                return X
            # Values (NaN, strings) are the estimator's business; shape and count are ours.
            return validate_data(self, X, reset=reset, dtype=None, ensure_all_finite=False)
        except InputError:
            raise
        except (ValueError, TypeError) as e:
            if "Reshape your data" in str(e):
                # sklearn's message spans lines and shows the array; keep its advice only.
                raise InputError(
                    "X must be 2-D (rows x features), got a 1-D array; Reshape your data with "
                    "X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for a single row"
                ) from e
            raise _wrap(e) from e

    def _encode_y(self, y, n: int) -> np.ndarray:
        if y is None:
            raise InputError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        try:
            y = column_or_1d(y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y, warn=True)
        except ValueError as e:
            raise _wrap(e, "y: ") from e
        if len(y) != n:
            raise LengthMismatchError(f"y has {len(y)} rows but X has {n}")
        missing = int(np.count_nonzero(pd.isna(y)))
        if missing:
            raise MissingValuesError(f"y has {missing} missing value(s) (NaN/None); drop or fill those rows")
        try:
            check_classification_targets(y)
            classes, y01 = np.unique(y, return_inverse=True)
        except (ValueError, TypeError) as e:
            raise _wrap(e, "y: ") from e
        if len(classes) != 2:
            shown = ", ".join(map(str, classes[:10])) + (" ..." if len(classes) > 10 else "")
            raise InputError(
                f"Only binary classification is supported: y has {len(classes)} class(es) ({shown}); "
                "fairlearn's reductions need exactly two"
            )
        self.classes_ = classes
        return y01.astype(np.int64)

    @staticmethod
    def _check_sensitive(sensitive_features, n: int) -> np.ndarray:
        """The groups as a numpy object array, (n,) or (n, k); fairlearn merges k columns."""
        sf = sensitive_features
        if isinstance(sf, Mapping):
            sf = pd.DataFrame(dict(sf))
        if isinstance(sf, (pd.DataFrame, pd.Series)):
            arr = sf.to_numpy(dtype=object)
        else:
            arr = np.asarray(sf, dtype=object)
        if arr.ndim == 0:
            raise InputError(
                f"sensitive_features must be one group value per row (array, Series or DataFrame); got {sf!r}"
            )
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr[:, 0]
        if arr.ndim > 2:
            raise InputError(f"sensitive_features must be 1-D or 2-D; got shape {arr.shape}")
        if arr.shape[0] != n:
            raise LengthMismatchError(f"sensitive_features has {arr.shape[0]} rows but X has {n}")
        bad = pd.isna(arr) if arr.ndim == 1 else pd.isna(arr).any(axis=1)
        if bad.any():
            raise MissingValuesError(
                f"sensitive_features has {int(bad.sum())} row(s) with a missing group; drop or fill them"
            )
        groups = pd.unique(arr) if arr.ndim == 1 else pd.unique(pd.Series(map(tuple, arr)))
        if len(groups) < 2:
            raise GroupError(
                f"sensitive_features has one group ({groups[0]!r}); a fairness constraint needs at least two"
            )
        return arr

    # ------------------------------------------------------------------ fit / predict

    def fit(self, X, y, *, sensitive_features=None, sample_weight=None):
        """Fit the constrained classifier.

        Parameters
        ----------
        X : array-like (n, d) or DataFrame, passed to ``estimator`` as given.
        y : the labels, exactly two distinct values of any type.
        sensitive_features : the group of every row: array, Series, DataFrame or mapping
            of columns; several columns make intersectional groups. Required.
        sample_weight : whole-number weights, honoured by repeating rows (see Notes).
        """
        if sensitive_features is None:
            raise InputError(
                "ReductionsWrapper.fit needs sensitive_features=..., the group of every row "
                "(an array, Series or DataFrame of one or more columns)"
            )
        self._check_params()
        constraints = self._resolve_constraints()
        estimator = self._make_estimator()

        X = self._check_X(X, reset=True)
        n = X.shape[0]
        y01 = self._encode_y(y, n)
        sf = self._check_sensitive(sensitive_features, n)

        if sample_weight is not None:
            rows = self._repeat_rows(sample_weight, n)
            X = X.iloc[rows].reset_index(drop=True) if isinstance(X, pd.DataFrame) else X[rows]
            y01, sf = y01[rows], sf[rows]
            if len(np.unique(y01)) < 2:
                raise InputError("after applying sample_weight only one class has weight > 0; both need some")

        if self.method == "exponentiated_gradient":
            mitigator = ExponentiatedGradient(
                estimator, constraints, eps=float(self.eps), max_iter=int(self.max_iter),
                nu=None if self.nu is None else float(self.nu), eta0=float(self.eta0),
            )
        else:
            mitigator = GridSearch(estimator, constraints, grid_size=int(self.grid_size))
        try:
            with warnings.catch_warnings():
                # fairlearn 0.15 grows pandas Series with .at[new_key] = ... and sets bools
                # into float Series, which pandas 3 deprecates: hundreds of warnings per
                # fit that our users cannot act on.
                warnings.filterwarnings("ignore", category=_PANDAS_DEPRECATION, module="fairlearn")
                mitigator.fit(X, y01, sensitive_features=sf)
        except (ValueError, TypeError) as e:
            prefix = f"fairlearn {type(mitigator).__name__} failed: "
            if "sample_weight contains NaN" in str(e):
                # fairlearn divides the reduction's example weights by their sum, which is 0
                # when some multipliers cancel the error weights of every row exactly.
                raise InputError(prefix + self._zero_weights_hint(y01, sf)) from e
            raise _wrap(e, prefix) from e

        if self.method == "exponentiated_gradient":
            w = mitigator.weights_.sort_index()
            self.predictors_ = [mitigator.predictors_[i] for i in w.index]
            self.weights_ = w.to_numpy(dtype=np.float64)
            self.n_iter_ = int(mitigator.last_iter_) + 1
        else:
            self.predictors_ = [mitigator.predictors_[mitigator.best_idx_]]
            self.weights_ = np.ones(1)
            self.n_iter_ = len(mitigator.predictors_)
        self.mitigator_ = mitigator
        # The unloaded copy; mitigator_.constraints_ is fairlearn's copy holding the data.
        self.constraints_ = constraints
        rs = self.random_state
        if isinstance(rs, np.random.RandomState):
            self._rounding_seed = int(rs.randint(0, 2**31 - 1))
        elif isinstance(rs, np.random.Generator):
            self._rounding_seed = int(rs.integers(0, 2**31 - 1))
        else:
            self._rounding_seed = 0 if rs is None else int(rs)
        return self

    @staticmethod
    def _zero_weights_hint(y01: np.ndarray, sf: np.ndarray) -> str:
        keys = pd.Series(sf) if sf.ndim == 1 else pd.Series(map(tuple, sf))
        labels_per_group = pd.Series(y01).groupby(keys.to_numpy()).nunique()
        why = (
            "every group has a single label here, so the constraint and the error cancel"
            if (labels_per_group == 1).all()
            else "some multipliers cancelled the error weights of every row"
        )
        return f"the reduction's example weights were all zero ({why}); fairlearn cannot fit such data"

    @staticmethod
    def _repeat_rows(sample_weight, n: int) -> np.ndarray:
        try:
            sw = np.asarray(sample_weight, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise InputError(f"sample_weight must be numbers: {first_line(e)}") from e
        if sw.ndim == 0:
            sw = np.full(n, float(sw))
        if sw.ndim != 1 or sw.shape[0] != n:
            raise LengthMismatchError(f"sample_weight has shape {sw.shape} but X has {n} rows")
        if not np.isfinite(sw).all() or (sw < 0).any():
            raise InputError("sample_weight must be finite and >= 0")
        counts = np.round(sw)
        if not np.allclose(sw, counts, rtol=0, atol=1e-9):
            raise InputError(
                "sample_weight must be whole numbers: fairlearn's reductions weigh rows equally, so "
                "ReductionsWrapper repeats row i sample_weight[i] times"
            )
        if counts.sum() == 0:
            raise InputError("sample_weight is zero for every row")
        return np.repeat(np.arange(n), counts.astype(np.int64))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "mitigator_")

    def _fitted_X(self, X):
        try:
            check_is_fitted(self)
        except _SklearnNotFittedError:
            raise _NotFitted(
                f"This {type(self).__name__} is not fitted yet; call fit(X, y, sensitive_features=...) first"
            ) from None
        return self._check_X(X, reset=False)

    def _positive_rate(self, X) -> np.ndarray:
        """P(predict classes_[1] | x) under the fitted (EG: randomized) classifier."""
        p = np.zeros(X.shape[0], dtype=np.float64)
        try:
            for w, h in zip(self.weights_, self.predictors_):
                if w > 0:  # zero-weight members cannot change the mixture; skip their cost
                    p += w * np.asarray(h.predict(X), dtype=np.float64)
        except (ValueError, TypeError) as e:
            raise _wrap(e) from e
        return np.clip(p, 0.0, 1.0)

    def predict_proba(self, X) -> np.ndarray:
        """(n, 2) probabilities of ``classes_[0]`` and ``classes_[1]``.

        Exponentiated gradient: the randomized classifier's probability of predicting each
        class (the mixture of its members' hard predictions), not a calibrated P(y | x).
        Grid search: the selected estimator's own ``predict_proba``.
        """
        X = self._fitted_X(X)
        if self.method == "exponentiated_gradient" or not hasattr(self.predictors_[0], "predict_proba"):
            p1 = self._positive_rate(X)
        else:
            best = self.predictors_[0]
            try:
                proba = np.asarray(best.predict_proba(X), dtype=np.float64)
            except (ValueError, TypeError) as e:
                raise _wrap(e) from e
            # A multiplier that relabels every row the same way leaves fairlearn with a
            # constant DummyClassifier that knows only one class.
            learned = list(getattr(best, "classes_", [0, 1]))
            p1 = proba[:, learned.index(1)] if 1 in learned else np.zeros(X.shape[0])
        return np.column_stack([1.0 - p1, p1])

    def predict(self, X) -> np.ndarray:
        """Class labels; deterministic per row (see the class Notes for EG's rounding)."""
        X = self._fitted_X(X)
        if self.method == "exponentiated_gradient":
            p1 = self._positive_rate(X)
            pos = _row_uniforms(X, self._rounding_seed) < p1
        else:
            try:
                pos = np.asarray(self.predictors_[0].predict(X)) == 1
            except (ValueError, TypeError) as e:
                raise _wrap(e) from e
        return self.classes_[pos.astype(np.int64)]

    def to_module(self):
        """The fitted classifier as a torch module from encoded features to logits.

        Supported when every member of the mixture with weight > 0 is linear (has
        ``coef_`` and ``intercept_``, as ``LogisticRegression``), so the module can be
        saved as the TorchScript frozen model the rest of the toolkit takes. The
        module's logits are ``[log(1 - p), log p]`` with ``p`` the mixture's
        probability of predicting ``classes_[1]`` (:meth:`predict_proba`); a single
        member (grid search) keeps its own logit ``a·x + b`` instead. Thresholding ``p``
        at 0.5 (argmax of the logits) is deterministic but is not the randomized
        classifier the constraint is guaranteed for: see the class Notes.
        """
        import torch

        from reprogram.train.models import LinearMixture

        check_is_fitted(self)
        members = [(w, h) for w, h in zip(self.weights_, self.predictors_) if w > 0]
        for _, h in members:
            coef = getattr(h, "coef_", None)
            if coef is None or np.asarray(coef).shape[0] != 1 or list(getattr(h, "classes_", [0, 1])) != [0, 1]:
                raise InputError(f"to_module needs linear binary members (such as LogisticRegression); "
                                 f"{type(h).__name__} is not one")
        coef = torch.tensor(np.stack([np.asarray(h.coef_, dtype=np.float64)[0] for _, h in members]), dtype=torch.float32)
        bias = torch.tensor([float(np.ravel(h.intercept_)[0]) for _, h in members], dtype=torch.float32)
        weights = torch.tensor([w for w, _ in members], dtype=torch.float32)
        return LinearMixture(coef, bias, weights / weights.sum())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False
        return tags


def fit_reductions(train, **params) -> ReductionsWrapper:
    """Fit a :class:`ReductionsWrapper` (``params``) on a tabular dataset's encoded features."""
    X, y, g = _tabular_arrays(train)
    return ReductionsWrapper(**params).fit(X, y, sensitive_features=g)


def reductions_report(wrapper: ReductionsWrapper, ds, **report_kw):
    """The fairness report of a fitted wrapper on a tabular dataset.

    Predictions are the wrapper's ``predict`` (exponentiated gradient: its randomized
    classifier, rounded per row as the class Notes say), scores its ``predict_proba``.
    """
    from reprogram.metrics import fairness_report

    X, y, g = _tabular_arrays(ds)
    classes = np.asarray(ds.classes, dtype=object)
    names = np.asarray(ds.group_names, dtype=object)
    pred = wrapper.predict(X)
    return fairness_report(classes[y], classes[pred], wrapper.predict_proba(X)[:, 1], {"group": names[g]},
                           classes=list(ds.classes), **report_kw)


def _tabular_arrays(ds):
    if not hasattr(ds, "feature_encoder") or not hasattr(ds, "tensors"):
        raise InputError("the reductions method takes tabular data (feature columns), not images or text")
    X, y, g = ds.tensors
    return X.numpy(), y.numpy(), g.numpy()
