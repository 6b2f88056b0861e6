"""The built-in end-to-end example behind ``reprogram demo``.

The story an audit tells: a model was trained on data where a spurious feature (the
tint of a digit image) went along with the label, so it learned the shortcut and fails
the people in the minority (tint, label) combinations. Retraining is not allowed. The demo

1. builds the spurious-digits example (real handwritten digits, tinted by group);
2. trains the "deployed" CNN on its biased training split (plain ERM) and ships it as
   TorchScript with a JSON sidecar, the way a production model arrives;
3. loads it back frozen with ``load_frozen`` (weights locked, fingerprinted);
4. audits it on the unbiased test split;
5. learns a border trigger for equalized odds on a *separate* tuning split (the
   validation split: data the model never saw), with the model's weights untouched;
6. evaluates model and model + trigger on the test split, writes predictions, reports
   and the trigger, and prints a before/after table.

Later stages of the toolkit (calibration, ONNX export, saliency reports) extend this chain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from reprogram.io import atomic_path, atomic_write_text

__all__ = ["run_demo"]


def _predictions(ds, proba: np.ndarray) -> pd.DataFrame:
    classes = list(ds.classes)
    return pd.DataFrame({
        "id": np.arange(len(ds)),
        "label": [classes[i] for i in ds.labels],
        "group": [ds.group_names[i] for i in ds.group_ids],
        "score": proba[:, 1],
        "pred": [classes[i] for i in proba.argmax(1)],
    })


def run_demo(out_dir: str | Path = "reprogram-demo", *, device: str = "auto", seed: int = 0, console=None) -> dict:
    """Run the demo chain, print what happens, and return the artifact paths."""
    from reprogram.data import spurious_digits, spurious_digits_table
    from reprogram.metrics import fairness_report
    from reprogram.models import load_frozen, resolve_device
    from reprogram.train import Trainer, small_cnn
    from reprogram.triggers import TriggerFitter, make_trigger, save_trigger

    console = console or Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)

    console.rule("[bold]reprogram demo")
    train, tune, test = (spurious_digits(s, seed=seed) for s in ("train", "val", "test"))
    console.print(f"1. data: {len(train)} train / {len(tune)} tuning / {len(test)} test tinted digit images "
                  f"({train.images.shape[-1]}x{train.images.shape[-2]}), task {train.classes}, "
                  f"groups {train.group_names}")
    agree = float(np.mean(train.group_ids == train.labels))
    agree_test = float(np.mean(test.group_ids == test.labels))
    console.print(f"   the tint goes with the label in {max(agree, 1 - agree):.0%} of training images, "
                  f"{max(agree_test, 1 - agree_test):.0%} of tuning and test images")

    torch.manual_seed(seed)
    trainer = Trainer(small_cnn(2, width=16), epochs=15, batch_size=64, lr=3e-3, device=dev, seed=seed,
                      progress=console.is_terminal)
    trainer.fit(train)
    ckpt = trainer.save(out / "model.pt", train, arch="cnn")
    console.print(f"2. deployed model: a CNN trained by plain ERM on the biased split -> {ckpt}")

    frozen = load_frozen(ckpt).to(dev)
    fingerprint = frozen.fingerprint
    console.print(f"3. loaded frozen: {frozen.format}, input {frozen.input_kind}, fingerprint {fingerprint[:16]}…, "
                  f"device {dev}")

    trigger = make_trigger("border", frozen, tune, size=2, mode="overlay", seed=seed)
    fitter = TriggerFitter(frozen, trigger, "eo", lam=1.0, epochs=20, batch_size=64, lr=0.05, device=dev, seed=seed,
                           progress=console.is_terminal)
    base_proba = fitter.predict_proba(test, triggered=False)
    base_preds = _predictions(test, base_proba)
    pos = train.classes[1]
    base = fairness_report(base_preds["label"], base_preds["pred"], base_preds["score"], base_preds[["group"]],
                           pos_label=pos)
    console.print(f"4. audit of the deployed model on the test split: accuracy {base.overall['accuracy']:.3f}, "
                  f"equalized-odds gap {base.overall['equalized_odds_difference']:.3f}")

    fitter.fit(tune, tune)
    assert frozen.fingerprint == fingerprint  # the model's weights were never touched
    trig_dir = save_trigger(fitter.trigger, out / "trigger", model=frozen, criterion="eo", **{"lambda": 1.0},
                            columns={"label": "label", "sensitive": ["group"], "image": "path"},
                            classes=list(train.classes), groups=list(train.group_names), best_epoch=fitter.best_epoch_,
                            history=fitter.history_)
    console.print(f"5. border trigger (2-pixel frame) for equalized odds, fitted on the tuning split, kept epoch "
                  f"{fitter.best_epoch_} -> {trig_dir}; model fingerprint unchanged")

    trig_preds = _predictions(test, fitter.predict_proba(test))
    after = fairness_report(trig_preds["label"], trig_preds["pred"], trig_preds["score"], trig_preds[["group"]],
                            pos_label=pos)
    paths = {"model": str(ckpt), "trigger": str(trig_dir)}
    for name, preds, report in (("base", base_preds, base), ("triggered", trig_preds, after)):
        p = out / f"predictions_{name}.csv"
        with atomic_path(p) as tmp:
            preds.to_csv(tmp, index=False)
        r = out / f"report_{name}.json"
        report.to_json(r)
        paths[f"predictions_{name}"], paths[f"report_{name}"] = str(p), str(r)

    console.print("6. model vs model + trigger on the test split:")
    table = Table()
    for col in ("", "accuracy", "worst group acc.", "DP gap", "EO gap", "TPR gap", "FPR gap"):
        table.add_column(col, justify="right")
    for name, r in (("deployed model", base), ("+ fairness trigger", after)):
        o = r.overall
        table.add_row(name, *(f"{o[k]:.3f}" for k in ("accuracy", "worst_group_accuracy",
                                                      "demographic_parity_difference", "equalized_odds_difference",
                                                      "equal_opportunity_difference", "false_positive_rate_difference")))
    console.print(table)
    cut = 1 - after.overall["equalized_odds_difference"] / max(base.overall["equalized_odds_difference"], 1e-12)
    console.print(f"   equalized-odds gap {base.overall['equalized_odds_difference']:.3f} -> "
                  f"{after.overall['equalized_odds_difference']:.3f} ({cut:.0%} smaller), accuracy "
                  f"{base.overall['accuracy']:.3f} -> {after.overall['accuracy']:.3f}")
    test_table = spurious_digits_table(out / "data", "test", seed=seed)  # the test split as PNG files + CSV
    paths["test_table"] = str(test_table)
    console.print(f"   the same from the command line: reprogram evaluate --model {ckpt} --trigger {trig_dir} "
                  f"--data {test_table} --image path --label label --sensitive group", soft_wrap=True)  # copyable
    console.print("   artifacts:")
    for k, v in paths.items():
        console.print(f"     {k:22s} {v}")
    atomic_write_text(out / "artifacts.json", json.dumps(paths, indent=2) + "\n")
    return paths
