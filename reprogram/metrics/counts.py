"""Per-group sufficient statistics: every fairness and calibration figure is read off these.

Two count tables hold everything ``fairness_report`` needs:

* ``confusion[g, t, p]`` — rows of group ``g`` with true class ``t`` predicted as ``p``;
* a calibration histogram per group: ``calib_count[g, f, c]`` rows and
  ``calib_score[g, f, c]`` summed confidence, for fine score bin ``f`` and correctness
  ``c`` (binary: whether the true class is the positive one; multi-class: whether the
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

    With many intersectional groups the (group, fine bin, correct) histogram would
    outgrow the caches and the bincount would slow down by an order of magnitude.
    """
    while subbins > 1 and n_groups * n_bins * subbins * 2 > _MAX_HIST_CELLS:
        subbins //= 2
    return subbins


@dataclass
class GroupCounts:
    """Additive per-group counts (see the module docstring)."""

    confusion: np.ndarray  # (G, K, K) int64
    calib_count: np.ndarray | None = None  # (G, F, 2) int64
    calib_score: np.ndarray | None = None  # (G, F, 2) float64
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


def _key(*parts: tuple[np.ndarray, int]) -> np.ndarray:
    """Mixed-radix joint index ``((a0 * r1 + a1) * r2 + a2) ...`` as one int64 array."""
    (first, _), rest = parts[0], parts[1:]
    stride = 1
    for _, radix in rest:
        stride *= radix
    key = np.multiply(first, stride, dtype=np.int64)
    for values, radix in rest:
        stride //= radix
        if stride == 1:
            key += values
        else:
            key += np.multiply(values, stride, dtype=np.int64)
    return key


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
    at all; ``subbins`` defaults to :func:`fine_subbins`.
    """
    k = n_classes
    confusion = np.bincount(
        _key((group, n_groups), (y_true, k), (y_pred, k)), minlength=n_groups * k * k
    ).reshape(n_groups, k, k)
    if confidence is None:
        return GroupCounts(confusion, n_bins=n_bins)
    if subbins is None:
        subbins = fine_subbins(n_groups, n_bins)
    n_fine = n_bins * subbins
    fine = np.multiply(confidence, n_fine).astype(np.int64)
    np.minimum(fine, n_fine - 1, out=fine)  # a score of exactly 1.0 belongs to the last bin
    key = _key((group, n_groups), (fine, n_fine), (correct, 2))
    cells = n_groups * n_fine * 2
    calib_count = np.bincount(key, minlength=cells).reshape(n_groups, n_fine, 2)
    calib_score = np.bincount(key, weights=confidence, minlength=cells).reshape(n_groups, n_fine, 2)
    return GroupCounts(confusion, calib_count, calib_score, n_bins)
