"""Do fairness triggers work? Same frozen models, same test splits, one run.

1. Spurious digits (the demo's problem): an ERM CNN per seed, trained on the biased
   split; border (overlay, 2 px), patch (4 px) and additive (ε = 8/255) triggers for
   equalized odds, tuned on the validation split (data the model never saw), scored on
   test. Target (border): EO gap -60 % or more at <= 3 points accuracy loss.
2. Transfer: the border trigger fitted on the seed-s model, evaluated on the seed-(s+1)
   model (same data, another ERM run). Target: it keeps at least half of its gap cut.
3. Adult (sex) and COMPAS (race): an ERM MLP 512-256-64 trained as in
   ``benchmarks/train_methods.py`` (FFB's 40/30/30 split: train / tune / test), feature
   trigger with criterion dp (DP gap) and eo (EO gap), λ swept, λ picked on the tuning
   split. Target: gap -50 % at <= 2 points accuracy loss. COMPAS runs twice: with FFB's
   blind model (race is not a feature) and with a model that sees race ("aware"). A
   trigger is one offset for every row, so it can only change the groups' scores
   differently through the model's nonlinearity: with race an input, it can switch off
   the hidden units that read race; with a blind model, race acts through the same
   proxies (priors) that predict the label, and no offset separates them. Beside each
   trigger, every in-processing method of ``train_methods.json`` (same splits and seeds,
   when present) at matched accuracy: its sweep point with the lowest gap among those
   at least as accurate as the trigger (within 0.5 points).

Gaps are the textbook ones (|ΔP(ŷ=1)|; max of |ΔTPR|, |ΔFPR|). The paper's plots use the
mean absolute deviation from the overall rate (half the gap for two groups; EO as the
mean of the FPR and FNR deviations): printed too, as "MAD".

    python benchmarks/trigger_quality.py [--seeds 3] [--quick] [--out FILE]
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

from bench_data import ffb_splits  # noqa: E402  (benchmarks/ is the script's folder)
from reprogram.data import spurious_digits
from reprogram.models import FrozenModel
from reprogram.train import Trainer, mlp, small_cnn
from reprogram.triggers import TriggerFitter, make_trigger

console = Console(highlight=False, width=170)


def mad(report) -> dict:
    """The paper's figures: mean absolute deviation of the groups' rates from the overall rate."""
    bg = report.by_group
    n = bg["count"].to_numpy(float)
    pos = bg["base_rate"].to_numpy(float) * n
    neg = n - pos
    sel = bg["selection_rate"].to_numpy(float)
    tpr, fpr = bg["tpr"].to_numpy(float), bg["fpr"].to_numpy(float)
    overall_sel = (sel * n).sum() / n.sum()
    overall_tpr, overall_fpr = (tpr * pos).sum() / pos.sum(), (fpr * neg).sum() / neg.sum()
    dp = np.abs(sel - overall_sel).mean()
    eo = 0.5 * (np.abs(fpr - overall_fpr).mean() + np.abs((1 - tpr) - (1 - overall_tpr)).mean())
    return {"dp_mad": float(dp), "eo_mad": float(eo)}


def figures(report) -> dict:
    o = report.overall
    return {"accuracy": o["accuracy"], "dp": o["demographic_parity_difference"], "eo": o["equalized_odds_difference"],
            **mad(report)}


def digits_part(seeds, epochs):
    """Sections 1 and 2: triggers on ERM CNNs of spurious digits, and transfer between seeds."""
    train, val, test = (spurious_digits(s) for s in ("train", "val", "test"))
    models = {}
    for s in [*seeds, seeds[-1] + 1]:
        torch.manual_seed(s)
        t = Trainer(small_cnn(2, width=16), epochs=15, batch_size=64, lr=3e-3, seed=s, progress=False).fit(train)
        models[s] = FrozenModel(t.model, input_kind="image")
    configs = {"border (overlay, 2 px)": ("border", 2, "overlay"), "patch (4 px)": ("patch", 4, None),
               "additive (8/255)": ("additive", 8 / 255, None)}
    rows, transfer = [], []
    for s in seeds:
        model = models[s]
        for label, (name, size, mode) in configs.items():
            trig = make_trigger(name, model, val, size=size, mode=mode, seed=s)
            f = TriggerFitter(model, trig, "eo", 1.0, epochs=epochs, batch_size=64, lr=0.05, seed=s, progress=False)
            f.fit(val, val)
            base, after = figures(f.evaluate(test, triggered=False)), figures(f.evaluate(test))
            rows.append({"seed": s, "trigger": label, "base": base, "triggered": after})
            if name == "border":  # section 2: the same trigger on the next seed's model
                other = TriggerFitter(models[s + 1], f.trigger, "eo", progress=False)
                ob, oa = figures(other.evaluate(test, triggered=False)), figures(other.evaluate(test))
                transfer.append({"fitted_on": s, "applied_to": s + 1, "own_cut": 1 - after["eo"] / base["eo"],
                                 "transfer_cut": 1 - oa["eo"] / ob["eo"], "base": ob, "triggered": oa})
        console.print(f"  digits seed {s} done")
    return rows, transfer


def tabular_part(settings, seeds, lambdas, epochs):
    """Section 3: feature triggers on ERM MLPs of Adult and COMPAS."""
    rows = []
    for name, attr, aware in settings:
        setting = f"{name}/{attr}" + (" (aware)" if aware else "")
        for s in seeds:
            train, tune, test = ffb_splits(name, attr, s, aware=aware)
            torch.manual_seed(s)
            t = Trainer(mlp(train.n_features, 2), epochs=20, batch_size=256, lr=1e-2, schedule="step", step_size=6,
                        seed=s, progress=False).fit(train)
            model = FrozenModel(t.model, input_kind="tabular")
            for crit in ("dp", "eo"):
                for lam in lambdas:
                    trig = make_trigger("feature", model, tune)
                    f = TriggerFitter(model, trig, crit, lam, epochs=epochs, batch_size=256, lr=0.05, seed=s,
                                      progress=False)
                    f.fit(tune, tune)
                    rows.append({"setting": setting, "seed": s, "criterion": crit, "lambda": lam,
                                 "tune": figures(f.evaluate(tune)), "tune_base": figures(f.base_report_),
                                 "base": figures(f.evaluate(test, triggered=False)), "triggered": figures(f.evaluate(test))})
            console.print(f"  {setting} seed {s} done")
    return rows


def text_part(seeds, epochs, n_tokens=5):
    """Section 4: prompt triggers (three modes) on a frozen MiniLM with a trained head."""
    import tempfile

    from bench_data import identity_toxicity, minilm_dir
    from reprogram.data import load_dataset, tokenize_collate
    from reprogram.models import load_frozen, prepare_transformers
    from reprogram.train import hf_classifier, save_frozen

    rows = []
    for s in seeds:
        train_df = identity_toxicity(1500, bias=0.7, flip=0.35, seed=100 + s)
        tune_df, test_df = identity_toxicity(600, seed=200 + s), identity_toxicity(800, seed=300 + s)
        train = load_dataset(train_df, label="label", sensitive="group", text="text")
        kw = dict(label="label", sensitive="group", text="text", label_classes=train.label_encoder,
                  group_encoder=train.groups)
        tune, test = load_dataset(tune_df, **kw), load_dataset(test_df, **kw)
        torch.manual_seed(s)
        clf = hf_classifier(str(minilm_dir()), 2, freeze_encoder=True)
        tok = prepare_transformers().AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)
        collate = tokenize_collate(tok, max_length=32)
        trainer = Trainer(clf, epochs=3, batch_size=32, lr=2e-3, seed=s, collate_fn=collate, progress=False).fit(train)
        with tempfile.TemporaryDirectory() as tmp:
            save_frozen(trainer.model, f"{tmp}/clf", train, arch="minilm", collate_fn=collate)
            model = load_frozen(f"{tmp}/clf")
            for mode in ("simplex", "hard", "embedding"):
                trig = make_trigger("prompt", model, tune, size=n_tokens, mode=mode, seed=s)
                f = TriggerFitter(model, trig, "eo", 1.0, epochs=epochs, batch_size=32, lr=0.1 if mode != "embedding"
                                  else 0.01, seed=s, collate_fn=collate, progress=False).fit(tune, tune)
                rows.append({"seed": s, "mode": mode, "words": trig.to_text(model.tokenizer),
                             "base": figures(f.evaluate(test, triggered=False)), "triggered": figures(f.evaluate(test))})
        console.print(f"  text seed {s} done")
    return rows


def _ms(vals):
    a = np.asarray(vals, float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 seed, few epochs, COMPAS only")
    ap.add_argument("--parts", default="digits,tabular,text", help="comma-separated: digits (1-2), tabular (3), text (4)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "trigger_quality.json")
    args = ap.parse_args()
    seeds = list(range(1 if args.quick else args.seeds))
    parts = set(args.parts.split(","))
    t0 = time.perf_counter()
    result = {"machine": {"platform": platform.platform(), "torch": torch.__version__}, "seeds": seeds}
    if "digits" in parts:
        result.update(digits_report(*digits_part(seeds, 3 if args.quick else 20)))
    if "tabular" in parts:
        result["tabular"] = tabular_report(args.quick, seeds)
    if "text" in parts:
        result["text"] = text_report(text_part(seeds[:1] if args.quick else seeds, 2 if args.quick else 10))
    result["seconds"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out} ({result['seconds']:.0f} s)")


def digits_report(digit_rows, transfer) -> dict:
    n_seeds = len({r["seed"] for r in digit_rows})
    t = Table(title=f"Spurious digits, ERM CNN, criterion eo: test figures, mean ± std over {n_seeds} seeds")
    for col in ("trigger", "acc base", "acc +trigger", "EO base", "EO +trigger", "EO cut", "EO MAD base",
                "EO MAD +trig", "target (-60 %, <= 3 pt)"):
        t.add_column(col, justify="right")
    summary = {}
    for label in dict.fromkeys(r["trigger"] for r in digit_rows):
        rs = [r for r in digit_rows if r["trigger"] == label]
        cut = 1 - np.mean([r["triggered"]["eo"] for r in rs]) / np.mean([r["base"]["eo"] for r in rs])
        loss = np.mean([r["base"]["accuracy"] - r["triggered"]["accuracy"] for r in rs])
        summary[label] = {"eo_cut": float(cut), "accuracy_loss": float(loss)}
        t.add_row(label, _ms([r["base"]["accuracy"] for r in rs]), _ms([r["triggered"]["accuracy"] for r in rs]),
                  _ms([r["base"]["eo"] for r in rs]), _ms([r["triggered"]["eo"] for r in rs]), f"{cut:.0%}",
                  _ms([r["base"]["eo_mad"] for r in rs]), _ms([r["triggered"]["eo_mad"] for r in rs]),
                  "yes" if cut >= 0.6 and loss <= 0.03 else "NO")
    console.print(t)
    t = Table(title="Transfer: border trigger fitted on one ERM model, applied to another (next seed)")
    for col in ("fitted on", "applied to", "own EO cut", "transferred EO cut", "kept", "target (>= half)"):
        t.add_column(col, justify="right")
    for r in transfer:
        kept = r["transfer_cut"] / r["own_cut"] if r["own_cut"] > 0 else float("nan")
        t.add_row(str(r["fitted_on"]), str(r["applied_to"]), f"{r['own_cut']:.0%}", f"{r['transfer_cut']:.0%}",
                  f"{kept:.0%}", "yes" if kept >= 0.5 else "NO")
    console.print(t)
    return {"digits": {"rows": digit_rows, "summary": summary}, "transfer": transfer}


def tabular_report(quick: bool, seeds) -> dict:
    settings = [("compas", "race", True)] if quick else [("adult", "sex", False), ("compas", "race", False),
                                                        ("compas", "race", True)]
    lambdas = [1.0] if quick else [1.0, 5.0, 20.0]
    tab_rows = tabular_part(settings, seeds, lambdas, 3 if quick else 20)
    t = Table(title="Adult / COMPAS, ERM MLP, feature trigger: λ picked on the tuning split, test figures")
    for col in ("setting", "criterion", "λ", "acc base", "acc +trigger", "gap base", "gap +trigger", "gap cut",
                "target (-50 %, <= 2 pt)"):
        t.add_column(col, justify="right")
    best_rows = []
    for setting in dict.fromkeys(r["setting"] for r in tab_rows):
        for crit in ("dp", "eo"):
            rs = [r for r in tab_rows if r["setting"] == setting and r["criterion"] == crit]
            by_lam = {lam: [r for r in rs if r["lambda"] == lam] for lam in dict.fromkeys(r["lambda"] for r in rs)}

            def tune_score(group):  # the selection rule on the tuning split: smallest gap within 2 points
                acc_loss = np.mean([r["tune_base"]["accuracy"] - r["tune"]["accuracy"] for r in group])
                return (acc_loss > 0.02, np.mean([r["tune"][crit] for r in group]))

            lam = min(by_lam, key=lambda k: tune_score(by_lam[k]))
            chosen = by_lam[lam]
            base_gap = np.mean([r["base"][crit] for r in chosen])
            cut = 1 - np.mean([r["triggered"][crit] for r in chosen]) / base_gap
            loss = np.mean([r["base"]["accuracy"] - r["triggered"]["accuracy"] for r in chosen])
            best_rows.append({"setting": setting, "criterion": crit, "lambda": lam, "gap_cut": float(cut),
                              "accuracy_loss": float(loss),
                              "accuracy": float(np.mean([r["triggered"]["accuracy"] for r in chosen])),
                              "gap": float(np.mean([r["triggered"][crit] for r in chosen]))})
            t.add_row(setting, crit, f"{lam:g}", _ms([r["base"]["accuracy"] for r in chosen]),
                      _ms([r["triggered"]["accuracy"] for r in chosen]), _ms([r["base"][crit] for r in chosen]),
                      _ms([r["triggered"][crit] for r in chosen]), f"{cut:.0%}",
                      "yes" if cut >= 0.5 and loss <= 0.02 else "NO")
    console.print(t)
    matched = matched_accuracy(best_rows, Path(__file__).parent / "results" / "train_methods.json")
    return {"rows": tab_rows, "chosen": best_rows, "matched_accuracy": matched}


def matched_accuracy(best_rows, path: Path) -> list[dict]:
    """Each in-processing method's sweep point (mean over seeds, test) with the lowest gap
    among those at least as accurate as the trigger, less 0.5 points; printed and returned."""
    if not path.is_file():
        console.print(f"(no {path.name}: run benchmarks/train_methods.py for the in-processing side)")
        return []
    runs = json.loads(path.read_text()).get("runs", [])
    key = {"dp": "dp", "eo": "eo_max"}
    t = Table(title="Trigger vs in-processing at matched accuracy (test, x100; same splits and seeds)")
    for col in ("setting", "criterion", "method", "value", "acc", "gap", "trigger acc", "trigger gap", "lower gap"):
        t.add_column(col, justify="right")
    out = []
    for b in best_rows:
        by_point: dict = {}
        for r in runs:
            if r["setting"] == b["setting"] and r["method"] != "erm":
                by_point.setdefault((r["method"], r["value"]), []).append(r["test"])
        acc_t, gap_t = 100 * b["accuracy"], 100 * b["gap"]
        for method in dict.fromkeys(m for m, _ in by_point):
            pts = [(v, np.mean([f["acc"] for f in fs]), np.mean([f[key[b["criterion"]]] for f in fs]))
                   for (m, v), fs in by_point.items() if m == method]
            ok = [p for p in pts if p[1] >= acc_t - 0.5]
            v, acc, gap = min(ok, key=lambda p: p[2]) if ok else max(pts, key=lambda p: p[1])
            row = {"setting": b["setting"], "criterion": b["criterion"], "method": method, "value": v,
                   "accuracy": float(acc), "gap": float(gap), "matched": bool(ok), "trigger_accuracy": acc_t,
                   "trigger_gap": gap_t}
            out.append(row)
            t.add_row(b["setting"], b["criterion"], method, "-" if v is None else f"{v:g}", f"{acc:.2f}", f"{gap:.2f}",
                      f"{acc_t:.2f}", f"{gap_t:.2f}",
                      ("trigger" if gap_t < gap else "method") if ok else "no point this accurate")
    console.print(t)
    return out


def text_report(rows) -> dict:
    t = Table(title="Text: frozen MiniLM + trained head, identity-term toxicity, prompt trigger (eo), test figures")
    for col in ("mode", "acc base", "acc +trigger", "EO base", "EO +trigger", "EO cut", "target (-50 %, <= 3 pt)",
                "trigger words (seed 0)"):
        t.add_column(col, justify="right")
    summary = {}
    for mode in dict.fromkeys(r["mode"] for r in rows):
        rs = [r for r in rows if r["mode"] == mode]
        cut = 1 - np.mean([r["triggered"]["eo"] for r in rs]) / np.mean([r["base"]["eo"] for r in rs])
        loss = np.mean([r["base"]["accuracy"] - r["triggered"]["accuracy"] for r in rs])
        summary[mode] = {"eo_cut": float(cut), "accuracy_loss": float(loss)}
        t.add_row(mode, _ms([r["base"]["accuracy"] for r in rs]), _ms([r["triggered"]["accuracy"] for r in rs]),
                  _ms([r["base"]["eo"] for r in rs]), _ms([r["triggered"]["eo"] for r in rs]), f"{cut:.0%}",
                  "yes" if cut >= 0.5 and loss <= 0.03 else "NO", rs[0]["words"])
    console.print(t)
    return {"rows": rows, "summary": summary}


if __name__ == "__main__":
    main()
