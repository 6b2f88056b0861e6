"""The one group encoder of the package: sensitive columns -> integer group ids.

Every part of `reprogram` that needs groups (metrics, loaders, triggers, calibrators)
goes through :class:`GroupEncoder`, so a group has the same id and the same name
everywhere. One sensitive column gives groups named by its values (``"Female"``);
several columns give their intersections, named ``"sex=Female|race=Black"``, and only the
combinations that occur in the data become groups.

:func:`factorize` is the O(n) value -> code step it is built on (also used for labels).
numpy's ``np.unique`` sorts all n values, which at 10M rows costs ~100x more than
counting them; integer columns with a compact range are therefore coded by one
``np.bincount`` and a lookup table, and anything else by pandas' hash-based factorize.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from reprogram.errors import GroupError, InputError, LengthMismatchError, MissingValuesError, NotFittedError

__all__ = ["GroupEncoder", "factorize", "as_columns", "encode_groups", "count_missing"]

# Integer columns whose value range is at most this many times their length (or below
# _DENSE_MIN outright) are coded by counting; wider ranges go to a hash table.
_DENSE_FACTOR = 4
_DENSE_MIN = 1 << 16


def count_missing(a: np.ndarray) -> int:
    if a.dtype.kind in "biu":
        return 0
    if a.dtype.kind in "fc":
        return int(np.count_nonzero(np.isnan(a)))
    return int(np.count_nonzero(pd.isna(a)))


def factorize(values: Any, *, what: str = "values") -> tuple[np.ndarray, np.ndarray]:
    """Return ``(codes, uniques)`` with ``uniques`` sorted and ``uniques[codes] == values``.

    ``codes`` is an integer array (not always int64: a dense non-negative integer input
    is returned as it is, without a copy). Missing values raise
    :class:`MissingValuesError` naming ``what`` and how many rows.
    """
    a = np.asarray(values)
    if a.ndim != 1:
        raise InputError(f"{what} must be one-dimensional, got shape {a.shape}")
    if a.size == 0:
        return np.zeros(0, dtype=np.int64), a[:0]
    if a.dtype.kind == "b":
        a = a.view(np.uint8)
        codes, uniques = factorize(a, what=what)
        return codes, uniques.astype(bool)
    if a.dtype.kind in "iu":
        lo, hi = int(a.min()), int(a.max())
        span = hi - lo + 1
        if span <= max(_DENSE_MIN, _DENSE_FACTOR * a.size):
            shifted = a if lo == 0 else a - lo
            # the min and the max occur, so a span of 1 or 2 needs no counting pass
            present = np.arange(span) if span <= 2 else np.flatnonzero(np.bincount(shifted, minlength=span))
            uniques = (present + lo).astype(a.dtype)
            if present.size == span:  # every value in the range occurs: codes are the values
                return shifted, uniques
            lut = np.full(span, -1, dtype=np.int64)
            lut[present] = np.arange(present.size)
            return lut[shifted], uniques
    missing = count_missing(a)
    if missing:
        raise MissingValuesError(f"{what} has {missing} missing value(s) (NaN/None) of {a.size} rows")
    try:
        codes, uniques = pd.factorize(a, sort=True)
        uniques = np.asarray(uniques)
    except TypeError:  # values of mixed types that do not order: order them by their text
        codes, uniques = pd.factorize(a, sort=False)
        uniques = np.asarray(uniques, dtype=object)
        order = np.argsort(np.array([str(u) for u in uniques]), kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        codes, uniques = rank[codes], uniques[order]
    return codes.astype(np.int64, copy=False), uniques


def as_columns(sensitive: Any, n_rows: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Normalise the accepted shapes of ``sensitive`` to a list of ``(name, 1-D array)``.

    Accepted: one array-like (list, ndarray, Series), a 2-D array (one column each), a
    sequence of 1-D arrays, a mapping ``name -> array``, or a DataFrame. Unnamed columns
    are called ``sensitive_feature_<i>`` as in fairlearn.
    """
    if sensitive is None:
        raise InputError("sensitive features are required")
    cols: list[tuple[str, Any]]
    if isinstance(sensitive, pd.DataFrame):
        cols = [(str(c), sensitive[c].to_numpy()) for c in sensitive.columns]
    elif isinstance(sensitive, pd.Series):
        cols = [(str(sensitive.name) if sensitive.name is not None else "sensitive_feature_0", sensitive.to_numpy())]
    elif isinstance(sensitive, Mapping):
        cols = [(str(k), np.asarray(v)) for k, v in sensitive.items()]
    elif (
        isinstance(sensitive, Sequence)
        and not isinstance(sensitive, (str, bytes))
        and len(sensitive) > 0
        and all(isinstance(c, (np.ndarray, pd.Series, list, tuple)) for c in sensitive)
    ):
        cols = [(f"sensitive_feature_{i}", np.asarray(c)) for i, c in enumerate(sensitive)]
    else:
        a = np.asarray(sensitive)
        if a.ndim == 2:
            cols = [(f"sensitive_feature_{i}", a[:, i]) for i in range(a.shape[1])]
        else:
            cols = [("sensitive_feature_0", a)]
    if not cols:
        raise InputError("sensitive features are empty: give at least one column")
    out = []
    for name, values in cols:
        arr = values.to_numpy() if isinstance(values, pd.Series) else np.asarray(values)
        if arr.ndim != 1:
            raise InputError(f"sensitive feature {name!r} must be one-dimensional, got shape {arr.shape}")
        if arr.dtype.kind in "mM":
            # dates and time spans become text: their numpy scalars neither survive JSON nor
            # compare equal to themselves after .item() at nanosecond precision
            missing = int(np.isnat(arr).sum())
            if missing:
                raise MissingValuesError(f"sensitive feature {name!r} has {missing} missing value(s) of {len(arr)} rows")
            arr = arr.astype(str)
        out.append((name, arr))
    lengths = {len(a) for _, a in out}
    if len(lengths) > 1:
        raise LengthMismatchError(f"sensitive features have different lengths: {sorted(lengths)}")
    if n_rows is not None and lengths != {n_rows}:
        raise LengthMismatchError(f"sensitive features have {lengths.pop()} rows but the data has {n_rows}")
    return out


def _plain(v: Any) -> Any:
    """A numpy scalar as the Python value JSON can hold."""
    return v.item() if isinstance(v, np.generic) else v


class GroupEncoder:
    """Map sensitive features (one or several columns) to integer group ids.

    Follows scikit-learn conventions: nothing happens in ``__init__``; ``fit`` learns
    ``columns_`` (the column names), ``levels_`` (each column's sorted values) and
    ``names_`` (one name per group, in id order); ``transform`` codes new data with the
    fitted groups and refuses a group it has not seen. ``to_dict``/``from_dict`` give the
    JSON form that artifacts store.
    """

    def fit(self, sensitive: Any) -> GroupEncoder:
        self.fit_transform(sensitive)
        return self

    def fit_transform(self, sensitive: Any) -> np.ndarray:
        """Fit and return the group id of each row.

        For one column of dense non-negative integers the ids are that column itself,
        not a copy (see :func:`factorize`): copy before writing into them.
        """
        cols = as_columns(sensitive)
        n = len(cols[0][1])
        if n == 0:
            raise InputError("sensitive features have no rows")
        self.columns_ = [name for name, _ in cols]
        self.levels_ = []
        combo = None
        radix = 1
        for name, values in cols:
            codes, uniques = factorize(values, what=f"sensitive feature {name!r}")
            self.levels_.append([_plain(u) for u in uniques])
            if combo is None:
                combo = codes
            else:  # mixed-radix: combo = c0 * L1 * L2 ... + c1 * L2 ... + c_last
                combo = np.multiply(combo, len(uniques), dtype=np.int64)
                combo += codes
            radix *= len(uniques)
        if len(cols) == 1:
            self._combos = np.arange(len(self.levels_[0]), dtype=np.int64)
            group_codes = combo
        else:
            group_codes, present = factorize(combo, what="sensitive features")
            self._combos = present.astype(np.int64)
        self.names_ = [self._name(c) for c in self._combos]
        return group_codes

    def transform(self, sensitive: Any, *, unknown: str = "error") -> np.ndarray:
        """Group ids of new rows, coded with the fitted groups.

        ``unknown="error"`` (default) refuses a value or a combination not seen when
        fitting; ``unknown="code"`` gives such rows the id -1 instead (a calibrator sends
        them to its global map).
        """
        self._check_fitted()
        if unknown not in ("error", "code"):
            raise InputError(f"unknown= must be 'error' or 'code', not {unknown!r}")
        cols = as_columns(sensitive)
        if len(cols) != len(self.columns_):
            raise InputError(
                f"expected {len(self.columns_)} sensitive column(s) {self.columns_}, got {[n for n, _ in cols]}"
            )
        combo = None
        for (name, values), levels in zip(cols, self.levels_):
            missing = count_missing(np.asarray(values))
            if missing:
                raise MissingValuesError(f"sensitive feature {name!r} has {missing} missing value(s) of {len(values)} rows")
            codes = pd.Index(levels).get_indexer(values)
            if unknown == "code":
                seen = codes >= 0
                combo = np.where(seen, codes, -1) if combo is None else np.where(
                    (combo >= 0) & seen, combo * len(levels) + codes, -1)
                continue
            if (codes < 0).any():
                unseen = [v if len(v) <= 40 else v[:37] + "..."
                          for v in sorted({str(v) for v in np.asarray(values)[codes < 0]})[:5]]
                raise GroupError(f"sensitive feature {name!r} has values not seen when fitting: {', '.join(unseen)}")
            combo = codes if combo is None else combo * len(levels) + codes
        pos = np.searchsorted(self._combos, combo)
        pos = np.minimum(pos, len(self._combos) - 1)
        bad = self._combos[pos] != combo
        if unknown == "code":
            return np.where(bad, -1, pos)
        if bad.any():
            first = int(combo[np.flatnonzero(bad)[0]])
            raise GroupError(f"group {self._name(first)!r} was not present when fitting")
        return pos

    @property
    def n_groups_(self) -> int:
        self._check_fitted()
        return len(self.names_)

    def to_dict(self) -> dict:
        self._check_fitted()
        return {
            "columns": self.columns_,
            "levels": self.levels_,
            "names": self.names_,
            "combos": [int(c) for c in self._combos],
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> GroupEncoder:
        enc = cls()
        try:
            enc.columns_ = [str(c) for c in d["columns"]]
            enc.levels_ = [list(lv) for lv in d["levels"]]
            enc._combos = np.asarray(d["combos"], dtype=np.int64)
            enc.names_ = [str(n) for n in d["names"]]
            rebuilt = [enc._name(c) for c in enc._combos]
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError) as e:
            raise InputError(f"not a group encoding: missing or malformed {e}") from None
        if rebuilt != enc.names_ or len(enc.columns_) != len(enc.levels_):
            raise InputError("not a group encoding: the group names do not match its columns and levels")
        return enc

    def _name(self, combo: int) -> str:
        parts = []
        for name, levels in zip(reversed(self.columns_), reversed(self.levels_)):
            combo, code = divmod(int(combo), len(levels))
            parts.append((name, levels[code]))
        parts.reverse()
        if len(parts) == 1:
            return str(parts[0][1])
        return "|".join(f"{name}={value}" for name, value in parts)

    def _check_fitted(self) -> None:
        if not hasattr(self, "names_"):
            raise NotFittedError("this GroupEncoder is not fitted yet: call fit() first")

    def __repr__(self) -> str:
        if hasattr(self, "names_"):
            return f"GroupEncoder(columns={self.columns_}, n_groups={len(self.names_)})"
        return "GroupEncoder()"


def encode_groups(sensitive: Any, *, min_groups: int = 1) -> tuple[np.ndarray, GroupEncoder]:
    """Fit a :class:`GroupEncoder` and return ``(group ids, encoder)``.

    ``min_groups=2`` refuses data in which only one group is present (a fairness
    comparison needs two).
    """
    enc = GroupEncoder()
    codes = enc.fit_transform(sensitive)
    if len(enc.names_) < min_groups:
        raise GroupError(
            f"only {len(enc.names_)} group present ({', '.join(enc.names_)}); "
            f"at least {min_groups} are needed to compare groups"
        )
    return codes, enc
