"""``reprogram fit``, ``evaluate`` and ``apply``: learn a fairness trigger for a frozen model, and use it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from reprogram.cli.app import app
from reprogram.cli.common import DEVICE_OPTION, SENSITIVE_OPTION, console
from reprogram.errors import InputError

MODEL = typer.Option(..., "--model", help="The frozen model: TorchScript, .pt2, state_dict (+ sidecar), or a HF folder.")
DATA = typer.Option(..., "--data", help="Table (CSV or Parquet) of inputs with label and sensitive columns.")
LABEL = typer.Option(..., "--label", help="Label column.")
TEXT = typer.Option(None, "--text", help="Text column (text models).")
IMAGE = typer.Option(None, "--image", help="Image path column, relative to the table (image models).")
ALLOW_PICKLE = typer.Option(False, "--allow-pickle", help="Allow a pickled checkpoint (it can run arbitrary code).")
TRIGGER_DIR = typer.Option(None, "--trigger", help="A trigger folder written by `reprogram fit`.")
ALLOW_OUTSIDE = typer.Option(False, "--allow-outside-paths",
                             help="Allow image paths that lead outside the table's folder (../, absolute, symlinks).")


def load_model(model_path: Path, allow_pickle: bool, device: str):
    from reprogram.models import load_frozen, resolve_device

    dev = resolve_device(device)
    return load_frozen(model_path, allow_pickle=allow_pickle).to(dev), dev


def model_collate(model):
    if model.input_kind != "text":
        return None
    from reprogram.data import tokenize_collate

    return tokenize_collate(model.tokenizer)


def model_dataset(table, model, label, sensitive, text, image, allow_outside_paths=False, base_dir=None):
    """``table`` (a path, or a frame read from ``base_dir``'s table) read with the model's encodings."""
    from reprogram.data import load_dataset_like

    return load_dataset_like(table, model.meta | {"input_kind": model.input_kind}, label=label, sensitive=sensitive,
                             text=text, image=image, allow_outside_paths=allow_outside_paths, base_dir=base_dir)


def inputs_dataset(frame, model, text, image, base_dir, allow_outside_paths=False):
    """The model inputs of a table that need not have labels or groups (apply, export).

    The one loader wants a label and a group: constant stand-ins let it read the inputs.
    """
    from reprogram.data import load_dataset_like

    stand_in = model.classes[0] if model.classes else 0
    return load_dataset_like(frame.assign(__label__=stand_in, __group__="all"),
                             model.meta | {"input_kind": model.input_kind}, label="__label__",
                             sensitive="__group__", text=text, image=image, base_dir=base_dir,
                             allow_outside_paths=allow_outside_paths)


@app.command("fit")
def fit_command(
    model_path: Path = MODEL, data: Path = DATA, label: str = LABEL, sensitive: list[str] = SENSITIVE_OPTION,
    out: Path = typer.Option(..., "--out", help="Folder for the trigger (safetensors + meta.json)."),
    text: str = TEXT, image: str = IMAGE,
    criterion: str = typer.Option("eo", "--criterion", help="dp (demographic parity) | eo (equalized odds)."),
    trigger: str = typer.Option(None, "--trigger", help="border | patch | additive (images), prompt (text), feature "
                                                        "(tabular); default by the model's input."),
    size: float = typer.Option(None, "--size", help="Border width / patch side (pixels), additive epsilon, prompt tokens."),
    mode: str = typer.Option(None, "--mode", help="border: shrink | overlay; prompt: simplex | embedding | hard."),
    lam: float = typer.Option(1.0, "--lambda", help="Strength of the fairness term."),
    rule: str = typer.Option("minmax", "--rule", help="minmax | projection (trigger update rule)."),
    epochs: int = typer.Option(20, "--epochs", min=1), lr: float = typer.Option(0.05, "--lr", help="Trigger learning rate."),
    disc_lr: float = typer.Option(1e-3, "--disc-lr", help="Discriminator learning rate."),
    disc_steps: int = typer.Option(1, "--disc-steps", min=0, help="Discriminator steps per trigger step."),
    optimizer: str = typer.Option("adam", "--optimizer", help="Trigger optimizer: adam | sgd."),
    disc_optimizer: str = typer.Option("adam", "--disc-optimizer", help="Discriminator optimizer: adam | sgd."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    val: Path = typer.Option(None, "--val", help="Validation table to pick the epoch on (default: --data itself)."),
    tolerance: float = typer.Option(0.02, "--tolerance", help="Accuracy drop within which the fairest epoch is kept."),
    seed: int = typer.Option(0, "--seed"), device: str = DEVICE_OPTION,
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Save every epoch in this folder (the newest two kept)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest whole checkpoint in --checkpoint "
                                                        "(a fresh start when there is none)."),
    allow_pickle: bool = ALLOW_PICKLE, allow_outside_paths: bool = ALLOW_OUTSIDE,
) -> None:
    """Learn a fairness trigger for a frozen model on tuning data it was not trained on."""
    from reprogram.triggers import TRIGGER_NAMES, TriggerFitter, make_trigger, save_trigger

    if resume and checkpoint is None:
        raise InputError("--resume needs --checkpoint DIR (where the earlier run saved its epochs)")
    from reprogram import distributed

    ctx = distributed.start_cli(device, console)  # under torchrun: data parallel, rank 0 prints and writes
    model, dev = load_model(model_path, allow_pickle, device)
    if trigger is None:
        trigger = {"image": "border", "text": "prompt", "tabular": "feature"}[model.input_kind]
    if trigger not in TRIGGER_NAMES:
        raise InputError(f"unknown --trigger {trigger!r}; use one of {', '.join(TRIGGER_NAMES)}")
    tune = model_dataset(data, model, label, sensitive, text, image, allow_outside_paths)
    val_ds = model_dataset(val, model, label, sensitive, text, image, allow_outside_paths) if val is not None else tune
    trig = make_trigger(trigger, model, tune, size=size, mode=mode, seed=seed)
    fitter = TriggerFitter(model, trig, criterion, lam, rule=rule, disc_steps=disc_steps, epochs=epochs,
                           batch_size=batch_size, lr=lr, disc_lr=disc_lr, optimizer=optimizer,
                           disc_optimizer=disc_optimizer, tolerance=tolerance, device=dev, seed=seed,
                           checkpoint_dir=checkpoint, resume=resume, collate_fn=model_collate(model),
                           progress=console.is_terminal)
    console.print(f"fitting a {type(trig).__name__} for {criterion} (lambda {lam}) on {len(tune)} rows, "
                  f"groups: {', '.join(tune.group_names)}")
    fit_or_exit(fitter, tune, val_ds)
    if not ctx.is_main:
        return
    base, after = fitter.base_report_, fitter.evaluate(val_ds)
    console.print(*compare_tables(base, after, title=f"validation ({'--val' if val else '--data'})"))
    saved = save_trigger(fitter.trigger, out, model=model, criterion=criterion, **{"lambda": lam}, rule=rule,
                         columns={"label": label, "sensitive": list(sensitive), "text": text, "image": image},
                         classes=list(tune.classes), groups=list(tune.group_names), best_epoch=fitter.best_epoch_,
                         validation={"base": base.overall, "triggered": after.overall}, history=fitter.history_)
    console.print(f"kept epoch {fitter.best_epoch_}; wrote {saved}")


def fit_or_exit(fitter, *data) -> None:
    """``fitter.fit(*data)``; Ctrl-C prints what was saved and exits with 130."""
    from reprogram import distributed
    from reprogram.checkpoint import TrainingInterrupted

    try:
        fitter.fit(*data)
    except TrainingInterrupted as e:  # every rank stops together
        distributed.finish()
        console.print(f"[yellow]{e}[/]")
        raise typer.Exit(130) from None
    distributed.finish()  # not after an error: torchrun ends the other ranks


def compare_tables(base, after, *, title: str) -> tuple[Table, Table]:
    """The model without and with the trigger, side by side: per group, and overall."""
    groups = Table(title=f"{title}: by group")
    groups.add_column("group")
    groups.add_column("n", justify="right")
    figures = [c for c in ("accuracy", "selection_rate", "tpr", "fpr") if c in base.by_group.columns]
    for c in figures:
        groups.add_column(f"{c}\nbase", justify="right")
        groups.add_column(f"{c}\n+trigger", justify="right")
    for g in base.by_group.index:
        row = [str(g), str(int(base.by_group.loc[g, "count"]))]
        for c in figures:
            row += [f"{base.by_group.loc[g, c]:.4f}", f"{after.by_group.loc[g, c]:.4f}"]
        groups.add_row(*row)
    overall = Table(title=f"{title}: overall")
    for col in ("metric", "base", "+trigger", "change"):
        overall.add_column(col, justify="left" if col == "metric" else "right")
    for k in ("accuracy", "demographic_parity_difference", "equalized_odds_difference", "equal_opportunity_difference",
              "worst_group_accuracy", "accuracy_gap"):
        b, a = base.overall[k], after.overall[k]
        overall.add_row(k, f"{b:.4f}", f"{a:.4f}", f"{a - b:+.4f}")
    return groups, overall


@app.command("evaluate")
def evaluate_command(
    model_path: Path = MODEL, data: Path = DATA, label: str = LABEL, sensitive: list[str] = SENSITIVE_OPTION,
    trigger_dir: Path = TRIGGER_DIR, text: str = TEXT, image: str = IMAGE, device: str = DEVICE_OPTION,
    json_out: Path = typer.Option(None, "--json", help="Also write both reports as JSON."),
    allow_pickle: bool = ALLOW_PICKLE, allow_outside_paths: bool = ALLOW_OUTSIDE,
) -> None:
    """Accuracy and fairness of the model, and of the model with its trigger, side by side."""
    import warnings

    from reprogram.metrics.streaming import dataset_report_from_batches
    from reprogram.models import iter_proba
    from reprogram.triggers import FingerprintWarning, load_trigger

    def dataset_report(ds, trig):  # counts each batch of predictions as it comes, keeping none
        return dataset_report_from_batches(ds, iter_proba(model, ds, trigger=trig, device=dev,
                                                          collate_fn=model_collate(model)))

    model, dev = load_model(model_path, allow_pickle, device)
    ds = model_dataset(data, model, label, sensitive, text, image, allow_outside_paths)
    base = dataset_report(ds, None)
    if trigger_dir is None:
        report = base
        console.print(report)
        if json_out:
            report.to_json(json_out)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FingerprintWarning)
        trig, _ = load_trigger(trigger_dir, model)
    for w in caught:
        console.print(f"[yellow]warning:[/] {w.message}")
    after = dataset_report(ds, trig)
    console.print(*compare_tables(base, after, title=data.name))
    if json_out:
        from reprogram.io import atomic_write_text

        atomic_write_text(json_out, json.dumps({"base": base.to_dict(), "triggered": after.to_dict()}, indent=2))
        console.print(f"wrote {json_out}")


def predict(model, trigger, ds, dev) -> np.ndarray:
    from reprogram.models import predict_proba

    return predict_proba(model, ds, trigger=trigger, device=dev, collate_fn=model_collate(model))


@app.command("apply")
def apply_command(
    model_path: Path = MODEL, data: Path = DATA,
    out: Path = typer.Option(..., "--out", help="Predictions table to write (CSV or Parquet)."),
    trigger_dir: Path = TRIGGER_DIR, text: str = TEXT, image: str = IMAGE, device: str = DEVICE_OPTION,
    allow_pickle: bool = ALLOW_PICKLE,
    calibrator_dir: Path = typer.Option(None, "--calibrator", help="A calibrator folder (`reprogram calibrate`): "
                                                                   "adds calibrated_score column(s)."),
    keep: list[str] = typer.Option(None, "--keep", help="Input columns to copy into the predictions "
                                                         "(e.g. --keep label sex race, for calibrate or metrics)."),
    allow_outside_paths: bool = ALLOW_OUTSIDE,
) -> None:
    """Predict with the model (and its trigger): id, score (or score_<class>) and pred columns."""
    import pandas as pd

    from reprogram.data import read_table
    from reprogram.io import atomic_path
    from reprogram.triggers import load_trigger

    if out.suffix.lower() not in (".csv", ".parquet"):
        raise InputError(f"--out must end in .csv or .parquet, got {out.name}")
    model, dev = load_model(model_path, allow_pickle, device)
    frame = read_table(data)
    if keep:
        from reprogram.data import require_columns

        require_columns(frame, keep, role="column to keep", source=str(data))
        taken = {"id", "score", "pred"}
        if set(keep) & taken or any(str(k).startswith(("score_", "calibrated_score")) for k in keep):
            raise InputError(f"--keep columns may not be named id, score, pred, score_* or calibrated_score*: {keep}")
    ds = inputs_dataset(frame, model, text, image, Path(data).resolve().parent, allow_outside_paths)
    trig = load_trigger(trigger_dir, model)[0].to(dev) if trigger_dir is not None else None
    proba = predict(model, trig, ds, dev)
    classes = model.classes or list(range(proba.shape[1]))
    cols: dict = {"id": np.arange(len(frame))}
    if proba.shape[1] == 2:
        cols["score"] = proba[:, 1]
    else:
        cols.update({f"score_{c}": proba[:, i] for i, c in enumerate(classes)})
    cols["pred"] = np.asarray(classes, dtype=object)[proba.argmax(1)]
    if calibrator_dir is not None:
        cols.update(_calibrated_columns(calibrator_dir, proba, frame, classes, str(data)))
    for k in keep or []:
        cols[k] = frame[k].to_numpy()
    table = pd.DataFrame(cols)
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False) if out.suffix.lower() == ".parquet" else table.to_csv(tmp, index=False)
    console.print(f"wrote {len(table)} predictions to {out}")


def _calibrated_columns(calibrator_dir: Path, proba: np.ndarray, frame, classes: list, source: str) -> dict:
    """``calibrated_score`` (binary) or ``calibrated_score_<class>`` from a saved calibrator.

    A group calibrator reads the sensitive columns it was fitted on from the input table.
    """
    from reprogram.calibrate import load_calibrator
    from reprogram.calibrate.artifacts import check_calibrator_groups

    cal = load_calibrator(calibrator_dir)
    if int(getattr(cal, "n_classes_", 2)) != proba.shape[1]:
        raise InputError(f"the calibrator in {calibrator_dir} was fitted on {cal.n_classes_} classes; "
                         f"the model predicts {proba.shape[1]}")
    scores = proba[:, 1] if proba.shape[1] == 2 else proba
    if hasattr(cal, "groups_"):
        cols = cal.encoder_.columns_
        check_calibrator_groups(cal, frame, calibrator_dir, source=source)
        out = cal.transform(scores, frame[cols])
    else:
        out = cal.transform(scores)
    if out.ndim == 1:
        return {"calibrated_score": out}
    return {f"calibrated_score_{c}": out[:, i] for i, c in enumerate(classes)}
