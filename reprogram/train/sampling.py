"""Data-side fairness by sampling: group resampling per epoch and group-mixing mini-batches.

* :func:`resample_indices` — one epoch's row indices in which every group (optionally:
  every group within each class) appears equally often: the mean, min or max group count.
* :class:`GroupResampler` — a ``torch.utils.data.Sampler`` that draws a fresh such
  resample every epoch (``DataLoader(ds, sampler=GroupResampler(ds.group_ids))``).
* :class:`GroupBalancedBatchSampler` — a batch sampler whose every mini-batch holds at
  least ``min_per_group`` rows of every group
  (``DataLoader(ds, batch_sampler=GroupBalancedBatchSampler(ds.group_ids, 64))``).

All randomness comes from a numpy ``Generator`` seeded by ``seed`` (and, for the samplers,
the epoch), so a run is reproducible and independent of torch's global RNG state.

How a group of ``n`` rows yields ``T`` draws (over- and under-sampling alike): every row
is taken ``T // n`` times (whole shuffled passes over the group), then ``T % n``
*distinct* rows are taken once more. So each row is drawn ``floor(T/n)`` or
``ceil(T/n)`` times: undersampling (``T < n``) never repeats a row, and oversampling
spreads the repeats as evenly as possible, rather than drawing with replacement.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from reprogram.errors import InputError, LengthMismatchError
from reprogram.train.reweighting import _as_int_array, _check_strength, _pair_codes

__all__ = ["resample_indices", "GroupResampler", "GroupBalancedBatchSampler"]

_TARGETS = ("mean", "min", "max")


def _rng(seed: Any) -> np.random.Generator:
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise InputError(f"seed must be a non-negative int (or a numpy Generator), got {seed!r}") from None


def _draw(rows: np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """``target`` draws from ``rows``: ``target // n`` shuffled passes, then ``target % n`` distinct rows."""
    n = len(rows)
    reps, rem = divmod(int(target), n)
    parts = []
    if reps:
        parts.append(rng.permuted(np.tile(rows, (reps, 1)), axis=1).ravel())
    if rem:
        parts.append(rows[rng.permutation(n)[:rem]])
    return np.concatenate(parts) if parts else rows[:0]


def _split_by(codes: np.ndarray, n_codes: int) -> list[np.ndarray]:
    """Row positions of each code 0..n_codes-1, in ascending row order."""
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes, minlength=n_codes)
    return np.split(order, np.cumsum(counts)[:-1])


def _target(counts: np.ndarray, to: str) -> int:
    if to == "min":
        return int(counts.min())
    if to == "max":
        return int(counts.max())
    return max(1, int(np.floor(counts.mean() + 0.5)))


def resample_indices(group_ids: Any, *, to: str = "mean", labels: Any = None, seed: Any = 0,
                     strength: float = 1.0) -> np.ndarray:
    """Row indices of one resampled epoch in which every group has the same number of rows.

    With ``n_g`` the row count of group ``g`` and ``G`` groups, each group contributes
    exactly ``T`` rows, where ``T = round(mean_g n_g)`` (``to="mean"``, at least 1),
    ``min_g n_g`` (``to="min"``, pure undersampling) or ``max_g n_g`` (``to="max"``, pure
    oversampling); the result has ``G * T`` indices, shuffled. Groups larger than ``T``
    are undersampled without replacement; smaller ones are oversampled evenly (each row
    ``floor(T/n_g)`` or ``ceil(T/n_g)`` times; see the module docstring).

    With ``labels``, groups are equalised *within each class* instead: for class ``y`` the
    cells ``(g, y)`` that have rows each get ``T_y`` rows, ``T_y`` the mean/min/max of
    ``n_{g,y}`` over those cells. The class sizes stay about as they were (exactly, up to
    rounding, for ``"mean"`` when every group has every class) while the group mix becomes
    the same in every class, which removes the group-label correlation. A group with no
    row of class ``y`` stays without one.

    ``strength`` (``s >= 0``, default 1) moves each cell's draw count geometrically from
    its own size to the equalised one: ``T_c = round(n_c * (T / n_c) ** s)`` (at least 1).
    ``s = 1`` is the equalisation above, ``s = 0`` keeps every cell's size (a plain
    shuffle, i.e. no resampling), and ``s > 1`` over-corrects: within a class the smaller
    groups then outnumber the larger ones. Equalising the group mix leaves the proxies of
    the group in the features untouched, so a model trained on it keeps part of its gap;
    ``s`` is the knob a Pareto sweep turns to trade accuracy for a smaller gap.

    ``seed`` is anything ``numpy.random.default_rng`` takes (an int, a list of ints, a
    ``Generator``); the same seed gives the same indices.
    """
    g = _as_int_array(group_ids, "group_ids")
    if to not in _TARGETS:
        raise InputError(f"to must be 'mean', 'min' or 'max', got {to!r}")
    strength = _check_strength(strength)
    if labels is None:
        strata = np.zeros(len(g), dtype=np.int64)
    else:
        strata = _as_int_array(labels, "labels")
        if len(strata) != len(g):
            raise LengthMismatchError(f"labels has {len(strata)} rows but group_ids has {len(g)}")
    rng = _rng(seed)
    cell, n_cells = _pair_codes(strata, g)
    cell_stratum = np.empty(n_cells, dtype=np.int64)
    cell_stratum[cell] = np.unique(strata, return_inverse=True)[1].reshape(-1)
    counts = np.bincount(cell, minlength=n_cells)
    rows_by_cell = _split_by(cell, n_cells)
    targets = np.empty(n_cells, dtype=np.int64)
    for s in np.unique(cell_stratum):
        in_s = cell_stratum == s
        targets[in_s] = _target(counts[in_s], to)
    if strength != 1.0:
        targets = np.maximum(1, np.round(counts * (targets / counts) ** strength)).astype(np.int64)
    drawn = np.concatenate([_draw(rows, t, rng) for rows, t in zip(rows_by_cell, targets)])
    return rng.permutation(drawn)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, Integral) or int(seed) < 0:
        raise InputError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


class _EpochSeeded:
    """Epoch bookkeeping shared by the samplers: pass ``e`` uses ``default_rng([seed, e])``.

    ``set_epoch(e)`` makes the next pass use epoch ``e`` (as ``DistributedSampler``
    does); a pass without an intervening ``set_epoch`` moves on to the next epoch by
    itself, so a loop that never calls ``set_epoch`` still gets a fresh draw every pass.
    """

    seed: int
    epoch: int

    def _init_epochs(self, seed: Any) -> None:
        self.seed = _check_seed(seed)
        self.epoch = 0
        self._pinned = True

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass the one of epoch ``epoch`` (deterministic given the seed)."""
        if isinstance(epoch, bool) or not isinstance(epoch, Integral) or int(epoch) < 0:
            raise InputError(f"epoch must be a non-negative int, got {epoch!r}")
        self.epoch = int(epoch)
        self._pinned = True

    def _next_rng(self) -> np.random.Generator:
        if not self._pinned:
            self.epoch += 1
        self._pinned = False
        return np.random.default_rng([self.seed, self.epoch])


class GroupResampler(_EpochSeeded, Sampler[int]):
    """A sampler yielding a fresh group-equalised resample of the rows every epoch.

    Epoch ``e`` yields exactly ``resample_indices(group_ids, to=to, labels=labels,
    seed=[seed, e], strength=strength)``: every group (or every group within each class, with ``labels``)
    appears ``T`` times, ``T`` the mean, min or max group count (see
    :func:`resample_indices`). The length is the same every epoch. Call ``set_epoch(e)``
    before each epoch for runs that resume mid-way; without it, each pass advances the
    epoch by one. ``group_ids`` may also be a dataset with a ``group_ids`` attribute.
    """

    def __init__(self, group_ids: Any, to: str = "mean", *, labels: Any = None, seed: int = 0,
                 strength: float = 1.0):
        self.group_ids = _as_int_array(group_ids, "group_ids")
        self.labels = None if labels is None else _as_int_array(labels, "labels")
        self.to = to
        self.strength = strength
        self._init_epochs(seed)
        # validates `to`, `strength` and the label length, and fixes the (seed-independent) length
        self._len = len(self._indices(0))

    def _indices(self, seed) -> np.ndarray:
        return resample_indices(self.group_ids, to=self.to, labels=self.labels, seed=seed, strength=self.strength)

    def __iter__(self):
        return iter(self._indices(self._next_rng()).tolist())

    def __len__(self) -> int:
        return self._len


def _even_sizes(total: int, n: int) -> np.ndarray:
    """``n`` batch sizes summing to ``total`` that differ by at most one."""
    return total // n + (np.arange(n) < total % n).astype(np.int64)


class GroupBalancedBatchSampler(_EpochSeeded, Sampler[list[int]]):
    """A batch sampler in which every mini-batch holds at least ``min_per_group`` rows of every group.

    Guarantee: with ``G`` groups and ``m = min_per_group``, every batch of every epoch has
    ``>= m`` rows of each group (``batch_size >= G * m`` is required, else
    :class:`~reprogram.errors.InputError`), and no batch has more than ``batch_size``
    rows. Each batch first reserves ``m`` slots per group; the rest is filled by:

    * ``proportions="natural"`` (default): the epoch uses every row exactly once, except
      that a group with fewer than ``m * n_batches`` rows is topped up to that by evenly
      repeating its rows; the remaining slots are filled by a uniform shuffle of the
      remaining rows, so groups keep their natural shares. ``n_batches`` is the least
      ``b >= ceil(N / batch_size)`` with ``sum_g max(n_g, m*b) <= batch_size * b``.
    * ``proportions="balanced"``: the epoch has as many rows as the data (``N``, or
      ``G*m*n_batches`` if more), ``n_batches = ceil(N / batch_size)``, and each batch
      of ``s`` rows holds ``floor(s/G)`` or ``ceil(s/G)`` rows of each group (the extra
      slots rotate over the groups, so group totals per epoch differ by at most one).
      Groups larger than their share are subsampled without replacement, smaller ones
      oversampled evenly; a row of group ``g`` is used ``floor(T_g/n_g)`` or
      ``ceil(T_g/n_g)`` times, ``T_g ~ N/G``.

    With ``drop_last=False`` batch sizes differ by at most one (no small trailing batch,
    which could not hold every group); with ``drop_last=True`` every batch has exactly
    ``batch_size`` rows and the up to ``batch_size - 1`` surplus draws are left out
    (possibly no batch at all when there are fewer rows than ``batch_size``). Rows of a
    batch come in random order. The number of batches is the same every epoch.

    Epoch ``e`` draws from ``numpy.random.default_rng([seed, e])``; ``set_epoch(e)``
    pins the next pass to epoch ``e`` (as ``DistributedSampler``), otherwise each pass
    moves on by one epoch. ``group_ids`` may also be a dataset with a ``group_ids``
    attribute; the groups are the distinct ids present (``groups_``).
    """

    def __init__(
        self,
        group_ids: Any,
        batch_size: int,
        *,
        min_per_group: int = 1,
        proportions: str = "natural",
        drop_last: bool = False,
        seed: int = 0,
    ):
        g = _as_int_array(group_ids, "group_ids")
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
        if isinstance(min_per_group, bool) or not isinstance(min_per_group, Integral) or min_per_group < 0:
            raise InputError(f"min_per_group must be a non-negative int, got {min_per_group!r}")
        if proportions not in ("natural", "balanced"):
            raise InputError(f"proportions must be 'natural' or 'balanced', got {proportions!r}")
        self._init_epochs(seed)
        self.batch_size = B = int(batch_size)
        self.min_per_group = m = int(min_per_group)
        self.proportions = proportions
        self.drop_last = bool(drop_last)
        self.groups_, codes = np.unique(g, return_inverse=True)
        codes = codes.reshape(-1)
        G = len(self.groups_)
        if B < G * m:
            raise InputError(
                f"batch_size {B} cannot hold min_per_group={m} rows of each of {G} groups; "
                f"use batch_size >= {G * m} or a smaller min_per_group"
            )
        self.counts_ = np.bincount(codes, minlength=G)
        self._rows = _split_by(codes, G)
        N = len(g)
        nb_full = -(-N // B)  # ceil
        if proportions == "natural":
            if m > 0:
                # least b >= ceil(N/B) with sum_g max(n_g, m b) <= B b; the slack is nondecreasing in b
                lo, hi = nb_full, max(nb_full, -(-int(self.counts_.max()) // m))
                while lo < hi:
                    mid = (lo + hi) // 2
                    if np.maximum(self.counts_, m * mid).sum() <= B * mid:
                        hi = mid
                    else:
                        lo = mid + 1
                nb_full = lo
            self._offer = np.maximum(self.counts_, m * nb_full)  # draws each group offers per epoch
            total = int(self._offer.sum())
        else:
            total = max(N, G * m * nb_full)
        if self.drop_last:
            n_batches = total // B if proportions == "natural" else N // B
            self._sizes = np.full(n_batches, B, dtype=np.int64)
        else:
            self._sizes = _even_sizes(total, nb_full)

    def __len__(self) -> int:
        return len(self._sizes)

    @property
    def batch_sizes(self) -> list[int]:
        """The sizes of the batches of every epoch, in order."""
        return self._sizes.tolist()

    def _slots(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(batch, group) of every slot of the epoch."""
        sizes, G, m, nb = self._sizes, len(self.groups_), self.min_per_group, len(self._sizes)
        batches = np.arange(nb)
        if self.proportions == "natural":
            reserved_b = np.repeat(batches, G * m)
            reserved_g = np.tile(np.repeat(np.arange(G), m), nb)
            free = sizes - G * m
            pool = np.repeat(np.arange(G), self._offer - m * nb)
            free_g = rng.permutation(pool)[: int(free.sum())]
            return np.concatenate([reserved_b, np.repeat(batches, free)]), np.concatenate([reserved_g, free_g])
        per, extra = np.divmod(sizes, G)
        base_b = np.repeat(batches, G * per)
        base_g = np.tile(np.arange(G), int(per.sum()))
        # consecutive slots of the cyclic order are distinct groups, and extra < G per batch
        order = rng.permutation(G)
        extra_g = order[(rng.integers(G) + np.arange(int(extra.sum()))) % G]
        return np.concatenate([base_b, np.repeat(batches, extra)]), np.concatenate([base_g, extra_g])

    def __iter__(self):
        rng = self._next_rng()
        if len(self._sizes) == 0:
            return iter([])
        slot_b, slot_g = self._slots(rng)
        quotas = np.bincount(slot_g, minlength=len(self.groups_))
        # give each group's draws to its slots in batch order, so a batch gets consecutive
        # draws (distinct rows, except across the seam of two passes over a small group)
        by_group = np.lexsort((slot_b, slot_g))
        rows = np.empty(len(slot_b), dtype=np.int64)
        rows[by_group] = np.concatenate([_draw(r, q, rng) for r, q in zip(self._rows, quotas)])
        rows = rows[np.lexsort((rng.random(len(slot_b)), slot_b))]
        return iter([b.tolist() for b in np.split(rows, np.cumsum(self._sizes)[:-1])])
