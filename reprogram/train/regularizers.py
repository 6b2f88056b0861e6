"""Fairness regularizers: cross-entropy plus η times a differentiable fairness penalty.

    loss = CE(logits, y) + η · penalty(logits, y, group)

Notation (all over the current batch B): p_i = softmax(logits_i); the *score* s_i is
p_i[positive_class] for a binary task (a scalar) and the whole probability vector p_i for
a multi-class task (every class); m_g = mean of s_i over the rows of group g, m = mean of
s_i over the batch; ‖·‖² sums the squared gap over classes. Only groups present in the
batch take part, so an absent group never produces NaN; with fewer than two groups
present a gap penalty is 0. ``subgroup_weights`` gives each group g a weight w_g
(default 1; a dict ``{group_id: weight}`` or a tensor indexed by group id, e.g. weights of
intersectional subgroups): a group's term is multiplied by w_g, a pair's term by
w_g · w_h.

* ``"dp"`` (demographic parity):
  ``pairs="all"``: Σ_{g<h} w_g w_h ‖m_g − m_h‖²;  ``pairs="vs_overall"``: Σ_g w_g ‖m_g − m‖².
* ``"eo"`` (equalized odds): the dp penalty computed within the rows of each true class
  and summed over the classes present: (y=0) + (y=1) for a binary task.
* ``"smooth_dp"`` / ``"smooth_eo"``: the same with s_i replaced by a soft indicator of the
  decision. Binary: sigmoid((p_i[positive] − 0.5) / T), a smooth stand-in for
  1[p ≥ 0.5] (T = ``temperature``). Multi-class, where no single 0.5 threshold decides:
  softmax(logits_i / T), a smooth stand-in for the one-hot argmax decision.
* ``"prejudice_remover"`` (Kamishima et al. 2012): the mutual information between the
  predicted label and the group, estimated from mean predicted probabilities,
  P(c|g) = mean_{i∈g} p_i[c], P(g) = n_g/N, P(c) = Σ_g P(g) P(c|g) = mean_B p_i[c]::

      MI = Σ_g w_g Σ_c P(g) P(c|g) log(P(c|g) / P(c))

  over every class c (both classes of a binary task). MI = 0 when the mean predicted
  distribution is the same in every group.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from reprogram.errors import InputError
from reprogram.train.objective import Objective, check_ids

__all__ = ["FairnessRegularizer", "PENALTIES"]

PENALTIES = ("dp", "eo", "smooth_dp", "smooth_eo", "prejudice_remover")
_PAIRS = ("all", "vs_overall")


def _gap_penalty(score: torch.Tensor, group: torch.Tensor, weights: torch.Tensor, pairs: str) -> torch.Tensor:
    """Weighted squared gaps of per-group mean scores (n, C) -> scalar (0 with < 2 groups)."""
    n_groups = weights.shape[0]
    counts = torch.bincount(group, minlength=n_groups)
    present = counts > 0
    if int(present.sum()) < 2:
        return score.sum() * 0.0
    sums = torch.zeros(n_groups, score.shape[1], dtype=score.dtype, device=score.device).index_add(0, group, score)
    means = sums[present] / counts[present].to(score.dtype).unsqueeze(1)
    w = weights[present].to(score.dtype)
    if pairs == "vs_overall":
        return (((means - score.mean(0)) ** 2).sum(1) * w).sum()
    a, b = torch.triu_indices(len(means), len(means), offset=1, device=score.device)
    return (((means[a] - means[b]) ** 2).sum(1) * w[a] * w[b]).sum()


def _mutual_information(prob: torch.Tensor, group: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted discrete MI between predicted class and group (see module docstring)."""
    n_groups = weights.shape[0]
    counts = torch.bincount(group, minlength=n_groups)
    present = counts > 0
    sums = torch.zeros(n_groups, prob.shape[1], dtype=prob.dtype, device=prob.device).index_add(0, group, prob)
    n_g = counts[present].to(prob.dtype)
    p_c_given_g = sums[present] / n_g.unsqueeze(1)
    p_g = n_g / prob.shape[0]
    p_c = prob.mean(0)
    tiny = torch.finfo(prob.dtype).tiny
    log_ratio = torch.log(p_c_given_g.clamp(min=tiny)) - torch.log(p_c.clamp(min=tiny))
    per_group = (p_c_given_g * log_ratio).sum(1) * p_g
    return (per_group * weights[present].to(prob.dtype)).sum()


class FairnessRegularizer(Objective):
    """Cross-entropy + η · fairness penalty; the penalties' formulas are in the module docstring.

    Parameters
    ----------
    penalty: ``"dp"``, ``"eo"``, ``"smooth_dp"``, ``"smooth_eo"`` or ``"prejudice_remover"``.
    eta: strength η of the penalty (>= 0).
    pairs: ``"all"`` group pairs or each group ``"vs_overall"`` (gap penalties).
    temperature: T of the smooth indicators.
    subgroup_weights: per-group weights, ``{group_id: weight}`` or a tensor indexed by id.
    n_groups: number of groups (optional; checks ids and sizes the weights).
    positive_class: the class whose probability is the score of a binary task.
    """

    def __init__(self, penalty: str = "dp", eta: float = 1.0, *, pairs: str = "all", temperature: float = 0.1,
                 subgroup_weights: Mapping | torch.Tensor | None = None, n_groups: int | None = None,
                 positive_class: int = 1):
        super().__init__()
        if penalty not in PENALTIES:
            raise InputError(f"unknown fairness penalty {penalty!r}; use one of {', '.join(PENALTIES)}")
        if pairs not in _PAIRS:
            raise InputError(f"pairs must be 'all' or 'vs_overall', got {pairs!r}")
        if not eta >= 0:
            raise InputError(f"eta must be >= 0, got {eta}")
        if not temperature > 0:
            raise InputError(f"temperature must be > 0, got {temperature}")
        if n_groups is not None and int(n_groups) < 1:
            raise InputError(f"n_groups must be >= 1, got {n_groups}")
        if positive_class not in (0, 1):
            raise InputError(f"positive_class must be 0 or 1 (binary tasks), got {positive_class}")
        self.penalty_name, self.eta, self.pairs, self.temperature = penalty, float(eta), pairs, float(temperature)
        self.n_groups = None if n_groups is None else int(n_groups)
        self.positive_class = int(positive_class)
        self._weight_map: dict[int, float] = {}
        table = None
        if isinstance(subgroup_weights, Mapping):
            for k, v in subgroup_weights.items():
                if not float(v) >= 0:
                    raise InputError(f"subgroup weight of group {k!r} must be >= 0, got {v}")
                self._weight_map[int(k)] = float(v)
        elif subgroup_weights is not None:
            table = torch.as_tensor(subgroup_weights, dtype=torch.float64).flatten()
            if not bool((table >= 0).all()):
                raise InputError("subgroup_weights must all be >= 0")
            if self.n_groups is not None and len(table) != self.n_groups:
                raise InputError(f"subgroup_weights has {len(table)} entries for n_groups={self.n_groups}")
        if self.n_groups is not None and self._weight_map and max(self._weight_map) >= self.n_groups:
            raise InputError(f"subgroup_weights names group {max(self._weight_map)} but n_groups={self.n_groups}")
        self.register_buffer("subgroup_weights", table)
        self._epoch = {"task": 0.0, "penalty": 0.0, "n": 0}

    def _weights(self, group: torch.Tensor, dtype, device) -> torch.Tensor:
        top = int(group.max()) + 1 if len(group) else 1
        if self.n_groups is not None and top > self.n_groups:
            raise InputError(f"group id {top - 1} out of range for n_groups={self.n_groups}")
        if self.subgroup_weights is not None:
            if top > len(self.subgroup_weights):
                raise InputError(f"group id {top - 1} has no entry in subgroup_weights ({len(self.subgroup_weights)})")
            return self.subgroup_weights.to(dtype=dtype, device=device)
        size = max(top, self.n_groups or 0, max(self._weight_map, default=-1) + 1)
        w = torch.ones(size, dtype=dtype, device=device)
        for k, v in self._weight_map.items():
            w[k] = v
        return w

    def penalty(self, logits: torch.Tensor, y: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
        """The fairness penalty of one batch (without η and the task loss)."""
        if logits.dim() != 2 or logits.shape[1] < 2:
            raise InputError(f"logits must be (rows, classes >= 2), got shape {tuple(logits.shape)}")
        group = check_ids(group, len(logits), name="group", device=logits.device)
        weights = self._weights(group, logits.dtype, logits.device)
        n_classes = logits.shape[1]
        prob = torch.softmax(logits, dim=1)
        if self.penalty_name == "prejudice_remover":
            return _mutual_information(prob, group, weights)
        smooth = self.penalty_name.startswith("smooth_")
        if n_classes == 2:
            score = prob[:, self.positive_class : self.positive_class + 1]
            if smooth:
                score = torch.sigmoid((score - 0.5) / self.temperature)
        else:
            score = torch.softmax(logits / self.temperature, dim=1) if smooth else prob
        if self.penalty_name.endswith("dp"):
            return _gap_penalty(score, group, weights, self.pairs)
        total = score.sum() * 0.0
        for c in torch.unique(y).tolist():
            rows = y == c
            total = total + _gap_penalty(score[rows], group[rows], weights, self.pairs)
        return total

    def forward(self, logits, y, group, index=None, representation=None):
        task = F.cross_entropy(logits, y)
        pen = self.penalty(logits, y, group)
        self._epoch["task"] += float(task.detach())
        self._epoch["penalty"] += float(pen.detach())
        self._epoch["n"] += 1
        return task + self.eta * pen

    def epoch_logs(self) -> dict[str, float]:
        n = self._epoch["n"]
        logs = {"task_loss": self._epoch["task"] / n, "penalty": self._epoch["penalty"] / n} if n else {}
        self._epoch = {"task": 0.0, "penalty": 0.0, "n": 0}
        return logs

    def extra_repr(self) -> str:
        return f"penalty={self.penalty_name!r}, eta={self.eta}, pairs={self.pairs!r}"
