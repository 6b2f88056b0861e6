"""The shared Trainer loop: determinism, early stopping, saving the frozen model."""

import numpy as np
import pytest
import torch

from reprogram.errors import InputError
from reprogram.models import load_frozen, read_sidecar
from reprogram.train.models import mlp
from reprogram.train.objective import Objective
from reprogram.train.trainer import Trainer, TrainingDiverged, monitor_mode


def _fit(train, val=None, seed=0, **kw):
    torch.manual_seed(seed)
    model = mlp(train.n_features, 2, hidden=(16,), dropout=0.1)
    kw = {"epochs": 3, "batch_size": 64, "lr": 1e-2, "progress": False, "seed": seed, **kw}
    return Trainer(model, **kw).fit(train, val)


def test_same_seed_same_weights_and_history(biased_splits):
    train, val, _ = biased_splits
    a, b = _fit(train, val), _fit(train, val)
    for pa, pb in zip(a.model.state_dict().values(), b.model.state_dict().values()):
        assert torch.equal(pa, pb)
    assert a.history_ == b.history_
    c = _fit(train, val, seed=1)
    assert not torch.equal(a.model.head.weight, c.model.head.weight)


def test_history_holds_fairness_figures_and_learning_happens(biased_splits):
    train, val, test = biased_splits
    t = _fit(train, val, epochs=6, schedule="step")
    h = t.history_
    assert len(h) == 6 and h[-1]["train_loss"] < h[0]["train_loss"]
    assert {"val_accuracy", "val_demographic_parity_difference", "val_equalized_odds_difference"} <= set(h[0])
    report = t.evaluate(test)
    assert report.overall["accuracy"] > 0.7
    assert report.groups == ["a", "b"]


def test_early_stopping_restores_the_best_epoch(biased_splits):
    train, val, _ = biased_splits
    t = _fit(train, val, epochs=12, patience=1, monitor="demographic_parity_difference")
    values = [r["val_demographic_parity_difference"] for r in t.history_]
    assert t.best_epoch_ == int(np.argmin(values)) + 1
    assert len(t.history_) <= 12
    restored = t.evaluate(val).overall["demographic_parity_difference"]
    assert restored == pytest.approx(min(values))
    assert monitor_mode("worst_group_accuracy") == "max" and monitor_mode("ece") == "min"


def test_save_gives_a_frozen_model_with_the_same_logits_and_encodings(biased_splits, tmp_path):
    train, _, test = biased_splits
    t = _fit(train)
    path = t.save(tmp_path / "model.pt", train, arch="mlp")
    frozen = load_frozen(path)
    x = torch.from_numpy(test.features[:20])
    assert torch.allclose(frozen(x), t.model.cpu()(x), atol=1e-6)
    assert frozen.input_kind == "tabular" and frozen.classes == [0, 1]
    meta = read_sidecar(path)
    assert meta["groups"]["names"] == ["a", "b"] and meta["arch"] == "mlp"
    assert meta["features"] == train.feature_encoder.to_dict()


class _Exploding(Objective):
    def forward(self, logits, y, group, index=None, representation=None):
        return logits.sum() * float("inf")


def test_divergence_and_bad_options_raise_clear_errors(biased_splits):
    train, val, _ = biased_splits
    with pytest.raises(TrainingDiverged, match="diverged at epoch 1"):
        Trainer(mlp(train.n_features, 2), _Exploding(), progress=False).fit(train)
    with pytest.raises(InputError, match="unknown monitor"):
        _fit(train, val, monitor="nonsense")
    with pytest.raises(InputError):
        Trainer(mlp(train.n_features, 2), optimizer="lbfgs")


def test_index_reaches_the_objective_and_samplers_get_set_epoch(biased_splits):
    train, _, _ = biased_splits
    seen, epochs = set(), []

    class Recording(Objective):
        def forward(self, logits, y, group, index=None, representation=None):
            seen.update(index.tolist())
            assert torch.equal(y, torch.as_tensor(train.labels)[index])
            return torch.nn.functional.cross_entropy(logits, y)

    class Sampler(torch.utils.data.Sampler):
        def __iter__(self):
            return iter(range(len(train)))

        def __len__(self):
            return len(train)

        def set_epoch(self, e):
            epochs.append(e)

    Trainer(mlp(train.n_features, 2), Recording(), epochs=2, sampler=Sampler(), progress=False).fit(train)
    assert seen == set(range(len(train))) and epochs == [0, 1]
