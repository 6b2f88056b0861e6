"""FASLoss: hand-computed weights of both variants, gradients, the direction of β, training."""

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_models import fit_small

from reprogram.errors import InputError
from reprogram.train.fas import FASLoss
from reprogram.train.objective import CrossEntropy, Objective


def logits_for(ce_values):
    """Binary logits whose cross-entropy with y=0 is exactly each value: CE = log(1 + e^t) = L."""
    t = [math.log(math.expm1(v)) for v in ce_values]
    return torch.tensor([[0.0, v] for v in t], dtype=torch.float64)


Y0 = torch.zeros(4, dtype=torch.long)
G = torch.tensor([0, 0, 1, 1])
IDX = torch.tensor([0, 1, 2, 3])


def two_steps(**kw):
    """EMA (alpha 0.5) of CE [1,3,2,2] then [1,1,2,6] is e = [1,2,2,4]; β = [1, 2]."""
    fas = FASLoss(6, 2, ema_alpha=0.5, c=0.5, **kw).double()
    fas(logits_for([1, 3, 2, 2]), Y0, G, index=IDX)
    with torch.no_grad():
        fas.group_scale.weight.copy_(torch.tensor([[1.0], [2.0]]))
    loss = fas(logits_for([1, 1, 2, 6]), Y0, G, index=IDX)
    return fas, loss


# ---------------------------------------------------------------- seed variant


def test_seed_weights_by_hand():
    # e = [1, 2, 2, 4]: mean 2.25, population std sqrt(4.75 / 4) = 1.0897247
    # z = [-1.1470776, -0.2294155, -0.2294155, 1.6059087]
    # individual = 0.5 + sigmoid(z) = [0.7410233, 0.9428964, 0.9428964, 1.3328426]
    # s = 0.5 * individual + 0.5 * β_g with β = [1, 1, 2, 2] -> [0.8705116, 0.9714482, 1.4714482, 1.6664213]
    # mean s = 1.2449573 -> w = s / mean = [0.6992301, 0.7803064, 1.1819266, 1.3385369]
    # loss = mean(w * [1, 1, 2, 6]) = (0.6992301 + 0.7803064 + 2.3638532 + 8.0312213) / 4 = 2.9686528
    fas, loss = two_steps()
    assert fas.ema[:4].tolist() == [1.0, 2.0, 2.0, 4.0]
    assert fas.seen.tolist() == [True] * 4 + [False] * 2
    expected_w = torch.tensor([0.6992301, 0.7803064, 1.1819266, 1.3385369], dtype=torch.float64)
    torch.testing.assert_close(fas.last_weights, expected_w, atol=1e-6, rtol=0)
    assert loss.item() == pytest.approx(2.9686528, abs=1e-6)


def test_seed_weights_are_clipped_after_normalisation():
    fas, loss = two_steps(w_min=0.75, w_max=1.2)
    expected = [0.75, 0.7803064, 1.1819266, 1.2]  # clipped, not renormalised
    torch.testing.assert_close(fas.last_weights, torch.tensor(expected, dtype=torch.float64), atol=1e-6, rtol=0)
    assert loss.item() == pytest.approx((0.75 + 0.7803064 + 2 * 1.1819266 + 6 * 1.2) / 4, abs=1e-6)


def test_seed_model_gradient_is_the_weighted_ce_gradient():
    """The weights are constants for the model: d loss / d logits_j = w_j / N (softmax_j - onehot_j)."""
    fas = FASLoss(6, 2, ema_alpha=0.5).double()
    fas(logits_for([1, 3, 2, 2]), Y0, G, index=IDX)
    logits = logits_for([1, 1, 2, 6]).requires_grad_(True)
    fas(logits, Y0, G, index=IDX).backward()
    w = fas.last_weights
    expected = w[:, None] / 4 * (torch.softmax(logits.detach(), 1) - F.one_hot(Y0, 2))
    torch.testing.assert_close(logits.grad, expected)


def test_seed_beta_gradient_is_negated_for_ascent():
    """∂loss/∂β_g = (1-c)/(N m) (Σ_{i∈g} ℓ_i - (n_g/N) Σ_i w_i ℓ_i); the hook stores its negative."""
    fas, loss = two_steps()
    fas.zero_grad()
    loss.backward()
    ce = torch.tensor([1.0, 1.0, 2.0, 6.0], dtype=torch.float64)
    w, m = fas.last_weights, 1.2449573
    weighted = (w * ce).sum()
    d0 = 0.5 / (4 * m) * (ce[:2].sum() - 0.5 * weighted)
    d1 = 0.5 / (4 * m) * (ce[2:].sum() - 0.5 * weighted)
    assert d1 > 0 > d0  # descent would shrink the high-loss group's scale...
    torch.testing.assert_close(fas.group_scale.weight.grad[:, 0], -torch.stack([d0, d1]), atol=1e-6, rtol=0)


def test_seed_beta_ascent_raises_the_underperforming_group():
    """...so the optimizer, stepping against the stored gradient, raises it."""
    fas = FASLoss(8, 2)
    opt = torch.optim.SGD(fas.param_groups(0.05))
    logits = torch.tensor([[2.0, 0.0]] * 4 + [[0.2, 0.0]] * 4)  # group 1 rows are far less confident
    y = torch.zeros(8, dtype=torch.long)
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    history = [fas.beta.detach().clone()]
    for _ in range(10):
        opt.zero_grad()
        fas(logits, y, g, index=torch.arange(8)).backward()
        opt.step()
        fas.after_step()
        history.append(fas.beta.detach().clone())
    betas = torch.stack(history)
    assert torch.all(betas[1:, 1] > betas[:-1, 1])  # the high-loss group's scale rises every step
    assert torch.all(betas[1:, 0] <= betas[:-1, 0])
    assert betas[-1, 0] >= 0  # projected onto β >= 0
    w = fas.last_weights
    assert w[4:].mean() > w[:4].mean()


def test_group_class_cells_get_their_own_scale_and_the_high_loss_cell_rises():
    """by="group_class": β has a row per (group, class) cell, id group * n_classes + y."""
    fas = FASLoss(8, 2, by="group_class", n_classes=2)
    assert fas.beta.shape == (4,)
    opt = torch.optim.SGD(fas.param_groups(0.05))
    # group 1's positives are the hard cell (id 1 * 2 + 1 = 3); everything else is easy
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]] * 2 + [[2.0, 0.0], [0.0, -0.5]] * 2)
    y = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    g = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    for _ in range(5):
        opt.zero_grad()
        fas(logits, y, g, index=torch.arange(8)).backward()
        opt.step()
        fas.after_step()
    beta = fas.beta.detach()
    assert beta[3] > 1.0 and torch.all(beta[:3] < 1.0)
    w = fas.last_weights
    assert torch.all(w[[5, 7]] > w[[0, 1, 2, 3, 4, 6]].max())
    # with one class column per group, the group ids are checked against the groups, not the cells
    with pytest.raises(InputError, match="group"):
        fas(logits, y, torch.full((8,), 2), index=torch.arange(8))
    with pytest.raises(InputError, match="n_classes"):
        FASLoss(8, 2, by="group_class")
    with pytest.raises(InputError, match="by must be"):
        FASLoss(8, 2, by="class")


def test_seed_beta_is_projected_to_non_negative():
    fas = FASLoss(4, 2)
    with torch.no_grad():
        fas.group_scale.weight.copy_(torch.tensor([[-0.5], [2.0]]))
    fas.after_step()
    assert fas.beta.tolist() == [0.0, 2.0]


def test_seed_needs_index_and_checks_it():
    fas = FASLoss(4, 2)
    logits, y, g = torch.zeros(2, 2), torch.zeros(2, dtype=torch.long), torch.tensor([0, 1])
    with pytest.raises(InputError, match="index"):
        fas(logits, y, g)
    with pytest.raises(InputError, match=r"index must lie in \[0, 4\)"):
        fas(logits, y, g, index=torch.tensor([0, 4]))
    with pytest.raises(InputError, match="group"):
        fas(logits, y, torch.tensor([0, 2]), index=torch.tensor([0, 1]))
    with pytest.raises(InputError, match="group"):
        fas(logits, y, torch.tensor([0.0, 1.0]), index=torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "kw",
    [dict(variant="focal"), dict(ema_alpha=1.0), dict(c=1.5), dict(w_min=2.0, w_max=1.0), dict(temperature=0.0),
     dict(beta_lr=-1.0)],
)
def test_bad_arguments(kw):
    with pytest.raises(InputError):
        FASLoss(4, 2, **kw)
    with pytest.raises(ValueError):  # InputError is a ValueError for Python callers
        FASLoss(4, 2, **kw)


def test_disabled_is_plain_cross_entropy_and_keeps_the_ema():
    fas = FASLoss(6, 2, enable_fas=False, ema_alpha=0.5).double()
    logits = logits_for([1, 3, 2, 2])
    loss = fas(logits, Y0, G, index=IDX)
    assert loss.item() == pytest.approx(2.0)
    assert loss.item() == pytest.approx(F.cross_entropy(logits, Y0).item())
    assert fas.ema[:4].tolist() == pytest.approx([1.0, 3.0, 2.0, 2.0])
    assert fas(logits, Y0, G).item() == pytest.approx(2.0)  # no index needed when disabled
    soft = FASLoss(6, 2, variant="softmax", enable_fas=False)
    assert soft(logits.float(), Y0, G).item() == pytest.approx(2.0)


def test_eval_mode_reads_but_never_writes_the_ema():
    fas = FASLoss(6, 2, ema_alpha=0.5).double()
    fas(logits_for([1, 3, 2, 2]), Y0, G, index=IDX)
    before = fas.ema.clone()
    fas.eval()
    fas(logits_for([5, 5, 5, 5]), Y0, G, index=torch.tensor([0, 1, 4, 5]))
    assert torch.equal(fas.ema, before)
    assert fas.seen.tolist() == [True] * 4 + [False] * 2


def test_single_row_and_single_group_batches_are_finite():
    fas = FASLoss(4, 3)
    one = fas(torch.tensor([[0.3, -0.2]]), torch.tensor([1]), torch.tensor([2]), index=torch.tensor([3]))
    assert torch.isfinite(one)
    assert fas.last_weights.tolist() == [1.0]
    same = fas(torch.randn(3, 2), torch.tensor([0, 1, 0]), torch.tensor([1, 1, 1]), index=torch.tensor([0, 1, 2]))
    assert torch.isfinite(same)


def test_protocol_and_logs():
    fas = FASLoss(4, 3, beta_lr=0.5)
    assert isinstance(fas, Objective)
    (group,) = fas.param_groups(0.01)
    assert group["lr"] == 0.5 and group["params"][0] is fas.group_scale.weight
    assert fas.epoch_logs() == {"group_scales": [1.0, 1.0, 1.0]}
    fas(torch.randn(3, 2), torch.tensor([0, 1, 0]), torch.tensor([0, 1, 2]), index=torch.tensor([0, 1, 2]))
    logs = fas.epoch_logs()
    assert logs["max_weight"] >= 1.0 and "group_scales" in logs
    assert "ema" in fas.state_dict() and "group_scale.weight" in fas.state_dict()


# ---------------------------------------------------------------- softmax variant


def test_softmax_weights_by_hand():
    # ℓ = [ln 2, ln 4, ln 2, ln 4], β = 1, c = 0.5, T = 1: scores 0.5 ℓ + 0.5, so
    # w ∝ e^{ℓ/2} = [√2, 2, √2, 2] and w = 4 [√2, 2, √2, 2] / (2√2 + 4)
    fas = FASLoss(4, 2, variant="softmax").double()
    loss = fas(logits_for([math.log(2), math.log(4)] * 2), Y0, G)
    r2 = math.sqrt(2)
    w = [4 * v / (2 * r2 + 4) for v in (r2, 2, r2, 2)]
    torch.testing.assert_close(fas.last_weights, torch.tensor(w, dtype=torch.float64))
    assert fas.last_weights.sum().item() == pytest.approx(4.0)
    expected = sum(wi * li for wi, li in zip(w, [math.log(2), math.log(4)] * 2)) / 4
    assert loss.item() == pytest.approx(expected)


def test_softmax_weights_sum_to_n_with_temperature_and_group_scales():
    torch.manual_seed(0)
    fas = FASLoss(1, 3, variant="softmax", c=0.7, temperature=0.3)
    with torch.no_grad():
        fas.group_scale.weight.copy_(torch.tensor([[0.5], [1.0], [3.0]]))
    logits, y, g = torch.randn(11, 4), torch.randint(0, 4, (11,)), torch.randint(0, 3, (11,))
    fas(logits, y, g)
    assert fas.last_weights.sum().item() == pytest.approx(11.0, rel=1e-5)
    ce = F.cross_entropy(logits, y, reduction="none")
    beta = fas.beta.detach()[g]
    torch.testing.assert_close(fas.last_weights, 11 * torch.softmax((0.3 * ce + 0.7 * beta) / 0.3, 0))


def test_softmax_weights_are_not_detached():
    """Official code: d loss/d ℓ_j = p_j (1 + (1-c)/T (ℓ_j - loss)), through the softmax too."""
    torch.manual_seed(1)
    c, t = 0.5, 0.7
    fas = FASLoss(1, 2, variant="softmax", c=c, temperature=t).double()
    logits = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    y, g = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([0, 0, 0, 1, 1, 1])
    loss = fas(logits, y, g)
    loss.backward()
    ce = F.cross_entropy(logits.detach(), y, reduction="none")
    p = fas.last_weights / 6
    coef = p * (1 + (1 - c) / t * (ce - loss.detach()))
    expected = coef[:, None] * (torch.softmax(logits.detach(), 1) - F.one_hot(y, 3))
    torch.testing.assert_close(logits.grad, expected)
    detached = (fas.last_weights / 6)[:, None] * (torch.softmax(logits.detach(), 1) - F.one_hot(y, 3))
    assert not torch.allclose(logits.grad, detached)
    # β: (c/T) Σ_{j∈g} p_j (ℓ_j - loss), by plain (not negated) gradient
    dbeta = torch.stack([(c / t) * (p[g == k] * (ce[g == k] - loss.detach())).sum() for k in (0, 1)])
    torch.testing.assert_close(fas.group_scale.weight.grad[:, 0], dbeta)


def _softmax_weight_ratios(fas, steps=10):
    """SGD on β alone (lr 0.5) over one batch whose group 1 is far less confident; per step
    the ratio of group 1's mean weight to group 0's."""
    opt = torch.optim.SGD(fas.param_groups(0.5))
    logits = torch.tensor([[2.0, 0.0]] * 4 + [[0.2, 0.0]] * 4)
    y, g = torch.zeros(8, dtype=torch.long), torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    ratios = []
    for _ in range(steps):
        opt.zero_grad()
        fas(logits, y, g).backward()
        opt.step()
        fas.after_step()
        ratios.append((fas.last_weights[4:].mean() / fas.last_weights[:4].mean()).item())
    return ratios


def test_softmax_minimisation_drives_beta_down_for_the_high_loss_group():
    """The documented opposite of the seed variant: plain descent lowers the high-loss group's β."""
    fas = FASLoss(1, 2, variant="softmax")
    ratios = _softmax_weight_ratios(fas)
    assert fas.beta[1] < 1.0 < fas.beta[0]
    assert ratios[0] > 1.0  # at the start the loss term favours the hard group's rows...
    assert all(b < a for a, b in zip(ratios, ratios[1:]))  # ...and the learnt β erodes that, step by step


def test_softmax_beta_ascent_raises_the_high_loss_group_until_its_loss_meets_the_batch():
    """beta_ascent=True flips the published rule: the hard group's β and weight share rise."""
    assert FASLoss(1, 2, variant="softmax").beta_ascent is False and FASLoss(1, 2).beta_ascent is True
    fas = FASLoss(1, 2, variant="softmax", beta_ascent=True, c=0.7)
    ratios = _softmax_weight_ratios(fas)
    assert fas.beta[1] > 1.0 > fas.beta[0]
    assert all(b > a for a, b in zip(ratios, ratios[1:]))


# ---------------------------------------------------------------- training


def conflict_data(n, seed):
    """Two groups whose labels follow different rules on the same features; group 1 is 15%.

    No model can fit both, so plain cross-entropy sides with the majority.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=gen)
    g = (torch.rand(n, generator=gen) < 0.15).long()
    y = torch.where(g == 0, x[:, 0] + 0.2 * x[:, 1] > 0, x[:, 1] + 0.2 * x[:, 0] > 0).long()
    return x, y, g


def accuracy_gap(model, x, y, g):
    with torch.no_grad():
        right = (model(x).argmax(1) == y).float()
    return (right[g == 0].mean() - right[g == 1].mean()).item(), right.mean().item()


@pytest.fixture(scope="module")
def conflict():
    return conflict_data(2000, 0), conflict_data(4000, 1)


def test_training_seed_variant_narrows_the_group_accuracy_gap(conflict):
    (x, y, g), test = conflict
    gap_ce, _ = accuracy_gap(fit_small(CrossEntropy(), x, y, g), *test)
    fas = FASLoss(len(y), 2)
    gap_fas, _ = accuracy_gap(fit_small(fas, x, y, g), *test)
    assert gap_ce > 0.3
    assert gap_fas < gap_ce - 0.05
    assert fas.beta[1] > 1.0 > fas.beta[0]  # the minority's scale went up by ascent


def test_training_softmax_variant_learnable_beta_works_against_the_minority(conflict):
    """With β learnt at the model's rate (as in the official code) the gap widens, as documented."""
    (x, y, g), test = conflict
    gap_ce, _ = accuracy_gap(fit_small(CrossEntropy(), x, y, g), *test)
    fas = FASLoss(len(y), 2, variant="softmax")
    gap_fas, _ = accuracy_gap(fit_small(fas, x, y, g), *test)
    assert fas.beta[1] < 1.0 < fas.beta[0]
    assert gap_fas > gap_ce


def test_training_softmax_variant_individual_scaling_narrows_the_gap(conflict):
    """The loss-softmax term alone (c = 0, T = 0.25) narrows the gap of a linear model."""
    (x, y, g), test = conflict
    gap_ce, _ = accuracy_gap(fit_small(CrossEntropy(), x, y, g, hidden=0), *test)
    gap_fas, _ = accuracy_gap(fit_small(FASLoss(len(y), 2, variant="softmax", c=0.0, temperature=0.25), x, y, g, hidden=0),
                              *test)
    assert gap_fas < gap_ce - 0.03
