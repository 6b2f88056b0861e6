"""``reprogram calibrate`` and ``reprogram export``: group calibration from a predictions table, ONNX export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import typer

from reprogram.cli.app import app
from reprogram.cli.common import SENSITIVE_OPTION, console
from reprogram.errors import InputError

METHODS = ("auto", "platt", "isotonic", "temperature", "beta", "histogram", "multicalibration")


def encode_labels(y: np.ndarray, score_cols: list[str], pos_label: str | None) -> tuple[np.ndarray, list]:
    """Class indices of the labels, in the order of the score columns, and the class values.

    One score column is P(positive class): the positive class is ``pos_label`` or the
    larger of the two label values. Several columns named ``score_<class>`` give the
    class order; otherwise the labels must be 0..C-1.
    """
    from reprogram.cli.metrics import _score_classes
    from reprogram.data.encoding import LabelEncoder

    values = pd.unique(pd.Series(y))
    if len(score_cols) == 1:
        if pos_label is not None:
            match = [v for v in values if str(v) == pos_label]
            if not match:
                raise InputError(f"--pos-label {pos_label!r} is not one of the labels ({', '.join(map(str, values[:5]))})")
            classes = [v for v in sorted(values, key=str) if str(v) != pos_label] + match
        else:
            classes = sorted(values.tolist())
        if len(classes) > 2:
            raise InputError(f"one score column means a binary task, but the label has {len(classes)} values; "
                             "give one score column per class")
        if len(classes) < 2:
            raise InputError(f"the label has only one value ({classes[0]}): calibration needs both classes")
    else:
        classes = _score_classes(score_cols, y) or list(range(len(score_cols)))
    return LabelEncoder.from_classes(classes).transform(y, what="label column"), classes


def _holdout_split(n: int, strata: np.ndarray, frac: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    counts = pd.Series(strata).value_counts()
    stratify = strata if counts.min() >= 2 else None  # a stratum of one row cannot be split
    fit, held = train_test_split(idx, test_size=frac, random_state=seed, stratify=stratify)
    return np.sort(fit), np.sort(held)


@app.command("calibrate")
def calibrate_command(
    predictions: Path = typer.Option(..., "--predictions", "-p", help="CSV or Parquet table of scores and labels."),
    score: list[str] = typer.Option(..., "--score", help="Score column: P(positive), or one per class (score_<class>)."),
    label: str = typer.Option(..., "--label", help="Column with the true labels."),
    sensitive: list[str] = SENSITIVE_OPTION,
    method: str = typer.Option("auto", "--method", help=" | ".join(METHODS)),
    out: Path = typer.Option(..., "--out", help="Folder for the calibrator (meta.json + safetensors), its report and plot."),
    holdout: float = typer.Option(0.0, "--holdout", min=0.0, max=0.9,
                                  help="Fraction of rows held out to report the figures on (0: report on the fit rows)."),
    min_group_size: int = typer.Option(50, "--min-group-size", min=1, help="Smaller groups use their parent's map."),
    shrinkage: float = typer.Option(0.0, "--shrinkage", min=0.0, help="Blend group maps toward the parent (pseudo-rows)."),
    alpha: float = typer.Option(0.02, "--alpha", help="multicalibration: largest gap allowed per (group, bin)."),
    max_order: int = typer.Option(2, "--max-order", min=0, help="multicalibration: intersections up to this order."),
    min_cell_size: int = typer.Option(200, "--min-cell-size", min=1, help="multicalibration: rows a cell needs."),
    bins: int = typer.Option(15, "--bins", min=1, help="Bins for the calibration error (ECE) and the plot."),
    pos_label: str = typer.Option(None, "--pos-label", help="The positive class of a binary task."),
    seed: int = typer.Option(0, "--seed", help="Seed of the holdout split."),
) -> None:
    """Fit group calibration on a predictions table; print per-group ECE before and after."""
    from reprogram.calibrate import (
        GroupCalibrator,
        calibration_rich_table,
        compare_calibration,
        multicalibrate,
        multicalibration_error,
        reliability_diagram,
        save_calibrator,
    )
    from reprogram.data import read_table, require_columns

    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    table = read_table(predictions)
    src = str(predictions)
    require_columns(table, label, role="label column", source=src)
    require_columns(table, sensitive, role="sensitive column", source=src)
    require_columns(table, score, role="score column", source=src)
    if len(table) == 0:
        raise InputError(f"the table {src!r} has no rows")
    raw = table[score].to_numpy()
    if raw.dtype.kind not in "fiu":
        raise InputError(f"score column(s) {', '.join(score)} must be numeric")
    if table[label].isna().any():
        raise InputError(f"label column {label!r} has {int(table[label].isna().sum())} missing value(s)")
    scores = raw[:, 0].astype(np.float64) if len(score) == 1 else raw.astype(np.float64)
    y, classes = encode_labels(table[label].to_numpy(), score, pos_label)
    groups = table[sensitive].reset_index(drop=True)
    strata = pd.Series(y).astype(str).str.cat(groups.astype(str), sep="|").to_numpy()
    if holdout > 0:
        fit_rows, eval_rows = _holdout_split(len(table), strata, holdout, seed)
    else:
        fit_rows = eval_rows = np.arange(len(table))

    if method == "multicalibration":
        if scores.ndim != 1:
            raise InputError("multicalibration calibrates binary scores: give one --score column")
        cal = multicalibrate(scores[fit_rows], y[fit_rows], groups.iloc[fit_rows], alpha=alpha, max_order=max_order,
                             min_cell_size=min_cell_size)
    else:
        cal = GroupCalibrator(method=method, min_group_size=min_group_size, shrinkage=shrinkage)
        cal.fit(scores[fit_rows], y[fit_rows], groups.iloc[fit_rows])
    g_eval = groups.iloc[eval_rows]
    before = scores[eval_rows]
    after = cal.transform(before, g_eval)
    where = f"{len(eval_rows)} held-out rows" if holdout > 0 else f"the {len(fit_rows)} fit rows"
    df = compare_calibration(y[eval_rows], before, after, g_eval, n_bins=bins)
    console.print(calibration_rich_table(df, title=f"Calibration by group on {where}: before → after"))
    summary = {"before": df.attrs.get("summary_before"), "after": df.attrs.get("summary_after")}
    for k in ("before", "after"):
        s = summary[k] or {}
        console.print(f"{k:>6}: max group ECE {s.get('max_group_ece', float('nan')):.4f}, calibration disparity "
                      f"{s.get('calibration_disparity', float('nan')):.4f}, ROC AUC {s.get('roc_auc', float('nan')):.4f}")
    report: dict = {"method": method, "rows_fit": int(len(fit_rows)), "rows_evaluated": int(len(eval_rows)),
                    "evaluated_on": "holdout" if holdout > 0 else "fit", "classes": [str(c) for c in classes],
                    "summary": summary, "by_group": json.loads(df.to_json(orient="index"))}
    if method == "multicalibration":
        kw = {"max_order": max_order, "min_cell_size": min_cell_size, "n_bins": cal.n_bins}
        mc_before = multicalibration_error(before, y[eval_rows], g_eval, **kw)["max"]
        mc_after = multicalibration_error(after, y[eval_rows], g_eval, **kw)["max"]
        report["multicalibration_error"] = {"before": mc_before, "after": mc_after, "alpha": alpha}
        console.print(f"multicalibration error (worst group x bin, cells of {min_cell_size}+ rows): "
                      f"{mc_before:.4f} → {mc_after:.4f} (alpha {alpha:g})")
    elif getattr(cal, "fallbacks_", None):
        for g, why in cal.fallbacks_.items():
            console.print(f"[yellow]group {g!r} {why}[/]")
    fig = reliability_diagram(y[eval_rows], before, g_eval, n_bins=min(bins, 10), scores_after=after,
                              title=f"Reliability on {where}")
    import io

    png = io.BytesIO()
    fig.savefig(png, format="png")
    text = json.dumps(report, indent=2, default=lambda v: None if v != v else str(v)) + "\n"
    save_calibrator(cal, out, classes=[str(c) for c in classes], sensitive=list(sensitive), score_columns=list(score),
                    extra_files={"report.json": text.encode(), "reliability.png": png.getvalue()})
    console.print(f"wrote the calibrator, report.json and reliability.png to {out}")


@app.command("export")
def export_command(
    out: Path = typer.Option(..., "--out", help="ONNX file to write."),
    model_path: Path = typer.Option(None, "--model", help="The frozen model (omit to export the calibrator alone)."),
    trigger_dir: Path = typer.Option(None, "--trigger", help="A trigger folder written by `reprogram fit`."),
    calibrator_dir: Path = typer.Option(None, "--calibrator", help="A calibrator folder written by `reprogram calibrate`."),
    data: Path = typer.Option(None, "--data", help="Table of real inputs to trace and check the export on "
                                                   "(default: random inputs shaped from the model's sidecar)."),
    text: str = typer.Option(None, "--text", help="Text column (text models)."),
    image: str = typer.Option(None, "--image", help="Image path column, relative to the table (image models)."),
    rows: int = typer.Option(256, "--rows", min=2, help="Rows of --data used to check the export."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow a pickled checkpoint."),
    allow_outside_paths: bool = typer.Option(False, "--allow-outside-paths", help="Allow image paths that lead "
                                             "outside the table's folder (../, absolute, symlinks)."),
) -> None:
    """Write model + trigger + calibrator as one ONNX graph, checked by onnxruntime before it is kept."""
    from reprogram.calibrate import export_calibrator_onnx, export_onnx, load_calibrator

    if out.suffix.lower() != ".onnx":
        raise InputError(f"--out must end in .onnx, got {out.name}")
    if model_path is None and calibrator_dir is None:
        raise InputError("give --model (with --trigger/--calibrator as wanted), or --calibrator alone")
    cal = load_calibrator(calibrator_dir) if calibrator_dir is not None else None
    if model_path is None:
        if trigger_dir is not None:
            raise InputError("--trigger needs --model: a trigger acts on the model's input")
        export_calibrator_onnx(cal, out)
        console.print(f"wrote {out}: the calibrator alone (inputs: score{', group' if hasattr(cal, 'groups_') else ''}),"
                      " checked against numpy in onnxruntime")
        return
    from reprogram.cli.fit import load_model
    from reprogram.triggers import load_trigger

    model, _ = load_model(model_path, allow_pickle, "cpu")
    trig = load_trigger(trigger_dir, model)[0] if trigger_dir is not None else None
    example, frame = _example_inputs(model, data, text, image, rows, allow_outside_paths)
    groups = None
    if cal is not None and hasattr(cal, "groups_"):
        groups = _group_index(cal, frame, len(example))
    export_onnx(model, trig, cal, path=out, example=example, groups=groups)
    parts = " -> ".join(p for p, on in (("trigger", trig), ("model", True), ("calibrator", cal)) if on is not None)
    console.print(f"wrote {out}: {parts}; checked on {len(example)} {'rows of ' + str(data) if data else 'random inputs'}"
                  " against PyTorch in onnxruntime (max abs diff <= 1e-5)")


def _example_inputs(model, data: Path | None, text: str | None, image: str | None, rows: int,
                    allow_outside_paths: bool = False):
    """A batch of model inputs: the first ``rows`` rows of ``data``, or random ones shaped from the sidecar."""
    import torch

    if data is not None:
        from reprogram.cli.fit import inputs_dataset
        from reprogram.data import read_table

        frame = read_table(data).iloc[:rows].reset_index(drop=True)
        ds = inputs_dataset(frame, model, text, image, Path(data).resolve().parent, allow_outside_paths)
        return torch.stack([ds[i][0] for i in range(len(ds))]), frame
    gen = torch.Generator().manual_seed(0)
    meta = model.meta
    if model.input_kind == "tabular" and "features" in meta:
        from reprogram.data.encoding import FeatureEncoder

        n = FeatureEncoder.from_dict(meta["features"]).n_features_out_
        return torch.randn(rows, n, generator=gen), None
    if model.input_kind == "image":
        im = meta.get("image", {})
        size = im.get("size", [224, 224])
        h, w = (size, size) if isinstance(size, int) else size
        return torch.randn(rows, int(im.get("channels", 3)), h, w, generator=gen), None
    raise InputError("cannot tell the model's input shape from its sidecar: give --data with real inputs")


def _group_index(cal, frame: pd.DataFrame | None, n: int) -> np.ndarray | None:
    """Group index of each example row from its sensitive columns (None: let export pick random ones)."""
    if frame is None:
        return None
    cols = cal.encoder_.columns_
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        return None
    return np.asarray(cal.encoder_.transform(frame[cols], unknown="code"), dtype=np.int64)[:n]
