"""Rich tables for a FairnessReport (what ``reprogram metrics`` prints)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from reprogram.metrics.report import FairnessReport

# Figures where smaller is fairer / better: they are highlighted when large.
_GAPS = {
    "demographic_parity_difference",
    "equalized_odds_difference",
    "equal_opportunity_difference",
    "accuracy_gap",
    "calibration_disparity",
}


def _fmt(v) -> str:
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return f"{v:,}"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.4f}"


# Short headers so that a binary report fits an 80-column terminal.
_HEADERS = {
    "count": "n",
    "accuracy": "acc",
    "selection_rate": "sel. rate",
    "base_rate": "base rate",
    "tpr": "TPR",
    "fpr": "FPR",
    "recall_sum": "Σ recall",
    "mean_score": "mean score",
    "ece": "ECE",
    "ece_equal_mass": "ECE (mass)",
}
_CALIBRATION = ("mean_score", "ece", "ece_equal_mass")


def _table(title: str, first: str, columns: list[str]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    t.add_column(first, style="cyan", no_wrap=True)
    for col in columns:
        t.add_column(_HEADERS.get(col, col), justify="right", no_wrap=True)
    return t


def _group_table(report: FairnessReport, title: str, columns: list[str]) -> Table:
    bg, small = report.by_group, set(report.small_groups)
    table = _table(title, "group", columns)
    values = [bg[c].tolist() for c in columns]  # column lists keep ints as ints
    for i, name in enumerate(bg.index):
        label = Text(str(name))
        if name in small:
            label.append(" *", style="yellow")
        table.add_row(label, *[_fmt(col[i]) for col in values])
    return table


def report_renderables(report: FairnessReport):
    """By-group tables (outcomes, calibration, and per class for multi-class tasks), the
    overall table and, if any, the small-group note."""
    bg = report.by_group
    per_class = [c for c in bg.columns if c.endswith("]")]
    calibration = [c for c in _CALIBRATION if c in bg.columns]
    outcomes = [c for c in bg.columns if c not in per_class and c not in calibration]
    title = f"By group ({' × '.join(report.sensitive_columns)})"
    if report.task == "binary":
        title += f" — positive class: {report.positive_class}"
    yield _group_table(report, title, outcomes)
    if calibration:
        yield _group_table(report, f"Calibration by group ({report.n_bins} bins)", calibration)

    if per_class:  # multi-class: one row per (group, class), one-vs-rest figures
        figures = list(dict.fromkeys(c.split("[", 1)[0] for c in per_class))
        pc = _table("By group and class (one-vs-rest)", "group", ["class", *figures])
        for name in bg.index:
            for cls in report.classes:
                pc.add_row(str(name), str(cls), *[_fmt(float(bg.at[name, f"{f}[{cls}]"])) for f in figures])
        yield pc

    ov = Table(title="Overall", title_justify="left", header_style="bold")
    ov.add_column("metric", no_wrap=True)
    ov.add_column("value", justify="right", no_wrap=True)
    for key, value in report.overall.items():
        style = "red" if key in _GAPS and isinstance(value, float) and value >= 0.1 else None
        ov.add_row(key, Text(_fmt(value), style=style or ""))
    yield ov
    if report.small_groups:
        yield Text(
            f"* fewer than {report.min_group_size} rows: {', '.join(report.small_groups)} "
            "(figures for these groups are noisy)",
            style="yellow",
        )
