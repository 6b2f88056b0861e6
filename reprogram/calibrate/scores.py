"""Input checks shared by every calibrator: scores, labels and the log-odds they work on.

Scores are probabilities: a 1-D array of P(class 1) for a binary task, or an (N, C)
matrix of class probabilities whose rows sum to 1. Labels are 0/1 (binary) or 0..C-1.
Every calibrator validates at its boundary with these, so the same bad input gets the
same one-line error everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reprogram.errors import InputError, LengthMismatchError, MissingValuesError

__all__ = ["EPS", "check_scores", "check_labels", "require_both_classes", "clip_proba", "log_odds_features"]

# Probabilities are clipped to [EPS, 1 - EPS] before a log is taken. EPS = 2**-23 is one
# float32 ulp below 1.0, so both bounds are exact in float32 and in float64: the numpy
# maps and their exported float32 graphs clip the same scores to the same values.
EPS = 2.0**-23


def check_scores(scores: Any, *, what: str = "scores") -> np.ndarray:
    """``scores`` as float64, 1-D (binary) or 2-D (N, C); refuses NaN, values outside [0, 1], bad rows."""
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be numeric probabilities in [0, 1]") from None
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim not in (1, 2):
        raise InputError(f"{what} must be 1-D (binary P(class 1)) or 2-D (N, classes), got shape {s.shape}")
    if s.shape[0] == 0:
        raise InputError(f"{what} are empty")
    if s.ndim == 2 and s.shape[1] < 2:
        raise InputError(f"{what} have {s.shape[1]} columns; multi-class scores need at least 2")
    bad = np.isnan(s) if s.ndim == 1 else np.isnan(s).any(axis=1)
    if bad.any():
        raise MissingValuesError(f"{what} have {int(bad.sum())} row(s) with NaN of {len(s)}")
    lo, hi = float(s.min()), float(s.max())
    if lo < 0.0 or hi > 1.0:
        raise InputError(
            f"{what} must be probabilities in [0, 1], found values in [{lo:.4g}, {hi:.4g}]"
            " (pass P(class), not logits)"
        )
    if s.ndim == 2:
        dev = np.abs(s.sum(axis=1) - 1.0)
        if dev.max() > 1e-3:
            raise InputError(f"{what}: {int((dev > 1e-3).sum())} row(s) do not sum to 1 (class probabilities expected)")
    return s


def check_labels(y: Any, scores: np.ndarray, *, what: str = "labels") -> np.ndarray:
    """``y`` as int64 class indices matching ``scores`` (0/1 for binary, 0..C-1 for C columns)."""
    a = np.asarray(y)
    if a.ndim != 1:
        raise InputError(f"{what} must be one-dimensional, got shape {a.shape}")
    if len(a) != len(scores):
        raise LengthMismatchError(f"{what} have {len(a)} rows but scores have {len(scores)}")
    if a.dtype.kind == "f":
        nan = int(np.isnan(a).sum())
        if nan:
            raise MissingValuesError(f"{what} have {nan} NaN row(s) of {len(a)}")
        if not np.all(a == np.round(a)):
            raise InputError(f"{what} must be class indices, found non-integer values")
    elif a.dtype.kind not in "biu":
        raise InputError(f"{what} must be class indices (0/1 or 0..C-1), got {a.dtype} values")
    a = a.astype(np.int64)
    n_classes = 2 if scores.ndim == 1 else scores.shape[1]
    if a.min() < 0 or a.max() >= n_classes:
        raise InputError(f"{what} must lie in 0..{n_classes - 1} for these scores, found {a.min()}..{a.max()}")
    return a


def require_both_classes(y: np.ndarray, *, what: str = "labels") -> None:
    """A binary map needs positives and negatives: one class alone says nothing about calibration."""
    n1 = int(y.sum())
    if n1 == 0 or n1 == len(y):
        raise InputError(f"{what} hold only class {int(y[0])} ({len(y)} rows): calibration needs both classes")


def clip_proba(p: np.ndarray) -> np.ndarray:
    return np.clip(p, EPS, 1.0 - EPS)


def log_odds_features(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ln p, ln(1 - p))`` of clipped probabilities: the two features every sigmoid map is linear in."""
    q = clip_proba(p)
    return np.log(q), np.log1p(-q)
