"""ONNX export: every calibrator and the fused model match numpy/PyTorch in onnxruntime."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from reprogram.calibrate import MAPS, GroupCalibrator, IsotonicMap, export_calibrator_onnx, export_onnx, make_map
from reprogram.calibrate.maps import BinaryMapModule
from reprogram.errors import ExportError, InputError
from reprogram.models import load_frozen
from reprogram.train.models import mlp, small_cnn
from reprogram.triggers import BorderTrigger, FeatureTrigger


def run(path, **feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def scores(n=3000, seed=0, classes=2):
    rng = np.random.default_rng(seed)
    if classes == 2:
        true = rng.beta(2, 3, n)
        y = (rng.uniform(size=n) < true).astype(np.int64)
        p = 1 / (1 + np.exp(-(2 * np.log(true / (1 - true)) + 0.3)))
        return p.astype(np.float32).astype(np.float64), y
    p = rng.dirichlet(np.ones(classes), n).astype(np.float32).astype(np.float64)
    p /= p.sum(1, keepdims=True)
    y = (p.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    return p, y


@pytest.mark.parametrize("classes", [2, 3])
@pytest.mark.parametrize("name", sorted(MAPS))
def test_each_map_exports_and_matches_numpy_for_any_batch(name, classes, tmp_path):
    p, y = scores(classes=classes)
    m = make_map(name).fit(p, y)
    path = export_calibrator_onnx(m, tmp_path / "m.onnx")
    for n in (1, 7, 1000):
        x = p[:n].astype(np.float32)
        (got,) = run(path, score=x)
        assert got.shape == x.shape
        assert np.max(np.abs(got - m.transform(x.astype(np.float64)))) <= 1e-5


def test_isotonic_export_is_exact_between_knots_unlike_a_nearest_knot_lookup(tmp_path):
    # skl2onnx turns isotonic calibration into a nearest-threshold lookup, which is off
    # between thresholds; ours interpolates as scikit-learn does
    p, y = scores(20000, seed=1)
    m = IsotonicMap().fit(p, y)
    x, v = m.tables_[0].x, m.tables_[0].y
    mid = ((x[1:] + x[:-1]) / 2).astype(np.float32)
    path = export_calibrator_onnx(m, tmp_path / "iso.onnx")
    (got,) = run(path, score=mid)
    want = m.transform(mid.astype(np.float64))
    nearest = v[np.abs(mid.astype(np.float64)[:, None] - x[None, :]).argmin(1)]
    assert np.max(np.abs(got - want)) <= 1e-5
    assert np.max(np.abs(nearest - want)) > 1e-3  # what the nearest lookup would have got wrong


def test_group_calibrator_export_takes_a_group_index(tmp_path):
    rng = np.random.default_rng(0)
    p, y = scores(6000)
    s = {"sex": rng.choice(["F", "M"], 6000), "race": rng.choice(["A", "B", "C"], 6000, p=[0.6, 0.35, 0.05])}
    gc = GroupCalibrator(shrinkage=100.0, isotonic_min_size=800).fit(p, y, s)
    path = export_calibrator_onnx(gc, tmp_path / "gc.onnx")
    codes = gc.encoder_.transform(s).astype(np.int64)
    codes[:20] = -1
    (got,) = run(path, score=p.astype(np.float32), group=codes)
    assert np.max(np.abs(got - gc._transform_codes(p, codes))) <= 1e-5


def test_a_broken_export_fails_loudly_and_leaves_no_file(tmp_path):
    p, y = scores()

    class Wrong(IsotonicMap):
        def to_module(self):  # a module that computes something else than transform
            return BinaryMapModule(make_map("platt").fit(p, y).to_module().bank)

    target = tmp_path / "wrong.onnx"
    with pytest.raises(ExportError, match="differs"):
        export_calibrator_onnx(Wrong().fit(p, y), target)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def tabular_model(tmp_path_factory):
    torch.manual_seed(0)
    net = mlp(6, 2, hidden=(16, 8)).eval()
    path = tmp_path_factory.mktemp("m") / "mlp.pt"
    torch.jit.script(net).save(str(path))
    return load_frozen(path)


def test_fused_model_trigger_and_group_calibrator_in_one_graph(tabular_model, tmp_path):
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.normal(size=(3000, 6)), dtype=torch.float32)
    trig = FeatureTrigger(6, features=[0, 2, 3])
    with torch.no_grad():
        trig.theta.normal_(0, 1)
        p = torch.softmax(tabular_model(trig(X)), -1)[:, 1].double().numpy()
    groups = rng.choice(["u", "v", "w"], 3000)
    y = (rng.uniform(size=3000) < np.clip(p + np.where(groups == "u", 0.2, -0.1), 0, 1)).astype(int)
    gc = GroupCalibrator(isotonic_min_size=500).fit(p, y, groups)
    codes = gc.encoder_.transform(groups)
    path = export_onnx(tabular_model, trig, gc, path=tmp_path / "fused.onnx", example=X[:64], groups=codes[:64])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input", "group"]
    assert [o.name for o in sess.get_outputs()] == ["probabilities", "logits", "uncalibrated"]
    for n in (1, 256):
        proba, logits, raw = sess.run(None, {"input": X[:n].numpy(), "group": codes[:n].astype(np.int64)})
        with torch.no_grad():
            want_logits = tabular_model(trig(X[:n])).numpy()
        want_raw = torch.softmax(torch.from_numpy(want_logits).double(), -1)[:, 1].numpy()
        assert np.max(np.abs(logits - want_logits)) < 1e-5
        assert np.max(np.abs(raw - want_raw)) < 1e-6
        assert proba.shape == (n,)
        # the calibrated output is the group map of the graph's own uncalibrated probability
        assert np.max(np.abs(proba - gc._transform_codes(raw.astype(np.float64), codes[:n]))) <= 1e-5


def test_fused_model_without_calibrator_or_trigger(tabular_model, tmp_path):
    X = torch.randn(32, 6)
    path = export_onnx(tabular_model, path=tmp_path / "plain.onnx", example=X)
    proba, _ = run(path, input=X.numpy())
    with torch.no_grad():
        assert np.allclose(proba, torch.softmax(tabular_model(X), -1)[:, 1].numpy(), atol=1e-6)


def test_fused_image_model_with_border_trigger_and_map(tmp_path):
    torch.manual_seed(0)
    net = small_cnn(3, channels=1, width=8).eval()
    ts = tmp_path / "cnn.pt"
    torch.jit.script(net).save(str(ts))
    model = load_frozen(ts)
    x = torch.rand(40, 1, 12, 12)
    trig = BorderTrigger((12, 12), 2, channels=1, mean=[0.5], std=[0.25])
    with torch.no_grad():
        for q in trig.parameters():
            q.normal_()
        p = torch.softmax(model(trig(x)), -1).double().numpy()
    y = np.arange(40) % 3
    cal = make_map("temperature").fit(p, y)
    path = export_onnx(model, trig, cal, path=tmp_path / "img.onnx", example=x[:8])
    proba, _, _ = run(path, input=x.numpy())
    assert proba.shape == (40, 3)
    assert np.max(np.abs(proba - cal.transform(p.astype(np.float32).astype(np.float64)))) <= 1e-5


def test_export_refuses_mismatched_calibrator_and_bad_example(tabular_model, tmp_path):
    p, y = scores(classes=3)
    with pytest.raises(InputError, match="3 classes"):
        export_onnx(tabular_model, calibrator=make_map("platt").fit(p, y), path=tmp_path / "x.onnx",
                    example=torch.randn(4, 6))
    with pytest.raises(InputError, match="at least 2"):
        export_onnx(tabular_model, path=tmp_path / "x.onnx", example=torch.randn(1, 6))
    assert not (tmp_path / "x.onnx").exists()
