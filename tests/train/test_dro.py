"""GroupDRO: the exponentiated update by hand, absent groups, and its effect on the worst group."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reprogram.errors import InputError
from reprogram.train.dro import GroupDRO
from reprogram.train.methods import SWEEP_PARAMETER, TORCH_METHODS, make_method
from reprogram.train.models import mlp
from reprogram.train.trainer import Trainer


def test_one_step_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 3.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    group = torch.tensor([0, 0, 1, 1])
    dro = GroupDRO(3, step_size=0.5)
    ce = F.cross_entropy(logits.detach(), y, reduction="none")
    l0, l1 = ce[:2].mean().item(), ce[2:].mean().item()
    loss = dro(logits, y, group)
    # q starts uniform (1/3 each); group 2 is absent, so its factor is exp(0)
    raw = np.array([math.exp(0.5 * l0), math.exp(0.5 * l1), 1.0]) / 3
    q = raw / raw.sum()
    assert np.allclose(dro.q.numpy(), q, atol=1e-6)
    assert math.isclose(loss.item(), q[0] * l0 + q[1] * l1, rel_tol=1e-6)
    # the model gradient is sum_g q_g grad(l_g): the weights act as constants
    loss.backward()
    expected = torch.autograd.grad(q[0] * F.cross_entropy(logits[:2], y[:2]) + q[1] * F.cross_entropy(logits[2:], y[2:]),
                                   logits)[0]
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_eval_mode_leaves_q_alone_and_adjustment_adds_c_over_sqrt_n():
    dro = GroupDRO(2, step_size=1.0, adjust=2.0, group_counts=[4, 16])
    assert torch.allclose(dro.adjustment, torch.tensor([1.0, 0.5]))
    dro.eval()
    logits = torch.zeros(4, 2)
    loss = dro(logits, torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1]))
    assert torch.equal(dro.q, torch.full((2,), 0.5))
    assert math.isclose(loss.item(), 0.5 * (math.log(2) + 1.0) + 0.5 * (math.log(2) + 0.5), rel_tol=1e-6)


def test_bad_arguments_raise_input_errors():
    with pytest.raises(InputError, match="group_counts"):
        GroupDRO(2, adjust=1.0)
    with pytest.raises(InputError, match="step_size"):
        GroupDRO(2, step_size=-1)
    with pytest.raises(InputError, match=r"\[0, 2\)"):
        GroupDRO(2)(torch.zeros(2, 2), torch.tensor([0, 1]), torch.tensor([0, 5]))


def test_groupdro_raises_the_worst_group_accuracy_on_spurious_digits():
    from reprogram.data import spurious_digits
    from reprogram.train.models import small_cnn

    import reprogram.data as rd

    # a strong shortcut (97 % of training rows have the label's tint); four training
    # groups = (tint, label), so the minority cells are the groups GroupDRO up-weights
    train, test = spurious_digits("train", size=8, train_correlation=0.97), spurious_digits("test", size=8)
    cells = rd.TensorGroupDataset(train.images, train.labels, train.group_ids * 2 + train.labels,
                                  classes=train.classes, groups=rd.GroupEncoder().fit(np.arange(4).astype(str)))

    def fit(objective):
        torch.manual_seed(0)
        return Trainer(small_cnn(2, width=8), objective, epochs=12, batch_size=64, lr=3e-3, progress=False).fit(cells)

    erm = fit(None).evaluate(test).overall
    dro = fit(GroupDRO(4, step_size=0.1)).evaluate(test).overall
    # seeds 0-2 gave ERM 0.61-0.70 and GroupDRO 0.78-0.81 worst-tint test accuracy
    assert dro["worst_group_accuracy"] > erm["worst_group_accuracy"] + 0.05
    assert dro["accuracy"] > erm["accuracy"]


@pytest.mark.parametrize("name", TORCH_METHODS)
def test_every_registered_method_takes_a_training_step(name, biased_splits):
    train, _, _ = biased_splits
    torch.manual_seed(0)
    model = mlp(train.n_features, 2, hidden=(8,), dropout=0.0)
    setup = make_method(name, train, n_classes=2, representation_dim=model.representation_dim)
    t = Trainer(model, setup.objective, sampler=setup.sampler, epochs=1, batch_size=200, progress=False).fit(train)
    assert np.isfinite(t.history_[0]["train_loss"])
    if name in SWEEP_PARAMETER:  # the sweep knob is an accepted option
        make_method(name, train, n_classes=2, representation_dim=8, **{SWEEP_PARAMETER[name]: 0.5})


def test_make_method_refuses_unknown_names_and_options(biased_splits):
    train, _, _ = biased_splits
    with pytest.raises(InputError, match="unknown method"):
        make_method("magic", train, n_classes=2)
    with pytest.raises(InputError, match="takes no option"):
        make_method("fas", train, n_classes=2, eta=1.0)


def test_make_method_passes_strength_and_cells_through(biased_splits):
    from reprogram.train.reweighting import independence_weights

    train, _, _ = biased_splits
    w = make_method("reweight", train, n_classes=2, strength=2.0).objective.sample_weight.double().numpy()
    np.testing.assert_allclose(w, independence_weights(train.group_ids, train.labels, strength=2.0), rtol=1e-6)
    sampler = make_method("resample", train, n_classes=2, strength=0.0).sampler
    assert sorted(sampler) == list(range(len(train)))  # strength 0: every row once, no resampling
    fas = make_method("fas", train, n_classes=2, by="group_class").objective
    assert fas.beta.shape == (2 * len(train.group_names),)


def test_make_method_counts_the_cells_for_the_generalisation_adjustment(biased_splits):
    train, _, _ = biased_splits
    g, y = np.asarray(train.group_ids), np.asarray(train.labels)
    dro = make_method("groupdro", train, n_classes=2, adjust=3.0).objective  # by (group, class) cell
    n = [int(((g == k) & (y == c)).sum()) for k in range(len(train.group_names)) for c in (0, 1)]
    np.testing.assert_allclose(dro.adjustment.numpy(), 3.0 / np.sqrt(n), rtol=1e-6)
    by_group = make_method("groupdro", train, n_classes=2, adjust=3.0, by="group").objective
    np.testing.assert_allclose(by_group.adjustment.numpy(), 3.0 / np.sqrt(np.bincount(g)), rtol=1e-6)
    assert not make_method("groupdro", train, n_classes=2).objective.adjustment.any()  # no adjustment by default
