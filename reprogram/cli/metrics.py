"""``reprogram metrics``: the fairness report of a predictions table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from reprogram.cli.app import app
from reprogram.cli.common import SENSITIVE_OPTION, console
from reprogram.errors import InputError


def _score_classes(score_cols: list[str], labels: np.ndarray) -> list | None:
    """Class order of ``score_<class>`` columns, typed like the labels; None if unnamed."""
    if len(score_cols) < 2 or not all(c.startswith("score_") for c in score_cols):
        return None
    names = [c[len("score_") :] for c in score_cols]
    if labels.dtype.kind in "iu":
        try:
            return [int(n) for n in names]
        except ValueError:
            return None
    return names


@app.command("metrics")
def metrics_command(
    predictions: Path = typer.Option(..., "--predictions", "-p", help="CSV or Parquet table of predictions."),
    label: str = typer.Option(..., "--label", help="Column with the true labels."),
    sensitive: list[str] = SENSITIVE_OPTION,
    pred: str = typer.Option(None, "--pred", help="Column with predicted labels."),
    score: list[str] = typer.Option(
        None,
        "--score",
        help="Score column(s): one column of P(positive) for binary tasks, or one per class (score_<class>).",
    ),
    pos_label: str = typer.Option(None, "--pos-label", help="The positive class of a binary task."),
    threshold: float = typer.Option(0.5, "--threshold", help="Score threshold when only scores are given."),
    bins: int = typer.Option(15, "--bins", min=1, help="Bins for the calibration error (ECE)."),
    min_group_size: int = typer.Option(30, "--min-group-size", min=0, help="Flag groups with fewer rows."),
    json_out: Path = typer.Option(None, "--json", help="Also write the report as JSON to this file."),
) -> None:
    """Print per-group accuracy, selection rate, TPR, FPR, ECE and the fairness gaps."""
    from reprogram.data import read_table, require_columns
    from reprogram.metrics import fairness_report

    if not pred and not score:
        raise InputError("give --pred COL, --score COL..., or both")
    table = read_table(predictions)
    src = str(predictions)
    require_columns(table, label, role="label column", source=src)
    require_columns(table, sensitive, role="sensitive column", source=src)
    if pred:
        require_columns(table, pred, role="prediction column", source=src)
    require_columns(table, score or [], role="score column", source=src)
    y = table[label].to_numpy()
    scores = None
    classes = None
    if score:
        scores = table[score].to_numpy()
        if scores.dtype.kind not in "fiu":
            raise InputError(f"score column(s) {', '.join(score)} must be numeric")
        classes = _score_classes(score, y)
    pos = pos_label
    if pos is not None and y.dtype.kind in "iu":
        try:
            pos = int(pos)
        except ValueError:
            raise InputError(f"--pos-label {pos_label!r} is not one of the integer labels") from None
    report = fairness_report(
        y,
        table[pred].to_numpy() if pred else None,
        scores,
        table[sensitive],
        classes=classes,
        pos_label=pos,
        threshold=threshold,
        n_bins=bins,
        min_group_size=min_group_size,
    )
    console.print(report)
    if json_out is not None:
        report.to_json(json_out)
        console.print(f"wrote {json_out}")
