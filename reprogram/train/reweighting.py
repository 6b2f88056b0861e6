"""Data-side fairness by loss weights: inverse-frequency and "affirmative action" weights,
a per-sample weighted cross-entropy, and online hard-example mining.

The weight functions take the arrays a dataset already holds (``ds.group_ids``,
``ds.labels``) and return one float64 weight per row, in dataset order, so that
``WeightedCrossEntropy(weights)`` can look a batch's weights up by the rows' dataset
positions (the ``index`` the Trainer passes to every :class:`Objective`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from reprogram.errors import GroupError, InputError, LengthMismatchError, MissingValuesError
from reprogram.train.objective import Objective, per_sample_ce

__all__ = [
    "inverse_frequency_weights",
    "independence_weights",
    "affirmative_action_weights",
    "WeightedCrossEntropy",
    "HardExampleMining",
]


def _as_int_array(values: Any, name: str) -> np.ndarray:
    """``values`` as a 1-D int64 array (group ids or labels), or a one-line InputError."""
    if hasattr(values, "group_ids") and name == "group_ids":
        values = values.group_ids
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{name} is empty")
    if arr.dtype.kind == "b":
        arr = arr.astype(np.int64)
    if arr.dtype.kind == "f":
        nan = int(np.isnan(arr).sum())
        if nan:
            raise MissingValuesError(f"{name} has {nan} missing (NaN) value(s)")
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(f"{name} must hold integer ids, got non-integer values")
    elif arr.dtype.kind not in "iu":
        raise InputError(f"{name} must hold integer ids (encode them first), got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _pair_codes(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense code 0..K-1 of each row's (a, b) pair, ordered by (a, b), and K."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    nb = int(bi.max()) + 1
    _, code = np.unique(ai.reshape(-1) * nb + bi.reshape(-1), return_inverse=True)
    code = code.reshape(-1)
    return code, int(code.max()) + 1


def _cells(group_ids: np.ndarray, labels: np.ndarray | None, by: str) -> np.ndarray:
    """Cell index of each row: its group, its class, or its (group, class) pair."""
    if by == "group":
        keys = group_ids
    elif by in ("class", "group_class"):
        if labels is None:
            raise InputError(f"by={by!r} needs labels=")
        if by == "group_class":
            return _pair_codes(group_ids, labels)[0]
        keys = labels
    else:
        raise InputError(f"by must be 'group', 'class' or 'group_class', got {by!r}")
    return np.unique(keys, return_inverse=True)[1].reshape(-1)


def inverse_frequency_weights(
    group_ids: Any,
    labels: Any = None,
    *,
    by: str = "group",
    normalize: bool = True,
    strength: float = 1.0,
) -> np.ndarray:
    """Per-row weights inversely proportional to the size of the row's cell.

    The cell of row ``i`` is its group (``by="group"``), its class (``by="class"``) or its
    (group, class) pair (``by="group_class"``); ``labels`` is required for the last two.
    With ``n_c`` the number of rows in cell ``c``, ``N`` rows and ``K`` non-empty cells::

        normalize=False:  w_i = 1 / n_c(i)
        normalize=True:   w_i = N / (K * n_c(i))      (the above divided by its mean)

    so with ``normalize=True`` the weights have mean exactly 1 and every cell carries the
    same total weight ``N / K`` (scikit-learn's ``class_weight="balanced"`` formula, per cell).
    ``strength`` ``s`` raises the normalised weights to a power (mean 1 again), as in
    :func:`independence_weights`; it needs ``normalize=True``.
    ``group_ids`` may also be a dataset with a ``group_ids`` attribute. Returns float64.
    """
    g = _as_int_array(group_ids, "group_ids")
    y = None
    if labels is not None:
        y = _as_int_array(labels, "labels")
        if len(y) != len(g):
            raise LengthMismatchError(f"labels has {len(y)} rows but group_ids has {len(g)}")
    cell = _cells(g, y, by)
    counts = np.bincount(cell)
    n_c = counts[cell].astype(np.float64)
    # mean over rows of 1/n_c is K/N (each cell contributes n_c * 1/n_c = 1), hence N/(K n_c)
    if not normalize:
        if _check_strength(strength) != 1.0:
            raise InputError("strength needs normalize=True (the powered weights are rescaled to mean 1)")
        return 1.0 / n_c
    return _temper(len(g) / (len(counts) * n_c), strength)


def independence_weights(group_ids: Any, labels: Any, *, strength: float = 1.0) -> np.ndarray:
    """Kamiran & Calders' reweighing (2012; AIF360's ``Reweighing``): ``w_i = P(g) P(y) / P(g, y)``.

    With the empirical frequencies of the row's group g and class y, the weighted data has
    the group and the label independent (P_w(y | g) = P(y) in every group) while each
    group's and each class's total weight stays what it was, so the class balance is
    unchanged, unlike equal (group, class) cells. Mean weight 1. Returns float64.

    ``strength`` ``s >= 0`` raises the weights to a power, ``w_i ** s / mean(w ** s)``:
    ``s = 1`` is the reweighing above, ``s = 0`` plain training, and ``s > 1`` over-corrects
    (the label becomes more frequent in the group where it was rarer). Independence in
    the *training labels* does not make the model's predictions independent of the group
    (the features still carry it), so ``s`` is the knob a Pareto sweep turns.
    """
    g = _as_int_array(group_ids, "group_ids")
    y = _as_int_array(labels, "labels")
    if len(y) != len(g):
        raise LengthMismatchError(f"labels has {len(y)} rows but group_ids has {len(g)}")
    _, gi = np.unique(g, return_inverse=True)
    _, yi = np.unique(y, return_inverse=True)
    n = len(g)
    joint = np.zeros((gi.max() + 1, yi.max() + 1))
    np.add.at(joint, (gi, yi), 1.0)
    expected = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True) / n
    return _temper((expected / joint)[gi, yi], strength)


def _check_strength(strength: Any) -> float:
    """The power of a reweighting or resampling correction: a finite number >= 0."""
    if isinstance(strength, bool) or not isinstance(strength, Real) or not (0 <= float(strength) < math.inf):
        raise InputError(f"strength must be a finite number >= 0, got {strength!r}")
    return float(strength)


def _temper(w: np.ndarray, strength: Any) -> np.ndarray:
    """``w ** strength`` rescaled to mean 1 (``strength`` 1: ``w`` as it is)."""
    strength = _check_strength(strength)
    if strength == 1.0:
        return w
    w = w**strength
    return w / w.mean()


def affirmative_action_weights(group_ids: Any, subgroups: int | Iterable[int], k: float) -> np.ndarray:
    """The "affirmative action" weight: ``alpha_i = k * 1[group_i in subgroups] + 1``.

    Rows of the chosen subgroups (group ids, e.g. intersectional groups from the
    dataset's :class:`~reprogram.data.groups.GroupEncoder`) weigh ``k + 1``, all others 1.
    ``k`` must be finite and greater than -1 so every weight stays positive (``k = 0``
    gives plain, unweighted training). A chosen subgroup that no row belongs to raises
    :class:`~reprogram.errors.GroupError`: it is almost always a wrong id. Returns float64.
    """
    g = _as_int_array(group_ids, "group_ids")
    if isinstance(subgroups, (Integral, np.integer)):
        chosen = np.asarray([int(subgroups)], dtype=np.int64)
    else:
        if not isinstance(subgroups, (np.ndarray, torch.Tensor, list, tuple)):
            subgroups = list(subgroups)
        chosen = _as_int_array(subgroups, "subgroups")
    if isinstance(k, bool) or not isinstance(k, Real) or not math.isfinite(float(k)) or float(k) <= -1:
        raise InputError(f"k must be a finite number greater than -1, got {k!r}")
    present = np.unique(g)
    missing = np.setdiff1d(chosen, present)
    if missing.size:
        raise GroupError(
            f"subgroup id(s) {missing.tolist()} have no rows; group ids present: {present.tolist()}"
        )
    return float(k) * np.isin(g, chosen).astype(np.float64) + 1.0


def _check_index(index: torch.Tensor | None, n: int, who: str) -> torch.Tensor:
    if index is None:
        raise InputError(
            f"{who} needs index= (the rows' positions in the training set) to look up their weights"
        )
    index = torch.as_tensor(index).long()
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
        raise InputError(
            f"{who}: index holds positions outside 0..{n - 1} (it has one weight per training row)"
        )
    return index


class WeightedCrossEntropy(Objective):
    """Cross-entropy with one fixed weight per training row, looked up by dataset position.

    ``sample_weight[j]`` is the weight of training row ``j`` (e.g. from
    :func:`inverse_frequency_weights` or :func:`affirmative_action_weights`). For a batch
    of rows at dataset positions ``index`` with per-row cross-entropies ``ce_i``::

        loss = sum_i w_index(i) * ce_i / sum_i w_index(i)

    the self-normalised weighted mean over the batch: it does not change with the scale
    of the weights, equals plain cross-entropy when all weights are equal, and is 0 (with
    zero gradient) for a batch whose weights are all 0. ``index`` is required
    (:class:`~reprogram.errors.InputError` without it). Weights must be finite, >= 0 and
    not all 0; they are kept as a float32 buffer, so ``.to(device)`` moves them.
    """

    def __init__(self, sample_weight: Any):
        super().__init__()
        if isinstance(sample_weight, torch.Tensor):
            sample_weight = sample_weight.detach().cpu().numpy()
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.ndim != 1 or w.size == 0:
            raise InputError(f"sample_weight must be a non-empty 1-D array, got shape {w.shape}")
        if not np.all(np.isfinite(w)) or np.any(w < 0) or not np.any(w > 0):
            raise InputError("sample_weight must be finite, >= 0 and not all 0")
        self.register_buffer("sample_weight", torch.as_tensor(w, dtype=torch.float32))

    def config(self) -> dict:
        # the weights are the whole setting (a reweighting strength lives only in them), and
        # a state dict loaded on resume would overwrite new weights with the old: fingerprint them
        digest = hashlib.sha256(self.sample_weight.detach().cpu().numpy().tobytes()).hexdigest()[:16]
        return {**super().config(), "sample_weight_sha256": digest}

    def forward(self, logits, y, group, index=None, representation=None):
        index = _check_index(index, len(self.sample_weight), type(self).__name__)
        w = self.sample_weight[index.to(self.sample_weight.device)].to(device=logits.device, dtype=logits.dtype)
        ce = per_sample_ce(logits, y)
        return (w * ce).sum() / w.sum().clamp_min(torch.finfo(w.dtype).tiny)


class HardExampleMining(Objective):
    """Online hard example mining: average only the ``keep`` largest per-row losses of a batch.

    With per-row losses ``l_1..l_B`` of a batch (``base(logits, y)``, cross-entropy by
    default) and ``K`` the number kept::

        loss = (1 / K) * sum of the K largest l_i

    ``keep`` is a count (an ``int``: ``K = min(keep, B)``) or a fraction (a ``float`` in
    (0, 1]: ``K = max(1, ceil(keep * B))``); so ``keep=1`` keeps one row and ``keep=1.0``
    keeps all. Rows that are not kept get exactly zero gradient. ``base`` is any callable
    (or ``nn.Module``) mapping ``(logits, y)`` to a 1-D tensor of ``B`` per-row losses, e.g.
    ``nn.CrossEntropyLoss(reduction="none")``. Ties at the cut are broken by ``torch.topk``.
    """

    def __init__(self, keep: int | float, base: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        if isinstance(keep, bool) or not isinstance(keep, Real):
            raise InputError(f"keep must be a row count (int >= 1) or a fraction in (0, 1], got {keep!r}")
        if isinstance(keep, (Integral, np.integer)):
            if int(keep) < 1:
                raise InputError(f"keep must be at least 1 row, got {keep}")
            keep = int(keep)
        else:
            keep = float(keep)
            if not (0.0 < keep <= 1.0):
                raise InputError(f"keep as a fraction must lie in (0, 1], got {keep}")
        if base is not None and not callable(base):
            raise InputError(f"base must be a callable (logits, y) -> per-row losses, got {type(base).__name__}")
        self.keep = keep
        self.base = base

    def n_kept(self, batch_size: int) -> int:
        """How many rows of a batch of ``batch_size`` rows are kept."""
        if isinstance(self.keep, int):
            return min(self.keep, batch_size)
        # round first: 0.7 * 10 is 7.000000000000001 in floating point, and should keep 7
        return min(batch_size, max(1, math.ceil(round(self.keep * batch_size, 9))))

    def forward(self, logits, y, group, index=None, representation=None):
        losses = per_sample_ce(logits, y) if self.base is None else self.base(logits, y)
        if not isinstance(losses, torch.Tensor) or losses.shape != (logits.shape[0],):
            shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
            raise InputError(
                f"HardExampleMining's base must return one loss per row, shape ({logits.shape[0]},), got {shape}"
            )
        k = self.n_kept(losses.shape[0])
        if k == 0:
            return losses.sum()
        return torch.topk(losses, k, sorted=False).values.mean()

    def extra_repr(self) -> str:
        return f"keep={self.keep!r}"
