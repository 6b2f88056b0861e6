"""Per-group sufficient statistics: every fairness and calibration figure is read off these.

Two count tables hold everything ``fairness_report`` needs:

* ``confusion[g, t, p]`` — rows of group ``g`` with true class ``t`` predicted as ``p``;
* a calibration histogram per group: ``calib_count[g, c, f]`` rows and
  ``calib_score[g, c, f]`` summed confidence, for correctness ``c`` and fine score bin
  ``f`` (binary: whether the true class is the positive one; multi-class: whether the
  top-label prediction is right).

Both are made by one ``np.bincount`` over a joint integer key, which is as fast as a pass
over n rows can be in numpy (a per-group Python loop or a pandas groupby costs 10-1000x
more). Counts are additive, so chunks of a file too large for memory can be counted one
by one and summed (``GroupCounts.__add__``) to give exactly the in-memory result.

The fine histogram has ``n_bins * subbins`` bins of equal width on [0, 1], so the usual
equal-width ECE bins are exact unions of fine bins, and equal-mass bins are found from
cumulative counts without sorting the scores (their edges fall on the fine grid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["GroupCounts", "count_groups", "fine_subbins"]

# Upper bound on the cells of a calibration histogram; beyond it the fine grid coarsens.
_MAX_HIST_CELLS = 1 << 22


def fine_subbins(n_groups: int, n_bins: int, subbins: int = 256) -> int:
    """Fine bins per ECE bin: ``subbins``, halved until the histogram stays small.

    With many intersectional groups the (group, correct, fine bin) histogram would
    outgrow the caches and the bincount would slow down by an order of magnitude.
    """
    while subbins > 1 and n_groups * n_bins * subbins * 2 > _MAX_HIST_CELLS:
        subbins //= 2
    return subbins


@dataclass
class GroupCounts:
    """Additive per-group counts (see the module docstring)."""

    confusion: np.ndarray  # (G, K, K) int64
    calib_count: np.ndarray | None = None  # (G, 2, F) int64
    calib_score: np.ndarray | None = None  # (G, 2, F) float64
    n_bins: int = 15

    def __add__(self, other: GroupCounts) -> GroupCounts:
        if self.confusion.shape != other.confusion.shape or (self.calib_count is None) != (other.calib_count is None):
            raise ValueError("cannot add counts of different shapes (other groups, classes or bins)")
        if self.calib_count is None:
            return GroupCounts(self.confusion + other.confusion, n_bins=self.n_bins)
        return GroupCounts(
            self.confusion + other.confusion,
            self.calib_count + other.calib_count,
            self.calib_score + other.calib_score,
            self.n_bins,
        )


def count_groups(
    group: np.ndarray,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_groups: int,
    n_classes: int,
    *,
    confidence: np.ndarray | None = None,
    correct: np.ndarray | None = None,
    n_bins: int = 15,
    subbins: int | None = None,
) -> GroupCounts:
    """Count one batch of rows. All index arrays must already be valid codes.

    ``confidence`` (floats in [0, 1]) and ``correct`` (0/1) are given together, or not
    at all; ``subbins`` defaults to :func:`fine_subbins`. Passing ``y_true`` itself as
    ``correct`` (a binary task whose positive class has index 1) saves a pass.
    """
    k = n_classes
    # joint keys are built in place on int64 arrays: each step is one pass over n
    gy = np.multiply(group, k, dtype=np.int64)
    gy += y_true
    key = np.multiply(gy, k)
    key += y_pred
    confusion = np.bincount(key, minlength=n_groups * k * k).reshape(n_groups, k, k)
    if confidence is None:
        return GroupCounts(confusion, n_bins=n_bins)
    if subbins is None:
        subbins = fine_subbins(n_groups, n_bins)
    n_fine = n_bins * subbins
    fine = np.empty(len(confidence), dtype=np.int64)
    np.multiply(confidence, n_fine, out=fine, casting="unsafe")  # truncation = floor on [0, 1]
    np.minimum(fine, n_fine - 1, out=fine)  # a score of exactly 1.0 belongs to the last bin
    if correct is y_true and k == 2:
        gc = gy  # group * 2 + correct is the group-and-label key already built
    else:
        gc = np.multiply(group, 2, dtype=np.int64)
        gc += correct
    np.multiply(gc, n_fine, out=key)
    key += fine
    cells = n_groups * 2 * n_fine
    calib_count = np.bincount(key, minlength=cells).reshape(n_groups, 2, n_fine)
    calib_score = np.bincount(key, weights=confidence, minlength=cells).reshape(n_groups, 2, n_fine)
    return GroupCounts(confusion, calib_count, calib_score, n_bins)
