"""Multicalibration by iterative patching (Hébert-Johnson, Kim, Reingold, Rothblum 2018).

A score is *α-multicalibrated* with respect to a collection C of groups when, in every
group S of C and every score bin v, the mean label of the rows of S whose score falls in
v is within α of their mean score: |E[y | x ∈ S, f(x) ∈ v] - E[f(x) | x ∈ S, f(x) ∈ v]| <= α
(Ú. Hébert-Johnson, M. P. Kim, O. Reingold, G. N. Rothblum, "Multicalibration:
calibration for the (computationally-identifiable) masses", ICML 2018). Their Algorithm 1
reaches it by *patching*: find a (group, bin) cell that violates the condition, shift the
scores of that cell's rows by the violation, repeat. :func:`multicalibrate` runs that
loop on a binary classifier's P(class 1):

* **Collection C** — "everyone", every value of every sensitive column, and every
  intersection of up to ``max_order`` sensitive columns that occurs in the fit data
  (``"sex=F"``, ``"race=B"``, ``"sex=F|race=B"``; groups overlap), plus optional
  feature-threshold groups ``(feature, op, threshold)`` such as ``("age", ">", 40)``.
* **Bins** (the λ-discretization) — ``n_bins`` equal-width bins of the *current*,
  already patched score: ``bin = min(floor(score * n_bins), n_bins - 1)``.
* **Mass condition** — only cells with at least ``min_cell_size`` fit rows (and, when
  ``min_mass`` is given, at least that fraction of all fit rows) are checked: the mean
  of a handful of rows is noise.
* **Update** — each iteration patches the ONE cell with the largest gap
  ``|mean(y) - mean(score)|`` (greedy, worst first; ties go to the first group of C,
  then the lowest bin): ``score <- clip(score + step * (mean(y) - mean(score)), 0, 1)``
  on that cell's rows. With ``step = 1`` the squared error ``sum (score - y)^2`` of the
  fit data falls by ``n_cell * gap^2`` per patch, so the loop ends.
* **Stopping rule** — stop when the worst gap is <= α (converged), or after
  ``max_iter`` patches (a warning says it did not converge).

The patches ``(group, bin, delta)`` are kept in order; :meth:`Multicalibrator.transform`
replays them on new rows, recomputing each row's bin from its patched score exactly as
during fitting. Scores are handled in float32 throughout, so the torch module of
:meth:`Multicalibrator.to_module` and its ONNX export compute the same numbers bit for bit.
"""

from __future__ import annotations

import itertools
import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from reprogram.data.groups import GroupEncoder, as_columns, factorize
from reprogram.errors import (
    ColumnNotFoundError,
    GroupError,
    InputError,
    LengthMismatchError,
    MissingValuesError,
    NotFittedError,
)

__all__ = ["multicalibrate", "multicalibration_error", "Multicalibrator", "MulticalibrationModule"]

EVERYONE = "everyone"

_OPS = {
    ">": np.greater,
    ">=": np.greater_equal,
    "<": np.less,
    "<=": np.less_equal,
    "==": np.equal,
    "!=": np.not_equal,
}


# --------------------------------------------------------------------------- validation


def _check_scores(scores: Any, what: str = "scores") -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim == 2 and s.shape[1] == 2:
        raise InputError(f"{what} must be 1-D P(class 1); for an (n, 2) array of class probabilities pass scores[:, 1]")
    if s.ndim != 1:
        raise InputError(f"{what} must be a 1-D array of P(class 1), got shape {s.shape}")
    if s.size == 0:
        raise InputError(f"{what} are empty")
    if s.dtype.kind not in "biuf":
        raise InputError(f"{what} must be numbers in [0, 1], got dtype {s.dtype}")
    s = s.astype(np.float64, copy=False)
    nan = int(np.count_nonzero(np.isnan(s)))
    if nan:
        raise MissingValuesError(f"{what} have {nan} missing value(s) (NaN) of {s.size} rows")
    bad = (s < 0) | (s > 1)
    if bad.any():
        raise InputError(
            f"{what} must lie in [0, 1] (P(class 1)); {int(bad.sum())} of {s.size} rows are outside, "
            f"e.g. {s[np.flatnonzero(bad)[0]]:g}: pass probabilities, not logits")
    return s.astype(np.float32)


def _check_labels(y: Any, n: int) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise InputError(f"labels must be one-dimensional, got shape {a.shape}")
    if len(a) != n:
        raise LengthMismatchError(f"labels have {len(a)} rows but scores have {n}")
    if a.dtype.kind == "b":
        return a.astype(np.float64)
    if a.dtype.kind in "iuf":
        a = a.astype(np.float64, copy=False)
        nan = int(np.count_nonzero(np.isnan(a)))
        if nan:
            raise MissingValuesError(f"labels have {nan} missing value(s) (NaN) of {n} rows")
        bad = (a != 0) & (a != 1)
        if bad.any():
            vals = ", ".join(f"{v:g}" for v in np.unique(a[bad])[:5])
            raise InputError(f"labels must be binary 0/1; found other values: {vals}")
        return a
    missing = int(np.count_nonzero(pd.isna(a)))
    if missing:
        raise MissingValuesError(f"labels have {missing} missing value(s) of {n} rows")
    vals = ", ".join(map(str, pd.unique(a)[:5]))
    raise InputError(f"labels must be binary 0/1 (or bool); found values: {vals}")


def _check_feature_groups(feature_groups: Any) -> list[tuple[str, str, float]]:
    if feature_groups is None:
        return []
    if isinstance(feature_groups, tuple) and len(feature_groups) == 3 and isinstance(feature_groups[1], str):
        feature_groups = [feature_groups]
    out = []
    for fg in feature_groups:
        if not (isinstance(fg, (tuple, list)) and len(fg) == 3):
            raise InputError(f"a feature group is (feature, op, threshold), e.g. ('age', '>', 40); got {fg!r}")
        name, op, thr = fg
        if op not in _OPS:
            raise InputError(f"feature group {fg!r}: op must be one of {', '.join(_OPS)}, not {op!r}")
        if not isinstance(thr, numbers.Real) or isinstance(thr, bool) or not math.isfinite(thr):
            raise InputError(f"feature group {fg!r}: the threshold must be a finite number")
        thr = int(thr) if isinstance(thr, numbers.Integral) else float(thr)
        out.append((str(name), op, thr))
    return out


def _feature_group_name(name: str, op: str, thr: float) -> str:
    t = str(thr) if isinstance(thr, int) else np.format_float_positional(thr, trim="-")
    return f"{name}{op}{t}"


def _feature_masks(specs: list[tuple[str, str, float]], features: Any, n: int) -> np.ndarray:
    """[n, len(specs)] bool: row r is in feature group j."""
    if not specs:
        return np.zeros((n, 0), dtype=bool)
    if features is None:
        names = ", ".join(_feature_group_name(*s) for s in specs)
        raise InputError(f"the feature groups ({names}) need features=: a DataFrame or a mapping name -> array")
    if not isinstance(features, (pd.DataFrame, Mapping)):
        raise InputError(f"features must be a DataFrame or a mapping name -> array, not {type(features).__name__}")
    present = list(features.columns) if isinstance(features, pd.DataFrame) else list(features.keys())
    out = np.empty((n, len(specs)), dtype=bool)
    for j, (name, op, thr) in enumerate(specs):
        if name not in present:
            raise ColumnNotFoundError(name, present, role="feature")
        col = features[name]
        a = col.to_numpy() if isinstance(col, pd.Series) else np.asarray(col)
        if a.ndim != 1:
            raise InputError(f"feature {name!r} must be one-dimensional, got shape {a.shape}")
        if len(a) != n:
            raise LengthMismatchError(f"feature {name!r} has {len(a)} rows but scores have {n}")
        if a.dtype.kind not in "biuf":
            group = _feature_group_name(name, op, thr)
            raise InputError(f"feature {name!r} must be numeric for the threshold group {group!r}")
        a = a.astype(np.float64, copy=False)
        nan = int(np.count_nonzero(np.isnan(a)))
        if nan:
            raise MissingValuesError(f"feature {name!r} has {nan} missing value(s) (NaN) of {n} rows")
        out[:, j] = _OPS[op](a, thr)
    return out


def _check_params(alpha, n_bins, max_order, min_mass, min_cell_size, max_iter, step) -> None:
    if not isinstance(alpha, numbers.Real) or not alpha > 0 or not math.isfinite(alpha):
        raise InputError(f"alpha must be a number > 0, got {alpha!r}")
    for name, v, lo in (("n_bins", n_bins, 1), ("max_order", max_order, 0), ("min_cell_size", min_cell_size, 1),
                        ("max_iter", max_iter, 0)):
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < lo:
            raise InputError(f"{name} must be an integer >= {lo}, got {v!r}")
    if min_mass is not None and (not isinstance(min_mass, numbers.Real) or not 0 <= min_mass <= 1):
        raise InputError(f"min_mass must be a fraction in [0, 1] or None, got {min_mass!r}")
    if not isinstance(step, numbers.Real) or not 0 < step <= 1:
        raise InputError(f"step must be in (0, 1], got {step!r}")


# --------------------------------------------------------------------------- groups


def _cell_codes(enc: GroupEncoder) -> np.ndarray:
    """[n_cells, n_columns]: each finest cell's level code in every sensitive column."""
    combos = np.asarray(enc.to_dict()["combos"], dtype=np.int64)
    out = np.empty((len(combos), len(enc.columns_)), dtype=np.int64)
    rest = combos.copy()
    for j in range(len(enc.columns_) - 1, -1, -1):
        k = len(enc.levels_[j])
        out[:, j] = rest % k
        rest //= k
    return out


def _sensitive_collection(enc: GroupEncoder, max_order: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The sensitive groups of C as (column indices, level codes), order 0 first.

    Only intersections that occur in the fit data (as part of a finest cell) are kept.
    """
    codes = _cell_codes(enc)
    groups: list[tuple[tuple[int, ...], tuple[int, ...]]] = [((), ())]
    for order in range(1, min(max_order, len(enc.columns_)) + 1):
        for cols in itertools.combinations(range(len(enc.columns_)), order):
            for row in np.unique(codes[:, list(cols)], axis=0):
                groups.append((cols, tuple(int(v) for v in row)))
    return groups


def _sensitive_name(enc: GroupEncoder, cols: tuple[int, ...], codes: tuple[int, ...]) -> str:
    if not cols:
        return EVERYONE
    if len(enc.columns_) == 1:  # one column: named by its values, as GroupEncoder names its groups
        return str(enc.levels_[0][codes[0]])
    return "|".join(f"{enc.columns_[c]}={enc.levels_[c][v]}" for c, v in zip(cols, codes))


def _membership(col_codes: np.ndarray, groups: list[tuple[tuple[int, ...], tuple[int, ...]]]) -> np.ndarray:
    """[n_patterns, n_groups] bool from each pattern's column codes (-1 = value not seen: matches nothing)."""
    out = np.ones((len(col_codes), len(groups)), dtype=bool)
    for g, (cols, codes) in enumerate(groups):
        for c, v in zip(cols, codes):
            out[:, g] &= col_codes[:, c] == v
    return out


def _compact(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids in 0..k-1, the k distinct keys), keys int64 >= 0."""
    ids, uniques = factorize(key.astype(np.int64, copy=False), what="cells")
    return np.asarray(ids, dtype=np.int64), np.asarray(uniques, dtype=np.int64)


class _Groups:
    """The collection C, fixed at fit: encoder + sensitive group specs + feature thresholds."""

    def __init__(self, enc: GroupEncoder, sens: list, feats: list[tuple[str, str, float]]):
        self.enc = enc
        self.sens = sens
        self.feats = feats
        self.member_cells = _membership(_cell_codes(enc), sens)  # [n_cells, n_sensitive_groups]
        self.names = [_sensitive_name(enc, c, v) for c, v in sens] + [_feature_group_name(*f) for f in feats]

    @classmethod
    def fit(cls, sensitive: Any, n: int, max_order: int, feats: list[tuple[str, str, float]]) -> _Groups:
        as_columns(sensitive, n)  # length check with a clear message before encoding
        enc = GroupEncoder()
        enc.fit(sensitive)
        return cls(enc, _sensitive_collection(enc, max_order), feats)

    def atoms(self, sensitive: Any, features: Any, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Rows -> atoms (finest sensitive cell x feature-group pattern).

        Returns ``(atom id per row, member[n_atoms, |C|] bool, rows in unseen cells)``.
        A row whose combination of sensitive values was not seen at fit belongs to
        "everyone" and to each group whose values it has (from its column values).
        """
        cols = as_columns(sensitive, n)
        cell = np.asarray(self.enc.transform(sensitive, unknown="code"), dtype=np.int64)
        n_cells = len(self.enc.names_)
        unknown = cell < 0
        n_unknown = int(unknown.sum())
        sens_member = self.member_cells
        if n_unknown:
            rows = np.flatnonzero(unknown)
            codes = np.stack([pd.Index(lv).get_indexer(np.asarray(v)[rows])
                              for (_, v), lv in zip(cols, self.enc.levels_)], axis=1).astype(np.int64)
            key = np.zeros(len(rows), dtype=np.int64)
            for j, lv in enumerate(self.enc.levels_):
                key = key * (len(lv) + 1) + (codes[:, j] + 1)
            pid, _ = _compact(key)
            rep = np.empty(int(pid.max()) + 1, dtype=np.int64)
            rep[pid] = np.arange(len(pid))  # any row of a pattern stands for it
            sens_member = np.vstack([sens_member, _membership(codes[rep], self.sens)])
            cell = cell.copy()
            cell[rows] = n_cells + pid
        fmask = _feature_masks(self.feats, features, n)
        if fmask.shape[1]:
            fpat = np.zeros(n, dtype=np.int64)
            for j in range(fmask.shape[1]):  # keep the key compact while adding one bit at a time
                fpat, _ = _compact(fpat * 2 + fmask[:, j])
            n_pat = int(fpat.max()) + 1
            atom, akeys = _compact(cell * n_pat + fpat)
            rep = np.empty(n_pat, dtype=np.int64)
            rep[fpat] = np.arange(n)
            member = np.hstack([sens_member[akeys // n_pat], fmask[rep][akeys % n_pat]])
        else:
            atom, akeys = _compact(cell)
            member = sens_member[akeys]
        return atom, member, n_unknown

    def to_meta(self) -> dict:
        return {"encoder": self.enc.to_dict(),
                "sensitive_groups": [{"columns": list(c), "codes": list(v)} for c, v in self.sens],
                "feature_groups": [list(f) for f in self.feats]}

    @classmethod
    def from_meta(cls, meta: Mapping) -> _Groups:
        try:
            enc = GroupEncoder.from_dict(meta["encoder"])
            sens = [(tuple(int(c) for c in g["columns"]), tuple(int(v) for v in g["codes"]))
                    for g in meta["sensitive_groups"]]
            feats = _check_feature_groups([tuple(f) for f in meta["feature_groups"]])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"not a multicalibrator: missing or malformed {e}") from None
        return cls(enc, sens, feats)


# --------------------------------------------------------------------------- core loop


def _bins(s: np.ndarray, n_bins: int) -> np.ndarray:
    """λ-discretization of float32 scores: min(floor(score * n_bins), n_bins - 1), as torch does it."""
    b = np.floor(s * np.float32(n_bins)).astype(np.int64)
    np.minimum(b, n_bins - 1, out=b)
    return b


def _stats(atom, member_f, s, y, n_bins, n_atoms):
    """(count, sum of scores, sum of labels) of every (group, bin) cell: [|C|, n_bins] each."""
    bins = _bins(s, n_bins)
    key = atom * n_bins + bins
    size = n_atoms * n_bins
    cnt = np.bincount(key, minlength=size).reshape(n_atoms, n_bins).astype(np.float64)
    ssum = np.bincount(key, weights=s, minlength=size).reshape(n_atoms, n_bins)
    ysum = np.bincount(key, weights=y, minlength=size).reshape(n_atoms, n_bins)
    return bins, member_f.T @ cnt, member_f.T @ ssum, member_f.T @ ysum


def _gaps(cnt, ssum, ysum, n, min_cell_size, min_mass):
    with np.errstate(invalid="ignore", divide="ignore"):
        signed = (ysum - ssum) / cnt
    ok = cnt >= min_cell_size
    if min_mass is not None:
        ok &= cnt >= min_mass * n
    return signed, ok


def _worst(signed, ok, rng):
    """((group, bin), |gap|) of the worst cell with enough mass; ((0, 0), NaN) when none has."""
    if not ok.any():
        return (0, 0), float("nan")
    flat = np.where(ok, np.abs(signed), -np.inf).ravel()
    top = flat.max()
    if rng is None:
        i = int(np.argmax(flat))
    else:
        i = int(rng.choice(np.flatnonzero(flat >= top)))
    return divmod(i, signed.shape[1]), float(top)


def _replay(s: np.ndarray, atom: np.ndarray, member: np.ndarray, patches, n_bins: int) -> np.ndarray:
    s = s.copy()
    for c, b, delta in patches:
        rows = np.flatnonzero(member[:, c][atom] & (_bins(s, n_bins) == b))
        s[rows] = np.clip(s[rows] + np.float32(delta), np.float32(0), np.float32(1))
    return s


class Multicalibrator:
    """α-multicalibration of binary scores by patching (Hébert-Johnson et al., ICML 2018).

    ``Multicalibrator(alpha=0.02, n_bins=10, max_order=2, feature_groups=None,
    min_mass=None, min_cell_size=200, max_iter=200, step=1.0, seed=None).fit(scores, y,
    sensitive, features=None)`` — scikit-learn style; :func:`multicalibrate` does both in
    one call. See the module docstring for the algorithm: the collection C of
    (intersectional and feature-threshold) groups, the bins of the current score, the
    mass condition, the patch ``clip(score + step * (mean(y) - mean(score)), 0, 1)`` of the
    single worst cell per iteration, and the stop at ``gap <= alpha`` or ``max_iter``.

    Fitted attributes: ``groups_`` (names of the finest sensitive cells; the ONNX
    ``group`` input indexes this list), ``collection_`` (names of the groups in C),
    ``patches_`` (``(collection index, bin, delta)`` in the order applied), ``n_iter_``
    (patches applied), ``converged_``, ``error_before_`` / ``error_after_`` (the
    multicalibration error on the fit data: max |mean(y) - mean(score)| over cells with
    enough mass).

    ``seed`` only breaks exact ties between equally bad cells at random; with ``None``
    the first in collection order wins. The algorithm is otherwise deterministic.
    """

    def __init__(self, *, alpha: float = 0.02, n_bins: int = 10, max_order: int = 2, feature_groups=None,
                 min_mass: float | None = None, min_cell_size: int = 200, max_iter: int = 200, step: float = 1.0,
                 seed: int | None = None):
        self.alpha = alpha
        self.n_bins = n_bins
        self.max_order = max_order
        self.feature_groups = feature_groups
        self.min_mass = min_mass
        self.min_cell_size = min_cell_size
        self.max_iter = max_iter
        self.step = step
        self.seed = seed

    # ---- fitting
    def fit(self, scores: Any, y: Any, sensitive: Any, features: Any = None) -> Multicalibrator:
        self.fit_transform(scores, y, sensitive, features)
        return self

    def fit_transform(self, scores: Any, y: Any, sensitive: Any, features: Any = None) -> np.ndarray:
        """Fit and return the patched scores of the fit rows (what ``transform`` gives on them)."""
        _check_params(self.alpha, self.n_bins, self.max_order, self.min_mass, self.min_cell_size, self.max_iter,
                      self.step)
        s = _check_scores(scores)
        n = len(s)
        yv = _check_labels(y, n)
        feats = _check_feature_groups(self.feature_groups)
        groups = _Groups.fit(sensitive, n, self.max_order, feats)
        atom, member, _ = groups.atoms(sensitive, features, n)
        member_f = member.astype(np.float64)
        n_atoms = member.shape[0]
        rng = None if self.seed is None else np.random.default_rng(self.seed)

        patches: list[tuple[int, int, float]] = []
        bins, cnt, ssum, ysum = _stats(atom, member_f, s, yv, self.n_bins, n_atoms)
        signed, ok = _gaps(cnt, ssum, ysum, n, self.min_cell_size, self.min_mass)
        if not ok.any():
            raise GroupError(
                f"no (group, bin) cell has {self.min_cell_size} rows"
                + (f" and {self.min_mass:g} of the data" if self.min_mass is not None else "")
                + f" ({n} rows, {self.n_bins} bins): lower min_cell_size or n_bins")
        (c, b), worst = _worst(signed, ok, rng)
        self.error_before_ = worst
        while worst > self.alpha and len(patches) < self.max_iter:
            delta = np.float32(self.step * signed[c, b])
            rows = np.flatnonzero(member[:, c][atom] & (bins == b))
            s[rows] = np.clip(s[rows] + delta, np.float32(0), np.float32(1))
            patches.append((int(c), int(b), float(delta)))
            bins, cnt, ssum, ysum = _stats(atom, member_f, s, yv, self.n_bins, n_atoms)
            signed, ok = _gaps(cnt, ssum, ysum, n, self.min_cell_size, self.min_mass)
            (c, b), worst = _worst(signed, ok, rng)

        self._groups = groups
        self.groups_ = list(groups.enc.names_)
        self.collection_ = list(groups.names)
        self.patches_ = patches
        self.n_iter_ = len(patches)
        self.error_after_ = worst
        self.converged_ = not worst > self.alpha  # NaN: no cell left with enough mass, nothing to patch
        if not self.converged_:
            warnings.warn(
                f"multicalibrate did not converge in max_iter={self.max_iter} patches: cell "
                f"({self.collection_[c]!r}, bin {b}) still has a gap of {worst:.4f} > alpha={self.alpha:g}; "
                "raise max_iter, alpha or min_cell_size", UserWarning, stacklevel=2)
        return s.astype(np.float64)

    @property
    def encoder_(self) -> GroupEncoder:
        """The encoder of the sensitive columns (``encoder_.columns_`` names them), as GroupCalibrator has."""
        self._check_fitted()
        return self._groups.enc

    # ---- inference
    def transform(self, scores: Any, sensitive: Any, features: Any = None) -> np.ndarray:
        """Replay the fitted patches, in order, on new rows (float64 copy of a float32 result).

        Each patch ``(c, b, delta)`` moves the rows that are in group ``c`` and whose
        *current* patched score lies in bin ``b`` by ``delta``, clipped to [0, 1]. Rows in
        a combination of sensitive values not seen at fit get the patches of "everyone"
        and of the groups whose values they have; a warning counts them.
        """
        self._check_fitted()
        s = _check_scores(scores)
        n = len(s)
        atom, member, n_unknown = self._groups.atoms(sensitive, features, n)
        if n_unknown:
            warnings.warn(
                f"{n_unknown} of {n} row(s) are in a combination of sensitive values not seen when fitting; "
                "they get the patches of 'everyone' and of the groups whose values they have",
                UserWarning, stacklevel=2)
        return _replay(s, atom, member, self.patches_, self.n_bins).astype(np.float64)

    def __call__(self, scores: Any, sensitive: Any, features: Any = None) -> np.ndarray:
        return self.transform(scores, sensitive, features)

    def error(self, scores: Any, y: Any, sensitive: Any, features: Any = None) -> dict:
        """:func:`multicalibration_error` of ``scores`` over this calibrator's collection C."""
        self._check_fitted()
        s = _check_scores(scores)
        n = len(s)
        yv = _check_labels(y, n)
        atom, member, _ = self._groups.atoms(sensitive, features, n)
        return _error_report(s, yv, atom, member, self.collection_, self.n_bins, self.min_cell_size, self.min_mass)

    # ---- export
    def _check_no_features(self) -> None:
        if self._groups.feats:
            raise InputError(
                "this multicalibrator uses feature-threshold groups ("
                + ", ".join(_feature_group_name(*f) for f in self._groups.feats)
                + "), which need the features at inference: its module takes only (score, group)")

    def _member_by_code(self) -> np.ndarray:
        """[n_cells + 1, |C|] bool: the finest cells' membership, then an unknown cell (everyone only)."""
        member = self._groups.member_cells
        unknown = np.zeros((1, member.shape[1]), dtype=bool)
        unknown[0, 0] = True  # "everyone"
        return np.vstack([member, unknown])

    def _transform_codes(self, scores: Any, codes: Any) -> np.ndarray:
        """What the module computes, in numpy: ``codes`` index ``groups_``; -1 (or out of
        range) is an unknown cell, a member of "everyone" only."""
        self._check_fitted()
        self._check_no_features()
        s = _check_scores(scores)
        c = np.asarray(codes, dtype=np.int64)
        if c.shape != s.shape:
            raise LengthMismatchError(f"group codes have shape {c.shape} but scores have {s.shape}")
        n_cells = len(self.groups_)
        atom = np.where((c < 0) | (c >= n_cells), n_cells, c)
        return _replay(s, atom, self._member_by_code(), self.patches_, self.n_bins).astype(np.float64)

    def to_module(self) -> MulticalibrationModule:
        """A ``torch.nn.Module``: ``forward(score float32 [N], group int64 [N]) -> float32 [N]``.

        ``group`` is an index into ``groups_``; ``-1`` (or any index out of range) stands
        for a combination of sensitive values not seen at fit, which the module treats as
        a member of "everyone" only (``transform`` knows the column values and also applies the
        patches of the groups whose values such a row has). Exportable with
        ``torch.onnx.export(..., dynamo=False)`` with a dynamic batch axis.
        """
        self._check_fitted()
        self._check_no_features()
        return MulticalibrationModule(self._member_by_code(), self.patches_, self.n_bins)

    def _state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, JSON-able meta) for ``reprogram.artifacts.write_artifact(path, "calibrator", ...)``."""
        self._check_fitted()
        p = self.patches_
        tensors = {
            "patch_group": torch.tensor([c for c, _, _ in p], dtype=torch.int64),
            "patch_bin": torch.tensor([b for _, b, _ in p], dtype=torch.int64),
            "patch_delta": torch.tensor([d for _, _, d in p], dtype=torch.float32),
        }
        nan_none = lambda v: None if v is None or not math.isfinite(v) else float(v)  # noqa: E731
        meta = {
            "calibrator": "Multicalibrator",
            "params": {"alpha": float(self.alpha), "n_bins": int(self.n_bins), "max_order": int(self.max_order),
                       "min_mass": None if self.min_mass is None else float(self.min_mass),
                       "min_cell_size": int(self.min_cell_size), "max_iter": int(self.max_iter),
                       "step": float(self.step), "seed": self.seed},
            **self._groups.to_meta(),
            "groups": self.groups_,
            "collection": self.collection_,
            "n_iter": self.n_iter_,
            "converged": self.converged_,
            "error_before": nan_none(self.error_before_),
            "error_after": nan_none(self.error_after_),
        }
        return tensors, meta

    @classmethod
    def _from_state(cls, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> Multicalibrator:
        if meta.get("calibrator") != "Multicalibrator":
            raise InputError(f"not a Multicalibrator state: calibrator is {meta.get('calibrator')!r}")
        try:
            params = dict(meta["params"])
            feature_groups = [tuple(f) for f in meta["feature_groups"]] or None
            obj = cls(**params, feature_groups=feature_groups)
            groups = _Groups.from_meta(meta)
            c = tensors["patch_group"].tolist()
            b = tensors["patch_bin"].tolist()
            d = tensors["patch_delta"].to(torch.float32).tolist()
        except (KeyError, TypeError, AttributeError) as e:
            raise InputError(f"not a Multicalibrator state: missing or malformed {e}") from None
        if not (len(c) == len(b) == len(d)):
            raise InputError("not a Multicalibrator state: patch tensors of different lengths")
        if any(not 0 <= g < len(groups.names) for g in c) or any(not 0 <= k < obj.n_bins for k in b):
            raise InputError("not a Multicalibrator state: a patch names a group or bin that does not exist")
        obj._groups = groups
        obj.groups_ = list(groups.enc.names_)
        obj.collection_ = list(groups.names)
        obj.patches_ = [(int(ci), int(bi), float(di)) for ci, bi, di in zip(c, b, d)]
        obj.n_iter_ = int(meta.get("n_iter", len(c)))
        obj.converged_ = bool(meta.get("converged", True))
        nan = lambda v: float("nan") if v is None else float(v)  # noqa: E731
        obj.error_before_ = nan(meta.get("error_before"))
        obj.error_after_ = nan(meta.get("error_after"))
        return obj

    def _check_fitted(self) -> None:
        if not hasattr(self, "patches_"):
            raise NotFittedError("this Multicalibrator is not fitted yet: call fit() or multicalibrate() first")

    def __repr__(self) -> str:
        if hasattr(self, "patches_"):
            return (f"Multicalibrator(|C|={len(self.collection_)}, patches={self.n_iter_}, "
                    f"converged={self.converged_}, "
                    f"error {self.error_before_:.4f} -> {self.error_after_:.4f})")
        return f"Multicalibrator(alpha={self.alpha}, n_bins={self.n_bins}, max_order={self.max_order})"


class MulticalibrationModule(nn.Module):
    """The patches of a :class:`Multicalibrator` as a torch module (for ONNX export).

    ``forward(score, group)``: ``score`` float32 [N] in [0, 1], ``group`` int64 [N], an
    index into the calibrator's ``groups_``, or -1 (any index out of range) for an unseen
    cell, a member of "everyone" only. For each patch ``(c, b, delta)`` in order:
    ``in_cell = member[group, c] * (min(floor(score * n_bins), n_bins - 1) == b)``;
    ``score = clamp(score + delta * in_cell, 0, 1)``. Only elementwise ops and one
    gather: no searchsorted, no data-dependent control flow, any batch size.
    """

    def __init__(self, member: np.ndarray, patches: Sequence[tuple[int, int, float]], n_bins: int):
        super().__init__()
        m = torch.as_tensor(np.asarray(member, dtype=np.float32))
        self.register_buffer("member", m)  # [n_cells + 1, |C|], last row: unknown cell
        self.register_buffer("patch_group", torch.tensor([int(c) for c, _, _ in patches], dtype=torch.int64))
        self.register_buffer("patch_bin", torch.tensor([int(b) for _, b, _ in patches], dtype=torch.int64))
        self.register_buffer("patch_delta", torch.tensor([float(d) for _, _, d in patches], dtype=torch.float32))
        self.n_bins = int(n_bins)
        self.n_cells = int(m.shape[0] - 1)
        self._patches = [(int(c), float(b), float(d)) for c, b, d in patches]

    def forward(self, score: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        score = score.to(torch.float32)
        group = group.to(torch.int64)
        unknown = (group < 0) | (group >= self.n_cells)
        idx = torch.where(unknown, torch.full_like(group, self.n_cells), group)
        rows = self.member[idx]  # [N, |C|]
        for c, b, delta in self._patches:  # a fixed list: unrolled when traced
            bins = torch.clamp(torch.floor(score * float(self.n_bins)), max=float(self.n_bins - 1))
            in_cell = rows[:, c] * (bins == b).to(torch.float32)
            score = torch.clamp(score + delta * in_cell, 0.0, 1.0)
        if not self._patches:  # keep `group` in the graph (an exporter drops unused inputs): adds exactly 0
            score = score + 0.0 * rows[:, 0]
        return score


# --------------------------------------------------------------------------- public functions


def _error_report(s, y, atom, member, names, n_bins, min_cell_size, min_mass) -> dict:
    n = len(s)
    _, cnt, ssum, ysum = _stats(atom, member.astype(np.float64), s, y, n_bins, member.shape[0])
    signed, ok = _gaps(cnt, ssum, ysum, n, min_cell_size, min_mass)
    gi, bi = np.nonzero(cnt > 0)
    c = cnt[gi, bi]
    cells = pd.DataFrame({
        "group": [names[g] for g in gi],
        "bin": bi.astype(np.int64),
        "n": c.astype(np.int64),
        "mean_score": ssum[gi, bi] / c,
        "mean_y": ysum[gi, bi] / c,
        "gap": np.abs(signed[gi, bi]),
        "counted": ok[gi, bi],
    })
    if not ok.any():
        return {"max": float("nan"), "worst_cell": None, "cells": cells}
    (g, b), worst = _worst(signed, ok, None)
    return {"max": worst, "worst_cell": (names[g], int(b)), "cells": cells}


def multicalibration_error(scores: Any, y: Any, sensitive: Any, *, n_bins: int = 10, max_order: int = 2,
                           min_cell_size: int = 200, min_mass: float | None = None, feature_groups=None,
                           features: Any = None) -> dict:
    """The multicalibration error of binary scores: max |mean(y) - mean(score)| over (group, bin) cells.

    Groups are those :func:`multicalibrate` would use on this data (everyone, each
    sensitive value, intersections up to ``max_order``, feature thresholds); bins are
    ``n_bins`` equal-width bins of ``scores``; only cells with at least ``min_cell_size``
    rows (and ``min_mass`` of the rows, when given) count. Returns ``{"max": float,
    "worst_cell": (group name, bin), "cells": DataFrame}`` whose ``cells`` has one row per
    non-empty cell: ``group, bin, n, mean_score, mean_y, gap`` (absolute) and ``counted``.
    With no cell large enough, ``max`` is NaN and ``worst_cell`` None.
    """
    _check_params(1.0, n_bins, max_order, min_mass, min_cell_size, 0, 1.0)
    s = _check_scores(scores)
    n = len(s)
    yv = _check_labels(y, n)
    groups = _Groups.fit(sensitive, n, max_order, _check_feature_groups(feature_groups))
    atom, member, _ = groups.atoms(sensitive, features, n)
    return _error_report(s, yv, atom, member, groups.names, n_bins, min_cell_size, min_mass)


def multicalibrate(scores: Any, y: Any, sensitive: Any, *, alpha: float = 0.02, n_bins: int = 10, max_order: int = 2,
                   feature_groups=None, features: Any = None, min_mass: float | None = None, min_cell_size: int = 200,
                   max_iter: int = 200, step: float = 1.0, seed: int | None = None) -> Multicalibrator:
    """Fit an α-multicalibrator (Hébert-Johnson, Kim, Reingold, Rothblum, ICML 2018) on binary scores.

    ``scores``: P(class 1) in [0, 1], 1-D; ``y``: 0/1 labels; ``sensitive``: one or
    several sensitive columns (any shape :func:`reprogram.data.groups.as_columns` takes).
    The collection C holds "everyone", each sensitive value and their intersections up
    to ``max_order`` columns, plus ``feature_groups`` such as ``[("age", ">", 40)]``
    evaluated on ``features`` (a DataFrame or mapping; needed again at inference).

    Loop: bin the current scores into ``n_bins`` equal-width bins; among the (group,
    bin) cells with at least ``min_cell_size`` rows (and a fraction ``min_mass`` of all
    rows, when given) take the one with the largest ``|mean(y) - mean(score)|``; if it is
    <= ``alpha``, stop; else add ``step * (mean(y) - mean(score))`` to that cell's scores,
    clip to [0, 1], record the patch and repeat — at most ``max_iter`` patches (a
    warning if still above ``alpha``). One cell is patched per iteration (worst first).
    """
    mc = Multicalibrator(alpha=alpha, n_bins=n_bins, max_order=max_order, feature_groups=feature_groups,
                         min_mass=min_mass, min_cell_size=min_cell_size, max_iter=max_iter, step=step, seed=seed)
    return mc.fit(scores, y, sensitive, features)
