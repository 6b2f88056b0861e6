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


@pytest.mark.parametrize(("method", "first", "second", "named"), [
    ("fas", {"c": 0.5}, {"c": 0.7}, "objective.c=0.5"),
    ("regularizer", {"eta": 1.0}, {"eta": 4.0}, "objective.eta=1.0"),
    ("groupdro", {"step_size": 0.01}, {"step_size": 0.1}, "objective.step_size=0.01"),
    # reweighting's strength lives only in the weights: their fingerprint differs
    ("reweight", {"strength": 1.0}, {"strength": 2.0}, "objective.sample_weight_sha256="),
    ("resample", {"strength": 1.0}, {"strength": 2.0}, "sampler.strength=1.0"),
])
def test_trainer_refuses_a_resume_with_changed_method_settings(tmp_path, method, first, second, named):
    from reprogram.train.methods import make_method

    ds = _data()

    def run(resume, **options):
        setup = make_method(method, ds, n_classes=2, **options)
        return _trainer(tmp_path, resume=resume, objective=setup.objective, sampler=setup.sampler).fit(ds)

    run(False, **first)
    with pytest.raises(InputError, match=named.replace(".", r"\.")) as err:
        run(True, **second)
    assert "\n" not in str(err.value)
    assert [h["epoch"] for h in run(True, **first).history_] == [1, 2]  # the same settings resume


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


def test_a_fresh_run_in_a_used_checkpoint_folder_keeps_its_own_checkpoints(tmp_path):
    from reprogram.checkpoint import latest_checkpoint, save_checkpoint

    t = {"rng.torch": torch.zeros(1)}
    for epoch in range(1, 6):  # an earlier run's epochs 4 and 5 stay
        save_checkpoint(tmp_path, epoch, t, {"run": "old"})
    (tmp_path / ".epoch-00005.x.old").mkdir()  # a kill between the two renames of a replace
    save_checkpoint(tmp_path, 1, t, {"run": "new"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-00001"]
    _, meta, _ = latest_checkpoint(tmp_path)
    assert (meta["run"], meta["epoch"]) == ("new", 1)


def test_trainer_fresh_start_in_a_used_folder_then_resume_continues_the_new_run(tmp_path):
    ds = _data()
    _trainer(tmp_path, epochs=3).fit(ds)
    fresh = _trainer(tmp_path, epochs=2, lr=0.02).fit(ds)  # no resume: starts afresh
    resumed = _trainer(tmp_path, epochs=2, lr=0.02, resume=True).fit(ds)
    assert resumed.history_ == fresh.history_


def test_fitter_refuses_a_resume_with_another_trigger_setting(tmp_path):
    ds = _data()
    _fitter(tmp_path).fit(ds)
    model = FrozenModel(_net(), input_kind="tabular")
    other = FeatureTrigger(4, features=[0, 1])  # its mask buffer would be overwritten by the checkpoint's
    with pytest.raises(InputError, match=r"trigger\.features=None, this run has trigger\.features=\[0, 1\]"):
        TriggerFitter(model, other, "eo", epochs=2, batch_size=32, lr=0.05, device="cpu", progress=False,
                      checkpoint_dir=tmp_path, resume=True).fit(ds)


def test_fitter_turns_a_checkpoint_that_does_not_fit_the_trigger_into_one_line(tmp_path):
    from safetensors.torch import load_file, save_file

    from reprogram.errors import ArtifactError

    ds = _data()
    _fitter(tmp_path).fit(ds)
    for weights in tmp_path.glob("epoch-*/weights.safetensors"):  # a trigger of another size
        t = load_file(str(weights))
        t["trigger.theta"] = torch.zeros(1, 3)
        save_file(t, str(weights))
    with pytest.raises(ArtifactError, match="does not fit this trigger"):
        _fitter(tmp_path, resume=True).fit(ds)


def test_a_checkpoint_path_that_is_a_file_is_refused_before_training(tmp_path):
    f = tmp_path / "ckpt"
    f.write_text("not a folder")
    with pytest.raises(InputError, match="not a folder"):
        _trainer(f)
    with pytest.raises(InputError, match="not a folder"):
        _fitter(f)
