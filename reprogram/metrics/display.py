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


def report_renderables(report: FairnessReport):
    """A by-group table, an overall table and, if any, the small-group note."""
    title = f"By group ({' × '.join(report.sensitive_columns)})"
    if report.task == "binary":
        title += f" — positive class: {report.positive_class}"
    by = Table(title=title, title_justify="left", header_style="bold")
    by.add_column("group", style="cyan")
    for col in report.by_group.columns:
        by.add_column(col, justify="right")
    small = set(report.small_groups)
    columns = [report.by_group[c].tolist() for c in report.by_group.columns]  # keeps ints as ints
    for i, name in enumerate(report.by_group.index):
        label = Text(str(name))
        if name in small:
            label.append(" *", style="yellow")
        by.add_row(label, *[_fmt(col[i]) for col in columns])
    yield by

    ov = Table(title="Overall", title_justify="left", header_style="bold")
    ov.add_column("metric")
    ov.add_column("value", justify="right")
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
