"""The fairness report of data that arrives in chunks (a table larger than memory).

:class:`ReportAccumulator` counts one chunk at a time into the additive tables of
``counts.py`` and gives the same :class:`FairnessReport` as :func:`fairness_report` on all
rows at once:

* groups get a running id in order of first appearance (a group first seen in chunk 5
  grows the tables); at the end the tables are permuted into the order
  :class:`GroupEncoder` gives the full data (it is fitted on the distinct group rows,
  which gives the same levels, ids and names as fitting on every row);
* the fine calibration grid depends on the number of groups (``fine_subbins``): each
  chunk is counted on the grid of the groups seen so far and the running histogram is
  coarsened (halved, exactly: ``floor(2x) // 2 == floor(x)``) when more groups appear;
* the classes must be known before counting (``classes=``); :func:`streaming_report`
  and :func:`fairness_report_from_chunks` find them the way ``fairness_report`` does,
  with a first pass over only the label (and prediction) and sensitive columns;
* input errors (NaN, scores outside [0, 1], unknown labels) are tallied over all chunks
  and raised at the end with the totals, so the message is the in-memory one.

Integer counts equal the in-memory ones exactly; the summed confidences in the
calibration histogram are added in another order (per chunk, then across chunks), so
``mean_score`` and the ECE figures agree to ~1e-15 rather than bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from reprogram.data.groups import GroupEncoder, as_columns, count_missing, factorize
from reprogram.errors import (
    GroupError,
    InputError,
    LengthMismatchError,
    MissingValuesError,
)
from reprogram.metrics.counts import GroupCounts, count_groups, fine_subbins
from reprogram.metrics.report import FairnessReport, _infer_classes, _score_array

__all__ = ["ReportAccumulator", "dataset_report_from_batches", "fairness_report_from_chunks", "iter_table",
           "streaming_report"]


def _coarsen(a: np.ndarray, factor: int) -> np.ndarray:
    """Merge ``factor`` neighbouring fine bins (last axis)."""
    if factor == 1:
        return a
    return a.reshape(a.shape[:-1] + (a.shape[-1] // factor, factor)).sum(axis=-1)


class ReportAccumulator:
    """Count chunks with :meth:`update`; :meth:`report` gives the :class:`FairnessReport`.

    ``classes`` (the class labels in order) must be given; the other options are those of
    :func:`fairness_report`. Memory is the count tables plus one chunk.
    """

    def __init__(self, classes: Any, *, pos_label: Any = None, threshold: float = 0.5, n_bins: int = 15,
                 min_group_size: int = 30):
        if n_bins < 1:
            raise InputError(f"n_bins must be at least 1, got {n_bins}")
        self.classes = list(classes)
        self._index = pd.Index(self.classes)
        if not self._index.is_unique:
            raise InputError(f"classes must be distinct, got {self.classes}")
        self.k = len(self.classes)
        self.pos_label, self.threshold, self.n_bins, self.min_group_size = pos_label, threshold, n_bins, min_group_size
        self.positive_index = None
        if self.k == 2:
            self.positive_index = 1
            if pos_label is not None:
                if pos_label not in self.classes:
                    raise InputError(f"pos_label {pos_label!r} is not one of the classes {self.classes}")
                self.positive_index = self.classes.index(pos_label)
        elif pos_label is not None:
            raise InputError("pos_label only applies to binary tasks")
        self.n = 0
        self.columns: list[str] | None = None
        self._levels: list[dict] = []  # per column: value -> running level id
        self._level_values: list[list] = []
        self._combos: dict[tuple, int] = {}  # running level ids -> running group id
        self._missing_sens: list[int] = []
        self._missing = {"y_true": 0, "y_pred": 0, "y_score": 0}
        self._unknown: dict[str, list[np.ndarray]] = {"y_true": [], "y_pred": []}
        self._score_lo, self._score_hi = np.inf, -np.inf
        self._has_pred: bool | None = None
        self._has_score: bool | None = None
        self._failed = False
        self._confusion: np.ndarray | None = None
        self._calib_count: np.ndarray | None = None
        self._calib_score: np.ndarray | None = None
        self._subbins: int | None = None

    # -- groups ---------------------------------------------------------------------
    def _group_ids(self, sensitive: Any, n: int) -> np.ndarray | None:
        cols = as_columns(sensitive, n)
        if self.columns is None:
            self.columns = [name for name, _ in cols]
            self._levels = [{} for _ in cols]
            self._level_values = [[] for _ in cols]
            self._missing_sens = [0] * len(cols)
        elif [name for name, _ in cols] != self.columns:
            raise InputError(f"expected sensitive column(s) {self.columns}, got {[name for name, _ in cols]}")
        missing = [count_missing(a) for _, a in cols]
        for i, m in enumerate(missing):
            self._missing_sens[i] += m
        if any(missing):  # the error is this column's; later chunks only add to the tally
            self._failed = True
            return None
        combo = None
        for i, (name, values) in enumerate(cols):
            codes, uniques = factorize(values, what=f"sensitive feature {name!r}")
            lv, vals = self._levels[i], self._level_values[i]
            run = np.empty(len(uniques), dtype=np.int64)
            for j, u in enumerate(uniques.tolist() if hasattr(uniques, "tolist") else list(uniques)):
                key = (type(u).__name__ == "str", u)
                if key not in lv:
                    lv[key] = len(vals)
                    vals.append(uniques[j])
                run[j] = lv[key]
            local = run[codes]
            if combo is None:
                combo = local
            else:  # a chunk-local combined key; mapped to running group ids below
                combo = combo * (len(vals) + 1) + local
        # distinct combinations in this chunk -> running group ids
        ccodes, cuniq = factorize(combo, what="sensitive features")
        gid = np.empty(len(cuniq), dtype=np.int64)
        radices = [len(v) + 1 for v in self._level_values]
        for j, c in enumerate(cuniq.tolist()):
            parts = []
            for r in reversed(radices[1:]):
                c, p = divmod(c, r)
                parts.append(p)
            parts.append(c)
            key = tuple(reversed(parts))
            if key not in self._combos:
                self._combos[key] = len(self._combos)
            gid[j] = self._combos[key]
        return gid[ccodes]

    # -- labels ---------------------------------------------------------------------
    def _codes(self, values: Any, what: str, n: int) -> np.ndarray | None:
        a = np.asarray(values)
        if a.ndim != 1 or len(a) != n:
            if what == "y_true":
                raise InputError(f"y_true must be one-dimensional, got shape {a.shape}")
            raise LengthMismatchError(f"y_true has {n} rows but y_pred has shape {a.shape}")
        m = count_missing(a)
        self._missing[what] += m
        if m:
            return None
        pos = self._index.get_indexer(a)
        bad = pos < 0
        if bad.any():
            self._unknown[what].append(pd.unique(a[bad]))
            return None
        return pos

    def _score(self, y_score: Any, n: int) -> np.ndarray | None:
        s = _score_array(y_score, n)
        k = self.k
        if k == 2 and s.ndim == 2 and s.shape[1] != 2:
            raise InputError(f"a binary task needs y_score of shape (n,) or (n, 2), got {s.shape}")
        if k > 2 and (s.ndim != 2 or s.shape[1] != k):
            raise InputError(f"a {k}-class task needs y_score of shape (n, {k}), got {s.shape}")
        if len(s) == 0:
            return s
        lo, hi = s.min(), s.max()
        if np.isnan(lo) or np.isnan(hi):
            self._missing["y_score"] += int(np.isnan(s).sum())
            return None
        self._score_lo, self._score_hi = min(self._score_lo, float(lo)), max(self._score_hi, float(hi))
        if lo < 0 or hi > 1:
            return None
        return s

    # -- counting -------------------------------------------------------------------
    def update(self, y_true: Any, y_pred: Any = None, y_score: Any = None, sensitive: Any = None) -> None:
        """Count one chunk of rows (arguments as for :func:`fairness_report`)."""
        if sensitive is None:
            raise InputError("sensitive features are required (sensitive=...)")
        if y_pred is None and y_score is None:
            raise InputError("give y_pred, y_score or both")
        if self._has_pred is None:
            self._has_pred, self._has_score = y_pred is not None, y_score is not None
        elif (y_pred is not None, y_score is not None) != (self._has_pred, self._has_score):
            raise InputError("every chunk must give the same of y_pred / y_score")
        y = np.asarray(y_true)
        if y.ndim != 1:
            raise InputError(f"y_true must be one-dimensional, got shape {y.shape}")
        n = len(y)
        if n == 0:
            return
        self.n += n
        group = self._group_ids(sensitive, n)
        score = None if y_score is None else self._score(y_score, n)
        true_codes = self._codes(y, "y_true", n)
        pred_codes = None if y_pred is None else self._codes(y_pred, "y_pred", n)
        if (
            self._failed or group is None or true_codes is None
            or (y_score is not None and score is None) or (y_pred is not None and pred_codes is None)
        ):
            self._failed = True  # keep tallying errors over the remaining chunks, count nothing
            return
        k, p = self.k, self.positive_index
        confidence = correct = None
        if score is not None:
            if k == 2:
                if score.ndim == 2:
                    score = score[:, p]
                confidence = score
                correct = true_codes if p == 1 else true_codes == p
                if pred_codes is None:
                    above = score >= self.threshold
                    pred_codes = above if p == 1 else ~above
            else:
                top = score.argmax(axis=1)
                confidence = score[np.arange(n), top]
                correct = top == true_codes
                if pred_codes is None:
                    pred_codes = top
        n_groups = len(self._combos)
        subbins = fine_subbins(n_groups, self.n_bins) if confidence is not None else None
        c = count_groups(group, true_codes, pred_codes, n_groups, k, confidence=confidence, correct=correct,
                         n_bins=self.n_bins, subbins=subbins)
        self._add(c, subbins)

    def _add(self, c: GroupCounts, subbins: int | None) -> None:
        if self._confusion is None:
            self._confusion, self._calib_count, self._calib_score = c.confusion, c.calib_count, c.calib_score
            self._subbins = subbins
            return
        g_old, g_new = len(self._confusion), len(c.confusion)
        if g_new > g_old:  # groups first seen in this chunk: grow the tables
            pad = ((0, g_new - g_old),) + ((0, 0),) * 2
            self._confusion = np.pad(self._confusion, pad)
            if self._calib_count is not None:
                self._calib_count = np.pad(self._calib_count, pad)
                self._calib_score = np.pad(self._calib_score, pad)
        self._confusion += c.confusion
        if self._calib_count is not None:
            if subbins < self._subbins:  # more groups, coarser grid
                f = self._subbins // subbins
                self._calib_count, self._calib_score = _coarsen(self._calib_count, f), _coarsen(self._calib_score, f)
                self._subbins = subbins
            self._calib_count += c.calib_count
            self._calib_score += c.calib_score

    # -- the result -----------------------------------------------------------------
    def _raise_errors(self) -> None:
        n = self.n
        for name, m in zip(self.columns or [], self._missing_sens):
            if m:
                raise MissingValuesError(f"sensitive feature {name!r} has {m} missing value(s) (NaN/None) of {n} rows")
        if len(self._combos) == 1:
            raise GroupError(f"only one group present ({self._group_names()[1][0]}); "
                             "a fairness report compares at least two")
        if self._missing["y_score"]:
            raise MissingValuesError(f"y_score has {self._missing['y_score']} missing value(s) (NaN) of {n} rows")
        if self._score_lo < 0 or self._score_hi > 1:
            raise InputError(
                f"y_score must hold probabilities in [0, 1], got values from {self._score_lo:.4g} to "
                f"{self._score_hi:.4g} (pass probabilities, not logits)"
            )
        for what in ("y_true", "y_pred"):
            if self._missing[what]:
                raise MissingValuesError(f"{what} has {self._missing[what]} missing value(s) (NaN/None) of {n} rows")
        for what in ("y_true", "y_pred"):
            if self._unknown[what]:
                _, uniq = factorize(np.concatenate(self._unknown[what]), what=what)
                unknown = [str(v) for v in pd.unique(uniq)][:5]
                raise InputError(f"labels {', '.join(unknown)} are not among classes {self.classes}")

    def _group_names(self) -> tuple[np.ndarray, list[str], list[str]]:
        """(final id of each running group id, group names, column names)."""
        keys = list(self._combos)  # in running-id order
        frame = {}
        for i, name in enumerate(self.columns):
            vals = self._level_values[i]
            arr = np.empty(len(keys), dtype=object)
            arr[:] = [vals[key[i]] for key in keys]
            frame[name] = _typed(arr, vals)
        enc = GroupEncoder()
        final = enc.fit_transform(frame)
        return np.asarray(final, dtype=np.int64), enc.names_, enc.columns_

    def report(self) -> FairnessReport:
        """The :class:`FairnessReport` of every row counted so far."""
        if self.n == 0:
            raise InputError("y_true is empty: nothing to report on")
        self._raise_errors()
        if self.k < 2:
            raise InputError(f"only one class present ({self.classes[0]}); pass classes=[...] to name the others")
        final, names, columns = self._group_names()
        order = np.argsort(final)  # running ids in final order

        def perm(a):
            return None if a is None else a[order]

        counts = GroupCounts(perm(self._confusion), perm(self._calib_count), perm(self._calib_score), self.n_bins)
        return FairnessReport.from_counts(counts, classes=self.classes, groups=names, sensitive_columns=columns,
                                          positive_index=self.positive_index, min_group_size=self.min_group_size)


def _typed(arr: np.ndarray, vals: list) -> np.ndarray:
    """The distinct values of a column back in the numpy dtype they came in (numbers and
    bools; anything else stays an object array, as pandas holds text)."""
    types = {type(v) for v in vals}
    if len(types) == 1 and issubclass(types.pop(), (np.bool_, np.integer, np.floating)):
        return arr.astype(np.asarray(vals).dtype)
    return arr


# ---------------------------------------------------------------------------------------
# tables read in chunks

def iter_table(path: str | os.PathLike, columns: list[str], chunk_rows: int = 1_000_000,
               dtype: dict | None = None) -> Iterator[pd.DataFrame]:
    """``columns`` of a CSV or Parquet table, ``chunk_rows`` rows at a time."""
    import csv
    import zlib

    from reprogram.data.tables import table_kind

    kind, sep = table_kind(path)
    try:
        if kind == "csv":
            yield from pd.read_csv(path, sep=sep, usecols=columns, chunksize=chunk_rows, encoding="utf-8",
                                   dtype=dtype, low_memory=False)
            return
        import pyarrow.parquet as pq

        from reprogram.data import tables

        nested_as_text = getattr(tables, "_nested_as_text", None)
        # pre_buffer=False: with it, pyarrow keeps every column chunk read so far cached
        # (the memory then grows with the file, ~8 MiB per million rows and column)
        pf = pq.ParquetFile(path, pre_buffer=False)
        for batch in pf.iter_batches(batch_size=chunk_rows, columns=columns):
            df = batch.to_pandas()
            if nested_as_text is not None:  # as read_table does: list/struct/map cells as JSON text
                df = nested_as_text(df)
            if dtype:
                df = df.astype({c: t for c, t in dtype.items() if c in df.columns})
            yield df
    except pd.errors.EmptyDataError:
        raise InputError(f"cannot read table {os.fspath(path)!r}: the file is empty") from None
    except (ValueError, OSError, EOFError, LookupError, TypeError, zlib.error, csv.Error, MemoryError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot read table {os.fspath(path)!r}: {msg}") from None


def _table_columns(path: str | os.PathLike) -> list[str]:
    from reprogram.data.tables import read_table, table_kind

    kind, sep = table_kind(path)
    p = Path(path)
    if not p.is_file():
        read_table(path)  # the usual "not found" / "not a file" error
    if kind == "csv":
        try:
            return [str(c) for c in pd.read_csv(p, sep=sep, nrows=0, encoding="utf-8").columns]
        except pd.errors.EmptyDataError:
            raise InputError(f"cannot read table {os.fspath(path)!r}: the file is empty") from None
        except (ValueError, OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read table {os.fspath(path)!r}: {str(e).splitlines()[0]}") from None
    import pyarrow.parquet as pq

    try:
        return [str(c) for c in pq.ParquetFile(p).schema_arrow.names]
    except (ValueError, OSError) as e:
        raise InputError(f"cannot read table {os.fspath(path)!r}: {str(e).splitlines()[0]}") from None


class _Scan:
    """A first pass over the label / prediction / sensitive columns: their distinct values
    (for the classes), and for CSV whether a column's type differs between chunks."""

    def __init__(self, chunks: Iterable[pd.DataFrame], label: str, pred: str | None, sensitive: list[str]):
        self.uniques: dict[str, list[np.ndarray]] = {label: [], **({pred: []} if pred else {})}
        self.kinds: dict[str, set] = {c: set() for c in [label, *([pred] if pred else []), *sensitive]}
        self.label_dtype = None
        for df in chunks:
            for c in self.kinds:
                self.kinds[c].add(df[c].dtype.kind)
            if self.label_dtype is None:
                self.label_dtype = df[label].dtype
            for c in self.uniques:
                a = df[c].to_numpy()
                if count_missing(a):
                    a = a[~pd.isna(a)]
                self.uniques[c].append(pd.unique(a))

    def overrides(self, text=str) -> dict:
        """dtype for each column typed differently in different chunks (as one read types it)."""
        out = {}
        for c, kinds in self.kinds.items():
            if len(kinds) > 1:
                out[c] = np.float64 if kinds <= set("iuf") else text
        return out

    def sorted_uniques(self, col: str) -> np.ndarray:
        parts = self.uniques[col]
        if not parts:
            return np.array([])
        return factorize(np.concatenate(parts) if len(parts) > 1 else parts[0], what=col)[1]


def fairness_report_from_chunks(
    chunks: Iterable[pd.DataFrame] | Callable[[], Iterable[pd.DataFrame]],
    *,
    label: str,
    sensitive: str | list[str],
    pred: str | None = None,
    score: str | list[str] | None = None,
    classes: Any = None,
    pos_label: Any = None,
    threshold: float = 0.5,
    n_bins: int = 15,
    min_group_size: int = 30,
) -> FairnessReport:
    """:func:`fairness_report` of DataFrame chunks, holding one chunk at a time.

    Columns are named as in ``reprogram metrics``: ``label``, ``sensitive`` (one or
    several), ``pred`` and/or ``score`` (one column of P(positive), or one per class).
    Without ``classes`` they are inferred as ``fairness_report`` infers them, which takes
    a first pass: ``chunks`` must then be re-iterable (a list, or a callable returning a
    fresh iterator of chunks).
    """
    sens = [sensitive] if isinstance(sensitive, str) else list(sensitive)
    scores = [score] if isinstance(score, str) else list(score or [])

    def fresh():
        return chunks() if callable(chunks) else chunks

    if classes is None:
        if isinstance(chunks, Iterator):
            raise InputError("to infer the classes, chunks must be re-iterable (a list or a callable); "
                             "or pass classes=[...]")
        scan = _Scan(fresh(), label, pred, sens)
        classes = _classes_of(scan, label, pred, len(scores))
    return _count_chunks(fresh(), label=label, sensitive=sens, pred=pred, score=scores, classes=classes,
                         pos_label=pos_label, threshold=threshold, n_bins=n_bins, min_group_size=min_group_size)


def _classes_of(scan: _Scan, label: str, pred: str | None, n_score_cols: int) -> list:
    uniques = [scan.sorted_uniques(label)] + ([scan.sorted_uniques(pred)] if pred else [])
    if all(len(u) == 0 for u in uniques):
        return [0, 1]  # nothing but missing labels: the error comes from the counting pass
    return _infer_classes(uniques, None, n_score_cols if n_score_cols > 1 else None)[0]


def _count_chunks(chunks, *, label, sensitive, pred, score, classes, pos_label, threshold, n_bins,
                  min_group_size) -> FairnessReport:
    acc = ReportAccumulator(classes, pos_label=pos_label, threshold=threshold, n_bins=n_bins,
                            min_group_size=min_group_size)
    for df in chunks:
        s = None
        if score:
            s = df[score].to_numpy()
            if s.dtype.kind not in "fiu":
                raise InputError(f"score column(s) {', '.join(score)} must be numeric")
        acc.update(df[label].to_numpy(), df[pred].to_numpy() if pred else None, s, df[sensitive])
    return acc.report()


def streaming_report(
    path: str | os.PathLike,
    *,
    label: str,
    sensitive: str | list[str],
    pred: str | None = None,
    score: str | list[str] | None = None,
    chunk_rows: int = 1_000_000,
    classes: Any = None,
    pos_label: Any = None,
    threshold: float = 0.5,
    n_bins: int = 15,
    min_group_size: int = 30,
    resolve: Callable[[np.dtype], tuple[Any, Any]] | None = None,
) -> FairnessReport:
    """:func:`fairness_report` of a CSV or Parquet predictions table read ``chunk_rows`` rows at
    a time, so memory stays flat however large the file.

    A first pass reads only the label, prediction and sensitive columns (the classes, and
    for CSV the column types one whole-file read would give); the second counts.
    ``resolve(label_dtype) -> (classes, pos_label)``, when given, replaces ``classes`` and
    ``pos_label`` once the label column's type is known (the CLI names classes after
    ``score_<class>`` columns, typed like the labels).
    """
    from reprogram.data.tables import require_columns

    if chunk_rows < 1:
        raise InputError(f"chunk_rows must be at least 1, got {chunk_rows}")
    sens = [sensitive] if isinstance(sensitive, str) else list(sensitive)
    scores = [score] if isinstance(score, str) else list(score or [])
    present = pd.DataFrame(columns=_table_columns(path))
    src = str(path)
    require_columns(present, label, role="label column", source=src)
    require_columns(present, sens, role="sensitive column", source=src)
    if pred:
        require_columns(present, pred, role="prediction column", source=src)
    require_columns(present, scores, role="score column", source=src)
    first = list(dict.fromkeys([label, *([pred] if pred else []), *sens]))
    scan = _Scan(iter_table(path, first, chunk_rows), label, pred, sens)
    from reprogram.data.tables import table_kind

    dtype = scan.overrides(str if table_kind(path)[0] == "csv" else object)
    if dtype:  # type the columns as one read of the whole file would, then look again
        scan = _Scan(iter_table(path, first, chunk_rows, dtype), label, pred, sens)
    if resolve is not None:
        classes, pos_label = resolve(scan.label_dtype if scan.label_dtype is not None else np.dtype(np.int64))
    if classes is None:
        classes = _classes_of(scan, label, pred, len(scores))
    cols = list(dict.fromkeys([*first, *scores]))
    return _count_chunks(iter_table(path, cols, chunk_rows, dtype or None), label=label, sensitive=sens, pred=pred,
                         score=scores, classes=classes, pos_label=pos_label, threshold=threshold, n_bins=n_bins,
                         min_group_size=min_group_size)


def dataset_report_from_batches(ds: Any, proba_batches: Iterable[np.ndarray], **report_kw) -> FairnessReport:
    """:func:`~reprogram.metrics.dataset_report` of class probabilities that come a batch at
    a time, in dataset order (e.g. from :func:`reprogram.models.iter_proba`), counting each
    batch and keeping none."""
    classes = np.asarray(ds.classes, dtype=object)
    names = np.asarray(ds.group_names, dtype=object)
    labels, group_ids = np.asarray(ds.labels), np.asarray(ds.group_ids)
    acc = ReportAccumulator(list(ds.classes), **report_kw)
    start = 0
    for proba in proba_batches:
        rows = slice(start, start + len(proba))
        start += len(proba)
        score = proba[:, 1] if proba.shape[1] == 2 else proba
        acc.update(classes[labels[rows]], classes[proba.argmax(1)], score, {"group": names[group_ids[rows]]})
    if start != len(labels):
        raise LengthMismatchError(f"the dataset has {len(labels)} rows but {start} predictions came")
    return acc.report()
