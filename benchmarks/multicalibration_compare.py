"""Multicalibration: ours against the HKRR package and Meta's MCGrad, same splits.

A base model miscalibrated per group: a scikit-learn logistic regression (features
only, no sensitive column) trained on a group-skewed sample — most positives of one
group dropped (Adult: women; COMPAS: African-American defendants) — scores the rest of
the table. That rest is cut in two halves: the calibrators are fitted on one and
measured on the other.

Calibrators (each sees the scores, the labels and the sensitive columns only):

* ``reprogram`` — :func:`reprogram.calibrate.multicalibration.multicalibrate` (HKRR
  patching, worst cell first; alpha 0.02, 10 bins, groups up to order 2, cells of >=
  ``min_cell`` rows); ``reprogram (cells >= 2x)`` — the same with ``min_cell_size`` doubled;
* ``HKRR (pip)`` — ``multicalibration==0.0.2``, ``MulticalibrationPredictor("HKRR")``
  given the same collection of groups (lambda 0.1, alpha 0.1, no noise oracle,
  deterministic order; its predict snaps each score to its bin's mean);
* ``MCGrad`` — ``mcgrad==0.1.5``, ``MCGrad`` (boosted trees on the logit and the
  sensitive columns as categorical features; its default early stopping);
* ``isotonic (global)`` — scikit-learn's isotonic regression, one map for everyone.

Measured on the held-out half: our multicalibration error (max |mean(y) - mean(score)|
over (group, bin) cells of >= ``min_cell`` rows, groups up to order 2, 10 bins) beside
its *noise floor* (the same error for labels drawn from the base score itself: what a
perfectly calibrated score shows at this sample size), the worst cell, MCGrad's
``MulticalibrationError`` (ECCE-based: absolute and in sigmas, segments = the sensitive
columns up to depth 2) as a second opinion, ROC AUC, Brier score, fit and predict time.
Packages that are not installed are skipped (``pip install -c constraints.txt
".[bench]"`` installs both).

    python benchmarks/multicalibration_compare.py [--seeds 5] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import logging
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from sklearn.compose import ColumnTransformer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from reprogram.calibrate.multicalibration import multicalibrate, multicalibration_error
from reprogram.data import load_real_dataset

console = Console(highlight=False, width=170)

# dataset -> (sensitive columns, (column, value) whose positives are mostly dropped from the base model's
# training sample, smallest cell counted by the error)
SETTINGS = {
    "adult": (["sex", "race"], ("sex", "Female"), 200),
    "compas": (["race", "sex"], ("race", "African-American"), 100),
}
DROP_FRACTION = 0.85
N_BINS = 10
ALPHA = 0.02


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def base_scores(name: str, seed: int):
    """(rest of the table, base model scores on it): LR trained on a group-skewed 40 % sample."""
    d = load_real_dataset(name)
    sens_cols, (col, value), _ = SETTINGS[name]
    frame = d.frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    n_train = int(0.4 * len(frame))
    train, rest = frame.iloc[:n_train], frame.iloc[n_train:].reset_index(drop=True)
    rng = np.random.default_rng(seed)
    hit = (train[col] == value) & (train[d.label] == 1)
    train = train[~(hit & (rng.random(len(train)) < DROP_FRACTION))]
    numeric = [c for c in d.features if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = [c for c in d.features if c not in numeric]
    model = make_pipeline(
        ColumnTransformer([("num", StandardScaler(), numeric),
                           ("cat", OneHotEncoder(handle_unknown="ignore"), categorical)]),
        LogisticRegression(max_iter=2000))
    model.fit(train[d.features], train[d.label])
    score = model.predict_proba(rest[d.features])[:, 1]
    return rest[sens_cols].astype(str).reset_index(drop=True), rest[d.label].to_numpy(np.int64), score


def collection_masks(sens: pd.DataFrame, max_order: int = 2) -> tuple[list[str], list[np.ndarray]]:
    """everyone, each column value, each intersection up to max_order (those present), as row masks."""
    names, masks = ["everyone"], [np.ones(len(sens), dtype=bool)]
    cols = list(sens.columns)
    for order in range(1, max_order + 1):
        for combo in itertools.combinations(cols, order):
            for values, idx in sens.groupby(list(combo)).indices.items():
                values = values if isinstance(values, tuple) else (values,)
                names.append("|".join(f"{c}={v}" for c, v in zip(combo, values)))
                m = np.zeros(len(sens), dtype=bool)
                m[idx] = True
                masks.append(m)
    return names, masks


def fit_ours(s_fit, y_fit, sens_fit, s_eval, sens_eval, min_cell, seed):
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mc = multicalibrate(s_fit, y_fit, sens_fit, alpha=ALPHA, n_bins=N_BINS, max_order=2,
                            min_cell_size=min_cell, max_iter=500, seed=seed)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an intersection absent from the fit half
        out = mc.transform(s_eval, sens_eval)
    return out, fit_s, time.perf_counter() - t, {"patches": mc.n_iter_, "converged": mc.converged_,
                                                 "fit_error_after": mc.error_after_}


def fit_ours_coarse(s_fit, y_fit, sens_fit, s_eval, sens_eval, min_cell, seed):
    """Ours with cells twice as large: fewer patches fitted to noise."""
    return fit_ours(s_fit, y_fit, sens_fit, s_eval, sens_eval, 2 * min_cell, seed)


def fit_hkrr(s_fit, y_fit, sens_fit, s_eval, sens_eval, min_cell, seed):
    from multicalibration import MulticalibrationPredictor

    names, fit_masks = collection_masks(sens_fit)
    eval_names, eval_masks = collection_masks(sens_eval)
    by_name = dict(zip(eval_names, eval_masks))
    np.random.seed(seed)
    t = time.perf_counter()
    mcb = MulticalibrationPredictor("HKRR")
    mcb.fit(s_fit.copy(), y_fit, [list(np.flatnonzero(m)) for m in fit_masks],
            {"alpha": 0.1, "lambda": 0.1, "max_iter": 50, "randomized": False, "use_oracle": False})
    fit_s = time.perf_counter() - t
    # predict wants, per group (in fit order), the eval rows in it; sets make its `i in group` O(1)
    groups = [set(np.flatnonzero(by_name.get(nm, np.zeros(len(s_eval), bool))).tolist()) for nm in names]
    t = time.perf_counter()
    out = np.asarray(mcb.predict(s_eval.copy(), groups), dtype=float)
    updates = sum(len(d) for d in mcb.mcbp.delta_iters)
    return out, fit_s, time.perf_counter() - t, {"passes": len(mcb.mcbp.delta_iters), "patches": updates}


def fit_mcgrad(s_fit, y_fit, sens_fit, s_eval, sens_eval, min_cell, seed):
    from mcgrad.methods import MCGrad

    cols = list(sens_fit.columns)
    df_fit = sens_fit.assign(score=s_fit, y=y_fit)
    df_eval = sens_eval.assign(score=s_eval)
    t = time.perf_counter()
    m = MCGrad(random_state=seed)
    m.fit(df_fit, "score", "y", categorical_feature_column_names=cols)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    out = np.asarray(m.predict(df_eval, "score", categorical_feature_column_names=cols), dtype=float)
    return out, fit_s, time.perf_counter() - t, {"rounds": m.num_rounds_trained}


def fit_isotonic(s_fit, y_fit, sens_fit, s_eval, sens_eval, min_cell, seed):
    t = time.perf_counter()
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s_fit, y_fit)
    fit_s = time.perf_counter() - t
    t = time.perf_counter()
    out = iso.predict(s_eval)
    return out, fit_s, time.perf_counter() - t, {}


METHODS = {
    "reprogram": (fit_ours, None),
    "reprogram (cells >= 2x)": (fit_ours_coarse, None),
    "HKRR (pip)": (fit_hkrr, "multicalibration"),
    "MCGrad": (fit_mcgrad, "mcgrad"),
    "isotonic (global)": (fit_isotonic, None),
}


def measure(score, y, sens, min_cell) -> dict:
    score = np.clip(np.asarray(score, float), 0.0, 1.0)
    err = multicalibration_error(score, y, sens, n_bins=N_BINS, max_order=2, min_cell_size=min_cell)
    row = {"mc_error": err["max"], "worst_cell": list(err["worst_cell"]) if err["worst_cell"] else None,
           "auc": float(roc_auc_score(y, score)), "brier": float(brier_score_loss(y, score))}
    if version("mcgrad"):
        from mcgrad.metrics import MulticalibrationError

        df = sens.assign(score=score, y=y)
        mce = MulticalibrationError(df, "y", "score", categorical_segment_columns=list(sens.columns), max_depth=2,
                                    max_values_per_segment_feature=10)
        row["mcgrad_mce"] = float(mce.mce)
        row["mcgrad_mce_sigma"] = float(mce.mce_sigma)
    return row


def run(name: str, seed: int, methods: list[str]) -> list[dict]:
    sens, y, score = base_scores(name, seed)
    min_cell = SETTINGS[name][2]
    perm = np.random.default_rng(seed + 1000).permutation(len(y))
    fit_idx, eval_idx = np.sort(perm[: len(y) // 2]), np.sort(perm[len(y) // 2:])
    s_fit, y_fit, sens_fit = score[fit_idx], y[fit_idx], sens.iloc[fit_idx].reset_index(drop=True)
    s_eval, y_eval, sens_eval = score[eval_idx], y[eval_idx], sens.iloc[eval_idx].reset_index(drop=True)
    rows = [{"dataset": name, "seed": seed, "method": "base (uncalibrated)", "n_fit": len(fit_idx),
             "n_eval": len(eval_idx), "min_cell": min_cell, "fit_s": 0.0, "predict_s": 0.0,
             **measure(s_eval, y_eval, sens_eval, min_cell)}]
    # what a perfectly calibrated score would show at this sample size: labels drawn from the score itself
    draws = np.random.default_rng(seed + 2000).random((10, len(s_eval))) < s_eval
    floor = [multicalibration_error(s_eval, d.astype(np.int64), sens_eval, n_bins=N_BINS, max_order=2,
                                    min_cell_size=min_cell)["max"] for d in draws]
    rows.append({"dataset": name, "seed": seed, "method": "noise floor (y ~ Bernoulli(score))", "n_fit": len(fit_idx),
                 "n_eval": len(eval_idx), "min_cell": min_cell, "mc_error": float(np.mean(floor)),
                 "worst_cell": None})
    for label in methods:
        fit, package = METHODS[label]
        out, fit_s, pred_s, info = fit(s_fit, y_fit, sens_fit, s_eval, sens_eval, min_cell, seed)
        rows.append({"dataset": name, "seed": seed, "method": label, "n_fit": len(fit_idx), "n_eval": len(eval_idx),
                     "min_cell": min_cell, "fit_s": fit_s, "predict_s": pred_s, "info": info,
                     **measure(out, y_eval, sens_eval, min_cell)})
        console.print(f"  {name} seed {seed}: {label} fitted in {fit_s:.2f} s")
    return rows


def _ms(vals, fmt=".4f"):
    a = np.asarray([v for v in vals if v is not None], float)
    if a.size == 0:
        return "-"
    return f"{a.mean():{fmt}}" + (f" ± {a.std(ddof=1):{fmt}}" if len(a) > 1 else "")


def report(rows: list[dict]) -> list[dict]:
    summary = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == name]
        seeds = sorted({r["seed"] for r in rs})
        t = Table(title=f"{name}: held-out half (n={rs[0]['n_eval']}), cells of >= {rs[0]['min_cell']} rows, "
                        f"mean ± std over {len(seeds)} seed(s)")
        for col in ("method", "MC error (ours)", "MCGrad MCE", "MCE sigma", "ROC AUC", "Brier", "fit s", "predict s",
                    "worst cell (seed 0)"):
            t.add_column(col, justify="left" if col in ("method", "worst cell (seed 0)") else "right")
        for method in dict.fromkeys(r["method"] for r in rs):
            m = [r for r in rs if r["method"] == method]
            worst = m[0]["worst_cell"]
            entry = {"dataset": name, "method": method, "seeds": len(m)}
            for key in ("mc_error", "mcgrad_mce", "mcgrad_mce_sigma", "auc", "brier", "fit_s", "predict_s"):
                vals = [r.get(key) for r in m if r.get(key) is not None]
                entry[key] = float(np.mean(vals)) if vals else None
            summary.append(entry)
            t.add_row(method, _ms([r["mc_error"] for r in m]), _ms([r.get("mcgrad_mce") for r in m]),
                      _ms([r.get("mcgrad_mce_sigma") for r in m], ".2f"), _ms([r.get("auc") for r in m]),
                      _ms([r.get("brier") for r in m]), _ms([r.get("fit_s") for r in m], ".2f"),
                      _ms([r.get("predict_s") for r in m], ".3f"), f"{worst[0]}, bin {worst[1]}" if worst else "-")
        console.print(t)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, COMPAS only")
    ap.add_argument("--datasets", default="adult,compas", help="comma-separated: adult, compas")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "multicalibration_compare.json")
    args = ap.parse_args()
    logging.getLogger("mcgrad").setLevel(logging.ERROR)  # its per-fit notes (unshrink, clipping)
    seeds = list(range(1 if args.quick else args.seeds))
    datasets = ["compas"] if args.quick else args.datasets.split(",")
    methods, skipped = [], {}
    for label, (_, package) in METHODS.items():
        if package is None or version(package):
            methods.append(label)
        else:
            skipped[label] = f"{package} not installed (pip install -c constraints.txt '.[bench]')"
            console.print(f"[yellow]skipping {label}: {skipped[label]}[/yellow]")
    t0 = time.perf_counter()
    rows = [r for name in datasets for seed in seeds for r in run(name, seed, methods)]
    result = {"machine": {"platform": platform.platform(), "python": platform.python_version()},
              "versions": {p: version(p) for p in ("reprogram", "multicalibration", "mcgrad", "scikit-learn")},
              "config": {"alpha": ALPHA, "n_bins": N_BINS, "max_order": 2, "drop_fraction": DROP_FRACTION,
                         "settings": {k: {"sensitive": v[0], "skewed_group": list(v[1]), "min_cell": v[2]}
                                      for k, v in SETTINGS.items()}},
              "seeds": seeds, "skipped": skipped, "rows": rows, "summary": report(rows)}
    result["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=float) + "\n")
    console.print(f"wrote {args.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
