"""How fast are the calibrators: fitting, applying the map, and the exported ONNX graph?

1. Fitting: ``GroupCalibrator`` (isotonic / Platt / auto) with 64 groups of Zipf-like
   sizes on 1M float32 scores, each group miscalibrated its own way, vs the plain
   scikit-learn loop a user would write (for each group: ``IsotonicRegression(
   out_of_bounds="clip", y_min=0, y_max=1).fit`` on its rows; Platt: sklearn's
   ``_SigmoidCalibration`` -- what ``CalibratedClassifierCV(method="sigmoid")`` fits --
   on the logit, and ``LogisticRegression`` on the logit; auto: whichever of the two
   ``GroupCalibrator`` chose per group). ``GroupCalibrator`` also fits the global
   fallback map on all rows, so the loop is timed with and without that global fit too.
   The largest difference between the two calibrated outputs is reported alongside.
2. Applying a map to 10M float32 scores: numpy (``np.interp`` alone, ``IsotonicMap.
   transform``, ``GroupCalibrator.transform`` for 64 groups) vs the graph written by
   ``export_calibrator_onnx`` run in onnxruntime (CPUExecutionProvider) with 1 thread
   (numpy is single-threaded) and with all cores. For contrast, the naive exportable
   O(N*K) lookup ``(x.unsqueeze(-1) >= knots).sum(-1)`` exported the same way; it needs
   N*K*9 bytes, so it runs on fewer scores and its time is scaled per score to 10M.
   Target: the ONNX map not slower than 2x numpy interpolation.
3. Latency of the fused export vs PyTorch eager at batch 1 and 256: MLP 100-512-256-64-2
   (TorchScript, loaded with ``load_frozen``) + ``FeatureTrigger`` + isotonic
   ``GroupCalibrator`` (4 groups). Eager: trigger -> model -> softmax -> the
   calibrator's torch module, and the same with the numpy ``calibrator.transform``;
   ONNX: the graph from ``export_onnx``. torch and onnxruntime get the same thread
   count (1, then all cores). Median of single-call latencies, interleaved. The MLP's
   output layer is scaled so its scores spread over (0.01, 0.98) as a trained model's.

Every contender of a table runs in turn within each round (these machines are noisy,
and other work on them shows in the load average recorded in the JSON), after warm-up;
ratios are of medians. Prints one table per part and a summary, writes JSON. The full
run takes 2-3 minutes on 2 cores and peaks at ~9 GB of memory (onnxruntime's arenas at
10M scores); ``--quick`` (500k scores) takes ~15 s. onnxruntime sessions run with
spinning off (see ``ort_session``).

    python benchmarks/calibration_speed.py [--quick] [--parts fit,apply,latency] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn

console = Console(highlight=False, width=160)

N_GROUPS = 64
ZIPF = 1.5  # group k has a share proportional to (k + 1) ** -ZIPF: 42% down to ~0.08%


# --- helpers ---------------------------------------------------------------------------
def rounds(fns: dict, n_rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall times of each callable over ``n_rounds`` rounds, all of them run in turn in each round."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(n_rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def stats(ts: list[float]) -> dict:
    return {"median_s": float(np.median(ts)), "min_s": float(np.min(ts)), "n": len(ts)}


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # onnxruntime's idle workers spin for a while after each run by default; interleaved
    # with torch's or numpy's turn on the same cores they steal it (torch eager at batch
    # 256 on 2 threads measured 3x slower right after a spinning session)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def machine() -> dict:
    import onnxruntime
    import sklearn

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "numpy": np.__version__,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "sklearn": sklearn.__version__,
            "load_avg_1min_at_start": os.getloadavg()[0]}


def grouped_scores(n: int, seed: int = 0, params_seed: int = 0):
    """Float32 scores, labels and group ids: group k is over/under-confident and shifted its own way."""
    prm = np.random.default_rng(params_seed)
    share = np.arange(1, N_GROUPS + 1, dtype=np.float64) ** -ZIPF
    share /= share.sum()
    mu = prm.normal(0.0, 0.7, N_GROUPS)  # where the group's scores sit
    sd = prm.uniform(0.8, 2.0, N_GROUPS)  # how spread
    slope = prm.uniform(0.5, 2.0, N_GROUPS)  # true logit = slope * z + shift: < 1 over-, > 1 under-confident
    shift = prm.uniform(-1.0, 1.0, N_GROUPS)
    rng = np.random.default_rng(seed)
    g = rng.choice(N_GROUPS, n, p=share)
    z = rng.normal(mu[g], sd[g])
    s = (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-(slope[g] * z + shift[g])))).astype(np.int64)
    return s, y, g


def logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p.astype(np.float64), 2.0**-23, 1.0 - 2.0**-23)
    return np.log(q) - np.log1p(-q)


# --- 1. fitting ------------------------------------------------------------------------
def fit_part(n: int, n_rounds: int) -> list[dict]:
    from sklearn.calibration import _SigmoidCalibration
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    from reprogram.calibrate import GroupCalibrator

    s, y, g = grouped_scores(n)
    z = logit(s)
    # scikit-learn fits isotonic regression in the input's dtype; given these float32
    # scores it lands up to ~4e-2 away from its own float64 fit, so it gets float64 (as
    # GroupCalibrator computes), converted once outside the timing
    s64 = s.astype(np.float64)

    def sk_iso(rows):
        return IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(s64[rows], y[rows])

    def sk_sigmoid(rows):
        return _SigmoidCalibration().fit(z[rows], y[rows])

    def sk_logreg(rows):
        return LogisticRegression(C=np.inf).fit(z[rows, None], y[rows])

    def loop(fitter_of, with_global: bool):
        def run():
            out = {}
            for k in range(N_GROUPS):
                rows = g == k
                out[k] = fitter_of(k)(rows)
            if with_global:
                out["global"] = fitter_of("global")(np.ones(n, dtype=bool))
            return out

        return run

    def sk_predict(fitted: dict) -> np.ndarray:
        out = np.empty(n)
        for k, f in fitted.items():
            if k == "global":
                continue
            rows = g == k
            if isinstance(f, IsotonicRegression):
                out[rows] = f.predict(s64[rows])
            elif isinstance(f, LogisticRegression):
                out[rows] = f.predict_proba(z[rows, None])[:, 1]
            else:
                out[rows] = f.predict(z[rows])
        return out

    rows_out = []
    for method in ("isotonic", "platt", "auto"):
        cal = GroupCalibrator(method=method).fit(s, y, g)  # also tells "auto"'s choice per group
        chosen = {k: cal.methods_[str(k)] for k in range(N_GROUPS)}
        chosen["global"] = cal.methods_["(global)"]
        n_iso = sum(v == "isotonic" for k, v in chosen.items() if k != "global")
        if method == "isotonic":
            cases = [("IsotonicRegression", lambda k: sk_iso)]
        elif method == "platt":
            cases = [("_SigmoidCalibration", lambda k: sk_sigmoid), ("LogisticRegression", lambda k: sk_logreg)]
        else:  # what "auto" chose for each group
            cases = [("as auto chose", lambda k, c=chosen: sk_iso if c[k] == "isotonic" else sk_sigmoid)]
        for base_name, fitter_of in cases:
            fns = {
                "ours": lambda m=method: GroupCalibrator(method=m).fit(s, y, g),
                "sk": loop(fitter_of, False),
                "sk+global": loop(fitter_of, True),
            }
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = rounds(fns, n_rounds, warmup=0)
                fitted = fns["sk"]()
            ours = cal.transform(s, g)
            diff = float(np.max(np.abs(ours - sk_predict(fitted))))
            st = {k: stats(v) for k, v in t.items()}
            rows_out.append({
                "method": method, "baseline": base_name, "rows": n, "groups": N_GROUPS,
                "isotonic_groups": n_iso, "ours": st["ours"], "sklearn_loop": st["sk"],
                "sklearn_loop_with_global": st["sk+global"],
                "speedup": st["sk"]["median_s"] / st["ours"]["median_s"],
                "speedup_with_global": st["sk+global"]["median_s"] / st["ours"]["median_s"],
                "max_abs_diff": diff,
            })
    return rows_out


def fit_table(rows: list[dict]) -> None:
    r0 = rows[0]
    sizes = np.bincount(grouped_scores(r0["rows"])[2], minlength=N_GROUPS)
    t = Table(title=f"1. Fitting GroupCalibrator vs a per-group scikit-learn loop ({r0['rows']:,} float32 scores, "
                    f"{N_GROUPS} groups of {sizes.min():,}..{sizes.max():,} rows), median s",
              title_justify="left",
              caption="max |diff|: GroupCalibrator.transform vs the loop's predictions on the fitted rows. "
                      "LogisticRegression fits plain 0/1 targets, Platt (ours and _SigmoidCalibration) "
                      "Platt's smoothed targets, hence its larger diff.", caption_justify="left")
    for c in ("method", "sklearn per group", "isotonic groups", "GroupCalibrator s", "sklearn loop s", "speed-up",
              "loop + global s", "speed-up", "max |diff|"):
        t.add_column(c, justify="right")
    for r in rows:
        t.add_row(r["method"], r["baseline"], str(r["isotonic_groups"]), f"{r['ours']['median_s']:.3f}",
                  f"{r['sklearn_loop']['median_s']:.3f}", f"{r['speedup']:.2f}x",
                  f"{r['sklearn_loop_with_global']['median_s']:.3f}", f"{r['speedup_with_global']:.2f}x",
                  f"{r['max_abs_diff']:.1e}")
    console.print(t)


# --- 2. applying -----------------------------------------------------------------------
class NaiveInterp(nn.Module):
    """The export-friendly O(N*K) lookup: count the knots <= x by broadcasting, then interpolate."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        super().__init__()
        dx = np.diff(x)
        slope = np.concatenate([np.where(dx > 0, np.diff(y) / np.where(dx > 0, dx, 1.0), 0.0), [0.0]])
        self.register_buffer("kx", torch.tensor(x, dtype=torch.float32))
        self.register_buffer("vy", torch.tensor(y, dtype=torch.float32))
        self.register_buffer("slope", torch.tensor(slope, dtype=torch.float32))
        self.k = len(x)

    def forward(self, score: torch.Tensor) -> torch.Tensor:
        xc = torch.minimum(torch.maximum(score, self.kx[0]), self.kx[-1])
        pos = (xc.unsqueeze(-1) >= self.kx).sum(-1)
        seg = (pos - 1).clamp(0, self.k - 1)
        return self.vy[seg] + (xc - self.kx[seg]) * self.slope[seg]


def export_naive(module: nn.Module, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.rand(4),), str(path), input_names=["score"],
                          output_names=["calibrated"], dynamic_axes={"score": {0: "n"}, "calibrated": {0: "n"}},
                          opset_version=17, dynamo=False)


def apply_part(n: int, n_fit: int, n_group_fit: int, n_rounds: int, n_group_rounds: int, tmp: Path) -> dict:
    from reprogram.calibrate import GroupCalibrator, IsotonicMap, export_calibrator_onnx

    threads = os.cpu_count() or 1
    # one isotonic map with many knots: one group's worth of miscalibration, fitted on n_fit rows
    rng = np.random.default_rng(1)
    zf = rng.normal(0.3, 1.5, n_fit)
    sf = (1.0 / (1.0 + np.exp(-zf))).astype(np.float32)
    yf = (rng.random(n_fit) < 1.0 / (1.0 + np.exp(-(1.5 * zf - 0.4)))).astype(np.int64)
    iso = IsotonicMap().fit(sf, yf)
    tab = iso.tables_[0]
    k = len(tab.x)
    bank = iso.to_module().bank
    export_calibrator_onnx(iso, tmp / "iso.onnx")

    x = (1.0 / (1.0 + np.exp(-np.random.default_rng(2).normal(0.3, 1.5, n)))).astype(np.float32)
    ses = {"map_1": ort_session(tmp / "iso.onnx", 1), "map_all": ort_session(tmp / "iso.onnx", threads)}
    got = ses["map_1"].run(None, {"score": x[:1_000_000]})[0]
    map_diff = float(np.max(np.abs(got - np.interp(x[:1_000_000], tab.x, tab.y))))

    # the naive O(N*K) graph needs N*K bytes for the comparison and 8*N*K for its int64 sum
    n_naive = int(min(n, max(10_000, 0.6e9 // (9 * k))))
    naive = NaiveInterp(np.asarray(tab.x), np.asarray(tab.y))
    export_naive(naive, tmp / "naive.onnx")
    xn = x[:n_naive]
    ses["naive_1"], ses["naive_all"] = ort_session(tmp / "naive.onnx", 1), ort_session(tmp / "naive.onnx", threads)
    naive_diff = float(np.max(np.abs(ses["naive_1"].run(None, {"score": xn})[0] - np.interp(xn, tab.x, tab.y))))
    module = iso.to_module().eval()
    xt = torch.from_numpy(x)

    def torch_eager():
        with torch.no_grad():
            module(xt)

    fns = {
        "np.interp": lambda: np.interp(x, tab.x, tab.y),
        "IsotonicMap.transform": lambda: iso.transform(x),
        "onnx_1": lambda: ses["map_1"].run(None, {"score": x}),
        "onnx_all": lambda: ses["map_all"].run(None, {"score": x}),
        "torch_eager": torch_eager,
        "naive_onnx_1": lambda: ses["naive_1"].run(None, {"score": xn}),
        "naive_onnx_all": lambda: ses["naive_all"].run(None, {"score": xn}),
    }
    # warm-up twice: onnxruntime's memory arena grows over the first runs at this size
    t = rounds(fns, n_rounds, warmup=2)
    single = {name: stats(ts) for name, ts in t.items()}
    for name in ("naive_onnx_1", "naive_onnx_all"):
        st = single[name]
        st["scaled_to_n_s"] = st["median_s"] * n / n_naive
    ses.clear()  # frees their memory arenas (~GBs at 10M scores)

    # 64 groups: the GroupCalibrator of part 1 (isotonic), applied to n scores
    s, y, g = grouped_scores(n_group_fit)
    cal = GroupCalibrator(method="isotonic").fit(s, y, g)
    knots = [len(m.tables_[0].x) for m in cal.maps_.values()]
    export_calibrator_onnx(cal, tmp / "group.onnx")
    xs, _, gs = grouped_scores(n, seed=3)
    ses = {"1": ort_session(tmp / "group.onnx", 1), "all": ort_session(tmp / "group.onnx", threads)}
    feeds = {"score": xs, "group": gs.astype(np.int64)}
    m = 1_000_000
    group_diff = float(np.max(np.abs(ses["1"].run(None, {"score": xs[:m], "group": feeds["group"][:m]})[0]
                                     - cal.transform(xs[:m], gs[:m]))))
    fns = {
        "GroupCalibrator.transform": lambda: cal.transform(xs, gs),
        "onnx_1": lambda: ses["1"].run(None, feeds),
        "onnx_all": lambda: ses["all"].run(None, feeds),
    }
    t = rounds(fns, n_group_rounds, warmup=1)
    grouped = {name: stats(ts) for name, ts in t.items()}
    return {
        "scores": n, "threads_all": threads,
        "single": {"knots": k, "fit_rows": n_fit, "buckets": bank.m, "search_steps": bank.steps,
                   "naive_scores": n_naive, "max_abs_diff_onnx_vs_interp": map_diff,
                   "max_abs_diff_naive_vs_interp": naive_diff, "times": single,
                   "ratio_onnx_1_vs_interp": single["onnx_1"]["median_s"] / single["np.interp"]["median_s"],
                   "ratio_onnx_all_vs_interp": single["onnx_all"]["median_s"] / single["np.interp"]["median_s"],
                   "ratio_onnx_1_vs_transform":
                       single["onnx_1"]["median_s"] / single["IsotonicMap.transform"]["median_s"],
                   "ratio_naive_1_vs_onnx_1":
                       single["naive_onnx_1"]["scaled_to_n_s"] / single["onnx_1"]["median_s"]},
        "grouped": {"groups": len(cal.groups_), "fit_rows": n_group_fit, "maps": len(knots),
                    "knots_total": int(sum(knots)), "knots_max": int(max(knots)),
                    "max_abs_diff_onnx_vs_numpy": group_diff, "times": grouped,
                    "ratio_onnx_1_vs_numpy":
                        grouped["onnx_1"]["median_s"] / grouped["GroupCalibrator.transform"]["median_s"],
                    "ratio_onnx_all_vs_numpy":
                        grouped["onnx_all"]["median_s"] / grouped["GroupCalibrator.transform"]["median_s"]},
    }


def apply_table(r: dict) -> None:
    n, th = r["scores"], r["threads_all"]
    sg, gr = r["single"], r["grouped"]
    t = Table(title=f"2. Applying a calibration map to {n:,} float32 scores: numpy vs the exported ONNX graph "
                    f"(onnxruntime CPU, intra_op_num_threads 1 or {th}), median s", title_justify="left")
    for c in ("map", "implementation", "scores run", "median s", "min s", f"s per {n:,}", "vs np.interp"):
        t.add_column(c, justify="right")
    base = sg["times"]["np.interp"]["median_s"]
    name = f"isotonic, {sg['knots']} knots"
    label = {
        "np.interp": "np.interp (numpy, 1 thread)",
        "IsotonicMap.transform": "IsotonicMap.transform (numpy)",
        "onnx_1": "ONNX bucket table, ORT 1 thread",
        "onnx_all": f"ONNX bucket table, ORT {th} threads",
        "torch_eager": f"MapBank torch eager, {torch.get_num_threads()} threads",
        "naive_onnx_1": "ONNX naive O(N*K), ORT 1 thread",
        "naive_onnx_all": f"ONNX naive O(N*K), ORT {th} threads",
    }
    for key, st in sg["times"].items():
        full = st.get("scaled_to_n_s", st["median_s"])
        rows_run = sg["naive_scores"] if key.startswith("naive") else n
        t.add_row(name, label[key], f"{rows_run:,}", f"{st['median_s']:.3f}", f"{st['min_s']:.3f}",
                  f"{full:.3f}" + (" (scaled)" if "scaled_to_n_s" in st else ""), f"{full / base:.2f}x")
    base = gr["times"]["GroupCalibrator.transform"]["median_s"]
    name = f"{gr['groups']} groups, {gr['knots_total']} knots"
    label = {"GroupCalibrator.transform": "GroupCalibrator.transform (numpy)", "onnx_1": "ONNX bucket table, ORT 1 thread",
             "onnx_all": f"ONNX bucket table, ORT {th} threads"}
    t.add_section()
    for key, st in gr["times"].items():
        t.add_row(name, label[key], f"{n:,}", f"{st['median_s']:.3f}", f"{st['min_s']:.3f}", f"{st['median_s']:.3f}",
                  f"{st['median_s'] / base:.2f}x vs numpy")
    console.print(t)
    console.print(f"   isotonic map: {sg['knots']} knots (fit on {sg['fit_rows']:,} rows), {sg['buckets']} buckets, "
                  f"{sg['search_steps']} search steps; naive graph run on {sg['naive_scores']:,} scores "
                  f"(N*K*9 bytes) and scaled per score; max |ONNX - np.interp| {sg['max_abs_diff_onnx_vs_interp']:.1e}, "
                  f"naive {sg['max_abs_diff_naive_vs_interp']:.1e}; grouped: {gr['maps']} maps (64 groups + global), "
                  f"at most {gr['knots_max']} knots, max |ONNX - numpy| {gr['max_abs_diff_onnx_vs_numpy']:.1e}")


# --- 3. latency of the fused export ----------------------------------------------------
def latency_part(n_fit: int, reps: dict[int, int], tmp: Path) -> dict:
    from reprogram.calibrate import GroupCalibrator, export_onnx
    from reprogram.models import load_frozen
    from reprogram.train.models import mlp
    from reprogram.triggers import FeatureTrigger

    seed = 2
    torch.manual_seed(seed)
    net = mlp(n_features=100, n_classes=2).eval()
    # a freshly initialised MLP puts every score within ~0.03 of 0.5; a larger output
    # layer spreads them over (0.01, 0.98) as a trained model's are (speed is the same)
    with torch.no_grad():
        net.head.weight.mul_(30.0)
    torch.jit.script(net).save(str(tmp / "mlp.pt"))
    model = load_frozen(tmp / "mlp.pt")
    trigger = FeatureTrigger(100).eval()
    rng = np.random.default_rng(seed)
    X = torch.from_numpy(rng.normal(size=(n_fit, 100)).astype(np.float32))
    groups = rng.integers(0, 4, n_fit)
    with torch.no_grad():
        p = torch.softmax(model(trigger(X)), -1)[:, 1].numpy().astype(np.float64)
    # labels miscalibrated against the model's score, differently per group
    zz = np.log(p / (1.0 - p))
    y = (rng.random(n_fit) < 1.0 / (1.0 + np.exp(-((0.6 + 0.3 * groups) * zz + 0.3 * (groups - 1.5))))).astype(int)
    cal = GroupCalibrator(method="isotonic").fit(p, y, groups)
    export_note = None
    export_onnx(model, trigger, cal, path=tmp / "fused.onnx", example=X[:256], groups=groups[:256])
    cal_module = cal.to_module().eval()
    threads = torch.get_num_threads()
    sess = {1: ort_session(tmp / "fused.onnx", 1), threads: ort_session(tmp / "fused.onnx", threads)}

    out = {"torch_threads": threads, "calibrator_knots": [len(m.tables_[0].x) for m in cal.maps_.values()],
           "export_note": export_note, "rows": []}
    try:
        for batch, n_rep in reps.items():
            xb = X[:batch].clone()
            gb = groups[:batch].copy()
            gt = torch.from_numpy(gb.astype(np.int64))
            feeds = {"input": xb.numpy(), "group": gb.astype(np.int64)}

            def eager(xb=xb, gt=gt):
                with torch.no_grad():
                    return cal_module(torch.softmax(model(trigger(xb)), -1)[:, 1], gt)

            def eager_numpy(xb=xb, gb=gb):
                with torch.no_grad():
                    q = torch.softmax(model(trigger(xb)), -1)[:, 1]
                return cal.transform(q.numpy(), gb)

            diff = float(np.max(np.abs(sess[threads].run(None, feeds)[0] - eager().numpy())))
            # torch and onnxruntime get the same number of threads, 1 and then all of them
            for th, se in sess.items():
                torch.set_num_threads(th)
                fns = {"eager": eager, "eager_numpy": eager_numpy,
                       "onnx": lambda se=se, feeds=feeds: se.run(None, feeds)}
                st = {k: stats(v) for k, v in rounds(fns, n_rep, warmup=10).items()}
                out["rows"].append({
                    "batch": batch, "threads": th, "repeats": n_rep, "times": st, "max_abs_diff_onnx_vs_eager": diff,
                    "ratio_onnx_vs_eager": st["onnx"]["median_s"] / st["eager"]["median_s"],
                    "ratio_onnx_vs_eager_numpy": st["onnx"]["median_s"] / st["eager_numpy"]["median_s"]})
    finally:
        torch.set_num_threads(threads)
    return out


def latency_table(r: dict) -> None:
    t = Table(title="3. Fused ONNX (trigger + MLP 100-512-256-64-2 + isotonic GroupCalibrator, 4 groups) vs PyTorch "
                    "eager, same thread count for torch and onnxruntime, median latency per call",
              title_justify="left")
    for c in ("batch", "threads", "repeats", "eager torch", "eager + numpy cal.", "ONNX (ORT)", "ONNX / eager",
              "ONNX / eager+numpy"):
        t.add_column(c, justify="right")
    for row in r["rows"]:
        st = row["times"]
        t.add_row(str(row["batch"]), str(row["threads"]), str(row["repeats"]),
                  *(f"{st[k]['median_s'] * 1e6:.0f} us" for k in ("eager", "eager_numpy", "onnx")),
                  f"{row['ratio_onnx_vs_eager']:.2f}x", f"{row['ratio_onnx_vs_eager_numpy']:.2f}x")
    console.print(t)
    if r["export_note"]:
        console.print(f"   note: {r['export_note']}")


# --- main ------------------------------------------------------------------------------
def summary(result: dict) -> None:
    t = Table(title="Summary: ratios (median times) and targets", title_justify="left")
    for c in ("what", "ratio", "target", "met"):
        t.add_column(c, justify="right")
    if "fit" in result:
        for r in result["fit"]:
            t.add_row(f"fit speed-up vs sklearn loop, {r['method']} ({r['baseline']})",
                      f"{r['speedup']:.2f}x ({r['speedup_with_global']:.2f}x with global)", "none given", "-")
    if "apply" in result:
        a = result["apply"]
        sg, gr, th = a["single"], a["grouped"], a["threads_all"]
        for key, lab in (("ratio_onnx_1_vs_interp", "1 thread"), ("ratio_onnx_all_vs_interp", f"{th} threads")):
            t.add_row(f"ONNX map / np.interp, {sg['knots']} knots, ORT {lab}", f"{sg[key]:.3f}x", "<= 2x",
                      "yes" if sg[key] <= 2.0 else "NO")
        t.add_row("ONNX map / IsotonicMap.transform, ORT 1 thread", f"{sg['ratio_onnx_1_vs_transform']:.2f}x",
                  "-", "-")
        t.add_row("naive O(N*K) ONNX / bucket-table ONNX, ORT 1 thread", f"{sg['ratio_naive_1_vs_onnx_1']:.1f}x",
                  "-", "-")
        t.add_row(f"ONNX 64-group map / GroupCalibrator.transform, ORT 1 / {th} threads",
                  f"{gr['ratio_onnx_1_vs_numpy']:.2f}x / {gr['ratio_onnx_all_vs_numpy']:.2f}x", "-", "-")
    if "latency" in result:
        for row in result["latency"]["rows"]:
            t.add_row(f"fused ONNX / eager torch, batch {row['batch']}, {row['threads']} thread(s)",
                      f"{row['ratio_onnx_vs_eager']:.2f}x ({row['ratio_onnx_vs_eager_numpy']:.2f}x vs eager+numpy)",
                      "none given", "-")
    console.print(t)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small sizes, few repeats (well under a minute)")
    ap.add_argument("--parts", default="fit,apply,latency")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON path (default benchmarks/results/calibration_speed.json; --quick: ..._quick.json)")
    args = ap.parse_args(argv)
    if args.out is None:
        name = "calibration_speed_quick.json" if args.quick else "calibration_speed.json"
        args.out = Path(__file__).parent / "results" / name
    parts = set(args.parts.split(","))
    q = args.quick
    t_start = time.perf_counter()
    result: dict = {"benchmark": "calibration_speed", "quick": q, "machine": machine(),
                    "targets": {"onnx_map_vs_np_interp": 2.0}}
    console.print(f"machine: {result['machine']}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "fit" in parts:
            result["fit"] = fit_part(100_000 if q else 1_000_000, 1 if q else 3)
            fit_table(result["fit"])
        if "apply" in parts:
            result["apply"] = apply_part(n=500_000 if q else 10_000_000, n_fit=100_000 if q else 2_000_000,
                                         n_group_fit=100_000 if q else 1_000_000, n_rounds=2 if q else 5,
                                         n_group_rounds=1 if q else 3, tmp=tmp)
            apply_table(result["apply"])
        if "latency" in parts:
            result["latency"] = latency_part(5_000 if q else 20_000, {1: 20, 256: 5} if q else {1: 200, 256: 50}, tmp)
            latency_table(result["latency"])
    summary(result)
    result["wall_s"] = time.perf_counter() - t_start
    result["machine"]["load_avg_1min_at_end"] = os.getloadavg()[0]
    from reprogram.io import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2, default=float) + "\n")
    console.print(f"wrote {args.out} ({result['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
