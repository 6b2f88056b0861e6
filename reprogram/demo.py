"""The built-in end-to-end example behind ``reprogram demo``.

The story an audit tells: a model was trained on data where a spurious feature (the
tint of a digit image) went along with the label, so it learned the shortcut and fails
the people in the minority (tint, label) combinations. The demo

1. builds the spurious-digits example (real handwritten digits, tinted by group);
2. trains the "deployed" model on its biased training split and ships it as TorchScript
   with a JSON sidecar, the way a production model arrives;
3. loads it back frozen with ``load_frozen`` (weights locked, fingerprinted);
4. predicts on the unbiased test split and writes the predictions table;
5. audits it with ``fairness_report`` and writes the report as JSON.

Later stages of the toolkit (trigger learning, calibration, export) extend this chain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import nn

from reprogram.io import atomic_path, atomic_write_text

__all__ = ["run_demo"]


def _deployed_model(images: torch.Tensor, labels: np.ndarray, seed: int) -> nn.Module:
    """A linear classifier on raw pixels, fitted by scikit-learn's logistic regression.

    Fitted with scikit-learn (the shared torch Trainer belongs to ``reprogram.train``) and
    moved into an ``nn.Linear`` so that it ships, loads and runs like any torch model.
    """
    from sklearn.linear_model import LogisticRegression

    x = images.flatten(1).numpy()
    clf = LogisticRegression(C=0.05, max_iter=500, random_state=seed).fit(x, labels)
    linear = nn.Linear(x.shape[1], 2)
    with torch.no_grad():
        # two-class logits [0, w.x + b] give softmax(...)[1] == sigmoid(w.x + b)
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[1] = torch.as_tensor(clf.coef_[0], dtype=torch.float32)
        linear.bias[1] = float(clf.intercept_[0])
    return nn.Sequential(nn.Flatten(), linear).eval()


def run_demo(out_dir: str | Path = "reprogram-demo", *, device: str = "auto", seed: int = 0, console=None) -> dict:
    """Run the demo chain, print what happens, and return the artifact paths."""
    from reprogram.data import spurious_digits
    from reprogram.metrics import fairness_report
    from reprogram.models import load_frozen, resolve_device, write_sidecar

    console = console or Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)

    console.rule("[bold]reprogram demo")
    train, test = spurious_digits("train", seed=seed), spurious_digits("test", seed=seed)
    console.print(
        f"1. data: {len(train)} train / {len(test)} test tinted digit images "
        f"({train.images.shape[-1]}x{train.images.shape[-2]}), task {train.classes}, groups {train.group_names}"
    )
    agree = float(np.mean(train.group_ids == train.labels))
    agree_test = float(np.mean(test.group_ids == test.labels))
    console.print(
        f"   the tint goes with the label in {max(agree, 1 - agree):.0%} of training images, "
        f"{max(agree_test, 1 - agree_test):.0%} of test images"
    )

    model = _deployed_model(train.images, train.labels, seed)
    ckpt = out / "model.pt"
    with atomic_path(ckpt) as tmp:
        torch.jit.save(torch.jit.trace(model, train.images[:2]), str(tmp))
    write_sidecar(
        ckpt,
        {
            "format": "reprogram.model",
            "version": 1,
            "input_kind": "image",
            "classes": list(train.classes),
            "groups": {"names": list(train.group_names)},
            "image": train.image_meta,
            "arch": "linear",
        },
    )
    console.print(f"2. deployed model: linear classifier trained on the biased split -> {ckpt}")

    frozen = load_frozen(ckpt).to(dev)
    console.print(
        f"3. loaded frozen: {frozen.format}, input {frozen.input_kind}, fingerprint {frozen.fingerprint[:16]}…, "
        f"device {dev}"
    )

    with torch.no_grad():
        logits = frozen(test.images.to(dev)).float().cpu()
    score = torch.softmax(logits.double(), dim=1)[:, 1].numpy()  # float64: the CSV round-trips exactly
    pred = logits.argmax(dim=1).numpy()
    classes = list(test.classes)
    preds = pd.DataFrame(
        {
            "id": np.arange(len(test)),
            "label": [classes[i] for i in test.labels],
            "group": [test.group_names[i] for i in test.group_ids],
            "score": score,
            "pred": [classes[i] for i in pred],
        }
    )
    preds_path = out / "predictions.csv"
    with atomic_path(preds_path) as tmp:
        preds.to_csv(tmp, index=False)
    console.print(f"4. predictions on the test split -> {preds_path}")

    report = fairness_report(preds["label"], preds["pred"], preds["score"], preds[["group"]], pos_label=classes[1])
    report_path = out / "report.json"
    report.to_json(report_path)
    console.print("5. fairness audit of the deployed model on the test split:")
    console.print(report)
    worst = report.by_group["accuracy"].idxmin()
    console.print(
        f"   accuracy {report.overall['accuracy']:.3f}, worst group '{worst}' "
        f"{report.overall['worst_group_accuracy']:.3f}; equalized-odds gap "
        f"{report.overall['equalized_odds_difference']:.3f} -> {report_path}"
    )
    console.print(
        "   reproduce the audit: reprogram metrics --predictions "
        f"{preds_path} --label label --pred pred --score score --sensitive group --pos-label {classes[1]}"
    )
    artifacts = {"model": str(ckpt), "predictions": str(preds_path), "report": str(report_path)}
    atomic_write_text(out / "artifacts.json", json.dumps(artifacts, indent=2) + "\n")
    return artifacts
