"""The training methods by name: what the CLI, the Pareto sweeps and the benchmarks run.

``make_method(name, train, n_classes=..., **options)`` returns the objective (and the
sampler, for resampling) that the shared Trainer runs; ``train_method(name, train, ...)``
trains any method, the reductions approach included, and returns a :class:`FittedMethod`. Each method has one main knob,
``SWEEP_PARAMETER[name]``, that a Pareto sweep varies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reprogram.errors import InputError
from reprogram.train.objective import CrossEntropy, Objective

__all__ = ["TORCH_METHODS", "METHODS", "SWEEP_PARAMETER", "MethodSetup", "make_method", "FittedMethod", "train_method"]

TORCH_METHODS = ("erm", "fas", "regularizer", "lagrangian", "adversarial", "reweight", "resample", "groupdro")
METHODS = (*TORCH_METHODS, "reductions")

# The hyperparameter a Pareto sweep varies, per method (reductions: its constraint bound).
SWEEP_PARAMETER = {
    "fas": "c",
    "regularizer": "eta",
    "lagrangian": "eps",
    "adversarial": "strength",
    "reweight": "strength",
    "resample": "strength",
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
    fas: variant ["seed"], c [0.5], ema_alpha [0.9], beta_lr [the Trainer's], beta_ascent
    [True for the seed variant, False for softmax], temperature [1.0] (softmax variant),
    by ["group", or "group_class": one scale per (group, class)];
    regularizer: penalty ["dp"], eta [1.0];
    lagrangian: constraint ["dp"], eps [0.02], multiplier_lr [0.5];
    adversarial: on ["output", or "representation"], strength [1.0], schedule ["dann"];
    reweight: by ["independence": Kamiran-Calders P(g)P(y)/P(g,y), or "group", "class",
    "group_class" inverse frequency], strength [1.0] (the weights' power: 0 plain, 1 the
    textbook weights, > 1 over-correct), k [0.0] (affirmative-action boost of the
    smallest group);
    resample: to ["mean"], by ["group_class"] (equalise the groups within each class,
    which removes the group-label correlation, or ``"group"``: the group counts only),
    strength [1.0] (0 no resampling, 1 equal groups, > 1 over-correct; see
    ``resample_indices``);
    groupdro: step_size [0.01], by ["group_class"] (weights over (group, class) cells, or
    ``"group"``), adjust [0] (C of Sagawa et al.'s generalisation adjustment C / sqrt(n_g),
    which favours small groups; n_g counted on ``train``).
    """
    n_groups = len(train.group_names)
    if name == "erm":
        _take(options, {}, name)
        return MethodSetup(CrossEntropy())
    if name == "fas":
        from reprogram.train.fas import FASLoss

        o = _take(options, {"variant": "seed", "c": 0.5, "ema_alpha": 0.9, "beta_lr": None, "beta_ascent": None,
                            "temperature": 1.0, "by": "group"}, name)
        return MethodSetup(FASLoss(len(train), n_groups, n_classes=n_classes, **o))
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

        # on the output by default: an adversary that cannot tell the groups from the model's
        # output is demographic parity (Zhang et al. 2018); an invariant representation is
        # not (on Adult, representation adversaries raised the DP gap in our benchmark)
        o = _take(options, {"on": "output", "strength": 1.0, "schedule": "dann"}, name)
        dim = representation_dim if o["on"] == "representation" else n_classes
        if not dim:
            raise InputError("adversarial debiasing on the representation needs a model built by reprogram.train")
        return MethodSetup(AdversarialDebiasing(n_groups, dim, on=o["on"], strength=o["strength"], schedule=o["schedule"]))
    if name == "reweight":
        import numpy as np

        from reprogram.train.reweighting import (
            WeightedCrossEntropy,
            independence_weights,
            inverse_frequency_weights,
        )

        o = _take(options, {"by": "independence", "strength": 1.0, "k": 0.0}, name)
        if o["by"] == "independence":
            w = independence_weights(train.group_ids, train.labels, strength=o["strength"])
        else:
            w = inverse_frequency_weights(train.group_ids, train.labels, by=o["by"], strength=o["strength"])
        if o["k"]:  # affirmative action for the smallest group on top
            smallest = int(np.argmin(np.bincount(train.group_ids, minlength=n_groups)))
            w = w * (o["k"] * (train.group_ids == smallest) + 1.0)
        return MethodSetup(WeightedCrossEntropy(w))
    if name == "resample":
        from reprogram.train.sampling import GroupResampler

        o = _take(options, {"to": "mean", "by": "group_class", "strength": 1.0}, name)
        if o["by"] not in ("group", "group_class"):
            raise InputError(f"resample by must be 'group' or 'group_class', got {o['by']!r}")
        labels = train.labels if o["by"] == "group_class" else None
        return MethodSetup(CrossEntropy(), sampler=GroupResampler(train.group_ids, to=o["to"], labels=labels,
                                                                  strength=o["strength"]))
    if name == "groupdro":
        from reprogram.train.dro import GroupDRO

        import numpy as np

        o = _take(options, {"step_size": 0.01, "by": "group_class", "adjust": 0.0}, name)
        counts = None
        if o["adjust"]:  # C / sqrt(n_g) needs the training rows of each group (or cell)
            ids = np.asarray(train.group_ids, dtype=np.int64)
            n_cells = n_groups
            if o["by"] == "group_class":
                ids, n_cells = ids * n_classes + np.asarray(train.labels, dtype=np.int64), n_groups * n_classes
            counts = np.bincount(ids, minlength=n_cells)
            if not (counts > 0).all():
                raise InputError("GroupDRO adjust needs every group" + (" and class cell" if o["by"] == "group_class" else "")
                                 + " in the training data")
        return MethodSetup(GroupDRO(n_groups, step_size=o["step_size"], by=o["by"], n_classes=n_classes,
                                    adjust=o["adjust"] or None, group_counts=counts))
    raise InputError(f"unknown method {name!r}; use one of {', '.join(TORCH_METHODS)} or reductions")


@dataclass
class FittedMethod:
    """A trained method: the model to save, how to evaluate it, and its training history.

    ``model`` is the ``nn.Module`` that maps inputs to logits (for reductions, the
    fitted mixture as a :class:`~reprogram.train.models.LinearMixture`); ``trainer``
    is the :class:`~reprogram.train.trainer.Trainer` of a torch method, ``estimator``
    the :class:`~reprogram.train.reductions.ReductionsWrapper` of reductions.
    """

    name: str
    options: dict
    model: Any
    trainer: Any = None
    estimator: Any = None

    @property
    def history(self) -> list[dict]:
        return list(getattr(self.trainer, "history_", []))

    def report(self, ds, **report_kw):
        """The :class:`~reprogram.metrics.FairnessReport` of the method's predictions on ``ds``."""
        if self.estimator is not None:
            from reprogram.train.reductions import reductions_report

            return reductions_report(self.estimator, ds, **report_kw)
        return self.trainer.evaluate(ds, **report_kw)

    def save(self, path, dataset, *, arch: str | None = None):
        """Save as the frozen model other commands take (TorchScript + sidecar, or a HF folder)."""
        from reprogram.train.trainer import save_frozen

        extra = {"method": self.name, "method_options": self.options}
        collate = getattr(self.trainer, "collate_fn", None)
        return save_frozen(self.model, path, dataset, arch=arch, collate_fn=collate, extra=extra)


def train_method(name: str, train, *, build_model=None, val=None, trainer_kw: dict | None = None,
                 **options) -> FittedMethod:
    """Train method ``name`` on ``train``: a torch method through the one Trainer, or reductions.

    ``build_model()`` makes the model of a torch method; ``val`` is the Trainer's
    validation set (history, early stopping); ``trainer_kw`` go to the Trainer;
    ``options`` to :func:`make_method` or, for ``"reductions"``, to
    :class:`~reprogram.train.reductions.ReductionsWrapper` (``constraints``,
    ``difference_bound``, ``method``...; the estimator is a logistic regression on the
    encoded features).
    """
    if name == "reductions":
        from reprogram.train.reductions import fit_reductions

        trainer_kw = dict(trainer_kw or {})
        params = {"random_state": trainer_kw.get("seed", 0), **options}
        est = fit_reductions(train, **params)
        return FittedMethod(name, dict(options), est.to_module(), estimator=est)
    if build_model is None:
        raise InputError(f"method {name} needs build_model= (a function that makes a fresh model)")
    from reprogram.train.trainer import Trainer

    model = build_model()
    setup = make_method(name, train, n_classes=len(train.classes),
                        representation_dim=getattr(model, "representation_dim", None), **options)
    trainer = Trainer(model, setup.objective, sampler=setup.sampler, batch_sampler=setup.batch_sampler,
                      **{"progress": False, **(trainer_kw or {})})
    trainer.fit(train, val)
    return FittedMethod(name, dict(options), trainer.model, trainer=trainer)
