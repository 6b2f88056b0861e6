"""FairnessRegularizer: penalties by hand, gradients vs finite differences, weights, training."""

import math

import pytest
import torch
import torch.nn.functional as F
from tiny_models import fit_small

from reprogram.errors import InputError
from reprogram.train.objective import CrossEntropy, Objective
from reprogram.train.regularizers import PENALTIES, FairnessRegularizer


def binary_logits(p1):
    """Logits (0, logit p) whose softmax puts probability p on class 1."""
    return torch.tensor([[0.0, math.log(p / (1 - p))] for p in p1], dtype=torch.float64)


def sig(v):
    return 1 / (1 + math.exp(-v))


P1 = [0.2, 0.4, 0.7, 0.9, 0.5]
G3 = torch.tensor([0, 0, 1, 1, 2])
Y5 = torch.tensor([0, 1, 0, 1, 1])


def pen(name, logits, y, g, **kw):
    return FairnessRegularizer(name, **kw).penalty(logits, y, g).item()


# ---------------------------------------------------------------- values by hand


def test_dp_binary_by_hand():
    # group means of P(y=1): g0 (0.2+0.4)/2 = 0.3, g1 (0.7+0.9)/2 = 0.8, g2 0.5; overall 2.7/5 = 0.54
    lg = binary_logits(P1)
    # all pairs: 0.5² + 0.2² + 0.3² = 0.25 + 0.04 + 0.09
    assert pen("dp", lg, Y5, G3) == pytest.approx(0.38)
    # vs overall: 0.24² + 0.26² + 0.04² = 0.0576 + 0.0676 + 0.0016
    assert pen("dp", lg, Y5, G3, pairs="vs_overall") == pytest.approx(0.1268)
    # two groups: (0.3 - 0.8)² = 0.25
    assert pen("dp", lg[:4], Y5[:4], G3[:4]) == pytest.approx(0.25)


def test_dp_positive_class_zero_is_the_mirror_image():
    lg = binary_logits(P1)
    for name in ("dp", "smooth_dp"):
        assert pen(name, lg, Y5, G3, positive_class=0) == pytest.approx(pen(name, lg, Y5, G3))


def test_dp_multiclass_sums_over_classes():
    # g0 rows [.5 .3 .2], [.1 .6 .3] -> mean [.3 .45 .25]; g1 [.2 .2 .6]
    # gap [.1 .25 -.35]: 0.01 + 0.0625 + 0.1225 = 0.195
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], dtype=torch.float64)
    g = torch.tensor([0, 0, 1])
    y = torch.tensor([0, 1, 2])
    assert pen("dp", probs.log(), y, g) == pytest.approx(0.195)
    # vs overall: overall mean [.8/3, 1.1/3, 1.1/3]
    m = probs.mean(0)
    expected = ((probs[:2].mean(0) - m) ** 2).sum() + ((probs[2] - m) ** 2).sum()
    assert pen("dp", probs.log(), y, g, pairs="vs_overall") == pytest.approx(expected.item())


def test_eo_binary_by_hand():
    # y = 0 rows: g0 p=0.2, g1 p=0.7 -> 0.5² = 0.25; y = 1 rows: g0 0.4, g1 0.9, g2 0.5 -> 0.25 + 0.01 + 0.16
    lg = binary_logits(P1)
    assert pen("eo", lg, Y5, G3) == pytest.approx(0.25 + 0.25 + 0.01 + 0.16)
    # y = 1 with g1 also holding 0.3: g1 mean 0.6 -> (0.4-0.6)², y = 0: (0.2-0.6)²
    lg2 = binary_logits([0.2, 0.4, 0.6, 0.9, 0.3])
    g2 = torch.tensor([0, 0, 1, 1, 1])
    assert pen("eo", lg2, Y5, g2) == pytest.approx(0.16 + 0.04)


def test_eo_multiclass_within_each_true_class():
    probs = torch.tensor(
        [[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6], [0.6, 0.2, 0.2], [0.3, 0.3, 0.4]], dtype=torch.float64
    )
    y = torch.tensor([0, 0, 0, 2, 2])
    g = torch.tensor([0, 0, 1, 0, 1])
    # class 0: the 0.195 of the dp case; class 2: gap [.3 -.1 -.2] -> 0.09 + 0.01 + 0.04; class 1 absent
    assert pen("eo", probs.log(), y, g) == pytest.approx(0.195 + 0.14)


def test_smooth_dp_binary_by_hand():
    t = 0.1
    s = [sig((p - 0.5) / t) for p in P1[:4]]
    expected = ((s[0] + s[1]) / 2 - (s[2] + s[3]) / 2) ** 2
    assert pen("smooth_dp", binary_logits(P1[:4]), Y5[:4], G3[:4], temperature=t) == pytest.approx(expected)
    t = 0.3
    s = [sig((p - 0.5) / t) for p in P1]
    m = [(s[0] + s[1]) / 2, (s[2] + s[3]) / 2, s[4]]
    exp_all = (m[0] - m[1]) ** 2 + (m[0] - m[2]) ** 2 + (m[1] - m[2]) ** 2
    assert pen("smooth_dp", binary_logits(P1), Y5, G3, temperature=t) == pytest.approx(exp_all)


def test_smooth_indicator_sharpens_towards_the_decision_gap():
    # decisions 1[p >= 0.5]: g0 (0, 0) g1 (1, 1) -> decision gap 1; a small T approaches 1², T = 1 stays small
    lg = binary_logits(P1[:4])
    assert pen("smooth_dp", lg, Y5[:4], G3[:4], temperature=0.01) == pytest.approx(1.0, abs=1e-3)
    assert pen("smooth_dp", lg, Y5[:4], G3[:4], temperature=1.0) < pen("dp", lg, Y5[:4], G3[:4])


def test_smooth_multiclass_uses_a_soft_argmax():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, dtype=torch.float64)
    g, y = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 1, 2, 0, 1, 2])
    s = torch.softmax(logits / 0.2, 1)
    expected = ((s[:3].mean(0) - s[3:].mean(0)) ** 2).sum().item()
    assert pen("smooth_dp", logits, y, g, temperature=0.2) == pytest.approx(expected)
    exp_eo = sum(((s[c] - s[c + 3]) ** 2).sum().item() for c in range(3))
    assert pen("smooth_eo", logits, y, g, temperature=0.2) == pytest.approx(exp_eo)


def test_prejudice_remover_by_hand():
    # P(1|g0) = 0.3, P(1|g1) = 0.8, P(g) = 1/2, P(1) = 0.55
    mi = 0.5 * (0.3 * math.log(0.3 / 0.55) + 0.7 * math.log(0.7 / 0.45)) + 0.5 * (
        0.8 * math.log(0.8 / 0.55) + 0.2 * math.log(0.2 / 0.45)
    )
    lg = binary_logits(P1[:4])
    assert pen("prejudice_remover", lg, Y5[:4], G3[:4]) == pytest.approx(mi)

    # the same number as H(C) - Σ_g P(g) H(C | g)
    def h(p):
        return -sum(v * math.log(v) for v in p)

    assert mi == pytest.approx(h([0.55, 0.45]) - 0.5 * h([0.3, 0.7]) - 0.5 * h([0.8, 0.2]))


def test_prejudice_remover_is_zero_when_predictions_do_not_depend_on_group():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.3, 0.45, 0.25], [0.3, 0.45, 0.25]], dtype=torch.float64)
    g = torch.tensor([0, 0, 1, 2])  # every group's mean distribution is [.3 .45 .25]
    y = torch.tensor([0, 1, 2, 0])
    assert pen("prejudice_remover", probs.log(), y, g) == pytest.approx(0.0, abs=1e-12)
    assert pen("prejudice_remover", probs.log(), y, torch.tensor([0, 1, 0, 1])) > 1e-3


# ---------------------------------------------------------------- subgroup weights


def test_subgroup_weights_scale_terms():
    lg = binary_logits(P1)
    # pairs: (0,1) × 3, (0,2) × 1, (1,2) × 3 -> 0.25·3 + 0.04 + 0.09·3
    assert pen("dp", lg, Y5, G3, subgroup_weights={1: 3.0}) == pytest.approx(1.06)
    assert pen("dp", lg, Y5, G3, subgroup_weights=torch.tensor([1.0, 3.0, 1.0])) == pytest.approx(1.06)
    # vs overall: 0.0576 + 3·0.0676 + 0.0016
    assert pen("dp", lg, Y5, G3, pairs="vs_overall", subgroup_weights={1: 3.0}) == pytest.approx(0.262)
    # a zero weight removes every term of that group
    assert pen("dp", lg, Y5, G3, subgroup_weights={2: 0.0}) == pytest.approx(0.25)
    # prejudice remover: each group's MI term is scaled
    lg4 = binary_logits(P1[:4])
    t0 = 0.5 * (0.3 * math.log(0.3 / 0.55) + 0.7 * math.log(0.7 / 0.45))
    t1 = 0.5 * (0.8 * math.log(0.8 / 0.55) + 0.2 * math.log(0.2 / 0.45))
    got = pen("prejudice_remover", lg4, Y5[:4], G3[:4], subgroup_weights={0: 2.0})
    assert got == pytest.approx(2 * t0 + t1)


# ---------------------------------------------------------------- gradients


CASES = [(name, pairs) for name in PENALTIES for pairs in ("all", "vs_overall")]


@pytest.mark.parametrize("name,pairs", CASES)
@pytest.mark.parametrize("n_classes", [2, 3])
def test_gradients_match_finite_differences(name, pairs, n_classes):
    gen = torch.Generator().manual_seed(n_classes)
    logits = torch.randn(9, n_classes, dtype=torch.float64, generator=gen).requires_grad_(True)
    y = torch.tensor([0, 1, 1, 0, 1, 0, 1, 0, 1]) % n_classes
    if n_classes == 3:
        y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    g = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    reg = FairnessRegularizer(name, 2.0, pairs=pairs, temperature=0.5, subgroup_weights={2: 1.5})
    assert torch.autograd.gradcheck(lambda z: reg(z, y, g), (logits,))
    assert torch.autograd.gradcheck(lambda z: reg.penalty(z, y, g), (logits,))


def test_loss_is_cross_entropy_plus_eta_penalty():
    lg = binary_logits(P1)
    reg = FairnessRegularizer("dp", 3.0)
    assert reg(lg, Y5, G3).item() == pytest.approx(F.cross_entropy(lg, Y5).item() + 3.0 * 0.38)
    assert FairnessRegularizer("dp", 0.0)(lg, Y5, G3).item() == pytest.approx(F.cross_entropy(lg, Y5).item())
    logs = reg.epoch_logs()
    assert logs["penalty"] == pytest.approx(0.38) and logs["task_loss"] == pytest.approx(F.cross_entropy(lg, Y5).item())
    assert reg.epoch_logs() == {}
    assert isinstance(reg, Objective) and reg.param_groups(0.1) == []


# ---------------------------------------------------------------- absent groups


@pytest.mark.parametrize("name", PENALTIES)
def test_absent_groups_are_skipped(name):
    lg = binary_logits(P1[:4])
    y = Y5[:4]
    with_gap = FairnessRegularizer(name, n_groups=5).penalty(lg, y, torch.tensor([0, 0, 3, 3]))
    dense = FairnessRegularizer(name).penalty(lg, y, torch.tensor([0, 0, 1, 1]))
    assert torch.isfinite(with_gap) and with_gap.item() == pytest.approx(dense.item())
    # one group only: no gap, and the loss is the cross-entropy, with a gradient
    z = lg.clone().requires_grad_(True)
    loss = FairnessRegularizer(name, 5.0, n_groups=3)(z, y, torch.tensor([2, 2, 2, 2]))
    assert loss.item() == pytest.approx(F.cross_entropy(lg, y).item())
    loss.backward()
    assert torch.isfinite(z.grad).all()


def test_eo_class_with_a_single_group_contributes_nothing():
    lg = binary_logits([0.2, 0.7, 0.4])
    y, g = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0])  # y=1 only in group 0
    assert pen("eo", lg, y, g) == pytest.approx(0.25)


def test_confident_predictions_keep_the_prejudice_remover_finite():
    logits = torch.tensor([[60.0, -60.0], [60.0, -60.0], [-60.0, 60.0], [-60.0, 60.0]], requires_grad=True)
    y, g = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1])
    loss = FairnessRegularizer("prejudice_remover")(logits, y, g)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx(math.log(2), rel=1e-4)  # MI of a perfectly group-determined label


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kw",
    [dict(penalty="tpr"), dict(pairs="max"), dict(eta=-1.0), dict(temperature=0.0), dict(positive_class=2),
     dict(n_groups=0), dict(subgroup_weights={0: -1.0}), dict(subgroup_weights=torch.tensor([1.0, -2.0])),
     dict(subgroup_weights=torch.ones(3), n_groups=2), dict(subgroup_weights={4: 2.0}, n_groups=2)],
)
def test_bad_arguments(kw):
    with pytest.raises(InputError):
        FairnessRegularizer(**kw)


def test_bad_batches():
    lg = binary_logits(P1[:4])
    y = Y5[:4]
    with pytest.raises(InputError, match="out of range"):
        FairnessRegularizer("dp", n_groups=2).penalty(lg, y, torch.tensor([0, 1, 2, 1]))
    with pytest.raises(InputError, match="subgroup_weights"):
        FairnessRegularizer("dp", subgroup_weights=torch.ones(2)).penalty(lg, y, torch.tensor([0, 1, 2, 1]))
    with pytest.raises(InputError, match="integer"):
        FairnessRegularizer("dp").penalty(lg, y, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(InputError, match="one id per row"):
        FairnessRegularizer("dp").penalty(lg, y, torch.tensor([0, 1]))
    with pytest.raises(InputError, match="classes"):
        FairnessRegularizer("dp").penalty(torch.zeros(4, 1), y, torch.tensor([0, 1, 0, 1]))


# ---------------------------------------------------------------- training


def biased_data(n, seed):
    """Group 1 (30%) has a shifted feature that drives the label; the group is also a feature."""
    gen = torch.Generator().manual_seed(seed)
    g = (torch.rand(n, generator=gen) < 0.3).long()
    x1 = torch.randn(n, generator=gen) + g
    x2 = torch.randn(n, generator=gen)
    y = ((1.5 * x1 + 0.5 * x2 + 0.5 * torch.randn(n, generator=gen)) > 0.6).long()
    return torch.stack([x1, x2, g.float()], 1), y, g


def gaps(model, x, y, g):
    """Decision-based gaps: demographic parity, equalized odds (max over classes of the
    per-class rate gap), and accuracy."""
    with torch.no_grad():
        pred = model(x).argmax(1)
    k = int(y.max()) + 1
    onehot = F.one_hot(pred, k).float()
    dp = max((onehot[g == 0, c].mean() - onehot[g == 1, c].mean()).abs().item() for c in range(k))
    eo = max(
        (onehot[(g == 0) & (y == t), c].mean() - onehot[(g == 1) & (y == t), c].mean()).abs().item()
        for t in range(k) for c in range(k)
    )
    return {"dp": dp, "eo": eo, "acc": (pred == y).float().mean().item()}


@pytest.fixture(scope="module")
def biased():
    train, test = biased_data(2000, 0), biased_data(4000, 1)
    return train, test, gaps(fit_small(CrossEntropy(), *train), *test)


@pytest.mark.parametrize(
    "name,eta,target",
    [("dp", 5.0, "dp"), ("smooth_dp", 1.0, "dp"), ("prejudice_remover", 5.0, "dp"), ("eo", 5.0, "eo"),
     ("smooth_eo", 1.0, "eo")],
)
def test_training_reduces_the_target_gap(biased, name, eta, target):
    train, test, ce = biased
    got = gaps(fit_small(FairnessRegularizer(name, eta), *train), *test)
    assert got[target] < 0.75 * ce[target], (got, ce)
    assert got["acc"] > ce["acc"] - 0.07


def test_training_multiclass_dp(biased):
    """Three classes (the label cut at two thresholds): the regularizer narrows every class's rate gap."""
    (x, _, g), (xt, _, gt), _ = biased
    y3 = torch.bucketize(1.5 * x[:, 0] + 0.5 * x[:, 1], torch.tensor([0.0, 1.5]))
    yt3 = torch.bucketize(1.5 * xt[:, 0] + 0.5 * xt[:, 1], torch.tensor([0.0, 1.5]))
    ce = gaps(fit_small(CrossEntropy(), x, y3, g), xt, yt3, gt)
    got = gaps(fit_small(FairnessRegularizer("dp", 5.0), x, y3, g), xt, yt3, gt)
    assert got["dp"] < 0.75 * ce["dp"], (got, ce)
