"""Does group calibration work? A real model whose scores are miscalibrated per group, one run.

Protocol (the calibration issue):

1. Adult (or COMPAS) from the registry wheel, split 40/30/30 stratified by label and
   sex: *train* / *fit* / *test*.
2. The base model is an MLP (64-32) trained on a group-skewed sample of *train*: most
   positive rows of one group are dropped (Adult: 75% of the women with income > 50K;
   COMPAS: 60% of the African-American reoffenders), so its scores are miscalibrated
   differently per group -- too low for that group, too high for the others after the
   shifted base rate leaks into shared features.
3. Each calibrator is fitted on *fit* (half of the held-out data) and measured on
   *test* (the other half): max group ECE (15 equal-width bins) and calibration
   disparity (max - min group ECE) over the sex groups (Adult; race for COMPAS), ROC
   AUC, Brier, and the multicalibration error (worst |mean(y) - mean(score)| over
   (group x 10 score bins) cells of >= 200 rows, groups = sex, race and sex x race).

Targets: ``auto`` has max group ECE <= 0.03 and disparity <= 0.02, ROC AUC within 0.005
of the raw scores; multicalibration brings the held-out multicalibration error below
alpha (0.02 here, cells of >= 200 rows).

    python benchmarks/calibration_quality.py [--dataset adult|compas] [--seeds 3] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from reprogram.calibrate import GroupCalibrator, IsotonicMap, PlattMap, multicalibrate, multicalibration_error
from reprogram.data import load_dataset, load_real_dataset, split_frame
from reprogram.metrics import fairness_report
from reprogram.models import predict_proba
from reprogram.train import Trainer, mlp

console = Console(highlight=False, width=170)

SKEW = {"adult": ("sex", "Female", 0.75), "compas": ("race", "African-American", 0.6)}
TARGET = {"max_group_ece": 0.03, "calibration_disparity": 0.02, "auc_drop": 0.005}


def base_model_scores(name: str, seed: int, epochs: int):
    """Scores on the fit and test splits of an MLP trained on a group-skewed training split."""
    d = load_real_dataset(name)
    attr, value, drop = SKEW[name]
    train, fit, test = split_frame(d.frame, (0.4, 0.3, 0.3), stratify=[d.label, attr], seed=seed)
    rng = np.random.default_rng(seed)
    hit = ((train[attr] == value) & (train[d.label] == 1)).to_numpy()
    keep = ~hit | (rng.uniform(size=len(train)) > drop)
    train = train[keep].reset_index(drop=True)
    ds = load_dataset(train, label=d.label, sensitive=d.sensitive, features=d.features)
    reuse = dict(label=d.label, sensitive=d.sensitive, feature_encoder=ds.feature_encoder,
                 label_classes=ds.label_encoder, group_encoder=None)
    torch.manual_seed(seed)
    model = mlp(ds.n_features, 2, hidden=(64, 32))
    Trainer(model, epochs=epochs, lr=1e-3, batch_size=256, seed=seed, progress=False).fit(ds)
    out = []
    for frame in (fit, test):
        part = load_dataset(frame, **{k: v for k, v in reuse.items() if v is not None})
        proba = predict_proba(model, part)[:, 1]
        out.append((proba.astype(np.float32).astype(np.float64), frame[d.label].to_numpy().astype(int),
                    frame[d.sensitive].reset_index(drop=True)))
    return out, attr


def measure(y, s, sens, attr, auc_raw) -> dict:
    o = fairness_report(y, y_score=s, sensitive=sens[attr]).overall
    by = fairness_report(y, y_score=s, sensitive=sens).by_group
    big = by[by["count"] >= 200]  # smaller intersections: ECE there is mostly sampling noise
    mc = multicalibration_error(s, y, sens, n_bins=10, max_order=2, min_cell_size=200)
    auc = roc_auc_score(y, s)
    return {"max_group_ece": o["max_group_ece"], "calibration_disparity": o["calibration_disparity"],
            "max_group_ece_intersectional": float(big["ece"].max()), "roc_auc": auc, "auc_change": auc - auc_raw,
            "brier": float(np.mean((s - y) ** 2)), "multicalibration_error": mc["max"]}


def run_seed(name: str, seed: int, epochs: int, alpha: float) -> dict:
    t0 = time.perf_counter()
    ((s_fit, y_fit, g_fit), (s_test, y_test, g_test)), attr = base_model_scores(name, seed, epochs)
    train_s = time.perf_counter() - t0
    auc_raw = roc_auc_score(y_test, s_test)
    rows = {"raw scores": measure(y_test, s_test, g_test, attr, auc_raw)}
    calibrators = {
        "global isotonic": lambda: IsotonicMap().fit(s_fit, y_fit).transform(s_test),
        "global platt": lambda: PlattMap().fit(s_fit, y_fit).transform(s_test),
        f"group auto ({attr})": lambda: GroupCalibrator().fit(s_fit, y_fit, g_fit[attr]).transform(s_test, g_test[attr]),
        f"group platt ({attr})": lambda: GroupCalibrator(method="platt").fit(s_fit, y_fit, g_fit[attr]).transform(
            s_test, g_test[attr]),
        "group auto (sex x race, shrinkage 200)": lambda: GroupCalibrator(shrinkage=200.0).fit(
            s_fit, y_fit, g_fit).transform(s_test, g_test),
        f"multicalibration (alpha {alpha:g})": lambda: multicalibrate(
            s_fit, y_fit, g_fit, alpha=alpha, max_order=2, min_cell_size=200, max_iter=500).transform(s_test, g_test),
    }
    for label, fn in calibrators.items():
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn()
        rows[label] = {**measure(y_test, out, g_test, attr, auc_raw), "fit_apply_s": time.perf_counter() - t}
    return {"seed": seed, "attribute": attr, "rows": rows, "n_fit": len(s_fit), "n_test": len(s_test),
            "train_s": train_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="adult", choices=sorted(SKEW))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.02)
    ap.add_argument("--quick", action="store_true", help="one seed, 3 epochs (a smoke run)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    seeds = 1 if args.quick else args.seeds
    epochs = 3 if args.quick else args.epochs
    out = args.out or Path(__file__).parent / "results" / f"calibration_quality_{args.dataset}.json"
    torch.set_num_threads(max(1, torch.get_num_threads()))
    runs = [run_seed(args.dataset, s, epochs, args.alpha) for s in range(seeds)]

    names = list(runs[0]["rows"])
    keys = ["max_group_ece", "calibration_disparity", "max_group_ece_intersectional", "roc_auc", "auc_change",
            "brier", "multicalibration_error"]
    summary = {}
    for n in names:
        vals = {k: np.array([r["rows"][n][k] for r in runs], dtype=float) for k in keys}
        summary[n] = {k: {"mean": float(v.mean()), "std": float(v.std())} for k, v in vals.items()}
    attr = runs[0]["attribute"]
    tab = Table(title=f"Calibration on {args.dataset} (fit on one half, measured on the other; {seeds} seed(s), "
                      f"mean ± std; groups: {attr})", title_justify="left")
    for col in ["calibrator", f"max group ECE ({attr})", "disparity", "max ECE sex×race (n≥200)", "ROC AUC",
                "Δ AUC", "Brier", "multicalib. err (n≥200)"]:
        tab.add_column(col, justify="right" if col != "calibrator" else "left")
    for n in names:
        s = summary[n]
        cell = lambda k, f=".4f": f"{s[k]['mean']:{f}} ± {s[k]['std']:{f}}"  # noqa: E731
        tab.add_row(n, *(cell(k) for k in keys[:4]), f"{s['auc_change']['mean']:+.4f}", cell("brier"),
                    cell("multicalibration_error"))
    console.print(tab)
    auto = summary[f"group auto ({attr})"]
    mc = summary[f"multicalibration (alpha {args.alpha:g})"]
    checks = {
        "auto max group ECE <= 0.03": auto["max_group_ece"]["mean"] <= TARGET["max_group_ece"],
        "auto calibration disparity <= 0.02": auto["calibration_disparity"]["mean"] <= TARGET["calibration_disparity"],
        "auto ROC AUC within 0.005": abs(auto["auc_change"]["mean"]) <= TARGET["auc_drop"],
        f"multicalibration held-out error < alpha {args.alpha:g}": mc["multicalibration_error"]["mean"] < args.alpha,
    }
    for k, ok in checks.items():
        console.print(f"{'[green]met[/]' if ok else '[red]missed[/]'}  {k}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"dataset": args.dataset, "seeds": seeds, "epochs": epochs, "summary": summary,
                               "checks": checks, "runs": runs, "machine": platform.platform(),
                               "torch_threads": torch.get_num_threads()}, indent=2, default=float) + "\n")
    console.print(f"wrote {out}")


if __name__ == "__main__":
    main()
