"""Expected calibration error (ECE) read off fine calibration histograms.

ECE = sum over bins b of (n_b / n) * |mean confidence in b - fraction correct in b|.

* binary tasks: confidence is the score P(positive class), "correct" is y == positive
  (the reliability of the score itself, which is what group calibration fixes);
* multi-class tasks: confidence is the top-label probability, "correct" is
  argmax == y (top-label ECE, Guo et al. 2017).

Bins: ``"uniform"`` are equal-width bins on [0, 1] (the last one closed); ``"quantile"``
are equal-mass bins, each holding n / n_bins rows. Equal-mass bins are cut from the fine
histogram (see ``counts.py`` and :func:`bin_sums`) rather than by sorting the scores,
which keeps ECE O(n) and additive over chunks of a large file.
"""

from __future__ import annotations

import numpy as np

from reprogram.errors import InputError

__all__ = ["bin_sums", "ece_from_histogram", "expected_calibration_error"]

STRATEGIES = ("uniform", "quantile")


def bin_sums(count: np.ndarray, score: np.ndarray, n_bins: int, strategy: str = "uniform"):
    """Per-bin (rows, summed confidence, correct rows), each of shape ``(..., n_bins)``.

    ``count[..., c, f]`` and ``score[..., c, f]`` are fine histograms (see ``counts.py``).
    Uniform bins are unions of ``F / n_bins`` fine cells. Equal-mass bins hold exactly
    ``n / n_bins`` rows each: where a bin edge falls inside a fine cell, that cell's rows,
    confidence and correct count are split between the two bins in proportion (linear
    interpolation of the cumulative sums). A cell is narrower than 1/(n_bins * subbins),
    so this matches a sort-based split up to the order of rows inside one cell, and it
    keeps a bin from swallowing a heap of near-identical scores (say, many at 0.0001).
    """
    rows = count.sum(axis=-2).astype(np.float64)
    conf = score.sum(axis=-2)
    correct = count[..., 1, :].astype(np.float64)
    n_fine = rows.shape[-1]
    if strategy == "uniform":
        shape = rows.shape[:-1] + (n_bins, n_fine // n_bins)
        return tuple(a.reshape(shape).sum(axis=-1) for a in (rows, conf, correct))
    if strategy != "quantile":
        raise InputError(f"unknown ECE bin strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    flat = [a.reshape(-1, n_fine) for a in (rows, conf, correct)]
    out = [np.zeros((flat[0].shape[0], n_bins)) for _ in range(3)]
    for h in range(flat[0].shape[0]):  # one interpolation per group: G is small next to n
        cum = [np.concatenate([[0.0], np.cumsum(a[h])]) for a in flat]
        edges = np.linspace(0.0, cum[0][-1], n_bins + 1)
        for o, c in zip(out, cum):
            o[h] = np.diff(np.interp(edges, cum[0], c))
    return tuple(o.reshape(rows.shape[:-1] + (n_bins,)) for o in out)


def ece_from_histogram(count: np.ndarray, score: np.ndarray, n_bins: int, strategy: str = "uniform") -> np.ndarray:
    """ECE per histogram: ``count[..., c, f]`` rows and ``score[..., c, f]`` summed confidence.

    Leading axes (e.g. groups) are kept: the result has shape ``count.shape[:-2]``. An
    empty histogram gives NaN.
    """
    rows, conf, correct = bin_sums(count, score, n_bins, strategy)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(conf - correct).sum(axis=-1) / rows.sum(axis=-1)


def expected_calibration_error(
    y_true,
    y_score,
    *,
    n_bins: int = 15,
    strategy: str = "uniform",
    pos_label=None,
) -> float:
    """ECE of scores against labels, without groups (see the module docstring).

    ``y_score`` is P(positive class) for a binary task (1-D), or an (n, K) matrix of
    class probabilities. It runs the same code as :func:`reprogram.metrics.fairness_report`
    (with everyone in one group), so the two always agree.
    """
    from reprogram.metrics.report import _report

    if strategy not in STRATEGIES:
        raise InputError(f"unknown ECE bin strategy {strategy!r}; use one of {', '.join(STRATEGIES)}")
    y = np.asarray(y_true)
    report = _report(
        y, None, y_score, np.zeros(len(y), dtype=np.int64), classes=None, pos_label=pos_label, threshold=0.5,
        n_bins=n_bins, min_group_size=0, min_groups=1,
    )
    return report.overall["ece" if strategy == "uniform" else "ece_equal_mass"]
