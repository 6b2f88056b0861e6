"""Pareto sweeps: the front, the files, and a real sweep of a method."""

import json

import numpy as np
import pytest
import torch

from reprogram.train.models import mlp
from reprogram.train.pareto import ParetoPoint, mark, pareto_front, pareto_sweep, plot_pareto, save_sweep


def test_pareto_front_by_hand():
    acc = [0.9, 0.8, 0.85, 0.7, 0.9]
    gap = [0.3, 0.1, 0.2, 0.15, 0.35]
    # (0.9, .35) is dominated by (0.9, .3); (0.7, .15) by (0.8, .1)
    assert pareto_front(acc, gap).tolist() == [True, True, True, False, False]
    # "higher is fairer" figures (ratios) flip the second axis
    assert pareto_front([0.9, 0.8], [0.5, 0.9], fairness_mode="max").tolist() == [True, True]
    assert pareto_front([0.9, 0.8], [0.9, 0.5], fairness_mode="max").tolist() == [True, False]


def test_save_sweep_writes_json_csv_and_a_png(tmp_path):
    pts = mark([ParetoPoint("a", "eta", v, 0.9 - v / 10, 0.3 - v / 10, "demographic_parity_difference")
                for v in (0.0, 1.0, 2.0)] + [ParetoPoint("erm", None, None, 0.8, 0.3, "demographic_parity_difference")])
    paths = save_sweep(pts, tmp_path)
    rows = json.loads(paths["json"].read_text())
    assert [r["pareto"] for r in rows] == [True, True, True, False]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths["csv"].read_text().splitlines()[0].startswith("method,parameter,value")
    with pytest.raises(Exception):
        plot_pareto([], tmp_path / "x.png")


def test_lagrangian_sweep_trades_accuracy_for_fairness(biased_splits):
    train, val, _ = biased_splits

    def build():
        torch.manual_seed(0)
        return mlp(train.n_features, 2, hidden=(32,), dropout=0.0)

    pts = pareto_sweep("lagrangian", [0.4, 0.05], train, val, build_model=build,
                       trainer_kw={"epochs": 10, "batch_size": 128, "lr": 1e-2})
    assert [p.value for p in pts] == [0.4, 0.05]
    loose, tight = pts
    assert tight.fairness < loose.fairness
    assert any(p.pareto for p in pts) and np.isfinite([p.accuracy for p in pts]).all()
