"""GroupCalibrator: per-group maps, auto choice, fallbacks, shrinkage, unknown groups, sklearn conventions."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from reprogram.calibrate import GroupCalibrator, load_calibrator
from reprogram.errors import GroupError, InputError, NotFittedError
from reprogram.metrics import fairness_report


def skewed(n=30000, seed=0):
    """Scores miscalibrated differently per group: shifted up for F, down for M, more for race C."""
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n, p=[0.4, 0.6])
    race = rng.choice(["A", "B", "C"], n, p=[0.7, 0.28, 0.02])
    true = rng.beta(2, 2, n)
    y = (rng.uniform(size=n) < true).astype(np.int64)
    z = 1.5 * np.log(true / (1 - true)) + np.where(sex == "F", 1.0, -0.8) + np.where(race == "C", 1.5, 0.0)
    p = (1 / (1 + np.exp(-z))).astype(np.float32).astype(np.float64)
    return p, y, pd.DataFrame({"sex": sex, "race": race})


def test_group_maps_fix_group_miscalibration_on_held_out_rows():
    p, y, s = skewed(60000)
    fit, test = slice(0, 30000), slice(30000, None)
    gc = GroupCalibrator().fit(p[fit], y[fit], s[fit])
    before = fairness_report(y[test], y_score=p[test], sensitive=s["sex"][test]).overall
    after = fairness_report(y[test], y_score=gc.transform(p[test], s[test]), sensitive=s["sex"][test]).overall
    assert before["max_group_ece"] > 0.1
    assert after["max_group_ece"] < 0.03 and after["calibration_disparity"] < 0.02
    # one global map cannot do that: the groups need opposite corrections
    from reprogram.calibrate import IsotonicMap

    glob = IsotonicMap().fit(p[fit], y[fit])
    assert fairness_report(y[test], y_score=glob(p[test]), sensitive=s["sex"][test]).overall["max_group_ece"] > 0.1


def test_auto_picks_isotonic_for_big_groups_and_platt_for_small_ones():
    p, y, s = skewed()
    gc = GroupCalibrator(isotonic_min_size=1000).fit(p, y, s)
    sizes = dict(zip(gc.groups_, gc.group_sizes_))
    for g, method in gc.methods_.items():
        if g == "(global)":
            continue
        assert method == ("isotonic" if sizes[g] >= 1000 else "platt"), (g, sizes[g], method)
    assert gc.groups_ == sorted(gc.groups_) and len(gc.groups_) == 6
    assert "sex=F|race=C" in gc.groups_


def test_small_groups_fall_back_to_their_largest_parent():
    p, y, s = skewed()
    gc = GroupCalibrator(method="beta", min_group_size=700).fit(p, y, s)
    small = [g for g, n in zip(gc.groups_, gc.group_sizes_) if n < 700]
    assert small and set(gc.fallbacks_) == set(small)
    for g in small:  # sex=F|race=C -> sex=F: the sex parent has far more rows than race=C
        sex = g.split("|")[0]
        assert gc.map_of_group_[gc.groups_.index(g)] == sex
        assert "min_group_size 700" in gc.fallbacks_[g]
    # their rows are calibrated exactly by the parent's map
    rows = (s["sex"] == "F") & (s["race"] == "C")
    out = gc.transform(p[rows], s[rows])
    assert np.allclose(out, gc.maps_["sex=F"].transform(p[rows]))


def test_single_class_group_falls_back_or_errors_when_asked():
    p, y, s = skewed(5000)
    y = y.copy()
    y[(s["race"] == "C").to_numpy()] = 1  # race C: positives only
    gc = GroupCalibrator(min_group_size=5).fit(p, y, s["race"])
    assert "only class 1" in gc.fallbacks_["C"] and gc.map_of_group_[gc.groups_.index("C")] == "(global)"
    with pytest.raises(GroupError, match="'C'.*only class 1"):
        GroupCalibrator(min_group_size=5, fallback=False).fit(p, y, s["race"])
    with pytest.raises(GroupError, match="'C'"):
        GroupCalibrator(method={"C": "isotonic"}, min_group_size=5).fit(p, y, s["race"])


def test_shrinkage_blends_small_groups_toward_the_parent():
    p, y, s = skewed()
    gc = GroupCalibrator(method="platt", shrinkage=500.0).fit(p, y, s)
    i = gc.groups_.index("sex=F|race=C")
    n = gc.group_sizes_[i]
    assert gc.weights_[i] == pytest.approx(n / (n + 500.0))
    rows = ((s["sex"] == "F") & (s["race"] == "C")).to_numpy()
    own = gc.maps_["sex=F|race=C"].transform(p[rows])
    parent = gc.maps_[gc.parent_of_group_[i]].transform(p[rows])
    w = gc.weights_[i]
    assert np.allclose(gc.transform(p[rows], s[rows]), w * own + (1 - w) * parent)
    # big groups hardly move
    big = gc.groups_.index("sex=M|race=A")
    assert gc.weights_[big] > 0.95


def test_unknown_groups_get_the_global_map_with_a_warning():
    p, y, s = skewed(5000)
    gc = GroupCalibrator().fit(p, y, s)
    new = s.iloc[:10].copy()
    new.loc[new.index[:3], "race"] = "Z"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = gc.transform(p[:10], new)
    assert any("3 row(s)" in str(x.message) for x in w)
    assert np.allclose(out[:3], gc.maps_["(global)"].transform(p[:3]))
    assert np.allclose(out[3:], gc.transform(p[3:10], s.iloc[3:10]))


def test_torch_module_matches_transform_including_unknown_and_blended_groups():
    p, y, s = skewed(20000)
    for kw in ({}, {"shrinkage": 300.0}, {"method": {"sex=M|race=A": "histogram", "sex=F|race=A": "beta"}}):
        gc = GroupCalibrator(**kw).fit(p, y, s)
        codes = gc.encoder_.transform(s).astype(np.int64)
        codes[:50] = -1
        codes[50:60] = len(gc.groups_) + 3  # past the end: unknown as well
        q = p.astype(np.float32)
        with torch.no_grad():
            got = gc.to_module()(torch.from_numpy(q), torch.from_numpy(codes)).double().numpy()
        want = gc._transform_codes(q.astype(np.float64), codes)
        assert np.max(np.abs(got - want)) < 1e-6, kw


def test_multiclass_group_calibration():
    rng = np.random.default_rng(0)
    n, c = 12000, 3
    g = rng.choice(["a", "b"], n)
    logits = rng.normal(size=(n, c)) * 1.5
    temp = np.where(g == "a", 0.5, 2.0)[:, None]  # one group over-, one underconfident
    true = np.exp(logits / temp)
    true /= true.sum(1, keepdims=True)
    y = (true.cumsum(1) > rng.uniform(size=(n, 1))).argmax(1)
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    gc = GroupCalibrator(method="temperature").fit(p, y, g)
    ta, tb = (gc.maps_[k].temperature_ for k in ("a", "b"))
    assert ta == pytest.approx(0.5, rel=0.15) and tb == pytest.approx(2.0, rel=0.15)
    out = gc.transform(p, g)
    assert np.allclose(out.sum(1), 1)
    with torch.no_grad():
        got = gc.to_module()(torch.tensor(p, dtype=torch.float32), torch.from_numpy(gc.encoder_.transform(g)))
    assert np.max(np.abs(got.double().numpy() - gc.transform(p.astype(np.float32).astype(np.float64), g))) < 1e-6


def test_save_load_round_trip_and_clone(tmp_path):
    p, y, s = skewed(8000)
    gc = GroupCalibrator(method={"sex=F|race=A": "beta"}, shrinkage=50.0, min_group_size=200).fit(p, y, s)
    gc.save(tmp_path / "gc")
    back = load_calibrator(tmp_path / "gc")
    assert back.groups_ == gc.groups_ and back.fallbacks_ == gc.fallbacks_
    assert np.array_equal(back.transform(p, s), gc.transform(p, s))
    fresh = clone(gc)
    assert fresh.get_params() == gc.get_params() and not hasattr(fresh, "maps_")
    with pytest.raises(NotFittedError):
        fresh.transform(p, s)


def test_bad_arguments_are_refused():
    p, y, s = skewed(2000)
    with pytest.raises(InputError, match="unknown calibration method 'cubic'"):
        GroupCalibrator(method="cubic").fit(p, y, s)
    with pytest.raises(InputError, match="rows"):
        GroupCalibrator().fit(p, y, s.iloc[:100])
    with pytest.raises(InputError, match="shrinkage"):
        GroupCalibrator(shrinkage=-1).fit(p, y, s)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        GroupCalibrator().fit(p * 2, y, s)
