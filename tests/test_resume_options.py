"""A resume with other training options than the checkpoint's is refused in one line,
naming the option, instead of quietly mixing the old run's state with the new options."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from reprogram.data.datasets import TabularDataset
from reprogram.data.groups import GroupEncoder
from reprogram.errors import InputError
from reprogram.models import FrozenModel
from reprogram.train import Trainer
from reprogram.triggers import FeatureTrigger, TriggerFitter


def _data(n: int = 128) -> TabularDataset:
    rng = np.random.default_rng(0)
    names = np.array(["a", "b"])[rng.integers(0, 2, n)]
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    groups = GroupEncoder().fit(names)
    return TabularDataset(x, y, groups.transform(names), groups=groups, classes=[0, 1])


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _trainer(ckpt, **kw) -> Trainer:
    args = {"epochs": 2, "batch_size": 32, "lr": 0.01, "device": "cpu", "progress": False, "checkpoint_dir": ckpt,
            "schedule": "cosine", **kw}
    return Trainer(_net(), **args)


@pytest.mark.parametrize(("option", "value"), [("epochs", 4), ("lr", 0.1), ("batch_size", 16), ("seed", 3)])
def test_trainer_refuses_a_resume_with_changed_options(tmp_path, option, value):
    ds = _data()
    _trainer(tmp_path).fit(ds)
    with pytest.raises(InputError, match=rf"{option}=") as err:
        _trainer(tmp_path, resume=True, **{option: value}).fit(ds)
    assert "\n" not in str(err.value)
    resumed = _trainer(tmp_path, resume=True).fit(ds)  # the same options resume
    assert [h["epoch"] for h in resumed.history_] == [1, 2]


def _fitter(ckpt, **kw) -> TriggerFitter:
    args = {"lam": 1.0, "epochs": 2, "batch_size": 32, "lr": 0.05, "device": "cpu", "progress": False,
            "checkpoint_dir": ckpt, **kw}
    return TriggerFitter(FrozenModel(_net(), input_kind="tabular"), FeatureTrigger(4), "eo", **args)


@pytest.mark.parametrize(("option", "value"), [("lr", 0.2), ("lam", 2.0), ("rule", "projection"), ("seed", 1)])
def test_fitter_refuses_a_resume_with_changed_options(tmp_path, option, value):
    ds = _data()
    _fitter(tmp_path).fit(ds)
    with pytest.raises(InputError, match=rf"{'lambda' if option == 'lam' else option}="):
        _fitter(tmp_path, resume=True, **{option: value}).fit(ds)
    assert [h["epoch"] for h in _fitter(tmp_path, resume=True, epochs=3).fit(ds).history_] == [1, 2, 3]


def test_fitter_refuses_a_checkpoint_past_its_epochs(tmp_path):
    ds = _data()
    _fitter(tmp_path, epochs=3).fit(ds)
    with pytest.raises(InputError, match="epoch 3.*epochs=2"):
        _fitter(tmp_path, epochs=2, resume=True).fit(ds)
