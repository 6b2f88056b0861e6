"""Group resampling and group-mixing batch samplers: exact counts, determinism, the per-batch guarantee."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from reprogram.errors import InputError, LengthMismatchError, ReprogramError
from reprogram.train.sampling import GroupBalancedBatchSampler, GroupResampler, resample_indices

# groups 0, 1, 2 with 5, 2 and 1 rows
G = np.array([0, 1, 0, 0, 2, 1, 0, 0])


def _usage(idx, n):
    return np.bincount(np.asarray(idx).ravel(), minlength=n)


# ---------------------------------------------------------------- resample_indices


@pytest.mark.parametrize("to, per_group", [("mean", 3), ("min", 1), ("max", 5)])  # mean of 5,2,1 = 2.67 -> 3
def test_resample_counts_are_exact(to, per_group):
    idx = resample_indices(G, to=to, seed=1)
    assert idx.dtype == np.int64 and len(idx) == 3 * per_group
    np.testing.assert_array_equal(np.bincount(G[idx], minlength=3), [per_group] * 3)
    use = _usage(idx, len(G))
    for grp in range(3):
        rows = np.flatnonzero(G == grp)
        t = per_group / len(rows)
        # each row floor(T/n) or ceil(T/n) times: undersampling never repeats a row
        assert np.all((use[rows] == np.floor(t)) | (use[rows] == np.ceil(t)))


def test_resample_within_labels():
    g = np.array([0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1, 1])
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1])
    # class 0: groups have 4 and 1 rows; class 1: 2 and 5
    idx = resample_indices(g, to="max", labels=y, seed=0)
    cells = np.bincount(g[idx] * 2 + y[idx], minlength=4)  # (g0,y0), (g0,y1), (g1,y0), (g1,y1)
    np.testing.assert_array_equal(cells, [4, 5, 4, 5])
    idx = resample_indices(g, to="min", labels=y, seed=0)
    np.testing.assert_array_equal(np.bincount(g[idx] * 2 + y[idx], minlength=4), [1, 2, 1, 2])
    # a group without rows of a class stays without them
    idx = resample_indices(np.array([0, 0, 1, 0]), to="max", labels=np.array([0, 1, 1, 0]), seed=0)
    np.testing.assert_array_equal(sorted(np.unique(idx)), [0, 1, 2, 3])
    assert len(idx) == 2 + 2  # class 0: only group 0 (2 rows); class 1: two cells of 1 row


def test_resample_is_deterministic_per_seed():
    rng = np.random.default_rng(0)
    g = rng.choice(4, 400, p=[0.5, 0.3, 0.15, 0.05])
    a, b = resample_indices(g, seed=5), resample_indices(g, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, resample_indices(g, seed=6))


def test_resample_bad_input():
    with pytest.raises(InputError, match="to must be"):
        resample_indices(G, to="median")
    with pytest.raises(LengthMismatchError):
        resample_indices(G, labels=G[:3])
    with pytest.raises(InputError, match="seed"):
        resample_indices(G, seed=-1)


# ---------------------------------------------------------------- GroupResampler


def test_group_resampler_epochs():
    rng = np.random.default_rng(1)
    g = rng.choice(3, 200, p=[0.7, 0.2, 0.1])
    s = GroupResampler(g, to="max", seed=3)
    n_max = np.bincount(g).max()
    assert len(s) == 3 * n_max
    first, second = list(s), list(s)  # no set_epoch: each pass is a new epoch
    assert s.epoch == 1
    np.testing.assert_array_equal(first, resample_indices(g, to="max", seed=[3, 0]))
    np.testing.assert_array_equal(second, resample_indices(g, to="max", seed=[3, 1]))
    assert first != second
    s.set_epoch(7)
    e7 = list(s)
    s.set_epoch(7)
    assert list(s) == e7 and e7 != first
    assert list(GroupResampler(g, to="max", seed=3)) == first  # same seed, same epoch 0
    np.testing.assert_array_equal(np.bincount(g[e7]), [n_max] * 3)
    with pytest.raises(InputError, match="epoch"):
        s.set_epoch(-1)
    with pytest.raises(InputError, match="seed"):
        GroupResampler(g, seed=1.5)


def test_group_resampler_in_a_dataloader(biased_splits):
    train = biased_splits[0]
    loader = DataLoader(train, batch_size=50, sampler=GroupResampler(train, to="mean", labels=train.labels))
    groups = torch.cat([grp for _, _, grp in loader]).numpy()
    counts = np.bincount(groups)
    assert counts[0] == counts[1] == len(groups) // 2


# ---------------------------------------------------------------- GroupBalancedBatchSampler


def _check_batches(g, sampler, m, batch_size, proportions, drop_last):
    batches = list(sampler)
    n, n_groups = len(g), len(np.unique(g))
    assert len(batches) == len(sampler) and [len(b) for b in batches] == sampler.batch_sizes
    if not batches:
        assert drop_last
        return batches
    codes = np.unique(g, return_inverse=True)[1].reshape(-1)
    for b in batches:
        assert all(isinstance(i, int) for i in b)
        assert len(b) <= batch_size
        per_group = np.bincount(codes[b], minlength=n_groups)
        assert per_group.min() >= m  # the guarantee
        if proportions == "balanced":
            assert per_group.max() - per_group.min() <= 1
    if drop_last:
        assert all(len(b) == batch_size for b in batches)
    else:
        sizes = [len(b) for b in batches]
        assert max(sizes) - min(sizes) <= 1
    use = _usage(np.concatenate(batches), n)
    counts = np.bincount(codes, minlength=n_groups)
    drawn = np.bincount(codes[np.concatenate(batches)], minlength=n_groups)
    nb = len(batches)
    for k in range(n_groups):
        u = use[codes == k]
        t = drawn[k] / counts[k]
        if proportions == "balanced" or not drop_last:
            # every row of a group is used floor(T/n) or ceil(T/n) times
            assert np.all((u == np.floor(t)) | (u == np.ceil(t))), (k, t, np.bincount(u))
        if proportions == "natural" and not drop_last:
            if counts[k] >= m * nb:
                assert np.all(u == 1)  # every row exactly once
            else:
                assert drawn[k] == m * nb  # a small group is topped up to the minimum
        if proportions == "natural" and drop_last:
            # drop_last leaves out less than one batch of the drop_last=False epoch (<= nb + 1 batches)
            assert u.max() <= max(1, -(-m * (nb + 1) // counts[k]))
    if proportions == "natural" and drop_last:
        assert n - np.count_nonzero(use) < batch_size  # fewer than one batch of rows left out
    return batches


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n=st.integers(1, 300),
    n_groups=st.integers(1, 5),
    m=st.integers(0, 3),
    proportions=st.sampled_from(["natural", "balanced"]),
    drop_last=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_batch_sampler_guarantee_property(data, n, n_groups, m, proportions, drop_last, seed):
    skew = data.draw(st.lists(st.floats(0.01, 1.0), min_size=n_groups, max_size=n_groups))
    rng = np.random.default_rng(seed)
    g = rng.choice(np.arange(n_groups) * 10, n, p=np.asarray(skew) / sum(skew))  # sparse ids
    present = len(np.unique(g))
    batch_size = data.draw(st.integers(max(1, present * m), max(1, present * m) + 70))
    sampler = GroupBalancedBatchSampler(g, batch_size, min_per_group=m, proportions=proportions,
                                        drop_last=drop_last, seed=seed % 1000)
    _check_batches(g, sampler, m, batch_size, proportions, drop_last)
    _check_batches(g, sampler, m, batch_size, proportions, drop_last)  # and on the next epoch


def test_batch_sampler_covers_every_row_once_natural():
    rng = np.random.default_rng(0)
    g = rng.choice(3, 1000, p=[0.8, 0.17, 0.03])  # 30-odd rows in group 2
    s = GroupBalancedBatchSampler(g, 32, min_per_group=2)
    batches = _check_batches(g, s, 2, 32, "natural", False)
    use = _usage(np.concatenate(batches), 1000)
    assert np.all(use[g != 2] == 1) and np.all(use[g == 2] >= 2)
    # no duplicate rows inside a batch for the groups used once
    assert all(len(set(b)) >= len(b) - 2 for b in batches)


def test_batch_sampler_determinism_and_epochs():
    rng = np.random.default_rng(2)
    g = rng.choice(4, 500)
    mk = lambda seed=0: GroupBalancedBatchSampler(g, 20, min_per_group=3, proportions="balanced", seed=seed)  # noqa: E731
    a, b = mk(), mk()
    e0 = list(a)
    assert list(b) == e0
    e1 = list(a)  # a pass without set_epoch is the next epoch
    assert e1 != e0 and a.epoch == 1
    b.set_epoch(1)
    assert list(b) == e1
    b.set_epoch(0)
    assert list(b) == e0
    assert list(mk(seed=1)) != e0


def test_batch_sampler_with_dataloader(biased_splits):
    train = biased_splits[0]
    sampler = GroupBalancedBatchSampler(train, 16, min_per_group=4, seed=1)
    for x, y, grp in DataLoader(train, batch_sampler=sampler):
        assert x.shape[0] <= 16 and torch.bincount(grp, minlength=2).min() >= 4


def test_batch_sampler_impossible_settings():
    g = np.array([0, 1, 2] * 10)
    with pytest.raises(InputError) as e:
        GroupBalancedBatchSampler(g, 5, min_per_group=2)
    msg = str(e.value)
    assert isinstance(e.value, ReprogramError) and "\n" not in msg
    assert "batch_size 5" in msg and "3 groups" in msg and ">= 6" in msg
    for kwargs, match in [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=8, proportions="equal"), "proportions"),
        (dict(batch_size=8, min_per_group=-1), "min_per_group"),
        (dict(batch_size=8, seed=-3), "seed"),
    ]:
        with pytest.raises(InputError, match=match):
            GroupBalancedBatchSampler(g, **kwargs)
    assert len(GroupBalancedBatchSampler(g, 64, drop_last=True)) == 0
    assert list(GroupBalancedBatchSampler(g, 64, drop_last=True)) == []


def test_resample_strength_moves_cell_counts_geometrically():
    g = np.array([0] * 8 + [1] * 2)
    # s = 0: every cell keeps its size, so the epoch is a shuffle of all rows
    idx = resample_indices(g, strength=0, seed=0)
    np.testing.assert_array_equal(np.sort(idx), np.arange(10))
    # s = 1 is the equalisation (mean of 8 and 2 = 5 each)
    np.testing.assert_array_equal(np.bincount(g[resample_indices(g, strength=1, seed=0)]), [5, 5])
    # s = 0.5: n * (T/n) ** 0.5 -> 8 * sqrt(5/8) = 6.32 -> 6, 2 * sqrt(5/2) = 3.16 -> 3
    np.testing.assert_array_equal(np.bincount(g[resample_indices(g, strength=0.5, seed=0)]), [6, 3])
    # s = 2 over-corrects: 8 * (5/8)^2 = 3.125 -> 3, 2 * (5/2)^2 = 12.5 -> 12 (round half to even)
    np.testing.assert_array_equal(np.bincount(g[resample_indices(g, strength=2, seed=0)]), [3, 12])
    # within classes: the smaller group of each class ends up the larger one
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 0, 1])
    idx = resample_indices(g, labels=y, strength=2, seed=0)
    cells = np.bincount(g[idx] * 2 + y[idx], minlength=4)
    assert cells[2] > cells[0] and cells[3] > cells[1]  # class 0: 6 vs 1 rows; class 1: 2 vs 1
    sampler = GroupResampler(g, strength=2, seed=3)
    assert len(sampler) == 15 and len(list(sampler)) == 15
    for bad in (-1, float("nan"), "x"):
        with pytest.raises(InputError, match="strength"):
            resample_indices(g, strength=bad)
        with pytest.raises(InputError, match="strength"):
            GroupResampler(g, strength=bad)
