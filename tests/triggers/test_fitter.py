"""TriggerFitter: it makes the frozen model fairer, never touches its weights, resumes, refuses bad input."""

import numpy as np
import pytest
import torch

from reprogram.errors import ArtifactError, GroupError, InputError
from reprogram.triggers import (
    FeatureTrigger,
    FingerprintWarning,
    TriggerFitter,
    load_trigger,
    make_trigger,
    save_trigger,
)


def _fit(model, val, **kw):
    trigger = make_trigger("border", model, val, size=1, mode="overlay")
    args = {"epochs": 12, "batch_size": 64, "lr": 0.05, "progress": False, **kw}
    return TriggerFitter(model, trigger, "eo", 1.0, **args).fit(val, val)


@pytest.mark.parametrize("rule", ["minmax", "projection"])
def test_a_border_trigger_narrows_the_eo_gap_and_leaves_the_weights_alone(digits, rule):
    model, _, val, test = digits
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fp = model.fingerprint
    fitter = _fit(model, val, rule=rule)
    base, after = fitter.evaluate(test, triggered=False).overall, fitter.evaluate(test).overall
    assert base["equalized_odds_difference"] > 0.15  # the shortcut shows
    assert after["equalized_odds_difference"] < 0.7 * base["equalized_odds_difference"]
    assert after["accuracy"] > base["accuracy"] - 0.05
    assert model.fingerprint == fp and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())
    assert fitter.best_epoch_ is not None and len(fitter.history_) == 12
    assert "val_equalized_odds_difference" in fitter.history_[0]


def test_resume_continues_exactly_where_the_checkpoint_left_off(digits, tmp_path):
    model, _, val, _ = digits
    straight = _fit(model, val, epochs=4)
    ckpt = tmp_path / "ckpt"
    _fit(model, val, epochs=2, checkpoint_dir=ckpt)
    resumed = _fit(model, val, epochs=4, checkpoint_dir=ckpt, resume=True)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3, 4]
    for a, b in zip(straight.trigger.state_dict().values(), resumed.trigger.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6)
    assert resumed.best_epoch_ == straight.best_epoch_
    other = make_trigger("patch", model, val, size=2)
    with pytest.raises(ArtifactError, match="PatchTrigger"):
        TriggerFitter(model, other, "eo", epochs=3, checkpoint_dir=ckpt, resume=True, progress=False).fit(val)


def test_save_and_load_round_trip_and_transfer_warning(digits, tmp_path):
    model, _, val, test = digits
    fitter = _fit(model, val, epochs=2)
    path = save_trigger(fitter.trigger, tmp_path / "trig", model=model, criterion="eo", **{"lambda": 1.0})
    trigger, meta = load_trigger(path, model)
    x = test.images[:7]
    assert torch.equal(trigger(x), fitter.trigger(x))
    assert meta["criterion"] == "eo" and meta["model"]["fingerprint"] == model.fingerprint
    assert meta["config"]["mode"] == "overlay" and meta["format"] == "reprogram.trigger"
    other = type(model)(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 8), torch.nn.Flatten()), input_kind="image")
    with pytest.warns(FingerprintWarning, match="transfer"):
        load_trigger(path, other)
    (path / "meta.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="meta.json"):
        load_trigger(path)


def test_bad_input_gets_clear_errors(digits):
    model, _, val, _ = digits
    with pytest.raises(InputError, match="tabular trigger .* reads image"):
        TriggerFitter(model, FeatureTrigger(4), "dp")
    with pytest.raises(InputError, match="for text models"):
        make_trigger("prompt", model, val)
    one_group = type(val)(val.images[:40], val.labels[:40], np.zeros(40, dtype=int), val.digits[:40],
                          split="val", groups=val.groups)
    with pytest.raises(GroupError, match="one group"):
        _fit(model, one_group, epochs=1)
    with pytest.raises(InputError, match="criterion"):
        TriggerFitter(model, make_trigger("patch", model, val), "fairness")


def test_sgd_players_and_a_bad_optimizer_name(digits):
    model, _, val, test = digits
    fitter = _fit(model, val, epochs=3, optimizer="sgd", disc_optimizer="sgd")
    assert len(fitter.history_) == 3 and np.isfinite(fitter.history_[-1]["task_loss"])
    with pytest.raises(InputError, match="optimizers"):
        TriggerFitter(model, make_trigger("patch", model, val), "eo", optimizer="lbfgs")


def test_a_loss_that_is_not_finite_stops_the_fit_with_one_line():
    from torch import nn

    from reprogram.data.datasets import TabularDataset
    from reprogram.data.groups import GroupEncoder
    from reprogram.errors import TrainingDiverged
    from reprogram.models import FrozenModel

    class Blowup(nn.Module):  # logits of +-inf: the cross-entropies are NaN
        def forward(self, x):
            return x * float("inf")

    rng = np.random.default_rng(0)
    names = np.array(["a", "b"])[rng.integers(0, 2, 64)]
    groups = GroupEncoder().fit(names)
    ds = TabularDataset(rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 2, 64),
                        groups.transform(names), groups=groups, classes=[0, 1])
    torch.manual_seed(0)
    frozen = FrozenModel(nn.Sequential(nn.Linear(4, 2), Blowup()), input_kind="tabular")
    with pytest.raises(TrainingDiverged, match=r"^trigger fitting diverged at epoch 1: the task loss is nan") as err:
        TriggerFitter(frozen, FeatureTrigger(4), "dp", epochs=2, batch_size=32, progress=False).fit(ds)
    assert "\n" not in str(err.value)
