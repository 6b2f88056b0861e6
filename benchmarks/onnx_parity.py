"""Do exported calibration maps compute what scikit-learn computes? Ours vs skl2onnx, one run.

skl2onnx converts ``CalibratedClassifierCV(method="isotonic")`` as a nearest-threshold
lookup (ArgMin over |x - thresholds|) while scikit-learn interpolates linearly between
thresholds, so its ONNX disagrees with scikit-learn between thresholds (skl2onnx issues
#200, #1151); it has no converter for a standalone ``IsotonicRegression`` (#985) nor for
``method="temperature"``. Here, on real data (Adult, a logistic regression calibrated on a
held-out part), each export is run in onnxruntime and compared with scikit-learn's
``predict_proba`` on the test rows: the max abs difference per case, or the error the
converter raised.

    python benchmarks/onnx_parity.py [--quick]     (needs skl2onnx: pip install -e ".[bench]")
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
from rich.console import Console
from rich.table import Table
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from reprogram.calibrate import IsotonicMap, PlattMap, TemperatureMap, export_calibrator_onnx
from reprogram.calibrate.scores import EPS
from reprogram.data import load_real_dataset, split_frame
from reprogram.data.encoding import FeatureEncoder

console = Console(highlight=False, width=160)


def data(quick: bool):
    d = load_real_dataset("adult")
    frame = d.frame.sample(6000, random_state=0) if quick else d.frame
    train, cal, test = split_frame(frame, (0.4, 0.3, 0.3), stratify=[d.label], seed=0)
    enc = FeatureEncoder().fit(train[d.features])
    X = [enc.transform(f[d.features]).astype(np.float32) for f in (train, cal, test)]
    y = [f[d.label].to_numpy().astype(int) for f in (train, cal, test)]
    return X, y


class ScoreProba(ClassifierMixin, BaseEstimator):
    """A prefit 'classifier' whose one input column is its P(class 1).

    It lets scikit-learn calibrate the very float32 scores our maps are fitted on.
    scikit-learn calibrates ``decision_function`` when a model has one, else
    ``predict_proba``: isotonic maps interpolate in that space, so the isotonic
    comparison uses this class (probabilities), the sigmoid and temperature ones the
    subclass below (log-odds, clipped as our maps clip them).
    """

    def fit(self, X, y):
        self.classes_ = np.array([0, 1])
        return self

    def predict_proba(self, X):
        return np.column_stack([1 - X[:, 0], X[:, 0]])

    def predict(self, X):
        return (X[:, 0] > 0.5).astype(int)


class ScoreLogit(ScoreProba):
    def decision_function(self, X):
        p = np.clip(X[:, 0], EPS, 1 - EPS)
        return np.log(p) - np.log1p(-p)


def run_onnx(model_bytes_or_path, feeds: dict) -> np.ndarray:
    sess = ort.InferenceSession(model_bytes_or_path, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def skl2onnx_case(est, X_test: np.ndarray, want: np.ndarray) -> dict:
    try:
        from skl2onnx import to_onnx

        onx = to_onnx(est, X_test[:1], target_opset=17, options={id(est): {"zipmap": False}}
                      if hasattr(est, "predict_proba") else None)
        outs = run_onnx(onx.SerializeToString(), {onx.graph.input[0].name: X_test})
        got = outs[-1][:, 1] if outs[-1].ndim == 2 else outs[-1].ravel()
        return {"max_abs_diff": float(np.max(np.abs(got - want))), "error": None}
    except Exception as e:  # a missing converter is the finding, not a crash
        return {"max_abs_diff": None, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:120]}"}


def ours_case(cal, scores_test: np.ndarray, want: np.ndarray) -> dict:
    with tempfile.TemporaryDirectory() as d:
        path = export_calibrator_onnx(cal, Path(d) / "m.onnx")
        (got,) = run_onnx(str(path), {"score": scores_test.astype(np.float32)})
    got = got[:, 1] if got.ndim == 2 else got
    return {"max_abs_diff": float(np.max(np.abs(got - want))), "error": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "onnx_parity.json")
    args = ap.parse_args()
    (Xtr, Xcal, Xte), (ytr, ycal, yte) = data(args.quick)
    base = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
    # the base model's float32 scores: what a frozen model hands the calibrator
    s_cal = base.predict_proba(Xcal)[:, 1].astype(np.float32).astype(np.float64)
    s_te = base.predict_proba(Xte)[:, 1].astype(np.float32).astype(np.float64)
    rows = []

    # skl2onnx converts CalibratedClassifierCV around a model it knows (it has no converter
    # for FrozenEstimator): cross-validated, on the training part; its ONNX vs its sklearn
    for method in ("isotonic", "sigmoid", "temperature"):
        cc = CalibratedClassifierCV(LogisticRegression(max_iter=2000), method=method, cv=3).fit(Xtr, ytr)
        rows.append({"case": f"{method}: CalibratedClassifierCV(LogisticRegression, cv=3)", "tool": "skl2onnx",
                     **skl2onnx_case(cc, Xte, cc.predict_proba(Xte)[:, 1])})
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(s_cal, ycal)
    rows.append({"case": "isotonic: standalone IsotonicRegression", "tool": "skl2onnx",
                 **skl2onnx_case(iso, s_te[:, None].astype(np.float32), iso.predict(s_te))})
    # ours: each map fitted on the frozen model's scores, its ONNX vs scikit-learn's
    # calibration of the same scores (a prefit score model under CalibratedClassifierCV)
    X1cal, X1te = s_cal[:, None], s_te[:, None]
    for method, ours in (("isotonic", IsotonicMap), ("sigmoid", PlattMap), ("temperature", TemperatureMap)):
        score_model = (ScoreProba if method == "isotonic" else ScoreLogit)().fit(X1cal, ycal)
        cc = CalibratedClassifierCV(FrozenEstimator(score_model), method=method).fit(X1cal, ycal)
        rows.append({"case": f"{method}: the same fit on the model's scores", "tool": f"reprogram {ours.__name__}",
                     **ours_case(ours().fit(s_cal, ycal), s_te, cc.predict_proba(X1te)[:, 1])})

    tab = Table(title=f"ONNX vs scikit-learn on Adult test rows (n={len(Xte)}): max |ONNX - sklearn|",
                title_justify="left")
    for c in ("case", "tool", "max abs diff", "converter error"):
        tab.add_column(c, justify="right" if c == "max abs diff" else "left")
    for r in rows:
        diff = r["max_abs_diff"]
        cell = "—" if diff is None else f"[{'green' if diff <= 1e-5 else 'red'}]{diff:.2e}[/]"
        tab.add_row(r["case"], r["tool"], cell, r["error"] or "")
    console.print(tab)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import skl2onnx

    args.out.write_text(json.dumps({"rows": rows, "n_test": int(len(Xte)), "skl2onnx": skl2onnx.__version__,
                                    "machine": platform.platform()}, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
