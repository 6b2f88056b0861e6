"""``fairness_report``: every group figure and fairness gap from one pass over the data.

Vocabulary follows fairlearn: selection rate = P(pred = positive), TPR / FPR per group,
demographic-parity difference = max - min selection rate over groups, ratio = min / max,
equalized-odds difference = max(TPR gap, FPR gap), equal-opportunity difference = TPR
gap, false-positive-rate difference = FPR gap (FFB's "EOdd" is the sum of the TPR and
FPR gaps). ``max_selection_rate_deviation`` = max over groups of |selection rate of the
group - overall selection rate|: the quantity fairlearn's ``DemographicParity``
constraint bounds by its ``difference_bound``. For multi-class tasks the DP / EO figures
are the worst (max gap, min ratio) over the one-vs-rest problems of each class.

Further figures:

* ``eo_score_F`` — the multi-class equal-opportunity score of Xu et al. (2020): per group
  the sum over classes of recall, then min over groups / max over groups (1 = fair);
* ``worst_group_accuracy`` and ``accuracy_gap`` (max - min group accuracy);
* ``equity_scaled_accuracy`` = accuracy / (1 + sum_g |acc_g - acc|) (Luo et al., FairVision);
* ``ece`` (equal-width bins), ``ece_equal_mass``, ``max_group_ece`` and
  ``calibration_disparity`` (max - min group ECE) when scores are given; see
  ``calibration.py`` for what confidence means in binary and multi-class tasks.

A figure that is undefined for a group (TPR of a group with no positives) is NaN there
and left out of the gaps. Groups with fewer than ``min_group_size`` rows are kept and
flagged in ``small_groups``: their figures are noisy, but dropping them silently would
hide exactly the people an audit is about.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from reprogram.data.groups import GroupEncoder, factorize
from reprogram.errors import GroupError, InputError, LengthMismatchError, MissingValuesError
from reprogram.metrics.calibration import ece_from_histogram
from reprogram.metrics.counts import GroupCounts, count_groups

__all__ = ["FairnessReport", "fairness_report", "dataset_report"]

OVERALL_ORDER = (
    "accuracy",
    "demographic_parity_difference",
    "demographic_parity_ratio",
    "equalized_odds_difference",
    "equal_opportunity_difference",
    "false_positive_rate_difference",
    "max_selection_rate_deviation",
    "eo_score_F",
    "worst_group_accuracy",
    "accuracy_gap",
    "equity_scaled_accuracy",
    "ece",
    "ece_equal_mass",
    "max_group_ece",
    "calibration_disparity",
)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def _gap(x: np.ndarray) -> float:
    """max - min over groups (axis 0), ignoring groups where the figure is undefined."""
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    if not ok.any():
        return float("nan")
    return float(x[ok].max() - x[ok].min())


def _ratio(x: np.ndarray) -> float:
    """min / max over groups, NaN when the max is 0 (as fairlearn)."""
    x = np.asarray(x, dtype=np.float64)
    ok = ~np.isnan(x)
    if not ok.any() or x[ok].max() == 0:
        return float("nan")
    return float(x[ok].min() / x[ok].max())


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


@dataclass
class FairnessReport:
    """The result of :func:`fairness_report`.

    ``by_group`` is a DataFrame indexed by group name (like fairlearn's
    ``MetricFrame.by_group``); ``overall`` a dict of single figures; ``counts`` the
    additive per-group counts everything was computed from.
    """

    task: str
    classes: list
    positive_class: Any
    groups: list[str]
    sensitive_columns: list[str]
    by_group: pd.DataFrame
    overall: dict[str, float]
    small_groups: list[str]
    min_group_size: int
    n_bins: int
    counts: GroupCounts = field(repr=False)

    @classmethod
    def from_counts(
        cls,
        counts: GroupCounts,
        *,
        classes: list,
        groups: list[str],
        sensitive_columns: list[str],
        positive_index: int | None = None,
        min_group_size: int = 30,
    ) -> FairnessReport:
        """Compute every figure from ``counts`` (used by :func:`fairness_report` and by
        streaming callers that sum counts over chunks)."""
        cm = counts.confusion.astype(np.float64)  # (G, K, K): group, true, pred
        k = cm.shape[1]
        n_g = cm.sum(axis=(1, 2))
        n = n_g.sum()
        tp = np.diagonal(cm, axis1=1, axis2=2)  # (G, K)
        true_count = cm.sum(axis=2)
        pred_count = cm.sum(axis=1)
        acc_g = tp.sum(axis=1) / n_g
        acc = tp.sum() / n
        sel = pred_count / n_g[:, None]
        base = true_count / n_g[:, None]
        recall = _div(tp, true_count)
        fpr = _div(pred_count - tp, n_g[:, None] - true_count)
        sel_overall = pred_count.sum(axis=0) / n  # (K,)
        recall_sum = recall.sum(axis=1)  # NaN when a class is absent from the group

        cols: dict[str, np.ndarray] = {"count": n_g.astype(np.int64), "accuracy": acc_g}
        if k == 2:
            p = 1 if positive_index is None else positive_index
            cols.update(selection_rate=sel[:, p], base_rate=base[:, p], tpr=recall[:, p], fpr=fpr[:, p])
            dp_diff, dp_ratio = _gap(sel[:, p]), _ratio(sel[:, p])
            eo_diff = max(_gap(recall[:, p]), _gap(fpr[:, p]))
            eop_diff = _gap(recall[:, p])
            fpr_diff = _gap(fpr[:, p])
            sel_dev = float(np.abs(sel[:, p] - sel_overall[p]).max())
            positive = classes[p]
        else:
            for c, name in enumerate(classes):
                cols[f"selection_rate[{name}]"] = sel[:, c]
            for c, name in enumerate(classes):
                cols[f"tpr[{name}]"] = recall[:, c]
            for c, name in enumerate(classes):
                cols[f"fpr[{name}]"] = fpr[:, c]
            dp_diff = max(_gap(sel[:, c]) for c in range(k))
            dp_ratio = min(_ratio(sel[:, c]) for c in range(k))
            eo_diff = max(max(_gap(recall[:, c]), _gap(fpr[:, c])) for c in range(k))
            eop_diff = max(_gap(recall[:, c]) for c in range(k))
            fpr_diff = max(_gap(fpr[:, c]) for c in range(k))
            sel_dev = float(np.abs(sel - sel_overall).max())
            positive = None
        cols["recall_sum"] = recall_sum

        overall = {
            "accuracy": float(acc),
            "demographic_parity_difference": dp_diff,
            "demographic_parity_ratio": dp_ratio,
            "equalized_odds_difference": eo_diff,
            "equal_opportunity_difference": eop_diff,
            "false_positive_rate_difference": fpr_diff,
            "max_selection_rate_deviation": sel_dev,
            "eo_score_F": _ratio(recall_sum),
            "worst_group_accuracy": float(acc_g.min()),
            "accuracy_gap": float(acc_g.max() - acc_g.min()),
            "equity_scaled_accuracy": float(acc / (1.0 + np.abs(acc_g - acc).sum())),
        }
        if counts.calib_count is not None:
            nb = counts.n_bins
            cols["mean_score"] = counts.calib_score.sum(axis=(1, 2)) / n_g
            ece_g = ece_from_histogram(counts.calib_count, counts.calib_score, nb, "uniform")
            cols["ece"] = ece_g
            cols["ece_equal_mass"] = ece_from_histogram(counts.calib_count, counts.calib_score, nb, "quantile")
            total_count, total_score = counts.calib_count.sum(axis=0), counts.calib_score.sum(axis=0)
            overall["ece"] = float(ece_from_histogram(total_count, total_score, nb, "uniform"))
            overall["ece_equal_mass"] = float(ece_from_histogram(total_count, total_score, nb, "quantile"))
            overall["max_group_ece"] = float(np.nanmax(ece_g))
            overall["calibration_disparity"] = _gap(ece_g)
        by_group = pd.DataFrame(cols, index=pd.Index(groups, name="group"))
        small = [g for g, c in zip(groups, n_g) if c < min_group_size]
        return cls(
            task="binary" if k == 2 else "multiclass",
            classes=list(classes),
            positive_class=positive,
            groups=list(groups),
            sensitive_columns=list(sensitive_columns),
            by_group=by_group,
            overall=overall,
            small_groups=small,
            min_group_size=min_group_size,
            n_bins=counts.n_bins,
            counts=counts,
        )

    def to_dict(self) -> dict:
        """Plain-Python form (NaN becomes None), as written by :meth:`to_json`."""
        return {
            "task": self.task,
            "classes": [_plain(c) for c in self.classes],
            "positive_class": _plain(self.positive_class),
            "sensitive_columns": self.sensitive_columns,
            "overall": {k: _plain(v) for k, v in self.overall.items()},
            "by_group": {
                g: {c: _plain(self.by_group[c].iloc[i]) for c in self.by_group.columns}
                for i, g in enumerate(self.by_group.index)
            },
            "small_groups": self.small_groups,
            "min_group_size": self.min_group_size,
            "n_bins": self.n_bins,
        }

    def to_json(self, path=None, *, indent: int = 2) -> str:
        """The report as JSON text; also written (atomically) to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)
        if path is not None:
            from reprogram.io import atomic_write_text

            atomic_write_text(path, text + "\n")
        return text

    def __rich_console__(self, console, options):
        from reprogram.metrics.display import report_renderables

        yield from report_renderables(self)


def _score_array(y_score: Any, n: int) -> np.ndarray:
    """``y_score`` as floats, 1-D or (n, n_classes), with ``n`` rows (an (n, 1) matrix made
    1-D). Shared with the streaming report, which checks the values chunk by chunk."""
    s = np.asarray(y_score)
    if s.dtype.kind not in "fiub":
        raise InputError(f"y_score must be numeric probabilities, got values of type {s.dtype}")
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim not in (1, 2):
        raise InputError(f"y_score must be 1-D (binary) or (n, n_classes), got shape {s.shape}")
    if len(s) != n:
        raise LengthMismatchError(f"y_true has {n} rows but y_score has {len(s)}")
    return s


def _scores(y_score: Any, n: int) -> np.ndarray:
    s = _score_array(y_score, n)
    lo, hi = s.min(), s.max()  # NaN propagates into both, so this also finds missing scores
    if np.isnan(lo) or np.isnan(hi):
        raise MissingValuesError(f"y_score has {int(np.isnan(s).sum())} missing value(s) (NaN) of {n} rows")
    if lo < 0 or hi > 1:
        raise InputError(
            f"y_score must hold probabilities in [0, 1], got values from {lo:.4g} to {hi:.4g} "
            "(pass probabilities, not logits)"
        )
    return s


def _merge_classes(uniques: list[np.ndarray], classes: Any) -> tuple[list, list[np.ndarray | None]]:
    """The class list, and for each input the map from its own codes to class indices
    (None where its codes already are class indices)."""
    if classes is not None:
        index = pd.Index(list(classes))
        if not index.is_unique:
            raise InputError(f"classes must be distinct, got {list(classes)}")
    else:
        index = pd.Index(uniques[0])
        for u in uniques[1:]:
            index = index.union(pd.Index(u), sort=False)
        try:
            index = index.sort_values()
        except TypeError:
            index = pd.Index(sorted(index, key=str))
    maps: list[np.ndarray | None] = []
    for u in uniques:
        pos = index.get_indexer(pd.Index(u))
        if (pos < 0).any():
            unknown = [str(v) for v in np.asarray(u)[pos < 0]][:5]
            raise InputError(f"labels {', '.join(unknown)} are not among classes {list(index)}")
        maps.append(None if np.array_equal(pos, np.arange(len(u))) else pos)
    return list(index), maps


def _infer_classes(uniques: list[np.ndarray], classes: Any, score_cols: int | None) -> tuple[list, list]:
    """The classes ``fairness_report`` uses given the sorted distinct labels (and
    predictions) and the number of score columns (None for 1-D scores or none), with
    the maps of :func:`_merge_classes`. Shared with the streaming report."""
    if classes is None and score_cols is not None and score_cols > 2:
        seen = pd.Index(np.concatenate([np.asarray(u, dtype=object) for u in uniques])).unique()
        if all(isinstance(v, (int, np.integer)) and 0 <= v < score_cols for v in seen):
            classes = list(range(score_cols))  # integer labels index the score columns
    if classes is None:
        merged = pd.Index(np.concatenate([np.asarray(u, dtype=object) for u in uniques])).unique()
        if len(merged) == 1 and merged[0] in (0, 1) and not isinstance(merged[0], str):
            classes = [False, True] if isinstance(merged[0], (bool, np.bool_)) else [0, 1]
    return _merge_classes(uniques, classes)


def fairness_report(
    y_true: Any,
    y_pred: Any = None,
    y_score: Any = None,
    sensitive: Any = None,
    *,
    classes: Any = None,
    pos_label: Any = None,
    threshold: float = 0.5,
    n_bins: int = 15,
    min_group_size: int = 30,
) -> FairnessReport:
    """Per-group and overall fairness and calibration figures (see the module docstring).

    Parameters
    ----------
    y_true : labels, any values (ints, strings, bools).
    y_pred : predicted labels; if omitted, derived from ``y_score`` (binary:
        ``score >= threshold``; multi-class: argmax).
    y_score : binary: P(positive class), 1-D (or an (n, 2) matrix); multi-class: an
        (n, K) matrix of class probabilities in the order of ``classes``.
    sensitive : one array, several arrays, a mapping or a DataFrame; several columns
        make intersectional groups named ``"col=a|col=b"``.
    classes : the class labels in order; default the sorted labels seen. Binary tasks
        seen with a single 0/1 label assume classes [0, 1].
    pos_label : the positive class of a binary task (default the second class).
    n_bins : bins for ECE; ``min_group_size``: groups below it are flagged.
    """
    return _report(
        y_true, y_pred, y_score, sensitive, classes=classes, pos_label=pos_label, threshold=threshold,
        n_bins=n_bins, min_group_size=min_group_size, min_groups=2,
    )


def _report(y_true, y_pred, y_score, sensitive, *, classes, pos_label, threshold, n_bins, min_group_size, min_groups):
    """The body of fairness_report; ``min_groups=1`` lets the ECE helper report on one group."""
    if sensitive is None:
        raise InputError("sensitive features are required (sensitive=...)")
    if y_pred is None and y_score is None:
        raise InputError("give y_pred, y_score or both")
    if n_bins < 1:
        raise InputError(f"n_bins must be at least 1, got {n_bins}")
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise InputError(f"y_true must be one-dimensional, got shape {y.shape}")
    n = len(y)
    if n == 0:
        raise InputError("y_true is empty: nothing to report on")
    encoder = GroupEncoder()
    group = encoder.fit_transform(sensitive)
    if len(group) != n:
        raise LengthMismatchError(f"y_true has {n} rows but the sensitive features have {len(group)}")
    if len(encoder.names_) < min_groups:
        raise GroupError(
            f"only one group present ({encoder.names_[0]}); a fairness report compares at least two"
        )
    score = None if y_score is None else _scores(y_score, n)

    true_codes, true_uniques = factorize(y, what="y_true")
    uniques, codes = [true_uniques], [true_codes]
    if y_pred is not None:
        yp = np.asarray(y_pred)
        if yp.ndim != 1 or len(yp) != n:
            raise LengthMismatchError(f"y_true has {n} rows but y_pred has shape {yp.shape}")
        pred_codes, pred_uniques = factorize(yp, what="y_pred")
        uniques.append(pred_uniques)
        codes.append(pred_codes)
    score_cols = score.shape[1] if score is not None and score.ndim == 2 else None
    classes, maps = _infer_classes(uniques, classes, score_cols)
    codes = [c if m is None else m[c] for c, m in zip(codes, maps)]
    k = len(classes)
    if k < 2:
        raise InputError(f"only one class present ({classes[0]}); pass classes=[...] to name the others")
    true_codes = codes[0]

    positive_index = None
    if k == 2:
        positive_index = 1
        if pos_label is not None:
            if pos_label not in classes:
                raise InputError(f"pos_label {pos_label!r} is not one of the classes {classes}")
            positive_index = classes.index(pos_label)
    elif pos_label is not None:
        raise InputError("pos_label only applies to binary tasks")

    confidence = correct = None
    if score is not None:
        if k == 2:
            if score.ndim == 2:
                if score.shape[1] != 2:
                    raise InputError(f"a binary task needs y_score of shape (n,) or (n, 2), got {score.shape}")
                score = score[:, positive_index]
            confidence = score
            # with the positive class at index 1 the true codes are the 0/1 "correct" flags
            correct = true_codes if positive_index == 1 else true_codes == positive_index
            if y_pred is None:
                above = score >= threshold
                pred = above if positive_index == 1 else ~above
                codes.append(pred)
        else:
            if score.ndim != 2 or score.shape[1] != k:
                raise InputError(f"a {k}-class task needs y_score of shape (n, {k}), got {score.shape}")
            top = score.argmax(axis=1)
            confidence = score[np.arange(n), top]
            correct = top == true_codes
            if y_pred is None:
                codes.append(top)
    counts = count_groups(
        group, true_codes, codes[1], len(encoder.names_), k, confidence=confidence, correct=correct, n_bins=n_bins
    )
    return FairnessReport.from_counts(
        counts,
        classes=classes,
        groups=encoder.names_,
        sensitive_columns=encoder.columns_,
        positive_index=positive_index,
        min_group_size=min_group_size,
    )


def dataset_report(ds: Any, proba: np.ndarray, **report_kw) -> FairnessReport:
    """The report of class probabilities ``proba`` (rows x classes) on a reprogram dataset.

    ``ds`` has ``labels`` and ``group_ids`` (index arrays), ``classes`` and
    ``group_names``; predictions are the argmax, scores P(class 1) for two classes.
    """
    classes = np.asarray(ds.classes, dtype=object)
    names = np.asarray(ds.group_names, dtype=object)
    score = proba[:, 1] if proba.shape[1] == 2 else proba
    return fairness_report(classes[ds.labels], classes[proba.argmax(1)], score, {"group": names[ds.group_ids]},
                           classes=list(ds.classes), **report_kw)
