"""Do the in-processing methods work? Every method on real data, FFB's protocol, one run.

1. ERM against FFB's published ERM table (Han et al., ICLR 2024): Adult (sex, race) and
   COMPAS (race, sex). Protocol of FFB: numeric columns standardized, 40/30/30 train/val/
   test split stratified by the label, MLP 512-256-64 (ReLU, dropout), Adam lr 1e-2 with a
   step schedule, threshold 0.5, several seeds (mean ± std, x100). The sensitive
   attribute is binary as in FFB (Adult race: White / non-White; COMPAS race: Caucasian /
   other). FFB's EOdd is the SUM of the TPR and FPR gaps; fairlearn's
   equalized_odds_difference is their MAX: both are printed.
2. Every method swept over its main knob on Adult (sex), COMPAS (race) and German credit
   (sex). Per method the best point is chosen on the validation split (lowest mean DP
   among the values whose mean validation accuracy is within 3 points of ERM's) and
   reported on the test split. Target: a DP (or EO) gap at least 50 % below ERM's with
   at most 3 points accuracy loss.
3. ReductionsWrapper: its bound is on each group's selection rate minus the overall rate
   (fairlearn's moment); target: that figure on the test split <= difference_bound + 0.02.
4. FAS (both variants) on the spurious-digits example, groups = (tint, label) cells, 10
   seeds, every model (ERM included) keeping its epoch with the best validation worst-cell accuracy:
   target: the accuracy gap between the best and worst cell narrowed by half, overall
   accuracy within 1 point of ERM (or better).
5. Training-step overhead of each method against plain cross-entropy: same batch, same
   model, steps interleaved across methods, median step time; target <= 1.10x for the
   loss-based methods.

    python benchmarks/train_methods.py [--seeds 3] [--epochs 20] [--parts methods,fas,overhead] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from reprogram.train import Trainer, make_method, mlp
from reprogram.train.pareto import pareto_sweep

from bench_data import ffb_splits  # noqa: E402  (benchmarks/ is the script's folder)

console = Console(highlight=False, width=170)

# FFB's published ERM results (x100, mean ± std): (dataset, attribute) -> figures.
FFB_ERM = {
    ("adult", "sex"): {"acc": (85.35, None), "dp": (16.67, None), "eodd_sum": (14.16, None)},
    ("adult", "race"): {"acc": (85.21, None), "dp": (12.23, None)},
    ("compas", "race"): {"acc": (67.13, None), "dp": (16.83, None), "eodd_sum": (29.03, None)},
    ("compas", "sex"): {"acc": (67.07, None), "dp": (13.43, None)},
}

# method label -> (registry name, fixed options, sweep values of its main knob)
SWEEPS = {
    "erm": ("erm", {}, [None]),
    # one scale per (group, class) cell: FAS then raises the cell with the highest loss (a
    # group's missed positives), which is what narrows an equalized-odds gap
    "fas (seed)": ("fas", {"variant": "seed", "beta_lr": 0.1, "by": "group_class"}, [0.1, 0.5, 0.9]),
    "fas (softmax)": ("fas", {"variant": "softmax"}, [0.0, 0.5, 0.7]),  # as published: β minimised
    "fas (softmax, β ascent)": ("fas", {"variant": "softmax", "beta_ascent": True, "beta_lr": 0.1, "by": "group_class"},
                                [0.5, 0.7, 0.9]),
    "regularizer": ("regularizer", {"penalty": "dp"}, [4.0, 16.0, 64.0, 256.0]),
    "lagrangian": ("lagrangian", {"constraint": "dp", "multiplier_lr": 0.5}, [0.05, 0.02, 0.01, 0.005]),
    "adversarial": ("adversarial", {"on": "output"}, [1.0, 3.0, 10.0, 30.0]),
    # strength: 1 is the textbook correction (Kamiran-Calders weights, equal groups per
    # class); > 1 over-corrects, since the features still carry the group
    "reweight": ("reweight", {"by": "independence"}, [1.0, 2.0, 4.0]),
    "resample": ("resample", {"by": "group_class"}, [1.0, 2.0, 4.0]),
    "groupdro": ("groupdro", {"by": "group_class"}, [0.01, 0.1, 1.0]),
    "reductions": ("reductions", {"constraints": "demographic_parity"}, [0.05, 0.02, 0.01]),
}
# (dataset, attribute, aware): FFB's models are blind (the attribute is not a feature).
# COMPAS is also run aware: blind, race rides on the main predictors and every method pays
# 4-6 points to halve DP, while a model that sees race can shift its scores per group (the
# accuracy-optimal fair classifier does exactly that with group thresholds).
METHOD_SETTINGS = [("adult", "sex", False), ("compas", "race", False), ("compas", "race", True), ("german", "sex", False)]
ERM_ONLY_SETTINGS = [("adult", "race", False), ("compas", "sex", False)]
LOSS_BASED = ("fas (seed)", "fas (softmax)", "fas (softmax, β ascent)", "regularizer", "lagrangian", "reweight", "groupdro")


def ffb_figures(overall: dict) -> dict:
    """The figures compared, x100: accuracy, DP, EOdd as FFB (sum) and fairlearn (max)."""
    return {
        "acc": 100 * overall["accuracy"],
        "dp": 100 * overall["demographic_parity_difference"],
        "eodd_sum": 100 * (overall["equal_opportunity_difference"] + overall["false_positive_rate_difference"]),
        "eo_max": 100 * overall["equalized_odds_difference"],
    }


def run_setting(name, attribute, aware, methods, seeds, trainer_kw):
    """Every method's sweep on one setting and each seed: per run, val and test figures."""
    runs = []
    setting = f"{name}/{attribute}" + (" (aware)" if aware else "")
    for seed in seeds:
        train, val, test = ffb_splits(name, attribute, seed, aware=aware)

        def build(seed=seed, n=train.n_features):
            torch.manual_seed(seed)
            return mlp(n, 2, hidden=(512, 256, 64), dropout=0.2)

        for label in methods:
            method, fixed, values = SWEEPS[label]
            t0 = time.perf_counter()
            points = pareto_sweep(method, [v for v in values if v is not None], train, val, build_model=build,
                                  trainer_kw={**trainer_kw, "seed": seed}, method_kw=fixed,
                                  evaluate_on={"test": test})
            dt = (time.perf_counter() - t0) / len(points)
            for p in points:
                runs.append({"setting": setting, "method": label, "value": p.value, "seed": seed,
                             "seconds": dt, "val": ffb_figures(p.reports["val"]), "test": ffb_figures(p.reports["test"]),
                             "test_overall": p.reports["test"]})
            console.print(f"  {setting} seed {seed} {label}: {len(points)} run(s), {dt:.1f} s each")
    return runs


def _mean_std(vals):
    a = np.asarray(vals, dtype=float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def _fmt(ms):
    return f"{ms[0]:.2f} ± {ms[1]:.2f}"


def summarize(runs):
    """Per setting and method: the best sweep point chosen on validation, reported on test."""
    by = {}
    for r in runs:
        by.setdefault((r["setting"], r["method"], r["value"]), []).append(r)
    table = {}
    for (setting, method, value), rs in by.items():
        table[(setting, method, value)] = {
            **{f"val_{k}": _mean_std([r["val"][k] for r in rs]) for k in rs[0]["val"]},
            **{f"test_{k}": _mean_std([r["test"][k] for r in rs]) for k in rs[0]["test"]},
        }
    best = {}
    for setting in dict.fromkeys(s for s, _, _ in table):
        erm = table[(setting, "erm", None)]
        for method in dict.fromkeys(m for s, m, _ in table if s == setting):
            cands = [(v, t) for (s, m, v), t in table.items() if s == setting and m == method]
            ok = [(v, t) for v, t in cands if t["val_acc"][0] >= erm["val_acc"][0] - 3.0] or cands
            v, t = min(ok, key=lambda vt: vt[1]["val_dp"][0])
            dp_cut = 1 - t["test_dp"][0] / erm["test_dp"][0]
            eo_cut = 1 - t["test_eo_max"][0] / erm["test_eo_max"][0]
            acc_loss = erm["test_acc"][0] - t["test_acc"][0]
            # the wording: *some* point of the sweep, on test, cuts DP or EO by half
            # within 3 points; the validation-chosen point above is the stricter, honest pick
            any_point = [v2 for v2, t2 in cands
                         if erm["test_acc"][0] - t2["test_acc"][0] <= 3.0
                         and (t2["test_dp"][0] <= 0.5 * erm["test_dp"][0] or t2["test_eo_max"][0] <= 0.5 * erm["test_eo_max"][0])]
            best[(setting, method)] = {"value": v, **t, "dp_cut": dp_cut, "eo_cut": eo_cut, "acc_loss": acc_loss,
                                       "meets": bool(max(dp_cut, eo_cut) >= 0.5 and acc_loss <= 3.0),
                                       "any_point_meets": any_point}
    return table, best


def reductions_bound_check(runs):
    """fairlearn's DP moment (max over groups of |rate_g - overall rate|) on test vs the bound."""
    rows = []
    for r in runs:
        if r["method"] != "reductions":
            continue
        o = r["test_overall"]
        rows.append({"setting": r["setting"], "seed": r["seed"], "bound": r["value"],
                     "moment": o["max_selection_rate_deviation"], "dp": o["demographic_parity_difference"]})
    return rows


# c = 0.5 is FASLoss's default, 0.7 the published scripts' value. The softmax variant runs
# as published (β minimised) and with β ascent (beta_ascent=True, the seed variant's rule).
FAS_CONFIGS = {"erm": None, "fas (seed) c=0.5": {"variant": "seed", "c": 0.5, "beta_lr": 0.1},
               # as published: β in the model's optimizer, at its learning rate, minimised
               "fas (softmax, published β descent) c=0.7": {"variant": "softmax", "c": 0.7},
               "fas (softmax, β ascent) c=0.7": {"variant": "softmax", "c": 0.7, "beta_lr": 0.1, "beta_ascent": True}}


def fas_on_spurious_digits(seeds, epochs, configs=None):
    """ERM and both FAS variants on spurious digits; groups = (tint, label) cells."""
    import reprogram.data as rd

    def cells(ds):
        names = np.array(["green|0-4", "green|5-9", "red|0-4", "red|5-9"])
        return rd.TensorGroupDataset(ds.images, ds.labels, ds.group_ids * 2 + ds.labels, classes=ds.classes,
                                     groups=rd.GroupEncoder().fit(names))

    train, val, test = (cells(rd.spurious_digits(s, size=16)) for s in ("train", "val", "test"))
    configs = configs or FAS_CONFIGS
    from reprogram.train.models import small_cnn

    out = {k: [] for k in configs}
    for seed in seeds:
        for label, opts in configs.items():
            torch.manual_seed(seed)
            obj = None if opts is None else make_method("fas", train, n_classes=2, **opts).objective
            # the protocol of group-robustness work (Sagawa et al.): every model, ERM included,
            # keeps its epoch with the best worst-cell accuracy on the validation split
            t = Trainer(small_cnn(2, width=16), obj, epochs=epochs, batch_size=64, lr=3e-3, progress=False, seed=seed,
                        monitor="worst_group_accuracy")
            o = t.fit(train, val).evaluate(test).overall
            out[label].append({"accuracy": o["accuracy"], "gap": o["accuracy_gap"], "worst": o["worst_group_accuracy"]})
    erm_gap = np.mean([r["gap"] for r in out["erm"]])
    erm_acc = np.mean([r["accuracy"] for r in out["erm"]])
    summary = {}
    for label, rs in out.items():
        gap, acc = np.mean([r["gap"] for r in rs]), np.mean([r["accuracy"] for r in rs])
        summary[label] = {"accuracy": _mean_std([r["accuracy"] for r in rs]), "gap": _mean_std([r["gap"] for r in rs]),
                          "worst": _mean_std([r["worst"] for r in rs]), "gap_cut": 1 - gap / erm_gap,
                          "meets": bool(gap <= 0.5 * erm_gap and acc >= erm_acc - 0.01)}
    return summary


def _step_timer(model, objective, x, y, g, idx):
    opt = torch.optim.Adam([*model.parameters(), *[p for grp in objective.param_groups(1e-3) for p in grp["params"]]],
                           lr=1e-3)
    objective.train()
    model.train()

    def step():
        if objective.needs_representation:
            rep = model.features(x)
            loss = objective(model.head(rep), y, g, index=idx, representation=rep)
        else:
            loss = objective(model(x), y, g, index=idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        objective.after_step()

    return step


def step_overhead(batch_size=512, rounds=30, steps=10):
    """Median step time of each method's objective against cross-entropy, interleaved."""
    train, _, _ = ffb_splits("adult", "sex", 0)
    x, y, g = (t[:batch_size] for t in train.tensors)
    idx = torch.arange(batch_size)
    steppers = {}
    for label, (method, fixed, values) in SWEEPS.items():
        if method in ("reductions", "resample"):  # not a per-step objective (resample: a sampler)
            continue
        torch.manual_seed(0)
        model = mlp(train.n_features, 2, hidden=(512, 256, 64), dropout=0.2)
        kw = dict(fixed)
        from reprogram.train.methods import SWEEP_PARAMETER

        if values[0] is not None:
            kw[SWEEP_PARAMETER[method]] = values[len(values) // 2]
        obj = make_method(method, train, n_classes=2, representation_dim=model.representation_dim, **kw).objective
        steppers[label] = _step_timer(model, obj, x, y, g, idx)
    times = {k: [] for k in steppers}
    for s in steppers.values():  # warm-up
        for _ in range(3):
            s()
    for _ in range(rounds):
        for k, s in steppers.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                s()
            times[k].append((time.perf_counter() - t0) / steps)
    base = float(np.median(times["erm"]))
    return {k: {"ms": 1e3 * float(np.median(v)), "ratio": float(np.median(v)) / base} for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="smoke run: German only, 1 seed, 2 epochs")
    ap.add_argument("--parts", default="methods,fas,overhead",
                    help="comma-separated: methods (sections 1-3), fas (4), overhead (5)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_methods.json")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seeds = list(range(1 if args.quick else args.seeds))
    epochs = 2 if args.quick else args.epochs
    trainer_kw = {"epochs": epochs, "batch_size": 256, "lr": 1e-2, "schedule": "step",
                  "step_size": max(1, epochs // 3), "gamma": 0.1}
    settings = [("german", "sex", False)] if args.quick else METHOD_SETTINGS
    erm_only = [] if args.quick else ERM_ONLY_SETTINGS
    parts = set(args.parts.split(","))
    t_start = time.perf_counter()
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                    "threads": torch.get_num_threads()},
        "protocol": {"seeds": seeds, "trainer": trainer_kw, "split": [0.4, 0.3, 0.3], "mlp": [512, 256, 64]},
    }
    if "methods" in parts:
        result.update(methods_part(settings, erm_only, seeds, trainer_kw))
    if "fas" in parts:
        result["fas_spurious_digits"] = fas_part(args.quick)
    if "overhead" in parts:
        result["step_overhead"] = overhead_part(args.quick)
    result["seconds"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out} ({result['seconds']:.0f} s)")


def threshold_reference(settings, seeds) -> list[dict]:
    """What demographic parity costs when the group may be used at prediction time:
    fairlearn's ThresholdOptimizer (group thresholds, DP, fitted on val) on a logistic
    regression of the blind features, test figures. A blind model cannot do this; the
    aware models of the COMPAS setting can learn the same shift."""
    import warnings

    from fairlearn.postprocessing import ThresholdOptimizer
    from sklearn.linear_model import LogisticRegression

    rows = []
    for name, attr, aware in settings:
        if aware:
            continue
        for seed in seeds:
            train, val, test = ffb_splits(name, attr, seed)
            x = {k: np.asarray(d.features, dtype=np.float64) for k, d in (("train", train), ("val", val), ("test", test))}
            lr = LogisticRegression(max_iter=2000).fit(x["train"], train.labels)
            opt = ThresholdOptimizer(estimator=lr, constraints="demographic_parity", objective="accuracy_score",
                                     prefit=True, predict_method="predict_proba")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                opt.fit(x["val"], val.labels, sensitive_features=val.group_ids)
                pred = opt.predict(x["test"], sensitive_features=test.group_ids, random_state=seed)
            y, g = test.labels, test.group_ids

            def figures(p):
                rates = [p[g == k].mean() for k in np.unique(g)]
                return {"acc": 100 * float((p == y).mean()), "dp": 100 * float(max(rates) - min(rates))}

            rows.append({"setting": f"{name}/{attr}", "seed": seed, "logistic": figures(lr.predict(x["test"])),
                         "group_thresholds": figures(pred)})
    t = Table(title="Reference: group thresholds (fairlearn ThresholdOptimizer, DP, on a logistic regression; "
                    "uses the group at prediction), test x100")
    for col in ("setting", "logistic acc", "logistic DP", "thresholds acc", "thresholds DP", "acc loss"):
        t.add_column(col, justify="right")
    for setting in dict.fromkeys(r["setting"] for r in rows):
        rs = [r for r in rows if r["setting"] == setting]
        m = {f"{k}_{f}": float(np.mean([r[k][f] for r in rs])) for k in ("logistic", "group_thresholds")
             for f in ("acc", "dp")}
        t.add_row(setting, f"{m['logistic_acc']:.2f}", f"{m['logistic_dp']:.2f}", f"{m['group_thresholds_acc']:.2f}",
                  f"{m['group_thresholds_dp']:.2f}", f"{m['logistic_acc'] - m['group_thresholds_acc']:.2f}")
    console.print(t)
    return rows


def methods_part(settings, erm_only, seeds, trainer_kw) -> dict:
    runs = []
    for name, attr, aware in settings:
        runs += run_setting(name, attr, aware, list(SWEEPS), seeds, trainer_kw)
    for name, attr, aware in erm_only:
        runs += run_setting(name, attr, aware, ["erm"], seeds, trainer_kw)
    table, best = summarize(runs)

    t = Table(title=f"ERM vs FFB's published ERM (x100, mean ± std over {len(seeds)} seeds; FFB: its paper)")
    for col in ("setting", "acc", "FFB acc", "DP", "FFB DP", "EOdd (sum)", "FFB EOdd", "EO (max)"):
        t.add_column(col, justify="right")
    for setting in dict.fromkeys(r["setting"] for r in runs):
        e = table[(setting, "erm", None)]
        f = FFB_ERM.get(tuple(setting.split("/")), {})
        ref = {k: f"{v[0]:.2f}" for k, v in f.items()}
        t.add_row(setting, _fmt(e["test_acc"]), ref.get("acc", "-"), _fmt(e["test_dp"]), ref.get("dp", "-"),
                  _fmt(e["test_eodd_sum"]), ref.get("eodd_sum", "-"), _fmt(e["test_eo_max"]))
    console.print(t)

    t = Table(title="Best point per method (chosen on validation, test figures x100; cut = reduction vs ERM)")
    for col in ("setting", "method", "value", "acc", "acc loss", "DP", "DP cut", "EO (max)", "EO cut", "≥50% cut, ≤3 pt",
                "any point (test)"):
        t.add_column(col, justify="right")
    for (setting, method), b in best.items():
        t.add_row(setting, method, "-" if b["value"] is None else f"{b['value']:g}", _fmt(b["test_acc"]),
                  f"{b['acc_loss']:+.2f}", _fmt(b["test_dp"]), f"{100 * b['dp_cut']:.0f}%", _fmt(b["test_eo_max"]),
                  f"{100 * b['eo_cut']:.0f}%", "ERM" if method == "erm" else ("yes" if b["meets"] else "NO"),
                  "-" if method == "erm" else (", ".join(f"{x:g}" if x is not None else "yes"
                                                         for x in b["any_point_meets"]) or "NO"))
    console.print(t)

    bound_rows = reductions_bound_check(runs)
    t = Table(title="ReductionsWrapper on test: max_g |selection rate_g - overall| vs difference_bound + 0.02")
    for col in ("setting", "seed", "bound", "moment", "DP diff", "meets"):
        t.add_column(col, justify="right")
    for r in bound_rows:
        t.add_row(r["setting"], str(r["seed"]), f"{r['bound']:g}", f"{r['moment']:.4f}", f"{r['dp']:.4f}",
                  "yes" if r["moment"] <= r["bound"] + 0.02 else "NO")
    console.print(t)

    return {
        "erm_vs_ffb": {s: {k: v for k, v in table[(s, "erm", None)].items() if k.startswith("test_")}
                       for s in dict.fromkeys(r["setting"] for r in runs)},
        "ffb_published": {"/".join(k): v for k, v in FFB_ERM.items()},
        "best": [{"setting": s, "method": m, **b} for (s, m), b in best.items()],
        "reductions_bound": bound_rows,
        "threshold_reference": threshold_reference(settings, seeds),
        "runs": [{k: v for k, v in r.items() if k != "test_overall"} for r in runs],
    }


def fas_part(quick: bool) -> dict:
    fas = fas_on_spurious_digits(list(range(2 if quick else 10)), 2 if quick else 15)
    t = Table(title="FAS on spurious digits, groups = (tint, label): accuracy gap (best - worst cell), test")
    for col in ("method", "accuracy", "gap", "worst cell", "gap cut", "≥50% cut, acc ≥ ERM - 1 pt"):
        t.add_column(col, justify="right")
    for k, v in fas.items():
        t.add_row(k, _fmt(v["accuracy"]), _fmt(v["gap"]), _fmt(v["worst"]), f"{100 * v['gap_cut']:.0f}%",
                  "ERM" if k == "erm" else ("yes" if v["meets"] else "NO"))
    console.print(t)
    return fas


def overhead_part(quick: bool) -> dict:
    over = step_overhead(rounds=5 if quick else 30)
    t = Table(title="Training-step time vs plain cross-entropy (Adult features, batch 512, MLP 512-256-64)")
    for col in ("method", "ms / step", "ratio", "target ≤ 1.10x"):
        t.add_column(col, justify="right")
    for k, v in over.items():
        target = ("yes" if v["ratio"] <= 1.10 else "NO") if k in LOSS_BASED else "-"
        t.add_row(k, f"{v['ms']:.2f}", f"{v['ratio']:.3f}x", target)
    console.print(t)
    # the JSON says which rows the target applies to, so its readers need no copy of LOSS_BASED
    return {k: {**v, "loss_based": k in LOSS_BASED} for k, v in over.items()}


if __name__ == "__main__":
    main()
