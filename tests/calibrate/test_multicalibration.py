"""Multicalibration by patching (HKRR 2018): fit, replay, torch/ONNX export, save/load, errors."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from reprogram.artifacts import read_artifact, write_artifact
from reprogram.calibrate.multicalibration import Multicalibrator, multicalibrate, multicalibration_error
from reprogram.errors import InputError, LengthMismatchError, MissingValuesError, NotFittedError


def intersection_data(n, seed, shift=0.15, drop_mc=False):
    """Two overlapping sensitive columns; the score is the true probability except in sex=F & race=B (+shift)."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    race = rng.choice(["A", "B", "C"], n, p=[0.5, 0.3, 0.2])
    if drop_mc:  # no (M, C) row: that combination is unseen at fit
        race = np.where((sex == "M") & (race == "C"), "A", race)
    p = rng.beta(2, 2, n)
    y = (rng.random(n) < p).astype(np.int64)
    s = p.copy()
    m = (sex == "F") & (race == "B")
    s[m] = np.clip(s[m] + shift, 0, 1)
    return s, y, pd.DataFrame({"sex": sex, "race": race})


def reference_replay(scores, names_of_row, mc):
    """Independent per-row replay: names_of_row[i] is the set of collection names row i belongs to."""
    out = []
    for s0, names in zip(np.asarray(scores, dtype=np.float32), names_of_row):
        s = np.float32(s0)
        for c, b, d in mc.patches_:
            b_now = min(int(np.floor(s * np.float32(mc.n_bins))), mc.n_bins - 1)
            if mc.collection_[c] in names and b_now == b:
                s = np.float32(min(max(s + np.float32(d), np.float32(0)), np.float32(1)))
        out.append(float(s))
    return np.array(out)


def row_names(sex, race):
    return {"everyone", f"sex={sex}", f"race={race}", f"sex={sex}|race={race}"}


@pytest.fixture(scope="module")
def fitted():
    s, y, sens = intersection_data(40_000, seed=0)
    mc = Multicalibrator(alpha=0.02, min_cell_size=200)
    fit_scores = mc.fit_transform(s, y, sens)
    return mc, s, y, sens, fit_scores


def test_patches_the_miscalibrated_intersection_and_generalises(fitted):
    mc, s, y, sens, fit_scores = fitted
    assert mc.converged_ and 0 < mc.n_iter_ == len(mc.patches_) <= mc.max_iter
    assert mc.collection_[:6] == ["everyone", "sex=F", "sex=M", "race=A", "race=B", "race=C"]
    assert "sex=F|race=B" in mc.collection_ and len(mc.collection_) == 12
    assert mc.groups_ == ["sex=F|race=A", "sex=F|race=B", "sex=F|race=C", "sex=M|race=A", "sex=M|race=B",
                          "sex=M|race=C"]
    # the worst cell is in the shifted intersection, and the first patch pulls it down by about the shift
    c, b, d = mc.patches_[0]
    assert mc.collection_[c] == "sex=F|race=B" and -0.25 < d < -0.1
    assert mc.error_before_ > 0.12

    # every cell with enough mass is within alpha on the fit data
    after = multicalibration_error(fit_scores, y, sens)
    assert after["max"] == pytest.approx(mc.error_after_) and after["max"] <= mc.alpha
    counted = after["cells"][after["cells"]["counted"]]
    assert (counted["n"] >= 200).all() and (counted["gap"] <= mc.alpha + 1e-12).all()
    assert multicalibration_error(s, y, sens)["max"] == pytest.approx(mc.error_before_)

    # held out, same distribution: the error drops well below where it was (big cells, less noise)
    s2, y2, sens2 = intersection_data(100_000, seed=1)
    before = multicalibration_error(s2, y2, sens2, min_cell_size=1000)
    fixed = multicalibration_error(mc.transform(s2, sens2), y2, sens2, min_cell_size=1000)
    assert before["worst_cell"][0] == "sex=F|race=B"
    assert fixed["max"] < 0.4 * before["max"]
    inter = fixed["cells"][(fixed["cells"]["group"] == "sex=F|race=B") & fixed["cells"]["counted"]]
    assert (inter["gap"] < 0.06).all()


def test_transform_replays_the_fit_exactly_and_matches_a_per_row_reference(fitted):
    mc, s, y, sens, fit_scores = fitted
    assert np.array_equal(mc.transform(s, sens), fit_scores)
    assert np.array_equal(mc(s, sens), fit_scores)
    rows = np.arange(0, len(s), 397)
    names = [row_names(a, b) for a, b in zip(sens["sex"].to_numpy()[rows], sens["race"].to_numpy()[rows])]
    assert np.array_equal(reference_replay(s[rows], names, mc), fit_scores[rows])


def test_hand_checked_two_patches():
    # six rows all at 0.55 (bin 5); group a: y = 1,1,1; group b: y = 0,1,0
    s = np.full(6, 0.55)
    y = np.array([1, 1, 1, 0, 1, 0])
    g = np.array(["a", "a", "a", "b", "b", "b"])
    # cells of bin 5: everyone 4/6 - .55 = .1167, a: 1 - .55 = .45, b: 1/3 - .55 = -.2167 -> patch a by +.45;
    # then a sits at 1.0 (bin 9, gap 0) and everyone/bin 5 = b/bin 5 = -.2167: everyone comes first in C
    mc = Multicalibrator(alpha=0.1, min_cell_size=3)
    out = mc.fit_transform(s, y, g)
    assert mc.collection_ == ["everyone", "a", "b"] and mc.groups_ == ["a", "b"]
    assert [(c, b) for c, b, _ in mc.patches_] == [(1, 5), (0, 5)]
    assert mc.patches_[0][2] == pytest.approx(0.45, abs=1e-6)
    assert mc.patches_[1][2] == pytest.approx(1 / 3 - 0.55, abs=1e-6)
    assert np.allclose(out, [1, 1, 1, 1 / 3, 1 / 3, 1 / 3], atol=1e-6)
    assert mc.error_before_ == pytest.approx(0.45) and mc.error_after_ == pytest.approx(0, abs=1e-6)
    # a looser alpha stops after the first patch: |-.2167| <= .25
    one = multicalibrate(s, y, g, alpha=0.25, min_cell_size=3)
    assert len(one.patches_) == 1 and one.converged_ and one.error_after_ == pytest.approx(0.55 - 1 / 3)


def test_unseen_combination_gets_the_patches_of_the_groups_it_matches():
    s, y, sens = intersection_data(30_000, seed=2, drop_mc=True)
    mc = multicalibrate(s, y, sens, min_cell_size=150)
    assert "sex=M|race=C" not in mc.groups_ and "race=C" in mc.collection_
    # a score in the bin of the first patch of sex=M or race=C: the unseen (M, C) row must get it
    first = next(b for c, b, _ in mc.patches_ if mc.collection_[c] in ("sex=M", "race=C"))
    new = pd.DataFrame({"sex": ["M", "M", "F", "X"], "race": ["C", "C", "B", "Z"]})
    scores = np.array([0.33, (first + 0.5) / mc.n_bins, 0.64, 0.5])
    with pytest.warns(UserWarning, match="3 of 4 row"):
        got = mc.transform(scores, new)
    names = [row_names("M", "C"), row_names("M", "C"), row_names("F", "B"), {"everyone"}]
    assert np.array_equal(got, reference_replay(scores, names, mc))
    assert got[1] != reference_replay(scores[1:2], [{"everyone"}], mc)[0]
    with pytest.raises(InputError, match="expected 2 sensitive column"):
        mc.transform(scores, new["sex"])


def test_sensitive_in_every_shape_gives_the_same_patches():
    s, y, sens = intersection_data(8000, seed=3)
    kw = dict(alpha=0.03, min_cell_size=100)
    base = multicalibrate(s, y, sens, **kw)
    for shape in ({"sex": sens["sex"].to_numpy(), "race": sens["race"].to_numpy()},
                  [sens["sex"].to_numpy(), sens["race"].to_numpy()], sens.to_numpy()):
        other = multicalibrate(s, y, shape, **kw)
        assert other.patches_ == base.patches_
    single = multicalibrate(s, y, sens["race"].to_numpy(), **kw)
    assert single.collection_ == ["everyone", "A", "B", "C"] and single.groups_ == ["A", "B", "C"]


@pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning")
def test_torch_module_and_onnx_match_transform(fitted, tmp_path):
    import onnxruntime as ort

    mc, s, y, sens, _ = fitted
    s2, _, sens2 = intersection_data(5000, seed=4)
    sens2.loc[:2, ["sex", "race"]] = ["X", "Z"]  # unseen values: -1, member of "everyone" only (module and transform)
    with pytest.warns(UserWarning, match="not seen"):
        ref = mc.transform(s2, sens2)
    group = mc._groups.enc.transform(sens2, unknown="code")
    assert (group[:3] == -1).all() and (group[3:] >= 0).all()
    module = mc.to_module().eval()
    score_t, group_t = torch.tensor(s2, dtype=torch.float32), torch.tensor(group, dtype=torch.int64)
    with torch.no_grad():
        got = module(score_t, group_t).numpy()
    assert got.dtype == np.float32 and np.abs(got - ref).max() <= 1e-6
    # the numpy twin the ONNX exporter checks against: same numbers, out-of-range codes are unknown too
    assert np.array_equal(mc._transform_codes(s2, group), got.astype(np.float64))
    odd = np.where(group < 0, len(mc.groups_) + 3, group)
    with torch.no_grad():
        assert np.array_equal(module(score_t, torch.tensor(odd)).numpy(), got)
    assert np.array_equal(mc._transform_codes(s2, odd), ref)

    path = tmp_path / "mc.onnx"
    torch.onnx.export(module, (score_t[:4], group_t[:4]), str(path), input_names=["score", "group"],
                      output_names=["calibrated"],
                      dynamic_axes={"score": {0: "batch"}, "group": {0: "batch"}, "calibrated": {0: "batch"}},
                      dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 5000):
        out = sess.run(None, {"score": s2[:n].astype(np.float32), "group": group[:n].astype(np.int64)})[0]
        assert out.shape == (n,) and np.abs(out - ref[:n]).max() <= 1e-5

    # no patch at all: the graph is the identity but keeps both inputs
    calm = multicalibrate(np.full(400, 0.5), np.tile([0, 1], 200), np.repeat(["a", "b"], 200), min_cell_size=100)
    assert calm.patches_ == []
    torch.onnx.export(calm.to_module(), (score_t[:4], group_t[:4] % 2), str(path), input_names=["score", "group"],
                      output_names=["calibrated"],
                      dynamic_axes={"score": {0: "batch"}, "group": {0: "batch"}, "calibrated": {0: "batch"}},
                      dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["score", "group"]
    out = sess.run(None, {"score": s2[:7].astype(np.float32), "group": np.array([0, 1, -1, 0, 1, -1, 0])})[0]
    assert np.array_equal(out, s2[:7].astype(np.float32))


def test_save_and_load_round_trip(fitted, tmp_path):
    mc, s, y, sens, fit_scores = fitted
    tensors, meta = mc._state()
    assert meta["calibrator"] == "Multicalibrator" and meta["groups"] == mc.groups_
    write_artifact(tmp_path / "calib", "calibrator", tensors, meta)
    t2, m2 = read_artifact(tmp_path / "calib", "calibrator")
    back = Multicalibrator._from_state(t2, m2)
    assert back.patches_ == mc.patches_ and back.collection_ == mc.collection_ and back.groups_ == mc.groups_
    assert back.error_after_ == mc.error_after_ and back.converged_ and back.n_iter_ == mc.n_iter_
    assert np.array_equal(back.transform(s, sens), fit_scores)
    group = torch.tensor(mc._groups.enc.transform(sens))
    with torch.no_grad():
        assert torch.equal(back.to_module()(torch.tensor(s, dtype=torch.float32), group),
                           mc.to_module()(torch.tensor(s, dtype=torch.float32), group))
    # a calibrator with no patch (already calibrated) also round-trips
    calm = multicalibrate(np.full(400, 0.5), np.tile([0, 1], 200), np.repeat(["a", "b"], 200), min_cell_size=100)
    assert calm.patches_ == [] and calm.converged_
    write_artifact(tmp_path / "calm", "calibrator", *calm._state())
    again = Multicalibrator._from_state(*read_artifact(tmp_path / "calm", "calibrator"))
    assert np.array_equal(again.transform(np.array([0.2, 0.9]), ["a", "b"]), [np.float32(0.2), np.float32(0.9)])
    with pytest.raises(InputError, match="not a Multicalibrator"):
        Multicalibrator._from_state(tensors, {**meta, "calibrator": "GroupCalibrator"})


def test_feature_threshold_groups():
    rng = np.random.default_rng(5)
    n = 20_000
    age = rng.integers(18, 80, n)
    sex = rng.choice(["F", "M"], n)
    p = rng.beta(2, 2, n)
    y = (rng.random(n) < p).astype(int)
    s = np.where(age > 60, np.clip(p - 0.2, 0, 1), p)  # miscalibrated by age only, not by sex
    feats = pd.DataFrame({"age": age})
    mc = multicalibrate(s, y, sex, feature_groups=[("age", ">", 60), ("age", "<=", 30.5)], features=feats,
                        min_cell_size=150)
    assert mc.collection_ == ["everyone", "F", "M", "age>60", "age<=30.5"]
    assert mc.collection_[mc.patches_[0][0]] == "age>60" and mc.patches_[0][2] > 0.1
    assert mc.converged_ and mc.error_after_ <= 0.02
    assert np.array_equal(mc.transform(s, sex, features=feats), mc.fit_transform(s, y, sex, feats))
    with pytest.raises(InputError, match="need features"):
        mc.transform(s, sex)
    with pytest.raises(InputError, match="feature 'age' not found"):
        mc.transform(s, sex, features={"years": age})
    with pytest.raises(InputError, match="feature-threshold groups"):
        mc.to_module()
    with pytest.raises(InputError, match="feature-threshold groups"):
        mc._transform_codes(s, np.zeros(n, dtype=np.int64))
    with pytest.raises(InputError, match="op must be one of"):
        multicalibrate(s, y, sex, feature_groups=[("age", "=>", 60)], features=feats)


def test_warns_when_it_does_not_converge():
    s, y, sens = intersection_data(8000, seed=6)
    with pytest.warns(UserWarning, match="did not converge in max_iter=1"):
        mc = multicalibrate(s, y, sens, max_iter=1, min_cell_size=100)
    assert mc.n_iter_ == 1 and not mc.converged_ and mc.error_after_ > mc.alpha


def test_multicalibration_error_report():
    s, y, sens = intersection_data(6000, seed=7)
    rep = multicalibration_error(s, y, sens, n_bins=5, min_cell_size=100)
    cells = rep["cells"]
    assert list(cells.columns) == ["group", "bin", "n", "mean_score", "mean_y", "gap", "counted"]
    assert cells["bin"].between(0, 4).all() and (cells["n"] > 0).all()
    i = cells.loc[cells["counted"], "gap"].idxmax()
    assert rep["max"] == pytest.approx(cells.loc[i, "gap"]) and rep["worst_cell"] == (cells.loc[i, "group"],
                                                                                       cells.loc[i, "bin"])
    everyone = cells[cells["group"] == "everyone"]
    assert everyone["n"].sum() == len(s)
    m = (s * 5).astype(int) == 2
    row = everyone[everyone["bin"] == 2].iloc[0]
    assert row["mean_y"] == pytest.approx(y[m].mean()) and row["mean_score"] == pytest.approx(s[m].mean(), abs=1e-6)
    none = multicalibration_error(s[:50], y[:50], sens.iloc[:50], min_cell_size=200)
    assert np.isnan(none["max"]) and none["worst_cell"] is None


@pytest.mark.parametrize("change, error, match", [
    (dict(scores=np.r_[1.2, np.full(9, 0.5)]), InputError, r"\[0, 1\].*1 of 10 rows"),
    (dict(scores=np.r_[np.nan, np.nan, np.full(8, 0.5)]), MissingValuesError, "2 missing value.*of 10 rows"),
    (dict(scores=np.full((10, 2), 0.5)), InputError, r"scores\[:, 1\]"),
    (dict(y=np.r_[np.nan, np.zeros(9)]), MissingValuesError, "labels have 1 missing"),
    (dict(y=np.r_[2, np.zeros(9)]), InputError, "binary 0/1.*2"),
    (dict(y=np.array(["yes", "no"] * 5)), InputError, "binary"),
    (dict(y=np.zeros(9)), LengthMismatchError, "9 rows but scores have 10"),
    (dict(sensitive=np.array(["a", "b"] * 4)), LengthMismatchError, "8 rows but the data has 10"),
    (dict(alpha=0.0), InputError, "alpha must be a number > 0"),
    (dict(alpha=-1), InputError, "alpha"),
    (dict(step=1.5), InputError, "step"),
    (dict(n_bins=0), InputError, "n_bins"),
    (dict(min_cell_size=50), InputError, "no .group, bin. cell has 50 rows"),
])
def test_bad_input_gets_one_clear_error(change, error, match):
    args = dict(scores=np.full(10, 0.5), y=np.tile([0, 1], 5), sensitive=np.array(["a", "b"] * 5), alpha=0.02,
                step=1.0, n_bins=10, min_cell_size=2)
    args.update(change)
    with pytest.raises(error, match=match) as e:
        multicalibrate(args.pop("scores"), args.pop("y"), args.pop("sensitive"), **args)
    assert "\n" not in str(e.value)


def test_not_fitted():
    with pytest.raises(NotFittedError):
        Multicalibrator().transform([0.5], ["a"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "alpha=0.02" in repr(Multicalibrator())
