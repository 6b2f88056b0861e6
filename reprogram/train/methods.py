"""The training methods by name: what the CLI, the Pareto sweeps and the benchmarks run.

``make_method(name, train, n_classes=..., **options)`` returns the objective (and the
sampler, for resampling) that the shared Trainer runs. Each method has one main knob,
``SWEEP_PARAMETER[name]``, that a Pareto sweep varies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reprogram.errors import InputError
from reprogram.train.objective import CrossEntropy, Objective

__all__ = ["TORCH_METHODS", "SWEEP_PARAMETER", "MethodSetup", "make_method"]

TORCH_METHODS = ("erm", "fas", "regularizer", "lagrangian", "adversarial", "reweight", "resample", "groupdro")

# The hyperparameter a Pareto sweep varies, per method (reductions: its constraint bound).
SWEEP_PARAMETER = {
    "fas": "c",
    "regularizer": "eta",
    "lagrangian": "eps",
    "adversarial": "strength",
    "reweight": "k",
    "groupdro": "step_size",
    "reductions": "difference_bound",
}


@dataclass
class MethodSetup:
    """What the Trainer needs for one method."""

    objective: Objective
    sampler: Any = None
    batch_sampler: Any = None


def _take(options: dict, allowed: dict, method: str) -> dict:
    unknown = set(options) - set(allowed)
    if unknown:
        raise InputError(f"method {method} takes no option(s) {', '.join(sorted(unknown))}; it takes {', '.join(allowed) or 'none'}")
    return {**allowed, **options}


def make_method(name: str, train, *, n_classes: int, representation_dim: int | None = None, **options) -> MethodSetup:
    """Objective and sampler for method ``name`` on dataset ``train`` (see module docstring).

    Options by method (defaults in brackets):
    fas: variant ["seed"], c [0.5], ema_alpha [0.9]; regularizer: penalty ["dp"], eta [1.0];
    lagrangian: constraint ["dp"], eps [0.02], multiplier_lr [0.5]; adversarial: on
    ["representation"], strength [1.0], schedule ["dann"]; reweight: by ["group_class"],
    k [0.0] (affirmative-action boost of the smallest group); resample: to ["mean"];
    groupdro: step_size [0.01].
    """
    n_groups = len(train.group_names)
    if name == "erm":
        _take(options, {}, name)
        return MethodSetup(CrossEntropy())
    if name == "fas":
        from reprogram.train.fas import FASLoss

        o = _take(options, {"variant": "seed", "c": 0.5, "ema_alpha": 0.9}, name)
        return MethodSetup(FASLoss(len(train), n_groups, variant=o["variant"], c=o["c"], ema_alpha=o["ema_alpha"]))
    if name == "regularizer":
        from reprogram.train.regularizers import FairnessRegularizer

        o = _take(options, {"penalty": "dp", "eta": 1.0}, name)
        return MethodSetup(FairnessRegularizer(o["penalty"], o["eta"], n_groups=n_groups))
    if name == "lagrangian":
        from reprogram.train.lagrangian import LagrangianObjective

        o = _take(options, {"constraint": "dp", "eps": 0.02, "multiplier_lr": 0.5}, name)
        return MethodSetup(LagrangianObjective(n_groups, n_classes, **o))
    if name == "adversarial":
        from reprogram.train.adversarial import AdversarialDebiasing

        o = _take(options, {"on": "representation", "strength": 1.0, "schedule": "dann"}, name)
        dim = representation_dim if o["on"] == "representation" else n_classes
        if not dim:
            raise InputError("adversarial debiasing on the representation needs a model built by reprogram.train")
        return MethodSetup(AdversarialDebiasing(n_groups, dim, on=o["on"], strength=o["strength"], schedule=o["schedule"]))
    if name == "reweight":
        import numpy as np

        from reprogram.train.reweighting import WeightedCrossEntropy, inverse_frequency_weights

        o = _take(options, {"by": "group_class", "k": 0.0}, name)
        w = inverse_frequency_weights(train.group_ids, train.labels, by=o["by"])
        if o["k"]:  # affirmative action for the smallest group on top
            smallest = int(np.argmin(np.bincount(train.group_ids, minlength=n_groups)))
            w = w * (o["k"] * (train.group_ids == smallest) + 1.0)
        return MethodSetup(WeightedCrossEntropy(w))
    if name == "resample":
        from reprogram.train.sampling import GroupResampler

        o = _take(options, {"to": "mean"}, name)
        return MethodSetup(CrossEntropy(), sampler=GroupResampler(train.group_ids, to=o["to"]))
    if name == "groupdro":
        from reprogram.train.dro import GroupDRO

        o = _take(options, {"step_size": 0.01}, name)
        return MethodSetup(GroupDRO(n_groups, step_size=o["step_size"]))
    raise InputError(f"unknown method {name!r}; use one of {', '.join(TORCH_METHODS)} or reductions")
