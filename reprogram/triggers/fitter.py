"""Learning a fairness trigger: the min-max game of Fairness Reprogramming (Zhang et al., 2022).

    min over trigger θ   E[CE(y, f(m_θ(x)))]  +  λ · max over discriminator d  E[−CE(z, d(f(m_θ(x)) [, y]))]

f is the frozen model, m_θ the trigger, z the group. Each batch runs the frozen model once
on the triggered inputs, then:

1. ``disc_steps`` updates of the discriminator on the (detached) outputs: it learns to
   recover the group (from the output for "dp", from output and label for "eo");
2. one update of the trigger. ``rule="minmax"`` descends ``CE_task − λ · CE_adv``;
   ``rule="projection"`` (Zhang, Lemoine & Mitchell 2018, as in the paper's code) takes the
   task gradient, removes its component along the adversary's gradient (so the task step
   never helps the adversary), then subtracts λ times the adversary's gradient.

The frozen model's weights never take a gradient (``requires_grad=False`` everywhere):
the backward pass reaches the trigger's parameters through the model's activations only.

After each epoch the trigger is scored on the validation split; the epoch kept is the
one with the lowest fairness gap (DP difference for "dp", equalized-odds difference for
"eo") among the epochs whose validation accuracy is within ``tolerance`` of the model
without a trigger, or, when none is, the most accurate epoch. With ``checkpoint_dir``
every epoch is saved (safetensors: trigger, discriminator, optimizers, the best epoch's
trigger, every RNG state; see :mod:`reprogram.checkpoint`) and ``resume=True`` continues
from the newest checkpoint that reads back whole, so a run killed at any moment and
resumed ends with the trigger an uninterrupted run learns. Ctrl-C stops at the next batch
(:class:`~reprogram.checkpoint.TrainingInterrupted`), the last epoch's checkpoint saved.
Under a ``torch.distributed`` process group the loop runs data parallel (see
:mod:`reprogram.distributed`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, default_collate

from reprogram import distributed as D
from reprogram.checkpoint import (
    GracefulInterrupt,
    TrainingInterrupted,
    check_options,
    checkpoint_folder,
    interrupted_message,
    latest_checkpoint,
    load_optimizer,
    optimizer_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from reprogram.errors import ArtifactError, GroupError, InputError, TrainingDiverged
from reprogram.models.device import call_model, move_to, resolve_device, seed_everything
from reprogram.progress import progress_bar
from reprogram.triggers.discriminator import CRITERIA, Discriminator

__all__ = ["TriggerFitter", "GAP_METRIC", "RULES"]

RULES = ("minmax", "projection")
GAP_METRIC = {"dp": "demographic_parity_difference", "eo": "equalized_odds_difference"}


def _frozen(model: nn.Module) -> nn.Module:
    """``model`` as a FrozenModel (eval mode for good, no weight gradients)."""
    from reprogram.models import FrozenModel

    return model if isinstance(model, FrozenModel) else FrozenModel(model)


OPTIMIZERS = ("adam", "sgd")


def _optimizer(kind: str, params, lr: float) -> torch.optim.Optimizer:
    """Adam (fused into one kernel where torch supports it: the players are small, and the
    per-tensor launches of plain Adam are a visible part of a trigger step on small
    models) or SGD with momentum 0.9."""
    params = list(params)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


class TriggerFitter:
    """Fit ``trigger`` on the frozen ``model`` for ``criterion`` ("dp" or "eo") with strength ``lam``.

    Parameters
    ----------
    rule : "minmax" or "projection" (see the module docstring).
    disc_steps : discriminator updates per trigger update.
    epochs, batch_size : the usual; ``lr`` and ``optimizer`` ("adam" or "sgd") the
        trigger's, ``disc_lr`` and ``disc_optimizer`` the discriminator's; ``disc_hidden``
        its hidden widths.
    tolerance : accuracy drop (vs. the model without trigger, on validation) within
        which the fairest epoch is kept.
    device, seed : where to run; seeds Python, numpy, torch and the data order.
    checkpoint_dir, resume : save every epoch there; continue from it (with the same
        options, or :class:`InputError` names the one that differs; ``epochs`` may grow).
    collate_fn : how to batch ``(x, y, group)`` items (a tokenizer collate for text).
    progress : a rich progress bar showing validation accuracy and gap.

    After ``fit``: ``trigger`` (the best epoch's), ``discriminator_``, ``history_`` (one
    dict per epoch), ``best_epoch_``, ``base_report_`` (validation, no trigger).
    """

    def __init__(self, model: nn.Module, trigger: nn.Module, criterion: str = "dp", lam: float = 1.0, *,
                 rule: str = "minmax", disc_steps: int = 1, epochs: int = 10, batch_size: int = 128,
                 lr: float = 1e-2, disc_lr: float = 1e-3, optimizer: str = "adam", disc_optimizer: str = "adam",
                 disc_hidden=(64, 64), tolerance: float = 0.02,
                 device: str | torch.device = "auto", seed: int = 0, checkpoint_dir: str | Path | None = None,
                 resume: bool = False, collate_fn: Callable | None = None, progress: bool = True,
                 eval_batch_size: int = 512):
        if criterion not in CRITERIA:
            raise InputError(f"criterion must be 'dp' or 'eo', got {criterion!r}")
        if rule not in RULES:
            raise InputError(f"rule must be 'minmax' or 'projection', got {rule!r}")
        if not lam >= 0:
            raise InputError(f"lambda must be >= 0, got {lam}")
        if epochs < 1 or batch_size < 1 or disc_steps < 0 or lr <= 0 or disc_lr <= 0:
            raise InputError("epochs and batch_size must be >= 1, disc_steps >= 0, learning rates > 0")
        if optimizer not in OPTIMIZERS or disc_optimizer not in OPTIMIZERS:
            raise InputError(f"optimizers must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}, {disc_optimizer!r}")
        if not any(p.requires_grad for p in trigger.parameters()):
            raise InputError(f"{type(trigger).__name__} has no learnable parameters")
        self.model = _frozen(model)
        self.trigger = trigger
        kind = getattr(trigger, "kind", None)
        if kind is not None and kind != self.model.input_kind:
            raise InputError(f"a {kind} trigger ({type(trigger).__name__}) cannot go on a model that reads "
                             f"{self.model.input_kind}")
        self.criterion, self.lam, self.rule, self.disc_steps = criterion, float(lam), rule, int(disc_steps)
        self.epochs, self.batch_size, self.lr, self.disc_lr = int(epochs), int(batch_size), float(lr), float(disc_lr)
        self.optimizer, self.disc_optimizer = optimizer, disc_optimizer
        self.disc_hidden, self.tolerance = tuple(disc_hidden), float(tolerance)
        self.device = resolve_device(device)
        self.seed = int(seed)
        self.checkpoint_dir = checkpoint_folder(checkpoint_dir)
        self.resume = bool(resume)
        self.collate_fn = collate_fn or default_collate
        self.progress, self.eval_batch_size = progress, int(eval_batch_size)

    # -- one batch --------------------------------------------------------------------

    def _trigger_step(self, x, y, g, t_opt, d_opt) -> tuple[float, float, bool]:
        """One batch of the game; (task loss, adversary loss, whether any rank's losses are
        not finite, in which case the trigger is left as it was)."""
        logits = call_model(self.model, self.trigger(x))
        disc = self.discriminator_
        # the discriminator learns by .backward(): under a process group through its DDP
        # wrapper, which averages its gradients over the ranks
        disc_train = getattr(self, "_disc_train", None) or disc
        for _ in range(self.disc_steps):
            d_loss = F.cross_entropy(disc_train(logits.detach(), y), g)
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
        task = F.cross_entropy(logits, y)
        adv = F.cross_entropy(disc(logits, y), g)
        # asked now, answered after the backward pass (see distributed.any_rank_later)
        task_value, adv_value = float(task.detach()), float(adv.detach())
        diverged = D.any_rank_later(not (math.isfinite(task_value) and math.isfinite(adv_value)))
        params = [p for p in self.trigger.parameters() if p.requires_grad]
        if self.rule == "minmax":
            grads = list(torch.autograd.grad(task - self.lam * adv, params))
            D.all_reduce_mean_(grads)  # autograd.grad bypasses DDP's hooks: average over the ranks here
        else:
            g_task = list(torch.autograd.grad(task, params, retain_graph=True))
            g_adv = list(torch.autograd.grad(adv, params))
            D.all_reduce_mean_(g_task + g_adv)  # project the global gradients, not each rank's
            flat_a = torch.cat([a.flatten() for a in g_adv])
            unit = flat_a / (flat_a.norm() + 1e-12)
            along = torch.dot(torch.cat([t.flatten() for t in g_task]), unit)
            grads, start = [], 0
            for t, a in zip(g_task, g_adv):
                u = unit[start : start + a.numel()].view_as(a)
                start += a.numel()
                grads.append(t - along * u - self.lam * a)
        if diverged():
            return task_value, adv_value, True
        for p, gr in zip(params, grads):
            p.grad = gr
        t_opt.step()
        return task_value, adv_value, False

    # -- the loop ---------------------------------------------------------------------

    def _check_data(self, ds: Dataset, what: str) -> None:
        if len(ds) == 0:
            raise InputError(f"the {what} set is empty")
        ids = np.asarray(getattr(ds, "group_ids", []))
        if ids.size and len(np.unique(ids)) < 2:
            names = getattr(ds, "group_names", ["?"])
            raise GroupError(f"the {what} set has one group ({names[int(ids[0])]}); a fairness trigger needs at least two")

    def fit(self, tune: Dataset, val: Dataset | None = None) -> TriggerFitter:
        """Learn the trigger on ``tune`` (data the model was not trained on); pick the epoch on ``val``.

        Under an initialised ``torch.distributed`` process group this runs data parallel
        (see :mod:`reprogram.distributed`): ``batch_size`` is the global batch.
        """
        self._check_data(tune, "tuning")
        if val is not None:
            self._check_data(val, "validation")
        ctx = D.context()
        per_rank = D.per_rank_batch(self.batch_size)
        n_classes = len(tune.classes)
        n_groups = len(tune.group_names)
        seed_everything(self.seed)
        self.model.to(self.device)
        self.trigger.to(self.device)
        self.discriminator_ = Discriminator(n_classes, n_groups, criterion=self.criterion,
                                            hidden=self.disc_hidden).to(self.device)
        self._disc_train = D.wrap_ddp(self.discriminator_, self.device)
        t_opt = _optimizer(self.optimizer, (p for p in self.trigger.parameters() if p.requires_grad), self.lr)
        d_opt = _optimizer(self.disc_optimizer, self.discriminator_.parameters(), self.disc_lr)
        self.history_: list[dict] = []
        self.best_epoch_, best_state, start = None, None, 0
        base = self.evaluate(val, triggered=False) if val is not None and ctx.is_main else None
        self.base_report_ = D.broadcast_object(base)
        if self.resume and self.checkpoint_dir is not None:
            start, best_state = self._load_checkpoint(t_opt, d_opt)
        gap_key = GAP_METRIC[self.criterion]
        n_batches = math.ceil(math.ceil(len(tune) / ctx.world_size) / per_rank)
        with GracefulInterrupt() as stop, progress_bar(self.progress and ctx.is_main) as bar:
            task_id = bar.add_task("fitting trigger", total=self.epochs * n_batches, completed=start * n_batches,
                                   status="")
            for epoch in range(start, self.epochs):
                gen = torch.Generator().manual_seed(self.seed * 100_003 + epoch)  # same order after --resume
                sampler = RandomSampler(tune, generator=gen)
                if ctx.enabled:  # rank r takes rows r, r + N, ... of that order
                    sampler = D.ShardedSampler(sampler, ctx.world_size, ctx.rank)
                loader = DataLoader(tune, batch_size=per_rank, sampler=sampler, generator=gen, collate_fn=self.collate_fn)
                self.trigger.train()
                self.discriminator_.train()
                sums, rows = np.zeros(2), 0
                for x, y, g in loader:
                    x, y, g = move_to(x, self.device), y.to(self.device), g.to(self.device)
                    task, adv, diverged = self._trigger_step(x, y, g, t_opt, d_opt)
                    if diverged:  # on any rank: all ranks stop together
                        finite = math.isfinite(task) and math.isfinite(adv)
                        where = (f"the task loss is {task}, the adversary's {adv}" if not finite
                                 else "a loss is not finite on another rank")
                        raise TrainingDiverged(f"trigger fitting diverged at epoch {epoch + 1}: {where}; "
                                               "try a lower --lr or --lambda")
                    sums += np.array([task, adv]) * len(y)
                    rows += len(y)
                    bar.update(task_id, advance=1)
                    if stop.requested and not ctx.enabled:
                        break
                stopping = D.all_reduce_sum([float(stop.requested)])[0] > 0
                if stopping:
                    raise TrainingInterrupted(interrupted_message(self.checkpoint_dir, epoch))
                s_task, s_adv, rows = D.all_reduce_sum([sums[0], sums[1], rows])
                record: dict[str, Any] = {"epoch": epoch + 1, "task_loss": s_task / rows, "adversary_loss": s_adv / rows}
                if val is not None:
                    overall = self.evaluate(val).overall if ctx.is_main else None
                    overall = D.broadcast_object(overall)  # rank 0's figures decide on every rank
                    record.update({f"val_{k}": v for k, v in overall.items()})
                    bar.update(task_id, status=f"epoch {epoch + 1}: acc {overall['accuracy']:.3f}, "
                                               f"{self.criterion} gap {overall[gap_key]:.3f}")
                self.history_.append(record)
                if self._is_best(record):
                    self.best_epoch_ = epoch + 1
                    best_state = {k: v.detach().clone() for k, v in self.trigger.state_dict().items()}
                if self.checkpoint_dir is not None and ctx.is_main:
                    self._save_checkpoint(epoch + 1, best_state, t_opt, d_opt)
        if best_state is not None:
            self.trigger.load_state_dict(best_state)
        self.trigger.eval()
        self._disc_train = None
        return self

    def _is_best(self, record: dict) -> bool:
        """The selection rule (module docstring), comparing ``record`` with the best so far."""
        if "val_accuracy" not in record:
            return True  # no validation: the last epoch
        best = None if self.best_epoch_ is None else self.history_[self.best_epoch_ - 1]
        floor = self.base_report_.overall["accuracy"] - self.tolerance
        key = f"val_{GAP_METRIC[self.criterion]}"

        def rank(r):  # qualifying epochs first, then by gap; the others by accuracy
            ok = r["val_accuracy"] >= floor
            return (0, r[key]) if ok else (1, -r["val_accuracy"])

        return best is None or rank(record) < rank(best)

    # -- checkpoints ------------------------------------------------------------------

    def _save_checkpoint(self, epoch: int, best_state, t_opt, d_opt) -> None:
        tensors = {f"trigger.{k}": v for k, v in self.trigger.state_dict().items()}
        tensors.update({f"disc.{k}": v for k, v in self.discriminator_.state_dict().items()})
        if best_state is not None:
            tensors.update({f"best.{k}": v for k, v in best_state.items()})
        t_state, t_groups = optimizer_tensors("opt_trigger", t_opt)
        d_state, d_groups = optimizer_tensors("opt_disc", d_opt)
        rng, rng_meta = rng_state()
        tensors.update({**t_state, **d_state, **rng})
        meta = {"best_epoch": self.best_epoch_, "history": self.history_,
                "trigger": type(self.trigger).__name__, "criterion": self.criterion, "lambda": self.lam,
                "model_fingerprint": self.model.fingerprint, "optimizer_groups": {"trigger": t_groups, "disc": d_groups},
                "rng": rng_meta, "options": self._options()}
        save_checkpoint(self.checkpoint_dir, epoch, tensors, meta)

    def _options(self) -> dict:
        """The options a resumed run must share with the run that saved the checkpoint
        (not ``epochs``: a resumed run may go on for more epochs, each seeded on its own)."""
        return {"lambda": self.lam, "rule": self.rule, "disc_steps": self.disc_steps, "batch_size": self.batch_size,
                "lr": self.lr, "disc_lr": self.disc_lr, "optimizer": self.optimizer,
                "disc_optimizer": self.disc_optimizer, "disc_hidden": list(self.disc_hidden),
                "tolerance": self.tolerance, "seed": self.seed,
                **{f"trigger.{k}": v for k, v in self.trigger.config().items()}}

    def _load_checkpoint(self, t_opt, d_opt):
        """Restore the newest whole checkpoint; (0, None) when there is none (a fresh start)."""
        found = latest_checkpoint(self.checkpoint_dir, required=("rng.torch",)) if D.is_main() else None
        path = D.broadcast_object(None if found is None else str(found[2]))  # every rank loads the same epoch
        if path is None:
            return 0, None
        if found is None:
            from reprogram.artifacts import read_artifact

            tensors, meta = read_artifact(path, "checkpoint")
        else:
            tensors, meta, _ = found
        if meta.get("trigger") != type(self.trigger).__name__ or meta.get("criterion") != self.criterion:
            raise ArtifactError(f"the checkpoint in {self.checkpoint_dir} is for a {meta.get('trigger')} "
                                f"({meta.get('criterion')}), not this {type(self.trigger).__name__} ({self.criterion})")
        if meta.get("model_fingerprint") != self.model.fingerprint:
            raise ArtifactError(f"the checkpoint in {self.checkpoint_dir} was made with another model; "
                                "resume with the same model or start afresh")
        check_options(meta, self._options(), self.checkpoint_dir)
        if int(meta["epoch"]) > self.epochs:
            raise InputError(f"cannot resume from the checkpoint in {self.checkpoint_dir}: it is at epoch "
                             f"{meta['epoch']}, past this run's epochs={self.epochs}")

        def part(prefix):
            return {k[len(prefix) + 1 :]: v.to(self.device) for k, v in tensors.items() if k.startswith(prefix + ".")}

        try:
            self.trigger.load_state_dict(part("trigger"))
            self.discriminator_.load_state_dict(part("disc"))
        except RuntimeError as e:  # a checkpoint from before the options were recorded
            raise ArtifactError(f"the checkpoint in {self.checkpoint_dir} does not fit this trigger or "
                                f"discriminator: {str(e).splitlines()[0]}") from None
        load_optimizer(t_opt, "opt_trigger", tensors, meta["optimizer_groups"]["trigger"])
        load_optimizer(d_opt, "opt_disc", tensors, meta["optimizer_groups"]["disc"])
        set_rng_state(tensors, meta.get("rng", {}))
        self.history_ = list(meta["history"])
        self.best_epoch_ = meta.get("best_epoch")
        best = part("best")
        return int(meta["epoch"]), (best or None)

    # -- using the trigger ------------------------------------------------------------

    def predict_proba(self, ds: Dataset, *, triggered: bool = True) -> np.ndarray:
        """Class probabilities of the model on ``ds``, with or without the trigger (as it is now:
        fitted, loaded with :func:`~reprogram.triggers.load_trigger`, or fresh)."""
        from reprogram.models import predict_proba

        return predict_proba(self.model, ds, trigger=self.trigger if triggered else None, device=self.device,
                             collate_fn=self.collate_fn, batch_size=self.eval_batch_size)

    def evaluate(self, ds: Dataset, *, triggered: bool = True, **report_kw):
        """The :class:`~reprogram.metrics.FairnessReport` on ``ds``, with or without the trigger."""
        from reprogram.metrics import dataset_report

        return dataset_report(ds, self.predict_proba(ds, triggered=triggered), **report_kw)
