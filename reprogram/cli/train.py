"""``reprogram train`` and ``reprogram pareto``: the in-processing methods from the command line.

Both commands take the same data, model and training options (defined once below); the
work is done by :func:`reprogram.train.train_method` and :func:`reprogram.train.pareto_sweep`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from reprogram.cli.app import app
from reprogram.cli.common import DEVICE_OPTION, SENSITIVE_OPTION, console
from reprogram.errors import InputError

_METHOD_HELP = "erm | fas | regularizer | lagrangian | adversarial | reweight | resample | groupdro | reductions"

# -- options shared by `train` and `pareto` ------------------------------------------
DATA = typer.Option(..., "--data", help="Training table (CSV or Parquet).")
VAL = typer.Option(None, "--val", help="Validation table; default: a stratified part of --data.")
VAL_FRACTION = typer.Option(0.2, "--val-fraction", help="Share of --data held out for validation when --val is not given.")
LABEL = typer.Option(..., "--label", help="Label column.")
FEATURES = typer.Option(None, "--features", help="Feature columns (tabular; default: all but label and sensitive).")
TEXT = typer.Option(None, "--text", help="Text column (with --arch a Hugging Face model folder).")
IMAGE = typer.Option(None, "--image", help="Image path column, relative to the table's folder.")
IMAGE_SIZE = typer.Option(32, "--image-size", min=8, help="Images are resized to SIZE x SIZE.")
ARCH = typer.Option("mlp", "--arch", help="mlp (tabular) | cnn | resnet18 (images) | a Hugging Face model folder (text).")
HIDDEN = typer.Option("512,256,64", "--hidden", help="MLP hidden widths, comma-separated.")
DROPOUT = typer.Option(0.2, "--dropout", min=0.0, max=0.99, help="MLP dropout.")
FREEZE_ENCODER = typer.Option(False, "--freeze-encoder", help="Text: train the classification head only.")
MAX_LENGTH = typer.Option(128, "--max-length", min=8, help="Text: tokens per row.")
EPOCHS = typer.Option(20, "--epochs", min=1, help="Training epochs.")
BATCH_SIZE = typer.Option(256, "--batch-size", min=1, help="Rows per batch.")
LR = typer.Option(1e-3, "--lr", help="Learning rate.")
OPTIMIZER = typer.Option("adam", "--optimizer", help="adam | sgd.")
SCHEDULE = typer.Option("none", "--schedule", help="none | step | cosine.")
WEIGHT_DECAY = typer.Option(0.0, "--weight-decay", min=0.0, help="Weight decay.")
SEED = typer.Option(0, "--seed", help="Seed for the split, the model and the data order.")
MONITOR = typer.Option("accuracy", "--monitor", help="Validation figure to keep the best epoch by.")
PATIENCE = typer.Option(None, "--patience", min=0, help="Stop after this many epochs without improvement.")
# method options (None: the method's default; a method refuses options it does not take)
VARIANT = typer.Option(None, "--variant", help="fas: seed | softmax.")
C = typer.Option(None, "--c", help="fas: mixing coefficient c.")
BETA_LR = typer.Option(None, "--beta-lr", help="fas: learning rate of the group scales beta.")
BETA_ASCENT = typer.Option(None, "--beta-ascent/--beta-descent", help="fas: raise beta for high-loss groups "
                           "(default for the seed variant) or minimise it (the softmax variant's published rule).")
TEMPERATURE = typer.Option(None, "--temperature", help="fas (softmax variant): temperature T.")
PENALTY = typer.Option(None, "--penalty", help="regularizer: dp | eo | smooth_dp | smooth_eo | prejudice_remover.")
ETA = typer.Option(None, "--eta", help="regularizer: penalty strength.")
CONSTRAINT = typer.Option(None, "--constraint", help="lagrangian: dp | eo; reductions: dp | eo | a fairlearn constraint name.")
EPS = typer.Option(None, "--eps", help="lagrangian: allowed gap epsilon.")
MULTIPLIER_LR = typer.Option(None, "--multiplier-lr", help="lagrangian: learning rate of the multipliers.")
ON = typer.Option(None, "--on", help="adversarial: representation | output.")
STRENGTH = typer.Option(None, "--strength", help="adversarial: gradient-reversal strength; reweight, resample: power of the correction (1 textbook, >1 over-correct).")
BY = typer.Option(None, "--by", help="fas, reweight, resample, groupdro: group | group_class.")
K = typer.Option(None, "--k", help="reweight: affirmative-action boost of the smallest group.")
TO = typer.Option(None, "--to", help="resample: mean | min | max group count.")
STEP_SIZE = typer.Option(None, "--step-size", help="groupdro: step of the group-weight update.")
ADJUST = typer.Option(None, "--adjust", min=0.0, help="groupdro: C of the generalisation adjustment C / sqrt(n_g) "
                      "(favours small groups).")
DIFFERENCE_BOUND = typer.Option(None, "--difference-bound", help="reductions: allowed constraint violation.")

_OPTION_FLAGS = {
    "variant": "--variant", "c": "--c", "beta_lr": "--beta-lr", "beta_ascent": "--beta-ascent", "temperature": "--temperature", "penalty": "--penalty", "eta": "--eta", "constraint": "--constraint",
    "eps": "--eps", "multiplier_lr": "--multiplier-lr", "on": "--on", "strength": "--strength", "by": "--by",
    "k": "--k", "to": "--to", "step_size": "--step-size", "adjust": "--adjust", "difference_bound": "--difference-bound",
}  # fmt: skip


def method_options(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """The method options the user set, named as the library names them."""
    from reprogram.train.methods import METHODS

    if method not in METHODS:
        raise InputError(f"unknown --method {method!r}; use one of {', '.join(METHODS)}")
    opts = {k: v for k, v in given.items() if v is not None}
    if method == "reductions":
        allowed = {"constraint": "constraints", "difference_bound": "difference_bound"}
        bad = sorted(_OPTION_FLAGS[k] for k in opts if k not in allowed)
        if bad:
            raise InputError(f"--method reductions takes no {', '.join(bad)}; it takes --constraint, --difference-bound")
        return {allowed[k]: v for k, v in opts.items()}
    return opts


def load_data(data: Path, val: Path | None, val_fraction: float, label: str, sensitive: list[str],
              features: list[str] | None, text: str | None, image: str | None, image_size: int, seed: int,
              allow_outside_paths: bool = False):
    """Training and validation datasets as the options say."""
    from reprogram.data import load_train_val

    kw: dict[str, Any] = {"features": features or None, "text": text, "image": image}
    if image is not None:
        kw["allow_outside_paths"] = allow_outside_paths
    if image is not None:
        kw["image_meta"] = {"size": [image_size, image_size], "channels": 3}
    return load_train_val(data, label=label, sensitive=sensitive, val=val, val_fraction=val_fraction, seed=seed, **kw)


def model_factory(train, arch: str, hidden: str, dropout: float, freeze_encoder: bool, max_length: int):
    """A function making a fresh model for ``train``'s input kind, and the batch collate."""
    from reprogram.data import TabularDataset, TextDataset
    from reprogram.train.models import build_model

    try:
        widths = tuple(int(h) for h in hidden.split(",") if h.strip())
    except ValueError:
        raise InputError(f"--hidden must be comma-separated integers, got {hidden!r}") from None
    kind = "tabular" if isinstance(train, TabularDataset) else "text" if isinstance(train, TextDataset) else "image"
    collate = None
    if kind == "text":
        if not Path(arch).is_dir():
            raise InputError(f"--text needs --arch to be a Hugging Face model folder; {arch!r} is not a folder")
        from reprogram.data import tokenize_collate
        from reprogram.models import prepare_transformers

        try:
            tok = prepare_transformers().AutoTokenizer.from_pretrained(arch, local_files_only=True)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot load a tokenizer from {arch!r}: {str(e).splitlines()[0]}") from None
        collate = tokenize_collate(tok, max_length=max_length)
    n_features = train.n_features if kind == "tabular" else None

    def build():
        return build_model(arch, input_kind=kind, n_classes=train.n_classes, n_features=n_features, hidden=widths,
                           dropout=dropout, freeze_encoder=freeze_encoder)

    return build, collate


def trainer_options(epochs, batch_size, lr, optimizer, schedule, weight_decay, seed, device, monitor, patience,
                    collate) -> dict:
    return {"epochs": epochs, "batch_size": batch_size, "lr": lr, "optimizer": optimizer,
            "schedule": None if schedule == "none" else schedule, "weight_decay": weight_decay, "seed": seed,
            "device": device, "monitor": monitor, "patience": patience, "collate_fn": collate}  # fmt: skip


@app.command("train")
def train_command(
    data: Path = DATA, label: str = LABEL, sensitive: list[str] = SENSITIVE_OPTION,
    method: str = typer.Option("erm", "--method", help=_METHOD_HELP),
    out: Path = typer.Option(..., "--out", help="Where to save the frozen model (ckpt.pt; a folder for text)."),
    val: Path = VAL, val_fraction: float = VAL_FRACTION, features: list[str] = FEATURES, text: str = TEXT,
    image: str = IMAGE, image_size: int = IMAGE_SIZE, arch: str = ARCH, hidden: str = HIDDEN,
    dropout: float = DROPOUT, freeze_encoder: bool = FREEZE_ENCODER, max_length: int = MAX_LENGTH,
    epochs: int = EPOCHS, batch_size: int = BATCH_SIZE, lr: float = LR, optimizer: str = OPTIMIZER,
    schedule: str = SCHEDULE, weight_decay: float = WEIGHT_DECAY, seed: int = SEED, device: str = DEVICE_OPTION,
    monitor: str = MONITOR, patience: int = PATIENCE,
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Save every epoch in this folder (the newest two kept)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest whole checkpoint in --checkpoint "
                                                        "(a fresh start when there is none)."),
    variant: str = VARIANT, c: float = C, beta_lr: float = BETA_LR, beta_ascent: bool = BETA_ASCENT,
    temperature: float = TEMPERATURE, penalty: str = PENALTY, eta: float = ETA, constraint: str = CONSTRAINT,
    eps: float = EPS, multiplier_lr: float = MULTIPLIER_LR, on: str = ON, strength: float = STRENGTH, by: str = BY,
    k: float = K, to: str = TO, step_size: float = STEP_SIZE, adjust: float = ADJUST,
    difference_bound: float = DIFFERENCE_BOUND,
    allow_outside_paths: bool = typer.Option(False, "--allow-outside-paths", help="Allow image paths that lead "
                                             "outside the table's folder (../, absolute, symlinks)."),
) -> None:
    """Train a base model with an in-processing method; print its validation fairness table."""
    import torch

    from reprogram.train.methods import train_method

    given = dict(variant=variant, c=c, beta_lr=beta_lr, beta_ascent=beta_ascent, temperature=temperature, penalty=penalty, eta=eta, constraint=constraint, eps=eps,
                 multiplier_lr=multiplier_lr, on=on, strength=strength, by=by, k=k, to=to, step_size=step_size,
                 adjust=adjust, difference_bound=difference_bound)  # fmt: skip
    options = method_options(method, given)
    if resume and checkpoint is None:
        raise InputError("--resume needs --checkpoint DIR (where the earlier run saved its epochs)")
    if checkpoint is not None and method == "reductions":
        raise InputError("--method reductions fits in one go (fairlearn); it takes no --checkpoint")
    from reprogram import distributed
    from reprogram.checkpoint import TrainingInterrupted

    ctx = distributed.start_cli(device, console)  # under torchrun: data parallel, rank 0 prints and writes
    train, val_ds = load_data(data, val, val_fraction, label, sensitive, features, text, image, image_size, seed,
                              allow_outside_paths)
    build, collate = model_factory(train, arch, hidden, dropout, freeze_encoder, max_length)
    tkw = trainer_options(epochs, batch_size, lr, optimizer, schedule, weight_decay, seed, device, monitor, patience,
                          collate)
    tkw.update(progress=console.is_terminal, checkpoint_dir=checkpoint, resume=resume)

    def seeded_build():
        torch.manual_seed(seed)
        return build()

    console.print(f"training {method} on {len(train)} rows ({len(val_ds)} for validation), groups: "
                  f"{', '.join(train.group_names)}")
    try:
        fitted = train_method(method, train, build_model=seeded_build, val=val_ds, trainer_kw=tkw, **options)
    except TrainingInterrupted as e:  # every rank stops together
        distributed.finish()
        console.print(f"[yellow]{e}[/]")
        raise typer.Exit(130) from None
    distributed.finish()  # not after an error: torchrun ends the other ranks
    if not ctx.is_main:
        return
    report = fitted.report(val_ds)
    console.print(report)
    path = fitted.save(out, train, arch=arch)
    console.print(f"wrote {path} (load it with reprogram.load_frozen or pass it as --model)")


@app.command("pareto")
def pareto_command(
    data: Path = DATA, label: str = LABEL, sensitive: list[str] = SENSITIVE_OPTION,
    method: str = typer.Option(None, "--method", help=_METHOD_HELP),
    values: list[float] = typer.Option(None, "--values", help="Values of the method's main knob: --values 0.1 1 10."),
    trigger: str = typer.Option(None, "--trigger", help="Sweep a fairness trigger on --model instead of a method: "
                                                        "border | patch | additive | prompt | feature."),
    model_path: Path = typer.Option(None, "--model", help="The frozen model a --trigger sweep reprograms."),
    lambdas: list[float] = typer.Option(None, "--lambdas", help="Trigger strengths to sweep: --lambdas 0.5 1 5."),
    criterion: str = typer.Option("dp", "--criterion", help="Trigger sweeps: dp | eo."),
    metric: str = typer.Option("demographic_parity_difference", "--metric", help="Fairness figure on the x axis."),
    out: Path = typer.Option(..., "--out", help="Folder for points.json, points.csv and pareto.png."),
    with_erm: bool = typer.Option(True, "--with-erm/--no-erm", help="Add plain ERM as a reference point."),
    append: bool = typer.Option(False, "--append", help="Keep the other methods' points already in --out (one plot)."),
    val: Path = VAL, val_fraction: float = VAL_FRACTION, features: list[str] = FEATURES, text: str = TEXT,
    image: str = IMAGE, image_size: int = IMAGE_SIZE, arch: str = ARCH, hidden: str = HIDDEN,
    dropout: float = DROPOUT, freeze_encoder: bool = FREEZE_ENCODER, max_length: int = MAX_LENGTH,
    epochs: int = EPOCHS, batch_size: int = BATCH_SIZE, lr: float = LR, optimizer: str = OPTIMIZER,
    schedule: str = SCHEDULE, weight_decay: float = WEIGHT_DECAY, seed: int = SEED, device: str = DEVICE_OPTION,
    variant: str = VARIANT, penalty: str = PENALTY, constraint: str = CONSTRAINT, on: str = ON, by: str = BY,
    allow_outside_paths: bool = typer.Option(False, "--allow-outside-paths", help="Allow image paths that lead "
                                             "outside the table's folder (../, absolute, symlinks)."),
) -> None:
    """Sweep a method's main knob (eta, eps, c, strength...) or a trigger's lambda: accuracy vs fairness,
    Pareto front, plot (--append puts several sweeps on one plot)."""
    import torch

    from reprogram.train.methods import SWEEP_PARAMETER
    from reprogram.train.pareto import ParetoPoint, pareto_sweep

    if (method is None) == (trigger is None):
        raise InputError("give either --method (an in-processing method) or --trigger with --model (a trigger sweep)")
    if trigger is not None:
        points = _trigger_sweep(data, val, val_fraction, label, sensitive, text, image, trigger, model_path,
                                lambdas, criterion, metric, epochs, batch_size, seed, device, allow_outside_paths)
        _save_points(points, out, append, metric, data, drop={points[0].method})
        return
    options = method_options(method, dict(variant=variant, penalty=penalty, constraint=constraint, on=on, by=by))
    parameter = SWEEP_PARAMETER.get(method)
    if parameter is not None and not values:
        raise InputError(f"give --values for {method}'s {parameter}, e.g. --values 0.1 1 10")
    train, val_ds = load_data(data, val, val_fraction, label, sensitive, features, text, image, image_size, seed,
                              allow_outside_paths)
    build, collate = model_factory(train, arch, hidden, dropout, freeze_encoder, max_length)
    tkw = trainer_options(epochs, batch_size, lr, optimizer, schedule, weight_decay, seed, device, "accuracy", None,
                          collate)

    def seeded_build():
        torch.manual_seed(seed)
        return build()

    points: list[ParetoPoint] = []
    if with_erm and method != "erm":
        points += pareto_sweep("erm", [], train, val_ds, build_model=seeded_build, metric=metric, trainer_kw=tkw,
                               progress=console.print)
    points += pareto_sweep(method, values or [], train, val_ds, build_model=seeded_build, metric=metric,
                           trainer_kw=tkw, method_kw=options, progress=console.print)
    _save_points(points, out, append, metric, data, drop={method, "erm" if with_erm else None})


def _save_points(points, out: Path, append: bool, metric: str, data: Path, *, drop: set) -> None:
    """Write the sweep (with the earlier points of other sweeps in ``out`` when appending)."""
    from reprogram.train.pareto import ParetoPoint, mark, save_sweep

    kept: list[ParetoPoint] = []
    existing = out / "points.json"
    if append and existing.is_file():
        try:
            kept = [ParetoPoint(**r) for r in json.loads(existing.read_text()) if r["method"] not in drop]
        except (ValueError, TypeError, KeyError) as e:
            raise InputError(f"cannot read the earlier sweep {existing}: {e}") from None
        if kept and kept[0].metric != metric:
            raise InputError(f"{existing} holds {kept[0].metric} points; this sweep measures {metric}")
    points = mark(kept + points)
    paths = save_sweep(points, out, title=f"{Path(data).name}: accuracy vs {metric}")
    front = [p for p in points if p.pareto]
    console.print(f"{len(front)} of {len(points)} points on the Pareto front; wrote {', '.join(map(str, paths.values()))}")


def _trigger_sweep(data, val, val_fraction, label, sensitive, text, image, trigger, model_path, lambdas, criterion,
                   metric, epochs, batch_size, seed, device, allow_outside_paths=False):
    """One trigger per lambda on the frozen model, fitted on --data, placed by its figures on --val."""
    from reprogram.cli.fit import load_model, model_collate, model_dataset
    from reprogram.data import split_frame
    from reprogram.data.tables import read_table
    from reprogram.train.pareto import ParetoPoint
    from reprogram.triggers import TriggerFitter, make_trigger

    if model_path is None or not lambdas:
        raise InputError("a --trigger sweep needs --model CKPT and --lambdas L1 L2 ...")
    model, dev = load_model(model_path, False, device)
    if val is not None:
        tune, val_ds = (model_dataset(p, model, label, sensitive, text, image, allow_outside_paths) for p in (data, val))
    else:  # the same stratified split the method sweeps use
        parts = split_frame(read_table(data), (1 - val_fraction, val_fraction), stratify=[label, *sensitive], seed=seed)
        # the parts are frames: their image paths are relative to the table's folder
        base = Path(data).resolve().parent
        tune, val_ds = (model_dataset(p, model, label, sensitive, text, image, allow_outside_paths, base_dir=base)
                        for p in parts)
    points = [ParetoPoint("model (no trigger)", None, None, 0.0, 0.0, metric)]
    for lam in lambdas:
        trig = make_trigger(trigger, model, tune, seed=seed)
        fitter = TriggerFitter(model, trig, criterion, lam, epochs=epochs, batch_size=min(batch_size, 256),
                               device=dev, seed=seed, collate_fn=model_collate(model), progress=False).fit(tune, val_ds)
        overall = fitter.evaluate(val_ds).overall
        points.append(ParetoPoint(f"{trigger} trigger ({criterion})", "lambda", lam, overall["accuracy"],
                                  overall[metric], metric, reports={"val": overall}))
        console.print(f"{trigger} trigger lambda={lam:g}: accuracy {overall['accuracy']:.4f}, {metric} {overall[metric]:.4f}")
    base = fitter.base_report_.overall
    points[0] = ParetoPoint("model (no trigger)", None, None, base["accuracy"], base[metric], metric,
                            reports={"val": base})
    return points
