"""Run every benchmark and write ``benchmarks/RESULTS.md``: ``python -m benchmarks``.

Each script runs as its own process, exactly as a user would run it
(``python benchmarks/<script>.py --quick --out <json>``), one after the other (they time
things), each under a timeout. Scripts whose optional packages are missing are skipped
with the command that installs them. From each script's JSON the runner takes the
headline numbers (the figure a question is about, its target, met or missed) and one
table per benchmark, and writes them to ``benchmarks/RESULTS.md`` with the machine, the
date and the commands that produced them.

By default the scripts run at a CI-sized scale (``--quick``, a few minutes in all):
those are smoke-scale numbers, and the report says so. ``--full`` runs the scripts at
their full scale (hours on 2 cores) and writes their JSON where each script writes it
by default (``benchmarks/results/``). Full-scale JSON already in ``benchmarks/results/``
(git-ignored, from earlier full runs) is shown beside a quick run, labelled as such.

    python -m benchmarks                        # every script, --quick
    python -m benchmarks --only metrics_speed,calibration_quality
    python -m benchmarks --full                 # full scale (long)
    python -m benchmarks --update-readme        # also copy the headline table into README.md
    python -m benchmarks --list                 # the scripts, their commands, whether they can run
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
REPORT = HERE / "RESULTS.md"
README = ROOT / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"
BENCH_EXTRA = "pip install -c constraints.txt -e '.[bench]'"


# --------------------------------------------------------------------------- formatting


def _cell(x) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def md_table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return out


def _pct(x) -> str:
    return "—" if x is None else f"{100 * x:.0f} %"


def _ms(v, scale=1.0, fmt=".2f") -> str:
    """A ``[mean, std]`` pair (or a number) as ``mean ± std``."""
    if v is None:
        return "—"
    if isinstance(v, (list, tuple)):
        m, s = v[0], v[1] if len(v) > 1 else None
        if m is None:
            return "—"
        return f"{m * scale:{fmt}}" + (f" ± {s * scale:{fmt}}" if s else "")
    return f"{v * scale:{fmt}}"


def _mean(d: dict | float | None):
    return d.get("mean") if isinstance(d, dict) else d


@dataclass
class Headline:
    question: str
    value: str
    target: str
    met: bool | None  # None: no target, or nothing to judge


def _verdict(met: bool | None) -> str:
    return "—" if met is None else ("met" if met else "**missed**")


# --------------------------------------------------------------------------- extractors
# Each takes a script's JSON and returns (headline rows, markdown lines of its main tables).


def metrics_speed(d: dict):
    t = d.get("targets", {})
    sp_t, fl_t, fs_t = t.get("speedup_64_groups", 200), t.get("floor_ratio", 3.0), t.get("floor_ratio_with_scores", 5.0)
    mf, fl = d["vs_metricframe"], d["vs_floor"]
    top = max(mf, key=lambda r: r["groups"])
    worst = max(r["ratio"] for r in fl)
    worst_s = max(r["ratio_with_scores"] for r in fl)
    heads = [
        Headline(f"`fairness_report` vs fairlearn `MetricFrame`, {top['groups']} groups",
                 f"{top['speedup']:.0f}x faster, max abs diff {top['max_abs_diff']:.0e} ({top['rows']:,} rows)",
                 f">= {sp_t}x, identical values", top["speedup"] >= sp_t and top["max_abs_diff"] <= 1e-9),
        Headline("`fairness_report` vs one `np.bincount` pass (worst of 2/8/64 groups)",
                 f"{worst:.2f}x the floor, {worst_s:.2f}x with scores ({fl[0]['rows']:,} rows)", f"<= {fl_t:g}x (<= {fs_t:g}x with scores)",
                 worst <= fl_t and worst_s <= fs_t),
    ]
    lines = md_table(["groups", "rows", "MetricFrame s", "fairness_report s", "speed-up", "max abs diff"],
                     [[r["groups"], f"{r['rows']:,}", f"{r['metricframe_s']:.3f}", f"{r['fairness_report_s']:.4f}",
                       f"{r['speedup']:.0f}x", f"{r['max_abs_diff']:.1e}"] for r in mf])
    lines += [""] + md_table(["groups", "rows", "bincount s", "report s", "ratio", "with scores s", "ratio"],
                             [[r["groups"], f"{r['rows']:,}", f"{r['floor_s']:.4f}", f"{r['report_s']:.4f}",
                               f"{r['ratio']:.2f}x", f"{r['report_with_scores_s']:.4f}",
                               f"{r['ratio_with_scores']:.2f}x"] for r in fl])
    return heads, lines


def calibration_speed(d: dict):
    heads, lines = [], []
    target = d.get("targets", {}).get("onnx_map_vs_np_interp", 2.0)
    if "apply" in d:
        a = d["apply"]
        s = a["single"]
        r1 = s["ratio_onnx_1_vs_interp"]
        heads.append(Headline("ONNX calibration map vs `np.interp`, 1 thread",
                              f"{r1:.2f}x the time of `np.interp` ({s['ratio_onnx_all_vs_interp']:.2f}x on "
                              f"{a.get('threads_all', '?')} threads); max abs diff "
                              f"{s['max_abs_diff_onnx_vs_interp']:.0e} ({a['scores']:,} scores)",
                              f"<= {target:g}x", r1 <= target))
        lines += [f"Applying a map to {a['scores']:,} scores (median s):", ""]
        lines += md_table(["contender", "median s", "min s"],
                          [[k, f"{v['median_s']:.4f}", f"{v['min_s']:.4f}"] for k, v in s["times"].items()])
        g = a.get("grouped")
        if g:
            lines += ["", (f"{g['groups']} group maps: ONNX (1 thread) {g['ratio_onnx_1_vs_numpy']:.2f}x, "
                           f"(all threads) {g['ratio_onnx_all_vs_numpy']:.2f}x the time of "
                           f"`GroupCalibrator.transform`; max abs diff {g['max_abs_diff_onnx_vs_numpy']:.0e}.")]
    if "fit" in d:
        iso = next((r for r in d["fit"] if r["method"] == "isotonic"), d["fit"][0])
        heads.append(Headline(f"Fitting {iso['groups']} group maps vs a scikit-learn loop",
                              "; ".join(f"{r['method']} (vs {r['baseline']}): {r['speedup_with_global']:.2f}x"
                                        for r in d["fit"]) + f" ({iso['rows']:,} scores)",
                              "(no target; speed-up vs the loop incl. its global fit)", None))
        lines += ["", "Fitting (median s; speed-up against the loop including the global fallback fit):", ""]
        lines += md_table(["method", "baseline", "rows", "groups", "ours s", "loop s", "loop + global s", "speed-up",
                           "max abs diff"],
                          [[r["method"], r["baseline"], f"{r['rows']:,}", r["groups"], f"{r['ours']['median_s']:.3f}",
                            f"{r['sklearn_loop']['median_s']:.3f}", f"{r['sklearn_loop_with_global']['median_s']:.3f}",
                            f"{r['speedup_with_global']:.2f}x", f"{r['max_abs_diff']:.1e}"] for r in d["fit"]])
    if "latency" in d:
        rows = d["latency"]["rows"]
        b1 = [r for r in rows if r["batch"] == 1]
        if b1:
            heads.append(Headline("Fused ONNX export (trigger + model + calibrator) vs PyTorch eager, batch 1",
                                  ", ".join(f"{r['ratio_onnx_vs_eager']:.2f}x the latency ({r['threads']} thr.)"
                                            for r in b1), "(no target)", None))
        lines += ["", "Latency, median ms per call:", ""]
        lines += md_table(["batch", "threads", "eager", "eager + numpy calibrator", "ONNX", "ONNX / eager"],
                          [[r["batch"], r["threads"], f"{1e3 * r['times']['eager']['median_s']:.3f}",
                            f"{1e3 * r['times']['eager_numpy']['median_s']:.3f}",
                            f"{1e3 * r['times']['onnx']['median_s']:.3f}", f"{r['ratio_onnx_vs_eager']:.2f}x"]
                           for r in rows])
    return heads, lines


def calibration_quality(d: dict):
    attr = d["runs"][0]["attribute"]
    s, checks = d["summary"], d["checks"]
    auto, raw = s[f"group auto ({attr})"], s["raw scores"]
    mc_name = next(k for k in s if k.startswith("multicalibration"))
    mc = s[mc_name]
    auto_checks = [v for k, v in checks.items() if k.startswith("auto")]
    mc_check = next(((k, v) for k, v in checks.items() if k.startswith("multicalibration")), (None, None))
    ds = d.get("dataset", "?")
    heads = [
        Headline(f"Group calibration (`auto`) on {ds} ({attr}): max group ECE / disparity",
                 f"{_mean(auto['max_group_ece']):.3f} / {_mean(auto['calibration_disparity']):.3f} "
                 f"(raw scores {_mean(raw['max_group_ece']):.3f} / {_mean(raw['calibration_disparity']):.3f}); "
                 f"ROC AUC {_mean(auto['auc_change']):+.3f}",
                 "<= 0.03 / <= 0.02, AUC no more than 0.005 below raw", all(auto_checks)),
        Headline(f"Multicalibration on {ds}: held-out multicalibration error",
                 f"{_mean(mc['multicalibration_error']):.3f} (noise floor {mc.get('noise_floor', float('nan')):.3f}; "
                 f"raw {_mean(raw['multicalibration_error']):.3f})",
                 (mc_check[0] or "< alpha").replace("multicalibration held-out error ", ""), mc_check[1]),
    ]
    keys = ["max_group_ece", "calibration_disparity", "roc_auc", "auc_change", "brier", "multicalibration_error"]
    lines = [f"{ds}, {d.get('seeds')} seed(s), {d.get('epochs')} epochs; groups: {attr}; mean over seeds.", ""]
    lines += md_table(["calibrator", "max group ECE", "disparity", "ROC AUC", "Δ AUC", "Brier", "multicalib. error"],
                      [[n, *(f"{_mean(v[k]):+.4f}" if k == "auc_change" else f"{_mean(v[k]):.4f}" for k in keys)]
                       for n, v in s.items()])
    lines += [""] + [f"- {'met' if ok else '**missed**'}: {k}" for k, ok in checks.items()]
    return heads, lines


def multicalibration_compare(d: dict):
    summ = d["summary"]
    parts, met = [], []
    for ds in dict.fromkeys(r["dataset"] for r in summ):
        by = {r["method"]: r for r in summ if r["dataset"] == ds}
        ours = by.get("reprogram", {}).get("mc_error")
        others = {m: by[m]["mc_error"] for m in ("HKRR (pip)", "MCGrad") if m in by}
        floor = next((r["mc_error"] for m, r in by.items() if m.startswith("noise floor")), None)
        txt = f"{ds}: ours {ours:.3f}" + "".join(f", {m.split(' ')[0]} {v:.3f}" for m, v in others.items())
        parts.append(txt + (f" (noise floor {floor:.3f})" if floor is not None else ""))
        if others and ours is not None:
            met.append(ours <= min(others.values()))
    skipped = d.get("skipped") or {}
    value = "; ".join(parts) + (f"; skipped: {', '.join(skipped)}" if skipped else "")
    heads = [Headline("Multicalibration vs the `multicalibration` (HKRR) and `mcgrad` packages: held-out MC error",
                      value, "ours <= the best package", all(met) if met else None)]
    lines = md_table(["dataset", "method", "MC error (ours)", "MCGrad MCE", "ROC AUC", "Brier", "fit s"],
                     [[r["dataset"], r["method"], _ms(r.get("mc_error"), fmt=".4f"),
                       _ms(r.get("mcgrad_mce"), fmt=".4f"), _ms(r.get("auc") or None, fmt=".4f"),
                       _ms(r.get("brier"), fmt=".4f"), _ms(r.get("fit_s"), fmt=".2f")] for r in summ])
    return heads, lines


def onnx_parity(d: dict):
    rows = d["rows"]
    ours = [r for r in rows if r["tool"].startswith("reprogram")]
    theirs = [r for r in rows if not r["tool"].startswith("reprogram")]
    worst = max((r["max_abs_diff"] for r in ours if r["max_abs_diff"] is not None), default=None)
    ours_ok = [r for r in ours if r["max_abs_diff"] is not None and r["max_abs_diff"] <= 1e-5]
    theirs_ok = [r for r in theirs if r["max_abs_diff"] is not None and r["max_abs_diff"] <= 1e-5]
    heads = [Headline("Exported calibration maps vs scikit-learn's `predict_proba` (Adult)",
                      f"ours: {len(ours_ok)}/{len(ours)} maps within 1e-5 (max {worst:.0e}); "
                      f"skl2onnx: {len(theirs_ok)}/{len(theirs)} ({d.get('n_test', '?')} test rows)",
                      "every map within 1e-5 of scikit-learn", len(ours_ok) == len(ours) and bool(ours))]
    lines = md_table(["case", "tool", "max abs diff", "converter error"],
                     [[r["case"], r["tool"], "—" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.2e}",
                       r["error"] or ""] for r in rows])
    return heads, lines


def trigger_speed(d: dict):
    cases = d["cases"]
    heads = [Headline("Trigger step vs its floor (frozen forward + backward to the input)",
                      "; ".join(f"{k.rsplit(',', 1)[0]}: {v['ratio']:.2f}x" for k, v in cases.items()),
                      "<= 1.15x", all(v["ratio"] <= 1.15 for v in cases.values()))]
    lines = md_table(["case", "floor ms", "trigger step ms", "ratio", "naive step ms", "speed-up of freezing"],
                     [[k, f"{1e3 * v['floor']:.2f}", f"{1e3 * v['trigger step']:.2f}", f"{v['ratio']:.2f}x",
                       f"{1e3 * v['naive step']:.2f}", f"{v['freezing_speedup']:.2f}x"] for k, v in cases.items()])
    return heads, lines


def train_methods(d: dict):
    heads, lines = [], []
    if "best" in d:
        best = [b for b in d["best"] if b["method"] != "erm"]
        settings = list(dict.fromkeys(b["setting"] for b in best))
        n_ok = sum(b["meets"] for b in best)
        per = ", ".join(f"{s} {sum(b['meets'] for b in best if b['setting'] == s)}/"
                        f"{sum(1 for b in best if b['setting'] == s)}" for s in settings)
        heads.append(Headline("In-processing methods: DP or EO gap cut by half at <= 3 pt accuracy loss "
                              "(validation-chosen point, test split)",
                              f"{n_ok}/{len(best)} (method, setting) pairs ({per})", "every method",
                              n_ok == len(best) and bool(best)))
        lines += ["Best point per method (chosen on validation; test figures, x100):", ""]
        lines += md_table(["setting", "method", "knob", "acc", "DP", "EO (max)", "DP cut", "EO cut", "acc loss",
                           "meets"],
                          [[b["setting"], b["method"], "—" if b["value"] is None else f"{b['value']:g}",
                            _ms(b["test_acc"]), _ms(b["test_dp"]), _ms(b["test_eo_max"]),
                            _pct(b["dp_cut"]), _pct(b["eo_cut"]), f"{b['acc_loss']:.2f}",
                            "ERM" if b["method"] == "erm" else ("yes" if b["meets"] else "no")] for b in d["best"]])
    if d.get("reductions_bound"):
        rb = d["reductions_bound"]
        ok = sum(r["moment"] <= r["bound"] + 0.02 for r in rb)
        heads.append(Headline("`ReductionsWrapper`: its moment on the test split vs `difference_bound`",
                              f"{ok}/{len(rb)} runs within bound + 0.02", "every run", ok == len(rb)))
    if "fas_spurious_digits" in d:
        fas = d["fas_spurious_digits"]
        cand = {k: v for k, v in fas.items() if k != "erm"}
        k_best = max(cand, key=lambda k: cand[k]["gap_cut"])
        heads.append(Headline("FAS on spurious digits: best-minus-worst cell accuracy gap",
                              f"best cut {_pct(cand[k_best]['gap_cut'])} ({k_best})",
                              ">= 50 % cut, accuracy >= ERM - 1 pt", any(v["meets"] for v in cand.values())))
        lines += ["", "FAS on spurious digits (test):", ""]
        lines += md_table(["method", "accuracy", "gap", "worst cell", "gap cut", "meets"],
                          [[k, _ms(v["accuracy"], fmt=".3f"), _ms(v["gap"], fmt=".3f"), _ms(v["worst"], fmt=".3f"),
                            _pct(v["gap_cut"]), "ERM" if k == "erm" else ("yes" if v["meets"] else "no")]
                           for k, v in fas.items()])
    if "step_overhead" in d:
        over = d["step_overhead"]
        loss = {k: v["ratio"] for k, v in over.items() if v.get("loss_based")}
        k_worst = max(loss, key=loss.get)
        heads.append(Headline("Training-step overhead of the loss-based methods vs plain cross-entropy",
                              f"worst {loss[k_worst]:.3f}x ({k_worst})", "<= 1.10x",
                              all(v <= 1.10 for v in loss.values())))
        lines += ["", "Training-step time vs plain cross-entropy:", ""]
        lines += md_table(["method", "ms / step", "ratio"], [[k, f"{v['ms']:.2f}", f"{v['ratio']:.3f}x"]
                                                            for k, v in over.items()])
    return heads, lines


def trigger_quality(d: dict):
    heads, lines = [], []
    if "digits" in d:
        summ = d["digits"]["summary"]
        b = next((v for k, v in summ.items() if k.startswith("border")), None)
        if b:
            heads.append(Headline("Border trigger on spurious digits: EO gap cut",
                                  f"{_pct(b['eo_cut'])}, accuracy {-100 * b['accuracy_loss']:+.1f} pt",
                                  ">= 60 %, accuracy down <= 3 pt", b["eo_cut"] >= 0.6 and b["accuracy_loss"] <= 0.03))
        lines += ["Spurious digits (criterion eo, test):", ""]
        lines += md_table(["trigger", "EO cut", "accuracy change (pt)"],
                          [[k, _pct(v["eo_cut"]), f"{-100 * v['accuracy_loss']:+.1f}"] for k, v in summ.items()])
    tr = d.get("transfer") or []
    if tr:
        kept = [r["transfer_cut"] / r["own_cut"] if r["own_cut"] > 0 else float("nan") for r in tr]
        heads.append(Headline("Border trigger transferred to another ERM model",
                              f"keeps {', '.join(_pct(k) for k in kept)} of its cut", ">= half",
                              all(k >= 0.5 for k in kept)))
        lines += ["", "Transfer:", ""] + md_table(
            ["fitted on", "applied to", "own EO cut", "transferred", "kept"],
            [[r["fitted_on"], r["applied_to"], _pct(r["own_cut"]), _pct(r["transfer_cut"]), _pct(k)]
             for r, k in zip(tr, kept)])
    if "tabular" in d:
        ch = d["tabular"]["chosen"]
        heads.append(Headline("Feature triggers on tabular data (gap picked on the tuning split)",
                              "; ".join(f"{r['setting']} {r['criterion']}: {_pct(r['gap_cut'])}, "
                                        f"accuracy {-100 * r['accuracy_loss']:+.1f} pt" for r in ch),
                              ">= 50 %, accuracy down <= 2 pt", all(r["gap_cut"] >= 0.5 and r["accuracy_loss"] <= 0.02 for r in ch)))
        lines += ["", "Feature triggers (test):", ""] + md_table(
            ["setting", "criterion", "λ", "gap cut", "accuracy change (pt)"],
            [[r["setting"], r["criterion"], f"{r['lambda']:g}", _pct(r["gap_cut"]), f"{-100 * r['accuracy_loss']:+.1f}"]
             for r in ch])
    if "text" in d:
        summ = d["text"]["summary"]
        heads.append(Headline("Prompt triggers on a frozen MiniLM: EO gap cut",
                              "; ".join(f"{k}: {_pct(v['eo_cut'])}, accuracy {-100 * v['accuracy_loss']:+.1f} pt"
                                        for k, v in summ.items()),
                              ">= 50 %, accuracy down <= 3 pt", all(v["eo_cut"] >= 0.5 and v["accuracy_loss"] <= 0.03
                                                        for v in summ.values())))
        lines += ["", "Prompt triggers (test):", ""] + md_table(
            ["mode", "EO cut", "accuracy change (pt)"],
            [[k, _pct(v["eo_cut"]), f"{-100 * v['accuracy_loss']:+.1f}"] for k, v in summ.items()])
    return heads, lines


def render_report(d: dict):
    reps = d["reports"]
    shots = sum(1 for r in reps if r.get("screenshot"))
    heads = [Headline("`reprogram explain` reports for image, tabular and text inputs",
                      f"{len(reps)}/3 pages written ({', '.join(r['part'] for r in reps)}); {shots} screenshot(s)",
                      "one page per input kind", len(reps) == 3)]
    lines = md_table(["part", "images", "HTML MB", "seconds", "screenshot"],
                     [[r["part"], r["images"], f"{r['html_bytes'] / 1e6:.2f}", r["seconds"],
                       Path(r["screenshot"]).name if r.get("screenshot") else "—"] for r in reps])
    return heads, lines


def streaming_metrics(d: dict):
    runs = d["runs"]
    mem = [r for r in runs if r["path"] == "in-memory"]
    big = max((r for r in runs if r["path"] == "streaming"), key=lambda r: r["rows"])
    heads = [Headline("`streaming_report` on a file larger than memory vs the in-memory report",
                      f"{big['rows']:,} rows ({big['format']}) streamed in {big['wall_s']:.1f} s, peak RSS "
                      f"{big['peak_rss_mib']:.0f} MiB (in memory, {mem[0]['rows']:,} rows: "
                      f"{mem[0]['peak_rss_mib']:.0f} MiB); same figures: {d['streamed_equals_in_memory']}",
                      "same figures as in memory", bool(d["streamed_equals_in_memory"]))]
    lines = md_table(["path", "format", "rows", "file MiB", "wall s", "peak RSS MiB", "RSS after imports MiB",
                      "rows/s"],
                     [[r["path"], r["format"], f"{r['rows']:,}", f"{r['file_mib']:.0f}", f"{r['wall_s']:.2f}",
                       f"{r['peak_rss_mib']:.0f}", f"{r['rss_after_imports_mib']:.0f}",
                       f"{r['rows_per_s'] / 1e6:.2f}M"] for r in runs])
    return heads, lines


# --------------------------------------------------------------------------- the scripts


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


@dataclass
class Bench:
    name: str
    question: str
    extract: Callable
    quick_args: list[str] = field(default_factory=lambda: ["--quick"])
    full_args: list[str] = field(default_factory=list)
    full_out: str = ""  # where the script writes its full-scale JSON (relative to benchmarks/results)
    reference: tuple[str, ...] = ()  # full-scale JSON files to show beside a quick run (newest wins per key)
    requires: tuple[str, ...] = ()
    install: str = ""
    timeout: int = 600  # seconds, quick
    full_timeout: int = 4 * 3600
    out_is_dir: bool = False  # render_report.py: --out is a folder, the JSON is render_report.json in it

    def json_path(self, out: Path) -> Path:
        return out / "render_report.json" if self.out_is_dir else out

    def missing(self) -> list[str]:
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


BENCHES = [
    Bench("metrics_speed", "How fast is `fairness_report`?", metrics_speed,
          # no --quick in the script: a tenth of its default sizes, 2 repeats
          quick_args=["--rows", "100000", "--big-rows", "1000000", "--repeats", "2"],
          full_out="metrics_speed.json", reference=("metrics_speed.json",), timeout=300),
    Bench("calibration_quality", "Does group calibration work?", calibration_quality,
          full_args=["--dataset", "adult"], full_out="calibration_quality_adult.json",
          reference=("calibration_quality_adult.json",), timeout=300),
    Bench("calibration_speed", "How fast are the calibrators and their ONNX export?", calibration_speed,
          full_out="calibration_speed.json", reference=("calibration_speed.json",), timeout=300),
    Bench("onnx_parity", "Do exported calibration maps compute what scikit-learn computes?", onnx_parity,
          full_out="onnx_parity.json", reference=("onnx_parity.json",), requires=("skl2onnx",),
          install=BENCH_EXTRA, timeout=300),
    Bench("multicalibration_compare", "Multicalibration vs the HKRR and MCGrad packages", multicalibration_compare,
          full_out="multicalibration_compare.json", reference=("multicalibration_compare.json",),
          requires=("multicalibration", "mcgrad"), install=BENCH_EXTRA, timeout=600),
    Bench("trigger_speed", "What does a trigger step cost?", trigger_speed,
          quick_args=["--rounds", "2"],  # no --quick in the script: 2 rounds instead of 15
          full_out="trigger_speed.json", reference=("trigger_speed.json",), timeout=300),
    Bench("train_methods", "Do the in-processing methods work?", train_methods,
          full_out="train_methods.json", reference=("train_methods.json", "train_methods_*.json"), timeout=1200),
    Bench("trigger_quality", "Do fairness triggers work?", trigger_quality,
          full_out="trigger_quality.json", reference=("trigger_quality.json",), timeout=1800),
    Bench("render_report", "Does `reprogram explain` make a usable page?", render_report,
          quick_args=["--quick", "--no-screenshot"], full_out=".", reference=("render_report.json",),
          timeout=1200, out_is_dir=True),
    Bench("streaming_metrics", "Streaming metrics: a predictions file larger than memory", streaming_metrics,
          full_out="streaming_metrics.json", reference=("streaming_metrics.json",), timeout=600),
]


def generic(d: dict, question: str = "its checks"):
    """A script the runner has no extractor for yet: its ``checks`` (when it writes them)
    and its first table-like list."""
    heads, lines = [], []
    checks = d.get("checks")
    if isinstance(checks, dict) and checks and all(isinstance(v, bool) for v in checks.values()):
        ok = sum(checks.values())
        heads.append(Headline(question, f"{ok}/{len(checks)} checks met", "every check", ok == len(checks)))
        lines += [f"- {'met' if v else '**missed**'}: {k}" for k, v in checks.items()] + [""]
    else:
        heads.append(Headline(question, "ran: see its section (no headline extractor in `benchmarks/__main__.py` yet)",
                              "—", None))
    flat = lambda r: isinstance(r, dict) and all(not isinstance(v, (dict, list)) for v in r.values())
    for k, v in d.items():
        if isinstance(v, list) and v and all(flat(r) for r in v):
            cols = list(dict.fromkeys(c for r in v for c in r))
            fmt = lambda x: f"{x:.4g}" if isinstance(x, float) else ("—" if x is None else x)
            lines += [f"`{k}`:", ""] + md_table(cols, [[fmt(r.get(c)) for c in cols] for r in v[:30]])
            break
    return heads, lines


def discover() -> list[Bench]:
    """Scripts in this folder the list above does not name, that take ``--quick`` and
    ``--out``: run the same way, with the generic extractor."""
    known = {b.name for b in BENCHES} | {"bench_data", "__main__", "__init__"}
    extra = []
    for p in sorted(HERE.glob("*.py")):
        if p.stem in known:
            continue
        src = p.read_text(errors="replace")
        if '"--quick"' in src and '"--out"' in src and "__main__" in src:
            doc = (ast.get_docstring(ast.parse(src)) or p.stem).split("\n\n")[0].replace("\n", " ")
            doc = doc if len(doc) <= 120 else doc[:117].rsplit(" ", 1)[0] + " ..."
            extra.append(Bench(p.stem, doc, lambda d, q=doc: generic(d, q), full_out=f"{p.stem}.json",
                               reference=(f"{p.stem}.json",)))
    return extra


BENCHES += discover()
BY_NAME = {b.name: b for b in BENCHES}


def load_reference(b: Bench, results: Path) -> tuple[dict | None, list[Path]]:
    """Full-scale JSON from earlier runs: the files of ``b.reference``, merged (the newest
    file's value wins for a top-level key), or None when there is none."""
    files = sorted({p for pat in b.reference for p in results.glob(pat) if p.is_file()}, key=lambda p: p.stat().st_mtime)
    merged: dict = {}
    used = []
    for p in files:
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if d.get("quick"):  # calibration_speed marks its smoke runs
            continue
        merged.update(d)
        used.append(p)
    return (merged or None), used


# --------------------------------------------------------------------------- running


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_one(b: Bench, full: bool, out_dir: Path, timeout: float | None, echo: bool, reuse: bool = False) -> dict:
    rec: dict = {"name": b.name, "question": b.question}
    miss = b.missing()
    if miss:
        rec.update(status="skipped", reason=f"needs {', '.join(miss)}: {b.install}")
        return rec
    if full:
        out = RESULTS / b.full_out
        args = list(b.full_args)
        if b.name == "render_report" and _chromium() is None:
            args.append("--no-screenshot")
    else:
        out = out_dir / (b.name if b.out_is_dir else f"{b.name}.json")
        args = list(b.quick_args)
    script = HERE / f"{b.name}.py"
    cmd = [sys.executable, str(script), *args, "--out", str(out)]
    shown = ["python", os.path.relpath(script, ROOT), *args, "--out", _rel(out)]
    rec["command"] = shlex.join(shown)
    limit = timeout or (b.full_timeout if full else b.timeout)
    log = (out_dir if not full else RESULTS / "logs") / f"{b.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    jp = b.json_path(out)  # not deleted first: a failed full run keeps the last good JSON
    if reuse:  # --report-only: the JSON the last run left
        if not jp.is_file():
            rec.update(status="missing", reason=f"no {_rel(jp)} from an earlier run")
            return rec
        times = out_dir / "seconds.json"
        rec["seconds"] = (json.loads(times.read_text()) if times.is_file() else {}).get(b.name, float("nan"))
        rec.update(status="ok", json=_rel(jp), data=json.loads(jp.read_text()))
        return rec
    started = time.time()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        # its own process group, so that a timeout also ends what the script started
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE if echo else fh, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
        try:
            if echo:  # copy its output to the log and the terminal as it comes
                def copy():
                    for line in proc.stdout:  # type: ignore[union-attr]
                        fh.write(line)
                        sys.stdout.write(line)

                copier = threading.Thread(target=copy, daemon=True)
                copier.start()
            proc.wait(limit)
            if echo:
                copier.join(10)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rec.update(status="timeout", seconds=time.perf_counter() - t0, log=_rel(log),
                       reason=f"no result within {limit:.0f} s")
            return rec
    rec["seconds"] = time.perf_counter() - t0
    rec["log"] = _rel(log)
    if proc.returncode != 0 or not jp.is_file() or jp.stat().st_mtime < started - 1:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        rec.update(status="failed", reason=f"exit code {proc.returncode}", tail=tail)
        return rec
    rec.update(status="ok", json=_rel(jp), data=json.loads(jp.read_text()))
    return rec


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def _extract(b: Bench, data: dict):
    try:
        return b.extract(data)
    except Exception as e:  # a script's JSON changed shape: say so, do not lose the other results
        return [Headline(b.question, f"could not read its JSON ({type(e).__name__}: {e})", "—", None)], []


# --------------------------------------------------------------------------- the report


def machine() -> dict:
    m = {"platform": platform.platform(), "python": platform.python_version(), "cores": os.cpu_count()}
    try:
        m["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        m["cpu"] = platform.processor() or platform.machine()
    try:
        import torch

        m["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        m["load_avg_1min"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=ROOT, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=ROOT,
                               capture_output=True, text=True)
        if rev.returncode == 0:
            m["commit"] = rev.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except OSError:
        pass
    return m


def headline_table(records: list[dict], full: bool, with_reference: bool) -> list[str]:
    scale = "full" if full else "quick"
    header = ["question", "benchmark", f"this run ({scale})", "target", "met?"]
    if with_reference:
        header += ["full-scale run (local `benchmarks/results/`)", "met?"]
    rows = []
    for r in records:
        b = BY_NAME[r["name"]]
        ref = r.get("reference_heads") or []
        if r["status"] != "ok":
            n = max(1, len(ref))
            heads = [Headline(b.question, f"{r['status']}: {r.get('reason', '')}", "—", None)] * n
            if ref:
                heads = [Headline(h.question, f"{r['status']}: {r.get('reason', '')}", h.target, None) for h in ref]
        else:
            heads = r["heads"]
        ref_by_q = {h.question: h for h in ref}
        for h in heads:
            row = [h.question, f"`{r['name']}`", h.value, h.target, _verdict(h.met)]
            if with_reference:
                rh = ref_by_q.get(h.question)
                row += [rh.value, _verdict(rh.met)] if rh else ["—", "—"]
            rows.append(row)
    return md_table(header, rows)


def write_report(records: list[dict], full: bool, wall: float, argv: list[str], path: Path) -> str:
    with_ref = not full and any(r.get("reference_heads") for r in records)
    m = machine()
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    runner = shlex.join(["python", "-m", "benchmarks", *argv])
    lines = ["# Benchmark results", "",
             f"Generated by `{runner}` on {now} ({wall / 60:.1f} min"
             + (" of script time, rebuilt from the JSON of the last run" if "--report-only" in argv else "")
             + "). Do not edit: rerun the command.", ""]
    if not full:
        lines += ["**Smoke scale.** These numbers come from each script's `--quick` mode (fewer rows, seeds, "
                  "epochs and repeats than the full runs), sized for CI: they show that every benchmark runs "
                  "and roughly where it lands, not the figures to quote. Full-scale numbers: "
                  "`python -m benchmarks --full` (hours on 2 cores)" +
                  (", and the last column shows full-scale JSON found in the git-ignored `benchmarks/results/` "
                   "of the machine that generated this file." if with_ref else "."), ""]
    lines += ["## Headline", ""] + headline_table(records, full, with_ref) + [""]
    lines += ["## Machine", ""] + [f"- {k}: {v}" for k, v in m.items()] + [""]
    lines += ["## Commands", "", "```", *(f"{r['command']}   # {r.get('seconds', 0):.0f} s, {r['status']}"
                                          if r.get("command") else f"# {r['name']}: {r['status']} ({r.get('reason')})"
                                          for r in records), "```", ""]
    for r in records:
        b = BY_NAME[r["name"]]
        lines += [f"## {r['name']}: {b.question}", ""]
        if r["status"] != "ok":
            lines += [f"Not run: {r['status']} ({r.get('reason', '')})."]
            if r.get("tail"):
                lines += ["", "```", *r["tail"], "```"]
            lines += [""]
        else:
            lines += [f"`{r['command']}` ({r['seconds']:.0f} s, {scale_word(full)} scale)", ""]
            lines += r["section"] + [""]
        if not full and r.get("reference_section"):
            files = ", ".join(f"`{_rel(p)}` ({_dt.datetime.fromtimestamp(p.stat().st_mtime, _dt.timezone.utc):%Y-%m-%d})"
                              for p in r["reference_files"])
            lines += [f"<details><summary>Full-scale run from {files}</summary>", "", *r["reference_section"], "",
                      "</details>", ""]
    text = "\n".join(lines).rstrip() + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


def scale_word(full: bool) -> str:
    return "full" if full else "smoke"


def readme_block(records: list[dict], full: bool, report: Path) -> str:
    with_ref = not full and any(r.get("reference_heads") for r in records)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    note = (f"From `python -m benchmarks{' --full' if full else ''}` on {now} ({platform.machine()}, "
            f"{os.cpu_count()} cores); " +
            ("full scale." if full else "the quick column is smoke scale (CI-sized), "
             + ("the full-scale column comes from the last full runs of the scripts." if with_ref else "")) +
            f" Details, machine and commands: [`{_rel(report)}`]({_rel(report)}).")
    return "\n".join([START, note, "", *headline_table(records, full, with_ref), END])


def update_readme(block: str, readme: Path = README) -> bool:
    text = readme.read_text()
    if START in text and END in text:
        pre, rest = text.split(START, 1)
        _, post = rest.split(END, 1)
        new = pre + block + post
    else:
        return False
    readme.write_text(new)
    return True


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="full scale (no --quick; hours), JSON to benchmarks/results/")
    ap.add_argument("--only", default="", help="comma-separated script names, e.g. metrics_speed,calibration_quality")
    ap.add_argument("--skip", default="", help="comma-separated script names to leave out")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per script (default: each script's own)")
    ap.add_argument("--out-dir", type=Path, default=RESULTS / "quick",
                    help="where quick runs write their JSON and logs (default benchmarks/results/quick)")
    ap.add_argument("--report", type=Path, default=None,
                    help="the Markdown report (default benchmarks/RESULTS.md; with --only/--skip, "
                         "<out-dir>/RESULTS.md, so that a partial run does not replace the full report)")
    ap.add_argument("--update-readme", action="store_true",
                    help=f"rewrite the headline table in README.md between {START} and {END}")
    ap.add_argument("--no-reference", action="store_true", help="do not show full-scale JSON from benchmarks/results/")
    ap.add_argument("--report-only", action="store_true",
                    help="run nothing: rebuild the report from the JSON the last run left in --out-dir")
    ap.add_argument("--list", action="store_true", help="list the scripts and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo each script's output")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.only.split(",") if n.strip()] or [b.name for b in BENCHES]
    skip = {n.strip() for n in args.skip.split(",") if n.strip()}
    unknown = sorted((set(names) | skip) - set(BY_NAME))
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; choose from {', '.join(BY_NAME)}")
    todo = [BY_NAME[n] for n in names if n not in skip]
    partial = len(todo) < len(BENCHES)
    if args.report is None:
        args.report = (RESULTS / "logs" if args.full else args.out_dir) / "RESULTS.md" if partial else REPORT
    if args.list:
        for b in BENCHES:
            miss = b.missing()
            print(f"{b.name:26s} {'skipped: ' + b.install if miss else 'python benchmarks/' + b.name + '.py ' + ' '.join(b.quick_args)}")
        return 0

    t0 = time.perf_counter()
    records = []
    for i, b in enumerate(todo, 1):
        print(f"[{i}/{len(todo)}] {b.name} ...", flush=True)
        rec = run_one(b, args.full, args.out_dir, args.timeout, args.verbose, args.report_only)
        if rec["status"] == "ok":
            rec["heads"], rec["section"] = _extract(b, rec.pop("data"))
        if not args.full and not args.no_reference:
            ref, files = load_reference(b, RESULTS)
            if ref is not None:
                rec["reference_heads"], rec["reference_section"] = _extract(b, ref)
                rec["reference_files"] = files
        took = f" in {rec['seconds']:.0f} s" if "seconds" in rec else ""
        print(f"      {rec['status']}{took}" + (f": {rec['reason']}" if rec.get("reason") else ""), flush=True)
        records.append(rec)
    wall = time.perf_counter() - t0
    times_file = (RESULTS / "logs" if args.full else args.out_dir) / "seconds.json"
    if not args.report_only:  # each script's time, for a later --report-only
        old = json.loads(times_file.read_text()) if times_file.is_file() else {}
        times_file.parent.mkdir(parents=True, exist_ok=True)
        times_file.write_text(json.dumps({**old, **{r["name"]: r["seconds"] for r in records if "seconds" in r}},
                                         indent=2) + "\n")
    else:
        wall = sum(r.get("seconds", 0) for r in records if r.get("seconds") == r.get("seconds"))
    write_report(records, args.full, wall, argv, args.report)
    print()
    print("\n".join(headline_table(records, args.full, False)))
    print(f"\nwrote {args.report} ({wall:.0f} s in all)")
    if args.update_readme and partial:
        print("--update-readme ignored: the README's table comes from a run of every benchmark", file=sys.stderr)
    elif args.update_readme:
        if update_readme(readme_block(records, args.full, args.report)):
            print(f"updated the headline table in {README}")
        else:
            print(f"README.md has no {START} ... {END} block: not updated", file=sys.stderr)
    failed = [r["name"] for r in records if r["status"] in ("failed", "timeout")]
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
