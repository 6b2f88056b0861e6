"""Feature and label encodings that are saved with a model and re-applied to new tables.

:class:`FeatureEncoder` turns a table's feature columns into the float32 matrix a tabular
model reads; :class:`LabelEncoder` turns a label column (strings allowed) into class
indices. Both follow scikit-learn's conventions (nothing happens in ``__init__``, fitted
attributes end in ``_``) and have ``to_dict``/``from_dict`` for the model's JSON sidecar,
so a model trained on one table can be applied to another with the same encoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from reprogram.data.groups import factorize
from reprogram.data.tables import require_columns
from reprogram.errors import InputError, MissingValuesError, NotFittedError

__all__ = ["FeatureEncoder", "LabelEncoder", "as_plain_values"]

_FORMAT = "reprogram.feature_encoder"
_LABEL_FORMAT = "reprogram.label_encoder"
_VERSION = 1


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype)


def _is_categorical(s: pd.Series) -> bool:
    t = s.dtype
    return (
        pd.api.types.is_bool_dtype(t)
        or isinstance(t, pd.CategoricalDtype)
        or pd.api.types.is_string_dtype(t)
        or pd.api.types.is_object_dtype(t)
    )


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


class FeatureEncoder:
    """Encode a table's feature columns as a float32 matrix.

    Numeric columns are passed through, standardized to mean 0 and standard deviation 1
    (population std, as scikit-learn's ``StandardScaler``) when ``standardize`` is true;
    a constant column keeps std 1 so it becomes all zeros. String, categorical and bool
    columns (and any named in ``categorical``) are one-hot encoded, one output column per
    category seen at ``fit``, named ``"<column>=<value>"``. Categories are compared as
    text, so ``1`` and ``"1"`` are the same category.

    A category not seen at ``fit`` encodes as an all-zero row for that column's one-hot
    block: the model sees "none of the known values" rather than an error, so a new
    table with a rare new value can still be scored.

    Missing values: with ``missing="error"`` (default) a NaN/None or infinite value in any
    feature raises :class:`MissingValuesError` naming the column and how many rows. With
    ``missing="mean"`` a numeric gap is filled with the column's fitted mean (0 after
    standardizing) and a categorical gap encodes as an all-zero block, like an unseen
    category.

    ``max_categories`` refuses a string column with more distinct values than this (an
    id or free-text column one-hot encoded would make a huge, useless matrix); ``None``
    lifts the limit.

    Fitted attributes: ``columns_`` (input columns, in order), ``kinds_`` (``"numeric"`` or
    ``"categorical"`` per column), ``means_``/``scales_`` (per numeric column),
    ``categories_`` (per categorical column), ``feature_names_out_``.
    """

    def __init__(
        self,
        *,
        standardize: bool = True,
        categorical: Sequence[str] | None = None,
        missing: str = "error",
        max_categories: int | None = 1000,
    ):
        self.standardize = standardize
        self.categorical = categorical
        self.missing = missing
        self.max_categories = max_categories

    # scikit-learn's get_params/set_params, without inheriting its machinery.
    def get_params(self, deep: bool = True) -> dict:
        """The constructor parameters, as scikit-learn's ``get_params``."""
        return {
            "standardize": self.standardize,
            "categorical": self.categorical,
            "missing": self.missing,
            "max_categories": self.max_categories,
        }

    def set_params(self, **params: Any) -> FeatureEncoder:
        """Set constructor parameters, as scikit-learn's ``set_params``."""
        for k, v in params.items():
            if k not in self.get_params():
                raise InputError(f"FeatureEncoder has no parameter {k!r}")
            setattr(self, k, v)
        return self

    def fit(
        self, X: pd.DataFrame, columns: Sequence[str] | None = None, *, source: str | None = None
    ) -> FeatureEncoder:
        """Learn the encoding of ``columns`` of ``X`` (all its columns if not given)."""
        self._fit(X, columns, source)
        return self

    def fit_transform(
        self, X: pd.DataFrame, columns: Sequence[str] | None = None, *, source: str | None = None
    ) -> np.ndarray:
        """``fit`` then ``transform`` on the same table."""
        self._fit(X, columns, source)
        return self.transform(X, source=source)

    def transform(self, X: pd.DataFrame, *, source: str | None = None) -> np.ndarray:
        """Encode ``X`` (which must hold every fitted column; others are ignored)."""
        self._check_fitted()
        if not isinstance(X, pd.DataFrame):
            raise InputError(f"features must be a pandas DataFrame, got {type(X).__name__}")
        require_columns(X, self.columns_, role="feature column", source=source)
        n = len(X)
        out = np.zeros((n, len(self.feature_names_out_)), dtype=np.float32)
        offset = 0
        for col, kind in zip(self.columns_, self.kinds_):
            s = X[col]
            if isinstance(s, pd.DataFrame):
                raise InputError(f"feature column {col!r} appears more than once{_where(source)}")
            if kind == "numeric":
                v = self._numeric_values(s, col, source)
                bad = ~np.isfinite(v)
                if bad.any():
                    if self.missing == "error":
                        raise MissingValuesError(
                            f"feature column {col!r}{_where(source)} has {int(bad.sum())} missing or infinite "
                            f"value(s) of {n} rows (FeatureEncoder(missing='mean') fills them)"
                        )
                    v = np.where(bad, self.means_[col], v)
                if self.standardize:
                    v = (v - self.means_[col]) / self.scales_[col]
                v32 = v.astype(np.float32)
                if not np.isfinite(v32).all():
                    raise InputError(f"feature column {col!r}{_where(source)} has values beyond the float32 range")
                out[:, offset] = v32
                offset += 1
            else:
                cats = self.categories_[col]
                codes = self._category_codes(s, col, cats, source)
                rows = np.flatnonzero(codes >= 0)
                out[rows, offset + codes[rows]] = 1.0
                offset += len(cats)
        return out

    # ---- fitting ------------------------------------------------------------------

    def _fit(self, X: pd.DataFrame, columns: Sequence[str] | None, source: str | None) -> None:
        if self.missing not in ("error", "mean"):
            raise InputError(f"missing must be 'error' or 'mean', got {self.missing!r}")
        if not isinstance(X, pd.DataFrame):
            raise InputError(f"features must be a pandas DataFrame, got {type(X).__name__}")
        cols = list(X.columns) if columns is None else list(columns)
        if not cols:
            raise InputError(f"no feature columns to encode{_where(source)}")
        if len(set(cols)) != len(cols):
            twice = sorted({c for c in cols if cols.count(c) > 1})
            raise InputError(f"feature columns are named more than once: {twice}")
        require_columns(X, cols, role="feature column", source=source)
        if len(X) == 0:
            raise InputError(f"cannot fit a feature encoding on a table with no rows{_where(source)}")
        forced = set(self.categorical or ())
        unknown = forced - set(cols)
        if unknown:
            raise InputError(f"categorical names {sorted(unknown)} that are not feature columns {cols}")
        kinds, means, scales, categories, names = [], {}, {}, {}, []
        for col in cols:
            s = X[col]
            if isinstance(s, pd.DataFrame):
                raise InputError(f"feature column {col!r} appears more than once{_where(source)}")
            if col not in forced and _is_numeric(s):
                v = self._numeric_values(s, col, source)
                ok = np.isfinite(v)
                if not ok.all() and self.missing == "error":
                    raise MissingValuesError(
                        f"feature column {col!r}{_where(source)} has {int((~ok).sum())} missing or infinite "
                        f"value(s) of {len(v)} rows (FeatureEncoder(missing='mean') fills them)"
                    )
                finite = v[ok]
                with np.errstate(over="ignore", invalid="ignore"):
                    mean = float(finite.mean()) if finite.size else 0.0
                    std = float(finite.std()) if finite.size else 1.0
                if not (np.isfinite(mean) and np.isfinite(std)):
                    raise InputError(f"feature column {col!r}{_where(source)} has values too large to standardize")
                kinds.append("numeric")
                means[col] = mean
                scales[col] = std if std > 0 else 1.0
                names.append(str(col))
            elif col in forced or _is_categorical(s):
                text, missing = self._as_text(s)
                if missing.any() and self.missing == "error":
                    raise MissingValuesError(
                        f"feature column {col!r}{_where(source)} has {int(missing.sum())} missing value(s) of "
                        f"{len(s)} rows (FeatureEncoder(missing='mean') encodes them as all zeros)"
                    )
                _, uniques = factorize(text[~missing], what=f"feature column {col!r}")
                cats = [str(u) for u in uniques]
                if self.max_categories is not None and len(cats) > self.max_categories:
                    raise InputError(
                        f"feature column {col!r}{_where(source)} has {len(cats)} distinct values, more than "
                        f"max_categories={self.max_categories}; leave it out of the features or raise the limit"
                    )
                kinds.append("categorical")
                categories[col] = cats
                names.extend(f"{col}={c}" for c in cats)
            else:
                raise InputError(
                    f"feature column {col!r}{_where(source)} has type {s.dtype}, which cannot be encoded; "
                    "use numbers, strings or booleans"
                )
        self.columns_ = [str(c) for c in cols]
        self.kinds_ = kinds
        self.means_ = means
        self.scales_ = scales
        self.categories_ = categories
        self.feature_names_out_ = names

    # ---- column helpers -------------------------------------------------------------

    @staticmethod
    def _numeric_values(s: pd.Series, col: str, source: str | None) -> np.ndarray:
        if _is_numeric(s):
            return s.to_numpy(dtype=np.float64, na_value=np.nan)
        # A column fitted as numbers that reads as text here (a stray word in a new CSV).
        conv = pd.to_numeric(s.astype(object), errors="coerce")
        bad = conv.isna().to_numpy() & ~s.isna().to_numpy()
        if bad.any():
            example = s[bad].iloc[0]
            raise InputError(
                f"feature column {col!r}{_where(source)} should hold numbers but {int(bad.sum())} row(s) "
                f"do not, e.g. {str(example)[:40]!r}"
            )
        return conv.to_numpy(dtype=np.float64, na_value=np.nan)

    @staticmethod
    def _as_text(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        missing = s.isna().to_numpy()
        if pd.api.types.is_float_dtype(s.dtype):
            # A column of whole numbers reads as float once a CSV has a gap in it; print
            # 3.0 as "3" so the categories match the ones fitted on the gapless column.
            v = s.to_numpy(dtype=np.float64, na_value=np.nan)[~missing]
            if np.isfinite(v).all() and (v == np.round(v)).all() and (np.abs(v) < 2.0**53).all():
                s = s.astype("Int64")
        cells = s.astype(object).where(~missing, "")
        try:
            text = cells.astype(str).to_numpy(dtype=object)
        except UnicodeDecodeError:  # bytes cells (Parquet binary columns) that are not UTF-8
            text = cells.map(_cell_text).to_numpy(dtype=object)
        return text, missing

    def _category_codes(self, s: pd.Series, col: str, cats: list[str], source: str | None) -> np.ndarray:
        text, missing = self._as_text(s)
        if missing.any() and self.missing == "error":
            raise MissingValuesError(
                f"feature column {col!r}{_where(source)} has {int(missing.sum())} missing value(s) of {len(s)} rows"
            )
        codes = pd.Index(cats, dtype=object).get_indexer(text)
        codes[missing] = -1
        return codes

    # ---- persistence ----------------------------------------------------------------

    def to_dict(self) -> dict:
        """The fitted encoding as plain JSON-able data."""
        self._check_fitted()
        cols = []
        for col, kind in zip(self.columns_, self.kinds_):
            if kind == "numeric":
                cols.append({"name": col, "kind": kind, "mean": self.means_[col], "scale": self.scales_[col]})
            else:
                cols.append({"name": col, "kind": kind, "categories": list(self.categories_[col])})
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "params": {
                "standardize": bool(self.standardize),
                "categorical": list(self.categorical) if self.categorical is not None else None,
                "missing": self.missing,
                "max_categories": self.max_categories,
            },
            "columns": cols,
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> FeatureEncoder:
        """Rebuild a fitted encoder from :meth:`to_dict`'s output."""
        try:
            if d.get("format") != _FORMAT:
                raise ValueError(f"format is {d.get('format')!r}, expected {_FORMAT!r}")
            if d.get("version") != _VERSION:
                raise ValueError(f"version {d.get('version')!r} is not {_VERSION}")
            enc = cls(**dict(d["params"]))
            enc.columns_, enc.kinds_, enc.means_, enc.scales_, enc.categories_ = [], [], {}, {}, {}
            names = []
            for c in d["columns"]:
                name, kind = str(c["name"]), c["kind"]
                enc.columns_.append(name)
                enc.kinds_.append(kind)
                if kind == "numeric":
                    enc.means_[name] = float(c["mean"])
                    enc.scales_[name] = float(c["scale"])
                    names.append(name)
                elif kind == "categorical":
                    enc.categories_[name] = [str(v) for v in c["categories"]]
                    names.extend(f"{name}={v}" for v in enc.categories_[name])
                else:
                    raise ValueError(f"unknown column kind {kind!r}")
            enc.feature_names_out_ = names
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"not a feature encoding: {e}") from None
        return enc

    @property
    def n_features_out_(self) -> int:
        """Width of the encoded matrix."""
        self._check_fitted()
        return len(self.feature_names_out_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "feature_names_out_"):
            raise NotFittedError("this FeatureEncoder is not fitted yet: call fit() first")

    def __repr__(self) -> str:
        if hasattr(self, "feature_names_out_"):
            return f"FeatureEncoder(columns={len(self.columns_)}, features_out={len(self.feature_names_out_)})"
        return f"FeatureEncoder(standardize={self.standardize}, missing={self.missing!r})"


class LabelEncoder:
    """Map label values (numbers, strings or booleans) to class indices ``0..k-1``.

    ``classes_`` is the sorted list of class values (plain Python values, JSON-able);
    index ``i`` is class ``classes_[i]``. ``transform`` refuses values not in
    ``classes_``; when the values do not match exactly it compares them as text, so
    classes stored in JSON as ``"1"`` still match a label column read as ``1``.
    """

    def fit(self, y: Any, *, what: str = "label") -> LabelEncoder:
        """Learn the classes present in ``y``."""
        self.fit_transform(y, what=what)
        return self

    def fit_transform(self, y: Any, *, what: str = "label") -> np.ndarray:
        """Learn the classes of ``y`` and return its class indices (int64)."""
        codes, uniques = factorize(_values(y), what=what)
        classes = [_plain(u) for u in uniques]
        bad = [c for c in classes if isinstance(c, float) and not np.isfinite(c)]
        if bad:
            raise InputError(f"{what} has infinite value(s) ({', '.join(map(str, bad))}); classes must be finite "
                             "numbers or names")
        self.classes_ = classes
        return np.asarray(codes, dtype=np.int64)

    @classmethod
    def from_classes(cls, classes: Sequence[Any]) -> LabelEncoder:
        """An encoder with the given classes, in the given order (class ``i`` = ``classes[i]``)."""
        classes = [_plain(c) for c in classes]
        if not classes:
            raise InputError("label classes are empty")
        if len({str(c) for c in classes}) != len(classes):
            raise InputError(f"label classes are not distinct: {classes}")
        enc = cls()
        enc.classes_ = classes
        return enc

    def transform(self, y: Any, *, what: str = "label") -> np.ndarray:
        """Class indices (int64) of ``y``; a value outside ``classes_`` raises :class:`InputError`."""
        self._check_fitted()
        a = _values(y)
        if a.ndim != 1:
            raise InputError(f"{what} must be one-dimensional, got shape {a.shape}")
        missing = int(pd.isna(a).sum()) if a.dtype.kind not in "biu" else 0
        if missing:
            raise MissingValuesError(f"{what} has {missing} missing value(s) (NaN/None) of {a.size} rows")
        try:
            codes = pd.Index(self.classes_, dtype=object).get_indexer(a)
        except TypeError:
            codes = np.full(a.size, -1, dtype=np.int64)
        if (codes < 0).any():
            text = pd.Index([str(c) for c in self.classes_], dtype=object)
            codes = text.get_indexer(pd.Series(a, dtype=object).astype(str).to_numpy(dtype=object))
        if (codes < 0).any():
            unseen = sorted({str(v) for v in a[codes < 0]})
            shown = ", ".join(v if len(v) <= 40 else v[:37] + "..." for v in unseen[:5]) + (f", ... ({len(unseen)} in all)" if len(unseen) > 5 else "")
            raise InputError(f"{what} has values that are not classes of the model {self.classes_}: {shown}")
        return codes.astype(np.int64, copy=False)

    def inverse_transform(self, codes: Any) -> np.ndarray:
        """Class values of class indices."""
        self._check_fitted()
        c = np.asarray(codes)
        if c.size and (c.min() < 0 or c.max() >= len(self.classes_)):
            raise InputError(f"class indices must lie in 0..{len(self.classes_) - 1}")
        return np.asarray(self.classes_, dtype=object)[c]

    def to_dict(self) -> dict:
        """The classes as JSON-able data."""
        self._check_fitted()
        return {"format": _LABEL_FORMAT, "version": _VERSION, "classes": list(self.classes_)}

    @classmethod
    def from_dict(cls, d: Mapping) -> LabelEncoder:
        """Rebuild from :meth:`to_dict`'s output."""
        try:
            if d.get("format") != _LABEL_FORMAT:
                raise ValueError(f"format is {d.get('format')!r}, expected {_LABEL_FORMAT!r}")
            classes = list(d["classes"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise InputError(f"not a label encoding: {e}") from None
        return cls.from_classes(classes)

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError("this LabelEncoder is not fitted yet: call fit() first")

    def __repr__(self) -> str:
        return f"LabelEncoder(classes={self.classes_})" if hasattr(self, "classes_") else "LabelEncoder()"


def as_plain_values(s: pd.Series) -> pd.Series:
    """``s`` with date, time-span, period and interval values turned into their text.

    Class and group values are stored in JSON; numpy's datetimes would come back from
    ``.item()`` as integers or ``datetime`` objects that neither JSON nor a later
    comparison with the column handles. Missing values stay missing.
    """
    t = s.dtype
    if (
        pd.api.types.is_datetime64_any_dtype(t)
        or pd.api.types.is_timedelta64_dtype(t)
        or isinstance(t, (pd.PeriodDtype, pd.IntervalDtype))
    ):
        return s.astype(str).where(s.notna().to_numpy(), None).astype(object)
    return s


def _values(y: Any) -> np.ndarray:
    if isinstance(y, pd.Index):
        y = y.to_series()
    if not isinstance(y, pd.Series):
        a = np.asarray(y)
        if a.dtype.kind not in "mM":
            return a
        y = pd.Series(a)
    return as_plain_values(y).to_numpy()


def _cell_text(v: Any) -> str:
    """A cell as text; bytes that are not UTF-8 keep their undecodable bytes as escapes."""
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("utf-8", errors="backslashreplace")
    return str(v)
