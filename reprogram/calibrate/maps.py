"""Calibration maps: score -> calibrated probability, fitted on held-out (score, label) pairs.

Each map follows scikit-learn conventions (parameters in ``__init__``, fitted state in
attributes ending in ``_``) and offers ``fit(scores, y)``, ``transform(scores)`` (also
``__call__``), ``to_module()`` (a torch module computing the same map, exportable to
ONNX) and ``save(dir)`` / ``load(dir)`` (safetensors + JSON, no pickle).

Scores are probabilities: 1-D P(class 1) for binary tasks, (N, C) for C classes.
Multi-class: :class:`TemperatureMap` is natively multi-class; the others calibrate each
class one-vs-rest and renormalize the rows to sum to 1.

The maps (formulas on p = P(class 1), z = ln(p / (1 - p)), sigma the logistic function):

* :class:`PlattMap`: ``sigma(a * z + b)``, a logistic regression on the logit, with
  Platt's smoothed targets ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)`` as
  scikit-learn's ``CalibratedClassifierCV(method="sigmoid")`` uses (``smoothing=False``
  for plain 0/1 targets).
* :class:`TemperatureMap`: ``softmax(ln p / T)`` (binary: ``sigma(z / T)``), T fitted by
  L-BFGS on the negative log-likelihood over ``ln T``.
* :class:`BetaMap` (Kull, Silva Filho & Flach 2017, the three-parameter "abm" form):
  ``sigma(a ln p - b ln(1 - p) + c)`` with ``a, b >= 0`` (a feature whose coefficient
  comes out negative is dropped and the fit redone, as in their ``betacal`` code).
* :class:`IsotonicMap`: scikit-learn's ``IsotonicRegression`` (clipped to [0, 1] and
  constant outside the fitted range), applied as linear interpolation between its knots.
* :class:`HistogramMap`: equal-mass bins of the training scores, each mapped to its
  fraction of positives (Zadrozny & Elkan 2001).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.optimize import minimize
from sklearn.base import BaseEstimator
from torch import nn

from reprogram.calibrate.bank import MapBank, Table, table_values
from reprogram.calibrate.scores import EPS, check_labels, check_scores, log_odds_features, require_both_classes
from reprogram.errors import InputError, NotFittedError

__all__ = ["CalibrationMap", "PlattMap", "TemperatureMap", "BetaMap", "IsotonicMap", "HistogramMap", "MAPS",
           "make_map", "BinaryMapModule", "OneVsRestModule", "SoftmaxTemperatureModule"]


def _to_float32_grid(p: np.ndarray) -> np.ndarray:
    # Knots and bin edges live at float32 precision, the precision of the exported ONNX
    # graph: a knot float32 cannot tell from its neighbour would make the graph and numpy
    # disagree between them.
    return p.astype(np.float32).astype(np.float64)


def fit_logistic(X: np.ndarray, t: np.ndarray, *, tol: float = 1e-12, max_iter: int = 100) -> np.ndarray:
    """Coefficients minimising the cross-entropy of ``sigma(X @ beta)`` against targets ``t`` in [0, 1].

    Newton's method with a backtracking line search. Written by hand because the maps
    have two or three coefficients and need soft targets (Platt's), which
    ``LogisticRegression`` does not take, and an optimum exact enough to match
    scikit-learn's calibration fits to 1e-6: Newton converges quadratically to it.
    """

    def loss(beta):
        z = X @ beta
        return float(np.sum(np.logaddexp(0.0, z) - t * z))

    beta = np.zeros(X.shape[1])
    f = loss(beta)
    for _ in range(max_iter):
        z = X @ beta
        p = 1.0 / (1.0 + np.exp(-z))
        grad = X.T @ (p - t)
        hess = (X * (p * (1.0 - p))[:, None]).T @ X + 1e-12 * np.eye(X.shape[1])
        step = np.linalg.solve(hess, grad)
        lr = 1.0
        while True:
            new = beta - lr * step
            f_new = loss(new)
            if f_new <= f or lr < 1e-10:
                break
            lr *= 0.5
        beta, f_old, f = new, f, f_new
        if np.max(np.abs(lr * step)) < tol or abs(f_old - f) <= 1e-15 * max(1.0, abs(f)):
            break
    return beta


class CalibrationMap(BaseEstimator):
    """Base class: validation, one-vs-rest for multi-class, torch module and save/load."""

    name: ClassVar[str] = ""
    multiclass_native: ClassVar[bool] = False

    # --- what a subclass provides --------------------------------------------------
    def _fit_binary(self, p: np.ndarray, y: np.ndarray) -> Table:
        raise TypeError(f"{type(self).__name__} must define _fit_binary (the map of one positive-class score)")

    def _fit_multiclass(self, s: np.ndarray, y: np.ndarray) -> float:  # natively multi-class maps only
        raise TypeError(f"{type(self).__name__} has multiclass_native set but no _fit_multiclass")

    # --- public API ----------------------------------------------------------------
    def fit(self, scores: Any, y: Any) -> CalibrationMap:
        s = check_scores(scores)
        yy = check_labels(y, s)
        self.n_classes_ = 2 if s.ndim == 1 else s.shape[1]
        if s.ndim == 1:
            require_both_classes(yy)
            self.tables_ = [self._fit_binary(s, yy)]
        elif self.multiclass_native:
            self.tables_ = []
            self.temperature_ = self._fit_multiclass(s, yy)
        else:
            self.tables_ = []
            for k in range(s.shape[1]):
                yk = (yy == k).astype(np.int64)
                require_both_classes(yk, what=f"labels of class {k} (one-vs-rest)")
                self.tables_.append(self._fit_binary(s[:, k], yk))
        return self

    def transform(self, scores: Any) -> np.ndarray:
        self._check_fitted()
        s = check_scores(scores)
        self._check_width(s)
        return self._apply(s)

    def _apply(self, s: np.ndarray) -> np.ndarray:
        """The map on scores already checked (callers that split checked data skip re-checking)."""
        if s.ndim == 1:
            return table_values(self.tables_[0], s)
        if self.multiclass_native:
            return softmax_temperature(s, self.temperature_)
        return renormalize(np.stack([table_values(t, s[:, k]) for k, t in enumerate(self.tables_)], axis=1))

    def __call__(self, scores: Any) -> np.ndarray:
        return self.transform(scores)

    def to_module(self) -> nn.Module:
        """A torch module computing :meth:`transform` on float32 tensors (exportable to ONNX)."""
        self._check_fitted()
        if self.n_classes_ == 2:
            return BinaryMapModule(MapBank(self.tables_))
        if self.multiclass_native:
            return SoftmaxTemperatureModule(torch.tensor([self.temperature_]))
        return OneVsRestModule(MapBank(self.tables_), self.n_classes_)

    def save(self, path: str | os.PathLike) -> None:
        from reprogram.calibrate.artifacts import save_calibrator

        save_calibrator(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CalibrationMap:
        from reprogram.calibrate.artifacts import load_calibrator

        obj = load_calibrator(path)
        if not isinstance(obj, cls):
            raise InputError(f"{path} holds a {type(obj).__name__}, not a {cls.__name__}")
        return obj

    # --- helpers -------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "n_classes_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit() first")

    def _check_width(self, s: np.ndarray) -> None:
        width = 2 if s.ndim == 1 else s.shape[1]
        if width != self.n_classes_:
            raise InputError(f"scores have {width} classes but the map was fitted on {self.n_classes_}")

    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, tables = {}, []
        for i, t in enumerate(self.tables_):
            entry = {"kind": t.kind}
            if t.kind == "sigmoid":
                entry["w"] = list(t.w)
            else:
                tensors[f"t{i}.x"] = torch.from_numpy(np.asarray(t.x, dtype=np.float64))
                tensors[f"t{i}.y"] = torch.from_numpy(np.asarray(t.y, dtype=np.float64))
            tables.append(entry)
        meta = {"calibrator": type(self).__name__, "params": self.get_params(), "n_classes": self.n_classes_,
                "tables": tables}
        if self.multiclass_native and self.n_classes_ > 2:
            meta["temperature"] = self.temperature_
        return tensors, meta

    @classmethod
    def _from_state(cls, tensors: dict[str, torch.Tensor], meta: dict) -> CalibrationMap:
        obj = cls(**meta.get("params", {}))
        obj.n_classes_ = int(meta["n_classes"])
        obj.tables_ = []
        for i, entry in enumerate(meta["tables"]):
            if entry["kind"] == "sigmoid":
                obj.tables_.append(Table("sigmoid", w=tuple(float(v) for v in entry["w"])))
            else:
                obj.tables_.append(Table(entry["kind"], x=tensors[f"t{i}.x"].numpy(), y=tensors[f"t{i}.y"].numpy()))
        if "temperature" in meta:
            obj.temperature_ = float(meta["temperature"])
        elif cls.multiclass_native:  # binary temperature: w = (1/T, -1/T, 0)
            obj.temperature_ = 1.0 / obj.tables_[0].w[0]
        return obj


def renormalize(q: np.ndarray) -> np.ndarray:
    """Rows of one-vs-rest probabilities scaled to sum to 1 (a row of zeros becomes uniform)."""
    total = q.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, q / np.where(total > 0, total, 1.0), 1.0 / q.shape[1])


def softmax_temperature(s: np.ndarray, temperature: float | np.ndarray) -> np.ndarray:
    z = np.log(np.clip(s, EPS, 1.0)) / np.reshape(temperature, (-1, 1) if np.ndim(temperature) else ())
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class PlattMap(CalibrationMap):
    """``sigma(a * logit(p) + b)`` (see the module docstring); ``smoothing`` uses Platt's targets."""

    name = "platt"

    def __init__(self, smoothing: bool = True):
        self.smoothing = smoothing

    def _fit_binary(self, p, y):
        lp, l1p = log_odds_features(p)
        z = lp - l1p
        t = y.astype(np.float64)
        if self.smoothing:
            n1 = t.sum()
            n0 = len(t) - n1
            t = np.where(y > 0, (n1 + 1.0) / (n1 + 2.0), 1.0 / (n0 + 2.0))
        a, b = fit_logistic(np.column_stack([z, np.ones_like(z)]), t)
        return Table("sigmoid", w=(float(a), float(-a), float(b)))


class TemperatureMap(CalibrationMap):
    """``softmax(ln p / T)``; binary ``sigma(logit(p) / T)``; T by L-BFGS on the NLL over ln T.

    ``ln(1/T)`` is searched in [-10, 10] as in scikit-learn's temperature scaling, which
    this matches (same optimum of the same objective).
    """

    name = "temperature"
    multiclass_native = True

    def __init__(self, max_iter: int = 200):
        self.max_iter = max_iter

    def _optimize(self, nll_grad) -> float:
        res = minimize(nll_grad, np.zeros(1), jac=True, method="L-BFGS-B", bounds=[(-10.0, 10.0)],
                       options={"maxiter": self.max_iter, "gtol": 1e-12, "ftol": 1e-15})
        return float(np.exp(-res.x[0]))  # the temperature T = 1 / beta

    def _fit_binary(self, p, y):
        lp, l1p = log_odds_features(p)
        z = lp - l1p
        n = len(z)

        def nll_grad(v):
            beta = np.exp(v[0])
            u = beta * z
            loss = np.sum(np.logaddexp(0.0, u) - y * u) / n
            g = np.sum((1.0 / (1.0 + np.exp(-u)) - y) * u) / n
            return loss, np.array([g])

        t = self._optimize(nll_grad)
        self.temperature_ = t
        return Table("sigmoid", w=(1.0 / t, -1.0 / t, 0.0))

    def _fit_multiclass(self, s, y):
        logits = np.log(np.clip(s, EPS, 1.0))
        n = len(y)
        rows = np.arange(n)

        def nll_grad(v):
            beta = np.exp(v[0])
            u = beta * logits
            u = u - u.max(axis=1, keepdims=True)
            lse = np.log(np.exp(u).sum(axis=1))
            loss = np.sum(lse - u[rows, y]) / n
            prob = np.exp(u - lse[:, None])
            # d loss / d ln(beta) = beta * E_prob[logit] - beta * logit_y
            g = np.sum((prob * (beta * logits)).sum(axis=1) - beta * logits[rows, y]) / n
            return loss, np.array([g])

        return self._optimize(nll_grad)


class BetaMap(CalibrationMap):
    """Beta calibration, ``sigma(a ln p - b ln(1 - p) + c)`` with ``a, b >= 0`` (Kull et al. 2017)."""

    name = "beta"

    def _fit_binary(self, p, y):
        lp, l1p = log_odds_features(p)
        f1, f2, one = lp, -l1p, np.ones_like(lp)
        t = y.astype(np.float64)
        a, b, c = fit_logistic(np.column_stack([f1, f2, one]), t)
        # a negative coefficient would make the map non-monotone: drop that feature and
        # refit, as Kull et al.'s betacal does; if the other one then turns negative
        # too, only the intercept is left
        if a < 0:
            a, (b, c) = 0.0, fit_logistic(np.column_stack([f2, one]), t)
        elif b < 0:
            b, (a, c) = 0.0, fit_logistic(np.column_stack([f1, one]), t)
        if a < 0 or b < 0:
            a, b, (c,) = 0.0, 0.0, fit_logistic(one[:, None], t)
        return Table("sigmoid", w=(float(a), float(-b), float(c)))


class IsotonicMap(CalibrationMap):
    """scikit-learn's isotonic regression, as linear interpolation between its knots.

    Scores are taken at float32 precision (the precision of model outputs and of the
    exported graph) before fitting, so the knots are exactly representable there.
    """

    name = "isotonic"

    def _fit_binary(self, p, y):
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        iso.fit(_to_float32_grid(p), y.astype(np.float64))
        return Table("linear", x=np.asarray(iso.X_thresholds_, dtype=np.float64),
                     y=np.asarray(iso.y_thresholds_, dtype=np.float64))


class HistogramMap(CalibrationMap):
    """Equal-mass histogram binning: each of ``n_bins`` bins maps to its fraction of positives.

    Bins are cut at the training scores' quantiles; ties can merge bins, so there may be
    fewer. A score equal to an edge falls in the bin above it.
    """

    name = "histogram"

    def __init__(self, n_bins: int = 10):
        self.n_bins = n_bins

    def _fit_binary(self, p, y):
        if not isinstance(self.n_bins, (int, np.integer)) or self.n_bins < 1:
            raise InputError(f"n_bins must be a positive integer, not {self.n_bins!r}")
        q = _to_float32_grid(p)
        inner = np.quantile(q, np.arange(1, self.n_bins) / self.n_bins, method="inverted_cdf")
        edges = np.unique(_to_float32_grid(inner))
        edges = edges[edges > q.min()]  # an edge at the minimum would leave an empty first bin
        idx = np.searchsorted(edges, q, side="right")
        n = np.bincount(idx, minlength=len(edges) + 1).astype(np.float64)
        pos = np.bincount(idx, weights=y.astype(np.float64), minlength=len(edges) + 1)
        values = np.where(n > 0, pos / np.maximum(n, 1.0), y.mean())
        return Table("step", x=edges, y=values)


MAPS: dict[str, type[CalibrationMap]] = {
    m.name: m for m in (PlattMap, TemperatureMap, BetaMap, IsotonicMap, HistogramMap)
}


def make_map(name: str, **params) -> CalibrationMap:
    """A map by its name (``platt``, ``temperature``, ``beta``, ``isotonic``, ``histogram``)."""
    try:
        cls = MAPS[name]
    except KeyError:
        raise InputError(f"unknown calibration method {name!r}; use one of {', '.join(MAPS)}") from None
    return cls(**params)


# --- torch modules ---------------------------------------------------------------------
class BinaryMapModule(nn.Module):
    """``score [N] -> calibrated [N]`` through table 0 of a bank."""

    def __init__(self, bank: MapBank):
        super().__init__()
        self.bank = bank

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        return self.bank(score, torch.zeros_like(score, dtype=torch.int64))


class OneVsRestModule(nn.Module):
    """``scores [N, C] -> [N, C]``: class k through table ``offset + k``, rows renormalized."""

    def __init__(self, bank: MapBank, n_classes: int):
        super().__init__()
        self.bank = bank
        self.register_buffer("classes", torch.arange(n_classes, dtype=torch.int64))

    def forward(self, score: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        table = self.classes.expand_as(score) if offset is None else offset.unsqueeze(-1) + self.classes
        return renormalize_torch(self.bank(score, table))


class SoftmaxTemperatureModule(nn.Module):
    """``softmax(ln p / T)`` with one temperature, or one per row when indexed by ``which``."""

    def __init__(self, temperature: torch.Tensor):
        super().__init__()
        self.register_buffer("temperature", temperature.to(torch.float32))

    def forward(self, score: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor:
        t = self.temperature[0] if which is None else self.temperature[which].unsqueeze(-1)
        return torch.softmax(torch.log(score.clamp(EPS, 1.0)) / t, dim=-1)


def renormalize_torch(q: torch.Tensor) -> torch.Tensor:
    total = q.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(q, 1.0 / q.shape[-1])
    return torch.where(total > 0, q / torch.where(total > 0, total, torch.ones_like(total)), uniform)
