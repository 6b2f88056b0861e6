"""`reprogram calibrate`, `export` and `apply --calibrator` on real COMPAS data, as a user runs them."""

import json

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

from cli_helpers import invoke
from reprogram.calibrate import GroupCalibrator, load_calibrator
from reprogram.data import load_real_dataset, split_frame


@pytest.fixture(scope="module")
def compas(tmp_path_factory):
    """A COMPAS model trained by `reprogram train`, and its predictions on held-out rows (with label and groups)."""
    d = load_real_dataset("compas")
    root = tmp_path_factory.mktemp("compas")
    train, held = split_frame(d.frame, (0.5, 0.5), stratify=[d.label], seed=0)
    train = train.drop(columns=d.sensitive)  # the model does not see race or sex
    train.assign(**{c: d.frame.loc[train.index, c] for c in d.sensitive}).to_csv(root / "train.csv", index=False)
    held.to_csv(root / "held.csv", index=False)
    return root, d


def _train_and_predict(root, d, capsys):
    ckpt = root / "model.pt"
    if not ckpt.exists():
        code, text = invoke(["train", "--data", root / "train.csv", "--label", d.label, "--sensitive", *d.sensitive,
                             "--features", *d.features, "--arch", "mlp", "--epochs", "2", "--out", ckpt], capsys)
        assert code == 0, text
    preds = root / "preds.csv"
    code, text = invoke(["apply", "--model", ckpt, "--data", root / "held.csv", "--keep", d.label, *d.sensitive,
                         "--out", preds, "--device", "cpu"], capsys)
    assert code == 0, text
    return ckpt, preds


@pytest.mark.slow
def test_calibrate_export_and_apply_on_real_compas(compas, tmp_path, capsys):
    root, d = compas
    ckpt, preds = _train_and_predict(root, d, capsys)
    table = pd.read_csv(preds)
    assert {"id", "score", "pred", d.label, "race", "sex"} <= set(table.columns)

    out = tmp_path / "calib"
    code, text = invoke(["calibrate", "--predictions", preds, "--score", "score", "--label", d.label,
                         "--sensitive", "race", "--method", "auto", "--holdout", "0.5", "--out", out], capsys)
    assert code == 0, text
    assert "before" in text and "→" in text and "held-out" in text
    assert {p.name for p in out.iterdir()} == {"meta.json", "weights.safetensors", "report.json", "reliability.png"}
    report = json.loads((out / "report.json").read_text())
    assert report["evaluated_on"] == "holdout" and report["rows_fit"] + report["rows_evaluated"] == len(table)
    before, after = report["summary"]["before"], report["summary"]["after"]
    assert after["max_group_ece"] < before["max_group_ece"]
    cal = load_calibrator(out)
    assert isinstance(cal, GroupCalibrator) and cal.encoder_.columns_ == ["race"]

    # apply adds calibrated scores, reading the calibrator's sensitive column from the input
    p2 = tmp_path / "calibrated.csv"
    code, text = invoke(["apply", "--model", ckpt, "--data", root / "held.csv", "--calibrator", out, "--out", p2,
                         "--device", "cpu"], capsys)
    assert code == 0, text
    applied = pd.read_csv(p2)
    want = cal.transform(applied["score"].to_numpy(), pd.read_csv(root / "held.csv")[["race"]])
    assert np.allclose(applied["calibrated_score"], want, atol=1e-12)
    # a group the calibrator never saw gets the global map, announced in one plain line
    held = pd.read_csv(root / "held.csv")
    held.loc[:4, "race"] = "Martian"
    held.to_csv(tmp_path / "odd.csv", index=False)
    code, text = invoke(["apply", "--model", ckpt, "--data", tmp_path / "odd.csv", "--calibrator", out,
                         "--out", tmp_path / "odd_preds.csv", "--device", "cpu"], capsys)
    assert code == 0, text
    assert "warning: 5 row(s) belong to groups not seen when fitting" in text
    assert "UserWarning" not in text and ".py:" not in text

    # export: model + calibrator in one ONNX graph, checked on the real rows
    onnx_path = tmp_path / "fused.onnx"
    code, text = invoke(["export", "--model", ckpt, "--calibrator", out, "--data", root / "held.csv",
                         "--out", onnx_path], capsys)
    assert code == 0, text
    assert "model -> calibrator" in text
    from reprogram.cli.calibrate import _example_inputs
    from reprogram.models import load_frozen

    model = load_frozen(ckpt)
    x, frame = _example_inputs(model, root / "held.csv", None, None, 500)
    groups = cal.encoder_.transform(frame[["race"]], unknown="code").astype(np.int64)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    proba, _, raw = sess.run(None, {"input": x.numpy(), "group": groups})
    assert np.max(np.abs(raw - applied["score"].to_numpy()[:500])) < 1e-5
    # calibrated in the graph = the saved calibrator on the graph's own scores (a steep
    # isotonic stretch may turn a 1e-7 float32 difference upstream into more than 1e-5)
    assert np.max(np.abs(proba - cal._transform_codes(raw.astype(np.float64), groups))) < 1e-5

    # the calibrator alone
    code, text = invoke(["export", "--calibrator", out, "--out", tmp_path / "cal.onnx"], capsys)
    assert code == 0 and "score, group" in text, text


@pytest.mark.slow
def test_multicalibration_from_the_cli(compas, tmp_path, capsys):
    root, d = compas
    _, preds = _train_and_predict(root, d, capsys)
    out = tmp_path / "mc"
    code, text = invoke(["calibrate", "--predictions", preds, "--score", "score", "--label", d.label,
                         "--sensitive", "race", "sex", "--method", "multicalibration", "--alpha", "0.05",
                         "--min-cell-size", "100", "--out", out], capsys)
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    mc = report["multicalibration_error"]
    assert mc["after"] <= 0.05 < mc["before"]  # on the fit rows it reaches alpha
    code, text = invoke(["export", "--calibrator", out, "--out", tmp_path / "mc.onnx"], capsys)
    assert code == 0, text


def _preds(tmp_path, **cols):
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({"score": rng.uniform(size=n), "y": rng.integers(0, 2, n), "g": rng.choice(["a", "b"], n)})
    for k, v in cols.items():
        frame[k] = v(frame) if callable(v) else v
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("change,args,words", [
    ({}, ["--label", "nope"], ["'nope' not found", "score"]),
    ({"score": lambda f: f["score"] * 3}, [], ["[0, 1]", "logits"]),
    ({"score": lambda f: f["score"].where(f.index > 4)}, [], ["5 row(s) with NaN"]),
    ({"y": 1}, [], ["only one value"]),
    ({}, ["--method", "splines"], ["--method must be one of"]),
    ({}, ["--method", "multicalibration", "--score", "score", "score2"], ["binary"]),
])
def test_calibrate_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, change, args, words):
    path = _preds(tmp_path, score2=lambda f: 1 - f["score"], **change)
    base = {"--predictions": path, "--score": "score", "--label": "y", "--sensitive": "g", "--out": tmp_path / "cal"}
    for a in args:  # an option given in args replaces the default one
        base.pop(a, None)
    argv = ["calibrate"] + [str(a) for kv in base.items() for a in kv] + args
    code, text = invoke(argv, capsys)
    assert code == 2, text
    err = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and all(w in err[0] for w in words), text
    assert not (tmp_path / "cal").exists()


def test_export_refuses_bad_arguments(tmp_path, capsys):
    code, text = invoke(["export", "--out", tmp_path / "x.onnx"], capsys)
    assert code == 2 and "--calibrator alone" in text
    code, text = invoke(["export", "--calibrator", tmp_path, "--out", tmp_path / "x.txt"], capsys)
    assert code == 2 and ".onnx" in text
    code, text = invoke(["export", "--calibrator", tmp_path / "missing", "--out", tmp_path / "x.onnx"], capsys)
    assert code == 2 and "not a calibrator folder" in text
    assert not (tmp_path / "x.onnx").exists()
