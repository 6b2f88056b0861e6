"""Reweighting: hand-computed weights, weighted cross-entropy and its gradient, hard-example mining."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reprogram.errors import GroupError, InputError, LengthMismatchError, MissingValuesError, ReprogramError
from reprogram.train.reweighting import (
    HardExampleMining,
    WeightedCrossEntropy,
    affirmative_action_weights,
    inverse_frequency_weights,
)

G = np.array([0, 0, 0, 1])
Y = np.array([0, 1, 1, 1])


# ---------------------------------------------------------------- inverse frequency


def test_inverse_frequency_by_group_by_hand():
    # group counts 3 and 1; N=4, K=2 -> N/(K n) = 4/6 and 4/2
    np.testing.assert_allclose(inverse_frequency_weights(G, normalize=False), [1 / 3, 1 / 3, 1 / 3, 1.0])
    w = inverse_frequency_weights(G)
    np.testing.assert_allclose(w, [2 / 3, 2 / 3, 2 / 3, 2.0])
    assert w.dtype == np.float64 and w.mean() == pytest.approx(1.0)


def test_inverse_frequency_by_class_and_group_class_by_hand():
    np.testing.assert_allclose(inverse_frequency_weights(G, Y, by="class"), [2.0, 2 / 3, 2 / 3, 2 / 3])
    # cells (0,0):1 row, (0,1):2 rows, (1,1):1 row; K=3 -> 4/3, 2/3, 2/3, 4/3
    w = inverse_frequency_weights(G, Y, by="group_class")
    np.testing.assert_allclose(w, [4 / 3, 2 / 3, 2 / 3, 4 / 3])
    np.testing.assert_allclose(inverse_frequency_weights(G, Y, by="group_class", normalize=False), [1, 0.5, 0.5, 1])


def test_inverse_frequency_gives_every_cell_the_same_total_weight():
    rng = np.random.default_rng(0)
    g = rng.choice([3, 7, 9], 500, p=[0.7, 0.2, 0.1])  # ids need not be 0..G-1
    y = rng.integers(0, 2, 500)
    w = inverse_frequency_weights(g, y, by="group_class")
    cells = {(a, b) for a, b in zip(g, y)}
    totals = [w[(g == a) & (y == b)].sum() for a, b in cells]
    np.testing.assert_allclose(totals, 500 / len(cells))
    assert w.mean() == pytest.approx(1.0)


def test_inverse_frequency_accepts_a_dataset_and_tensors(biased_splits):
    train = biased_splits[0]
    np.testing.assert_array_equal(inverse_frequency_weights(train), inverse_frequency_weights(train.group_ids))
    np.testing.assert_array_equal(
        inverse_frequency_weights(torch.as_tensor(G), torch.as_tensor(Y), by="class"),
        inverse_frequency_weights(G, Y, by="class"),
    )


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(group_ids=G, by="class"), InputError),
        (dict(group_ids=G, labels=Y, by="row"), InputError),
        (dict(group_ids=G, labels=Y[:3]), LengthMismatchError),
        (dict(group_ids=np.array([0.0, np.nan, 1.0])), MissingValuesError),
        (dict(group_ids=np.array([0.5, 1.0])), InputError),
        (dict(group_ids=np.array(["a", "b"])), InputError),
        (dict(group_ids=np.zeros((2, 2), int)), InputError),
        (dict(group_ids=np.array([], int)), InputError),
    ],
)
def test_inverse_frequency_bad_input(kwargs, error):
    with pytest.raises(error) as e:
        inverse_frequency_weights(**kwargs)
    assert isinstance(e.value, ReprogramError) and "\n" not in str(e.value)


# ---------------------------------------------------------------- affirmative action


def test_affirmative_action_weights_by_hand():
    g = np.array([0, 1, 2, 1, 0])
    np.testing.assert_array_equal(affirmative_action_weights(g, [1, 2], 3), [1, 4, 4, 4, 1])
    np.testing.assert_array_equal(affirmative_action_weights(g, 0, 0.5), [1.5, 1, 1, 1, 1.5])
    np.testing.assert_array_equal(affirmative_action_weights(g, (2,), 0), np.ones(5))
    np.testing.assert_array_equal(affirmative_action_weights(g, {1}, -0.5), [1, 0.5, 1, 0.5, 1])


def test_affirmative_action_bad_input():
    g = np.array([0, 1, 2, 1, 0])
    with pytest.raises(GroupError, match=r"\[7\] have no rows; group ids present: \[0, 1, 2\]"):
        affirmative_action_weights(g, [1, 7], 2.0)
    for k in (-1, float("nan"), float("inf"), "2", True):
        with pytest.raises(InputError, match="k must be"):
            affirmative_action_weights(g, [1], k)
    with pytest.raises(InputError, match="subgroups is empty"):
        affirmative_action_weights(g, [], 1.0)


# ---------------------------------------------------------------- weighted cross-entropy

LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-1.0, 1.5, 0.0]])
TARGET = np.array([0, 2, 0])


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_weighted_ce_equals_hand_computation_and_gradient():
    weights = np.array([0.5, 9.0, 2.0, 9.0, 1.0, 9.0])  # one per training row
    index = np.array([4, 0, 2])  # the batch's dataset positions
    w = weights[index]  # 1.0, 0.5, 2.0
    p = _softmax(LOGITS)
    ce = -np.log(p[np.arange(3), TARGET])
    expected = (w * ce).sum() / w.sum()
    onehot = np.eye(3)[TARGET]
    expected_grad = (w / w.sum())[:, None] * (p - onehot)

    logits = torch.tensor(LOGITS, requires_grad=True)
    loss = WeightedCrossEntropy(weights)(logits, torch.as_tensor(TARGET), torch.zeros(3, dtype=torch.long),
                                         index=torch.as_tensor(index))
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(logits.grad.numpy(), expected_grad, rtol=1e-5, atol=1e-7)


def test_weighted_ce_agrees_with_torch_class_weights_and_plain_ce():
    torch.manual_seed(0)
    logits = torch.randn(16, 3)
    y = torch.randint(0, 3, (16,))
    class_weight = torch.tensor([0.2, 1.0, 3.0])
    obj = WeightedCrossEntropy(class_weight[y])  # sample weight = weight of its class
    index = torch.arange(16)
    group = torch.zeros(16, dtype=torch.long)
    torch.testing.assert_close(obj(logits, y, group, index=index), F.cross_entropy(logits, y, weight=class_weight))
    # equal weights (any scale) give plain cross-entropy
    torch.testing.assert_close(WeightedCrossEntropy(np.full(16, 7.0))(logits, y, group, index=index),
                               F.cross_entropy(logits, y))


def test_weighted_ce_zero_weight_batch_and_errors():
    obj = WeightedCrossEntropy([0.0, 0.0, 1.0])
    logits = torch.tensor(LOGITS[:2], requires_grad=True)
    loss = obj(logits, torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long), index=torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)
    assert "sample_weight" in obj.state_dict()
    with pytest.raises(InputError, match="needs index="):
        obj(logits, torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long))
    with pytest.raises(InputError, match="outside 0..2"):
        obj(logits, torch.tensor([0, 1]), torch.zeros(2, dtype=torch.long), index=torch.tensor([0, 3]))
    for bad in ([1.0, -1.0], [0.0, 0.0], [1.0, float("nan")], [[1.0]], []):
        with pytest.raises(InputError, match="sample_weight"):
            WeightedCrossEntropy(bad)


def test_affirmative_weights_lower_the_upweighted_groups_loss():
    # a linear model that cannot fit both groups: group 1's label flips the sign of x
    rng = np.random.default_rng(0)
    n = 300
    g = (rng.random(n) < 0.2).astype(np.int64)
    x = rng.normal(size=(n, 1))
    y = ((x[:, 0] > 0) ^ (g == 1)).astype(np.int64)
    X, Yt, Gt, idx = torch.tensor(x, dtype=torch.float32), torch.as_tensor(y), torch.as_tensor(g), torch.arange(n)

    def group1_loss(objective):
        torch.manual_seed(0)
        model = nn.Linear(1, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        for _ in range(200):
            opt.zero_grad()
            objective(model(X), Yt, Gt, index=idx).backward()
            opt.step()
        with torch.no_grad():
            return F.cross_entropy(model(X[g == 1]), Yt[g == 1]).item()

    plain = group1_loss(WeightedCrossEntropy(np.ones(n)))
    upweighted = group1_loss(WeightedCrossEntropy(affirmative_action_weights(g, [1], 9.0)))
    assert upweighted < plain - 0.1


# ---------------------------------------------------------------- hard example mining


def _batch():
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [0.0, 0.5], [1.0, 0.0], [0.0, 0.0]], requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 0])
    return logits, y


def test_hard_example_mining_keeps_the_largest_losses_and_only_their_gradient():
    logits, y = _batch()
    ce = -np.log(_softmax(logits.detach().numpy())[np.arange(5), y.numpy()])
    top2 = np.argsort(ce)[-2:]  # rows 1 (ce ~3.05) and 3 (ce ~1.31)
    assert sorted(top2.tolist()) == [1, 3]
    loss = HardExampleMining(2)(logits, y, torch.zeros(5, dtype=torch.long))
    assert loss.item() == pytest.approx(ce[top2].mean(), rel=1e-6)
    loss.backward()
    row_has_grad = (logits.grad.abs().sum(dim=1) > 0).tolist()
    assert row_has_grad == [False, True, False, True, False]
    # the kept rows' gradient is the CE gradient divided by the number kept
    p = _softmax(logits.detach().numpy())
    np.testing.assert_allclose(logits.grad[1].numpy(), (p[1] - np.eye(2)[0]) / 2, rtol=1e-5)


def test_hard_example_mining_counts_fractions_and_custom_base():
    logits, y = _batch()
    g = torch.zeros(5, dtype=torch.long)
    full = F.cross_entropy(logits, y)
    torch.testing.assert_close(HardExampleMining(1.0)(logits, y, g), full)
    torch.testing.assert_close(HardExampleMining(50)(logits, y, g), full)
    torch.testing.assert_close(HardExampleMining(0.4)(logits, y, g), HardExampleMining(2)(logits, y, g))
    base = nn.CrossEntropyLoss(reduction="none")
    torch.testing.assert_close(HardExampleMining(3, base=base)(logits, y, g), HardExampleMining(3)(logits, y, g))
    assert HardExampleMining(0.7).n_kept(10) == 7  # not 8 from 0.7 * 10 = 7.000000000000001
    assert HardExampleMining(0.01).n_kept(10) == 1
    assert HardExampleMining(1).n_kept(10) == 1


def test_hard_example_mining_bad_settings():
    for keep in (0, -2, 1.5, 0.0, True, "2"):
        with pytest.raises(InputError, match="keep"):
            HardExampleMining(keep)
    logits, y = _batch()
    with pytest.raises(InputError, match="one loss per row"):
        HardExampleMining(2, base=lambda z, t: F.cross_entropy(z, t))(logits, y, torch.zeros(5, dtype=torch.long))
    with pytest.raises(InputError, match="callable"):
        HardExampleMining(2, base=3)
    assert math.isfinite(HardExampleMining(2)(logits[:0], y[:0], y[:0]).item())


def test_dataset_like_object_is_read_through_group_ids():
    ds = SimpleNamespace(group_ids=G)
    np.testing.assert_array_equal(inverse_frequency_weights(ds), inverse_frequency_weights(G))


def test_independence_weights_by_hand_make_group_and_label_independent():
    from reprogram.train.reweighting import independence_weights

    g = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    w = independence_weights(g, y)
    # P(g=0)=3/8, P(y=1)=3/8, P(g=0,y=1)=2/8 -> w = (3/8)(3/8)/(2/8) = 9/16
    assert w[0] == pytest.approx(9 / 16) and w[3] == pytest.approx((5 / 8) * (3 / 8) / (1 / 8))
    assert w.mean() == pytest.approx(1.0)
    for grp in (0, 1):  # weighted positive rate is the overall rate in every group
        m = g == grp
        assert (w[m] * y[m]).sum() / w[m].sum() == pytest.approx(y.mean())
    # class and group totals keep their weight
    assert w[y == 1].sum() == pytest.approx((y == 1).sum()) and w[g == 0].sum() == pytest.approx(3)


def test_independence_weights_strength_is_a_normalised_power_that_can_over_correct():
    from reprogram.train.reweighting import independence_weights

    g = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    y = np.array([1, 1, 0, 1, 0, 0, 0, 0])
    base = independence_weights(g, y)
    np.testing.assert_array_equal(independence_weights(g, y, strength=1.0), base)
    np.testing.assert_allclose(independence_weights(g, y, strength=0), np.ones(8))
    w2 = independence_weights(g, y, strength=2)
    np.testing.assert_allclose(w2, base**2 / (base**2).mean())
    assert w2.mean() == pytest.approx(1.0)

    def pos_rate(w, grp):
        m = g == grp
        return (w[m] * y[m]).sum() / w[m].sum()

    # raw: group 0 has the higher positive rate (2/3 vs 1/5); s=1 equalises; s=2 reverses it
    assert pos_rate(np.ones(8), 0) > pos_rate(np.ones(8), 1)
    assert pos_rate(base, 0) == pytest.approx(pos_rate(base, 1))
    assert pos_rate(w2, 0) < pos_rate(w2, 1)
    for bad in (-0.5, float("nan"), float("inf"), True, "2"):
        with pytest.raises(InputError, match="strength"):
            independence_weights(g, y, strength=bad)


def test_inverse_frequency_strength_is_the_same_normalised_power():
    g = np.array([0, 0, 0, 1])
    base = inverse_frequency_weights(g)
    np.testing.assert_allclose(inverse_frequency_weights(g, strength=2), base**2 / (base**2).mean())
    np.testing.assert_allclose(inverse_frequency_weights(g, strength=0), np.ones(4))
    with pytest.raises(InputError, match="normalize=True"):
        inverse_frequency_weights(g, normalize=False, strength=2)
