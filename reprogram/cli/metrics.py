"""``reprogram metrics``: the fairness report of a predictions table."""

from __future__ import annotations

from pathlib import Path

import typer

from reprogram.cli.app import app
from reprogram.cli.common import SENSITIVE_OPTION, console
from reprogram.errors import InputError


def _score_classes(score_cols: list[str], labels) -> list | None:
    """Class order of ``score_<class>`` columns, typed like the labels (an array, or their
    dtype); None if unnamed."""
    label_dtype = getattr(labels, "dtype", labels)
    if len(score_cols) < 2 or not all(c.startswith("score_") for c in score_cols):
        return None
    names = [c[len("score_") :] for c in score_cols]
    if label_dtype.kind in "iu":
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
    chunk_rows: int = typer.Option(
        1_000_000, "--chunk-rows", min=1, help="Rows read at a time: memory stays flat however large the table."
    ),
) -> None:
    """Print per-group accuracy, selection rate, TPR, FPR, ECE and the fairness gaps."""
    from reprogram.metrics.streaming import streaming_report

    if not pred and not score:
        raise InputError("give --pred COL, --score COL..., or both")

    def resolve(label_dtype):
        """As one whole-table read: classes named by score_<class> columns, --pos-label typed like the labels."""
        classes = _score_classes(score, label_dtype) if score else None
        pos = pos_label
        if pos is not None and label_dtype.kind in "iu":
            try:
                pos = int(pos)
            except ValueError:
                raise InputError(f"--pos-label {pos_label!r} is not one of the integer labels") from None
        return classes, pos

    report = streaming_report(
        predictions,
        label=label,
        sensitive=sensitive,
        pred=pred or None,
        score=score or None,
        chunk_rows=chunk_rows,
        threshold=threshold,
        n_bins=bins,
        min_group_size=min_group_size,
        resolve=resolve,
    )
    console.print(report)
    if json_out is not None:
        report.to_json(json_out)
        console.print(f"wrote {json_out}")
