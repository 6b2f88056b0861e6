"""Calibration diagnostics: per-group tables, a summary, before/after comparison, and
reliability diagrams.

Every ECE here is the one :func:`reprogram.metrics.fairness_report` computes (the same
fine histograms and the same equal-width / equal-mass bins, see
``reprogram/metrics/calibration.py``), so a table printed by ``reprogram calibrate`` and
a fairness report of the same predictions always agree. What this module adds is what a
fairness report does not hold: Brier score and log loss per group, ROC AUC, and plots.

Scores are binary P(positive class) as a 1-D array (or an (n, 2) matrix), or an (n, K)
matrix of class probabilities. What "confidence" and "observed frequency" mean follows
the fairness report:

* binary: the score P(positive) against the rate of the positive class;
* multi-class: the top-label probability against top-label accuracy (Guo et al. 2017).

Brier score is scikit-learn's: binary mean (p - y)^2; multi-class the mean over rows of
the squared error summed over classes against the one-hot label. Log loss clips
probabilities to ``[LOG_LOSS_EPS, 1 - LOG_LOSS_EPS]``.

Groups are coded by :class:`reprogram.data.groups.GroupEncoder`, so their names (and
their order) are those of a fairness report on the same ``sensitive`` features.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from reprogram.calibrate.scores import check_scores
from reprogram.data.groups import count_missing, encode_groups
from reprogram.errors import InputError, LengthMismatchError, MissingValuesError
from reprogram.metrics.calibration import STRATEGIES, bin_sums
from reprogram.metrics.report import FairnessReport, _report

__all__ = [
    "LOG_LOSS_EPS",
    "calibration_rich_table",
    "calibration_summary",
    "calibration_table",
    "compare_calibration",
    "reliability_diagram",
]

LOG_LOSS_EPS = 1e-15
OVERALL = "overall"

# Per-row figures of a table, in column order (``n`` comes first).
TABLE_COLUMNS = ("positive_rate", "accuracy", "mean_score", "ece", "ece_equal_mass", "brier", "log_loss")
# Figures where lower is better / higher is better (for the before/after styling).
_LOWER_BETTER = {"ece", "ece_equal_mass", "brier", "log_loss"}
_HIGHER_BETTER = {"accuracy"}


# --------------------------------------------------------------------------- validation


def _check_labels(y: Any) -> np.ndarray:
    y = y.to_numpy() if isinstance(y, (pd.Series, pd.Index)) else np.asarray(y)
    if y.ndim != 1:
        raise InputError(f"y must be one-dimensional labels, got shape {y.shape}")
    if len(y) == 0:
        raise InputError("y is empty: nothing to calibrate")
    missing = count_missing(y)
    if missing:
        raise MissingValuesError(f"y has {missing} missing value(s) (NaN/None) of {len(y)} rows")
    return y


def _check_scores(scores: Any, n: int, what: str = "scores") -> np.ndarray:
    """Probabilities as float64, 1-D (binary) or (n, K), of ``n`` rows; one-line errors otherwise."""
    s = check_scores(scores, what=what)
    if len(s) != n:
        raise LengthMismatchError(f"y has {n} rows but {what} has {len(s)}")
    return s


def _check_bins(n_bins: int) -> int:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise InputError(f"n_bins must be a positive integer, got {n_bins!r}")
    return int(n_bins)


@dataclass
class _Groups:
    ids: np.ndarray  # group id per row, 0..G-1, all present
    names: list[str]
    columns: list[str]


def _groups(sensitive: Any, n: int) -> _Groups:
    if sensitive is None:
        return _Groups(np.zeros(n, dtype=np.int64), ["all"], [])
    ids, enc = encode_groups(sensitive)
    if len(ids) != n:
        raise LengthMismatchError(f"y has {n} rows but the sensitive features have {len(ids)}")
    return _Groups(ids, list(enc.names_), list(enc.columns_))


# --------------------------------------------------------------------------- computation


@dataclass
class _Eval:
    """One set of scores evaluated against labels, per group."""

    report: FairnessReport
    groups: _Groups
    task: str
    n_bins: int
    positive_class: Any
    y_index: np.ndarray  # class index of each row's label
    p: np.ndarray  # binary: P(positive) 1-D; multi-class: (n, K)
    per_row_brier: np.ndarray
    per_row_log_loss: np.ndarray

    @property
    def y_pos(self) -> np.ndarray:
        """Binary: 1 where the label is the positive class."""
        pos = self.report.classes.index(self.positive_class)
        return (self.y_index == pos).astype(np.float64)


def _evaluate(y: np.ndarray, s: np.ndarray, groups: _Groups, *, n_bins: int, pos_label: Any, classes: Any) -> _Eval:
    # the report runs on the group ids (0..G-1), so its rows are in the encoder's order;
    # its class resolution (classes=, pos_label=, labels seen) is the fairness report's.
    report = _report(
        y, None, s, {"group": groups.ids}, classes=classes, pos_label=pos_label, threshold=0.5,
        n_bins=n_bins, min_group_size=0, min_groups=1,
    )
    if len(report.groups) != len(groups.names):  # cannot happen: every id occurs
        raise AssertionError("group coding disagrees with the report")
    report.by_group.index = pd.Index(groups.names, name="group")
    report.groups = list(groups.names)
    report.sensitive_columns = list(groups.columns)
    y_index = pd.Index(report.classes).get_indexer(y)
    n = len(y)
    if report.task == "binary":
        pos = report.classes.index(report.positive_class)
        p = s if s.ndim == 1 else s[:, pos]
        yp = (y_index == pos).astype(np.float64)
        brier = (p - yp) ** 2
        pc = np.clip(p, LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
        log_loss = -(yp * np.log(pc) + (1 - yp) * np.log1p(-pc))
        positive = report.positive_class
    else:
        p = s
        onehot = np.zeros_like(p)
        onehot[np.arange(n), y_index] = 1.0
        brier = ((p - onehot) ** 2).sum(axis=1)
        log_loss = -np.log(np.clip(p[np.arange(n), y_index], LOG_LOSS_EPS, 1 - LOG_LOSS_EPS))
        positive = None
    return _Eval(report, groups, report.task, n_bins, positive, y_index, p, brier, log_loss)


def _group_mean(ev: _Eval, values: np.ndarray) -> np.ndarray:
    g = len(ev.groups.names)
    n_g = np.bincount(ev.groups.ids, minlength=g)
    return np.bincount(ev.groups.ids, weights=values, minlength=g) / n_g


def _table(ev: _Eval) -> pd.DataFrame:
    bg, ov = ev.report.by_group, ev.report.overall
    g = len(ev.groups.names)
    cols: dict[str, Any] = {"n": np.append(bg["count"].to_numpy(), int(bg["count"].sum())).astype(np.int64)}
    if ev.task == "binary":
        yp = ev.y_pos
        cols["positive_rate"] = np.append(_group_mean(ev, yp), yp.mean())
        mean_overall = float(ev.p.mean())
    else:
        cols["positive_rate"] = np.full(g + 1, np.nan)
        mean_overall = float(ev.p.max(axis=1).mean())
    cols["accuracy"] = np.append(bg["accuracy"].to_numpy(), ov["accuracy"])
    cols["mean_score"] = np.append(bg["mean_score"].to_numpy(), mean_overall)
    cols["ece"] = np.append(bg["ece"].to_numpy(), ov["ece"])
    cols["ece_equal_mass"] = np.append(bg["ece_equal_mass"].to_numpy(), ov["ece_equal_mass"])
    cols["brier"] = np.append(_group_mean(ev, ev.per_row_brier), ev.per_row_brier.mean())
    cols["log_loss"] = np.append(_group_mean(ev, ev.per_row_log_loss), ev.per_row_log_loss.mean())
    df = pd.DataFrame(cols, index=pd.Index([*ev.groups.names, OVERALL], name="group"))
    df.attrs.update(
        task=ev.task,
        n_bins=ev.n_bins,
        positive_class=ev.positive_class,
        classes=list(ev.report.classes),
        sensitive_columns=list(ev.groups.columns),
    )
    return df


def _prepare(y, scores, sensitive, n_bins, *, what="scores"):
    y = _check_labels(y)
    s = _check_scores(scores, len(y), what)
    return y, s, _groups(sensitive, len(y)), _check_bins(n_bins)


def _evaluate_inputs(y, scores, sensitive, n_bins, pos_label, classes) -> _Eval:
    """The evaluation behind :func:`calibration_table` and :func:`calibration_summary`."""
    y, s, groups, n_bins = _prepare(y, scores, sensitive, n_bins)
    return _evaluate(y, s, groups, n_bins=n_bins, pos_label=pos_label, classes=classes)


# --------------------------------------------------------------------------- public API


def calibration_table(
    y: Any,
    scores: Any,
    sensitive: Any = None,
    *,
    n_bins: int = 15,
    pos_label: Any = None,
    classes: Any = None,
) -> pd.DataFrame:
    """Calibration figures per (intersectional) group, plus an ``"overall"`` last row.

    Columns: ``n``, ``positive_rate`` (binary: rate of the positive class; NaN for
    multi-class), ``accuracy`` (binary at threshold 0.5; multi-class argmax),
    ``mean_score`` (binary: mean P(positive); multi-class: mean top-label probability),
    ``ece`` (equal-width bins), ``ece_equal_mass``, ``brier`` and ``log_loss``.
    The index (named ``group``) holds the group names of
    :func:`reprogram.metrics.fairness_report`; ``df.attrs`` holds ``task``, ``n_bins``,
    ``positive_class``, ``classes`` and ``sensitive_columns``.

    ``sensitive`` is anything :func:`reprogram.data.groups.as_columns` accepts (one
    array, several, a mapping, a DataFrame); ``None`` puts every row in one group
    ``"all"``. ``classes`` and ``pos_label`` mean what they mean for
    :func:`~reprogram.metrics.fairness_report`.
    """
    return _table(_evaluate_inputs(y, scores, sensitive, n_bins, pos_label, classes))


def _summary(ev: _Eval) -> dict[str, Any]:
    bg, ov = ev.report.by_group, ev.report.overall
    ece_g = bg["ece"].to_numpy()
    brier_g = _group_mean(ev, ev.per_row_brier)
    auc = float("nan")
    if ev.task == "binary":
        yp = ev.y_pos
        if 0 < yp.sum() < len(yp):  # AUC needs both classes
            from sklearn.metrics import roc_auc_score

            auc = float(roc_auc_score(yp, ev.p))
    return {
        "task": ev.task,
        "n": len(ev.y_index),
        "n_groups": len(ev.groups.names),
        "ece": float(ov["ece"]),
        "ece_equal_mass": float(ov["ece_equal_mass"]),
        "max_group_ece": float(ov["max_group_ece"]),
        "max_group_ece_equal_mass": float(np.nanmax(bg["ece_equal_mass"].to_numpy())),
        "calibration_disparity": float(ov["calibration_disparity"]),
        "worst_ece_group": ev.groups.names[int(np.nanargmax(ece_g))],
        "brier": float(ev.per_row_brier.mean()),
        "max_group_brier": float(brier_g.max()),
        "log_loss": float(ev.per_row_log_loss.mean()),
        "roc_auc": auc,
        "accuracy": float(ov["accuracy"]),
    }


def calibration_summary(
    y: Any,
    scores: Any,
    sensitive: Any = None,
    *,
    n_bins: int = 15,
    pos_label: Any = None,
    classes: Any = None,
) -> dict[str, Any]:
    """Single figures: overall ``ece`` / ``ece_equal_mass``, ``max_group_ece``,
    ``max_group_ece_equal_mass``, ``calibration_disparity`` (max - min group ECE, as in
    :func:`~reprogram.metrics.fairness_report`), ``worst_ece_group``, ``brier``,
    ``max_group_brier``, ``log_loss``, ``roc_auc`` (binary only, NaN for multi-class or
    when only one class occurs), ``accuracy``, plus ``task``, ``n`` and ``n_groups``.
    Undefined figures are NaN (as in ``FairnessReport.overall``)."""
    return _summary(_evaluate_inputs(y, scores, sensitive, n_bins, pos_label, classes))


def compare_calibration(
    y: Any,
    before: Any,
    after: Any,
    sensitive: Any = None,
    *,
    n_bins: int = 15,
    pos_label: Any = None,
    classes: Any = None,
) -> pd.DataFrame:
    """Per-group calibration before and after recalibration, one row per group and an
    ``"overall"`` row.

    Columns: ``n``, ``positive_rate`` (the labels do not change), then for each of
    ``accuracy``, ``mean_score``, ``ece``, ``ece_equal_mass``, ``brier``, ``log_loss``
    the pair ``<figure>_before``, ``<figure>_after``. ``df.attrs`` is that of
    :func:`calibration_table` plus ``compare=True`` and ``summary_before`` /
    ``summary_after`` (the dicts of :func:`calibration_summary`).
    """
    y = _check_labels(y)
    n_bins = _check_bins(n_bins)
    s0 = _check_scores(before, len(y), "before")
    s1 = _check_scores(after, len(y), "after")
    if s0.shape != s1.shape:
        raise InputError(f"before and after scores must have the same shape, got {s0.shape} and {s1.shape}")
    groups = _groups(sensitive, len(y))
    ev0 = _evaluate(y, s0, groups, n_bins=n_bins, pos_label=pos_label, classes=classes)
    ev1 = _evaluate(y, s1, groups, n_bins=n_bins, pos_label=pos_label, classes=classes)
    t0, t1 = _table(ev0), _table(ev1)
    cols: dict[str, Any] = {"n": t0["n"], "positive_rate": t0["positive_rate"]}
    for c in TABLE_COLUMNS[1:]:
        cols[f"{c}_before"] = t0[c]
        cols[f"{c}_after"] = t1[c]
    df = pd.DataFrame(cols, index=t0.index)
    df.attrs.update(t0.attrs, compare=True, summary_before=_summary(ev0), summary_after=_summary(ev1))
    return df


# --------------------------------------------------------------------------- rich table

_HEADERS = {
    "n": "n",
    "positive_rate": "pos. rate",
    "accuracy": "acc",
    "mean_score": "mean score",
    "ece": "ECE",
    "ece_equal_mass": "ECE (mass)",
    "brier": "Brier",
    "log_loss": "log loss",
}
_COMPARE_DEFAULT = ("ece", "ece_equal_mass", "brier")


def calibration_rich_table(
    df: pd.DataFrame,
    title: str | None = None,
    *,
    columns: list[str] | tuple[str, ...] | None = None,
    min_group_size: int = 30,
):
    """A ``rich.table.Table`` of :func:`calibration_table` or :func:`compare_calibration`.

    For a comparison each figure is one ``before → after`` cell, green where the figure
    improved and red where it got worse; by default ECE, equal-mass ECE and Brier are
    shown (``columns`` picks others, by their base names). Groups with fewer than
    ``min_group_size`` rows are marked ``*`` (their figures are noisy) and explained in
    the caption; the overall row comes last, below a rule.
    """
    from rich.table import Table
    from rich.text import Text

    from reprogram.metrics.display import _fmt

    compare = bool(df.attrs.get("compare")) or any(c.endswith("_before") for c in df.columns)
    if compare:
        figures = list(columns) if columns is not None else list(_COMPARE_DEFAULT)
        missing = [f for f in figures if f"{f}_before" not in df.columns and f not in df.columns]
    else:
        figures = list(columns) if columns is not None else [c for c in df.columns if c != "n"]
        missing = [f for f in figures if f not in df.columns]
    if missing:
        raise InputError(f"no column(s) {', '.join(missing)} in the table; columns present: {', '.join(df.columns)}")
    # a figure undefined everywhere (positive rate of a multi-class task) is left out
    figures = [
        f for f in figures
        if not (f in df.columns and df[f].isna().all())
        and not (f"{f}_before" in df.columns and df[f"{f}_before"].isna().all() and df[f"{f}_after"].isna().all())
    ]
    if title is None:
        n_bins = df.attrs.get("n_bins")
        title = "Calibration by group" + (": before → after" if compare else "")
        if n_bins:
            title += f" ({n_bins} bins)"
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("group", style="cyan", no_wrap=True)
    has_n = "n" in df.columns
    if has_n:
        table.add_column("n", justify="right", no_wrap=True)
    for f in figures:
        table.add_column(_HEADERS.get(f, f), justify="right", no_wrap=True)

    n_values = df["n"].tolist() if has_n else [None] * len(df)
    small = []
    rows = list(df.index)
    for i, name in enumerate(rows):
        is_overall = name == OVERALL and i == len(rows) - 1
        label = Text(str(name), style="bold" if is_overall else "")
        if not is_overall and has_n and n_values[i] < min_group_size:
            label.append(" *", style="yellow")
            small.append(str(name))
        cells: list[Any] = [label]
        if has_n:
            cells.append(_fmt(int(n_values[i])))
        for f in figures:
            if compare and f"{f}_before" in df.columns:
                b, a = float(df[f"{f}_before"].iloc[i]), float(df[f"{f}_after"].iloc[i])
                style = ""
                if not (math.isnan(a) or math.isnan(b)) and abs(a - b) > 5e-5:
                    better = (a < b) if f in _LOWER_BETTER else (a > b) if f in _HIGHER_BETTER else None
                    style = "" if better is None else ("green" if better else "red")
                cell = Text(f"{_fmt(b)} → ")
                cell.append(_fmt(a), style=style)
                cells.append(cell)
            else:
                cells.append(_fmt(float(df[f].iloc[i])))
        table.add_row(*cells, end_section=(i == len(rows) - 2 and rows[-1] == OVERALL))
    if small:
        table.caption = f"* fewer than {min_group_size} rows (figures are noisy): {', '.join(small)}"
        table.caption_justify = "left"
        table.caption_style = "yellow"
    return table


# --------------------------------------------------------------------------- reliability diagram


def _draw_panel(ax, ax_count, ev: _Eval, strategy: str, log_counts: bool, size_scale: float) -> None:
    counts = ev.report.counts
    rows, conf, correct = bin_sums(counts.calib_count, counts.calib_score, ev.n_bins, strategy)
    ece_col = "ece" if strategy == "uniform" else "ece_equal_mass"
    ece_name = "ECE" if strategy == "uniform" else "ECE (mass)"
    eces = ev.report.by_group[ece_col].to_numpy()
    n_g = ev.report.by_group["count"].to_numpy()
    hist = bin_sums(counts.calib_count, counts.calib_score, ev.n_bins, "uniform")[0]
    edges = np.linspace(0.0, 1.0, ev.n_bins + 1)
    n_groups = len(ev.groups.names)
    import matplotlib as mpl

    colors = mpl.colormaps["tab10" if n_groups <= 10 else "tab20"].colors
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.55", linewidth=1, zorder=1)
    for g, name in enumerate(ev.groups.names):
        color = colors[g % len(colors)]
        ok = rows[g] > 1e-9
        x = conf[g][ok] / rows[g][ok]
        freq = correct[g][ok] / rows[g][ok]
        label = f"{name} (n={int(n_g[g]):,}, {ece_name}={eces[g]:.3f})"
        ax.plot(x, freq, "-", color=color, linewidth=1.5, label=label, zorder=2)
        ax.scatter(x, freq, s=12 + 180 * rows[g][ok] / size_scale, color=color, edgecolors="white",
                   linewidths=0.5, zorder=3)
        ax_count.stairs(hist[g], edges, color=color, linewidth=1.2)
    binary = ev.task == "binary"
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(f"observed frequency of {ev.positive_class}" if binary else "accuracy (top label correct)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize="small", framealpha=0.85)
    ax_count.set_xlim(-0.02, 1.02)
    ax_count.set_xlabel(f"predicted P({ev.positive_class})" if binary else "confidence (top-label probability)")
    ax_count.set_ylabel("rows")
    if log_counts:
        ax_count.set_yscale("log")
    ax_count.grid(True, alpha=0.3)


def reliability_diagram(
    y: Any,
    scores: Any,
    sensitive: Any = None,
    *,
    n_bins: int = 10,
    strategy: str = "uniform",
    path: str | os.PathLike | None = None,
    title: str | None = None,
    scores_after: Any = None,
    pos_label: Any = None,
    classes: Any = None,
    log_counts: bool = False,
    dpi: int = 110,
):
    """A reliability diagram per group, returned as a ``matplotlib.figure.Figure``.

    Top panel: one curve per group (mean score vs observed frequency in each bin, markers
    sized by the rows in the bin) and the diagonal of perfect calibration; the legend
    gives each group's name, n and ECE (the bins of ``strategy``: ``"uniform"`` equal
    width, ``"quantile"`` equal mass — the bins of the fairness report's ECE). Bottom
    panel: each group's score histogram on ``n_bins`` equal-width bins (``log_counts``
    for a log axis). Multi-class scores give top-label reliability. With
    ``scores_after`` the figure has two columns, before and after.

    The figure is drawn on the Agg canvas without pyplot (no display, no global state);
    with ``path`` it is written there as PNG, atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if strategy not in STRATEGIES:
        raise InputError(f"unknown bin strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    y, s, groups, n_bins = _prepare(y, scores, sensitive, n_bins, what="scores")
    evs = [_evaluate(y, s, groups, n_bins=n_bins, pos_label=pos_label, classes=classes)]
    if scores_after is not None:
        s1 = _check_scores(scores_after, len(y), "scores_after")
        if s1.shape != s.shape:
            raise InputError(f"scores and scores_after must have the same shape, got {s.shape} and {s1.shape}")
        evs.append(_evaluate(y, s1, groups, n_bins=n_bins, pos_label=pos_label, classes=classes))

    # one marker scale for all panels, so sizes compare across before / after
    size_scale = max(
        float(bin_sums(e.report.counts.calib_count, e.report.counts.calib_score, n_bins, strategy)[0].max())
        for e in evs
    ) or 1.0
    ncols = len(evs)
    fig = Figure(figsize=(6.4 * ncols, 7.2), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, ncols, height_ratios=[3, 1])
    for j, ev in enumerate(evs):
        ax = fig.add_subplot(grid[0, j])
        ax_count = fig.add_subplot(grid[1, j], sharex=ax)
        ax.tick_params(labelbottom=False)
        _draw_panel(ax, ax_count, ev, strategy, log_counts, size_scale)
        if ncols == 2:
            ax.set_title("before" if j == 0 else "after")
        elif title:
            ax.set_title(title)
    if ncols == 2 and title:
        fig.suptitle(title)
    if path is not None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        from reprogram.io import atomic_write_bytes

        atomic_write_bytes(path, buf.getvalue())
    return fig
