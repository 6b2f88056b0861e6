"""The one training loop every torch method in `reprogram` uses.

:class:`Trainer` owns what all methods share: batches (with each row's dataset index),
device placement, the optimizer and its schedule, gradient clipping, a rich progress bar,
per-epoch validation with :func:`reprogram.metrics.fairness_report`, early stopping on a
chosen validation figure, a history, seeding, and saving the trained model as the frozen
model the rest of the toolkit takes (TorchScript + JSON sidecar, or a Hugging Face
folder). What differs between methods is only the :class:`~reprogram.train.objective.Objective`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, default_collate

from reprogram import distributed as D
from reprogram.checkpoint import (
    GracefulInterrupt,
    TrainingInterrupted,
    check_options,
    checkpoint_folder,
    interrupted_message,
    jsonable,
    latest_checkpoint,
    load_optimizer,
    optimizer_tensors,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from reprogram.errors import ArtifactError, InputError, NotFittedError, TrainingDiverged
from reprogram.models.device import call_model, move_to, resolve_device, seed_everything
from reprogram.progress import progress_bar
from reprogram.train.objective import CrossEntropy, Objective, plain_settings

__all__ = ["Trainer", "TrainingDiverged", "monitor_mode", "save_frozen", "dataset_meta"]


# Validation figures where lower is better; every other figure is maximised.
_LOWER_IS_BETTER = ("difference", "gap", "ece", "disparity", "loss")


def monitor_mode(name: str) -> str:
    """"min" for gaps, calibration errors and losses, "max" for accuracies and ratios."""
    return "min" if any(k in name for k in _LOWER_IS_BETTER) else "max"


class _Indexed(Dataset):
    """Adds each row's position to the ``(x, y, group)`` a dataset yields."""

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i):
        x, y, g = self.ds[i]
        return x, y, g, i


class _Forward(nn.Module):
    """The model's logits (and its representation, for objectives that read it) in one
    ``forward``, so that DistributedDataParallel sees the whole step."""

    def __init__(self, model: nn.Module, representation: bool):
        super().__init__()
        self.model, self.representation = model, representation

    def forward(self, x):
        if self.representation:
            rep = self.model.features(x)
            return self.model.head(rep), rep
        return call_model(self.model, x)


def _with_index(collate: Callable | None) -> Callable:
    inner = collate or default_collate

    def collate_fn(batch):
        x, y, g = inner([b[:3] for b in batch])
        return x, y, g, torch.as_tensor([b[3] for b in batch], dtype=torch.long)

    return collate_fn


class Trainer:
    """Train ``model`` on ``objective`` (default: cross-entropy).

    Parameters
    ----------
    epochs, batch_size, lr, weight_decay : the usual.
    optimizer : "adam" or "sgd" (momentum 0.9).
    schedule : None, "step" (multiply the learning rate by ``gamma`` every ``step_size``
        epochs; default a third of the epochs) or "cosine".
    device : "auto", "cpu", "cuda" or a torch.device.
    seed : seeds Python, numpy, torch and the data order; CPU runs are reproducible.
    monitor, patience : the validation figure (a key of ``FairnessReport.overall``,
        e.g. "accuracy", "worst_group_accuracy", "equalized_odds_difference") to keep
        the best epoch by; training stops after ``patience`` epochs without improvement,
        and the best epoch's weights are restored.
    sampler, batch_sampler : a torch sampler for the training data (e.g. a group
        resampler); samplers with ``set_epoch`` get it called each epoch.
    collate_fn : how to batch ``(x, y, group)`` items (e.g. a tokenizer collate).
    progress : show a progress bar.
    checkpoint_dir, resume : save model, objective, optimizer, schedule, RNG states, the
        best epoch and the history there after every epoch (safetensors + JSON, see
        :mod:`reprogram.checkpoint`); continue from the newest whole one. A run killed
        at any moment and resumed ends where an uninterrupted one does (CPU, same seed).
        Resuming with other training options (epochs, lr, seed...) or method settings
        (:meth:`Objective.config`, the sampler's) than the checkpoint's raises
        :class:`InputError` naming the option. Ctrl-C stops at the next batch, the
        last epoch's checkpoint saved.

    Under an initialised ``torch.distributed`` process group ``fit`` runs data parallel
    (:mod:`reprogram.distributed`): ``batch_size`` is the global batch, the model is
    wrapped in ``DistributedDataParallel``, the objective's own parameters have their
    gradients averaged, rank 0 validates and decides, only rank 0 saves. Objectives
    that update state from their batch (GroupDRO's weights, FAS's sample averages) keep
    it per rank.

    After ``fit``: ``history_`` (one dict per epoch: train loss, the objective's own
    figures, and ``val_*`` fairness figures), ``best_epoch_``, ``model``.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective | None = None,
        *,
        epochs: int = 10,
        batch_size: int = 256,
        lr: float = 1e-3,
        optimizer: str = "adam",
        weight_decay: float = 0.0,
        schedule: str | None = None,
        step_size: int | None = None,
        gamma: float = 0.1,
        max_grad_norm: float | None = None,
        device: str | torch.device = "auto",
        seed: int = 0,
        monitor: str = "accuracy",
        patience: int | None = None,
        sampler: Any = None,
        batch_sampler: Any = None,
        collate_fn: Callable | None = None,
        progress: bool = True,
        eval_batch_size: int = 1024,
        checkpoint_dir: str | Path | None = None,
        resume: bool = False,
    ):
        if epochs < 1 or batch_size < 1 or lr <= 0:
            raise InputError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
        if optimizer not in ("adam", "sgd"):
            raise InputError(f"unknown optimizer {optimizer!r}; use adam or sgd")
        if schedule not in (None, "step", "cosine"):
            raise InputError(f"unknown schedule {schedule!r}; use step or cosine")
        self.model = model
        self.objective = objective if objective is not None else CrossEntropy()
        self.epochs, self.batch_size, self.lr = epochs, batch_size, lr
        self.optimizer, self.weight_decay = optimizer, weight_decay
        self.schedule, self.step_size, self.gamma = schedule, step_size, gamma
        self.max_grad_norm = max_grad_norm
        self.device = resolve_device(device)
        self.seed = seed
        self.monitor, self.patience = monitor, patience
        self.sampler, self.batch_sampler, self.collate_fn = sampler, batch_sampler, collate_fn
        self.progress = progress
        self.eval_batch_size = eval_batch_size
        self.checkpoint_dir = checkpoint_folder(checkpoint_dir)
        self.resume = bool(resume)

    # -- the loop ---------------------------------------------------------------

    def _make_optimizer(self) -> tuple[torch.optim.Optimizer, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise InputError("the model has no trainable parameters")
        groups = [{"params": params, "lr": self.lr, "weight_decay": self.weight_decay}]
        for g in self.objective.param_groups(self.lr):
            groups.append({"weight_decay": 0.0, **g})
        if self.optimizer == "adam":
            opt = torch.optim.Adam(groups, lr=self.lr)
        else:
            opt = torch.optim.SGD(groups, lr=self.lr, momentum=0.9)
        sched = None
        if self.schedule == "step":
            sched = torch.optim.lr_scheduler.StepLR(opt, self.step_size or max(1, self.epochs // 3), self.gamma)
        elif self.schedule == "cosine":
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.epochs)
        return opt, sched

    def _loader(self, ds: Dataset, generator: torch.Generator, per_rank: int) -> DataLoader:
        ctx = D.context()
        kw: dict[str, Any] = {"collate_fn": _with_index(self.collate_fn)}
        if self.batch_sampler is not None:
            bs = self.batch_sampler
            kw["batch_sampler"] = D.ShardedBatchSampler(bs, ctx.world_size, ctx.rank) if ctx.enabled else bs
        else:
            sampler = self.sampler if self.sampler is not None else RandomSampler(ds, generator=generator)
            if ctx.enabled:  # rank r takes rows r, r + N, ... of the single-process order
                sampler = D.ShardedSampler(sampler, ctx.world_size, ctx.rank)
            kw.update(batch_size=per_rank, sampler=sampler, generator=generator)
        return DataLoader(_Indexed(ds), **kw)

    def _step_loss(self, x, y, g, idx) -> torch.Tensor:
        obj = self.objective
        if obj.needs_representation:
            if not hasattr(self.model, "features") or not hasattr(self.model, "head"):
                raise InputError(f"{type(obj).__name__} needs a model split into features and head (see train.models)")
            logits, rep = self._forward(x)
            return obj(logits, y, g, index=idx, representation=rep)
        return obj(self._forward(x), y, g, index=idx)

    def fit(self, train: Dataset, val: Dataset | None = None) -> Trainer:
        """Train on ``train``; validate (and early-stop) on ``val`` when given."""
        if len(train) == 0:
            raise InputError("the training set is empty")
        ctx = D.context()
        per_rank = D.per_rank_batch(self.batch_size)
        generator = seed_everything(self.seed)
        self.model.to(self.device)
        self.objective.to(self.device)
        opt, sched = self._make_optimizer()
        self._forward = D.wrap_ddp(_Forward(self.model, self.objective.needs_representation), self.device)
        loader = self._loader(train, generator, per_rank)
        mode = monitor_mode(self.monitor)
        state = {"best": None, "stale": 0, "done": False}
        best_state = None
        self.history_: list[dict] = []
        self.best_epoch_ = None
        start = 0
        if self.resume and self.checkpoint_dir is not None:
            start, best_state = self._load_checkpoint(opt, sched, generator, state)
        n_batches = len(loader)
        with GracefulInterrupt() as stop, progress_bar(self.progress and ctx.is_main) as bar:
            task = bar.add_task("training", total=self.epochs * n_batches, completed=start * n_batches, status="")
            for epoch in range(start, self.epochs):
                if state["done"]:
                    break
                for s in (self.sampler, self.batch_sampler):
                    if hasattr(s, "set_epoch"):
                        s.set_epoch(epoch)
                self.model.train()
                self.objective.train()
                total, rows = 0.0, 0
                for b, (x, y, g, idx) in enumerate(loader):
                    x, y, g, idx = move_to(x, self.device), y.to(self.device), g.to(self.device), idx.to(self.device)
                    self.objective.set_progress((epoch + b / n_batches) / self.epochs)
                    loss = self._step_loss(x, y, g, idx)
                    # every rank learns of a NaN on any one (under DDP the others would wait
                    # in backward's all-reduce until torchrun's timeout); asked before the
                    # backward pass, answered after it, and no weight moves on a NaN
                    value = loss.item()  # the one host sync of the step: the check and the epoch sum
                    finite = math.isfinite(value)
                    diverged = D.any_rank_later(not finite)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()  # DDP averages the model's gradients over the ranks
                    if diverged():
                        where = f"the loss is {value}" if not finite else "the loss is not finite on another rank"
                        raise TrainingDiverged(f"training diverged at epoch {epoch + 1}: {where}; try a lower learning rate")
                    if ctx.enabled:
                        D.all_reduce_mean_([p.grad for p in self.objective.parameters() if p.grad is not None])
                    if self.max_grad_norm:
                        nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
                    opt.step()
                    self.objective.after_step()
                    total += value * len(y)
                    rows += len(y)
                    bar.update(task, advance=1)
                    if stop.requested and not ctx.enabled:
                        break
                if D.all_reduce_sum([float(stop.requested)])[0] > 0:
                    raise TrainingInterrupted(interrupted_message(self.checkpoint_dir, epoch))
                if sched is not None:
                    sched.step()
                total, rows = D.all_reduce_sum([total, rows])
                record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(rows, 1)}
                record.update(self.objective.epoch_logs())
                if val is not None:
                    overall = self.evaluate(val).overall if ctx.is_main else None
                    overall = D.broadcast_object(overall)  # rank 0's figures decide on every rank
                    record.update({f"val_{k}": v for k, v in overall.items()})
                    key = f"val_{self.monitor}"
                    if key not in record:
                        raise InputError(f"unknown monitor {self.monitor!r}; use one of {', '.join(overall)}")
                    value = record[key]
                    best = state["best"]
                    better = best is None or (value > best if mode == "max" else value < best)
                    if better and not math.isnan(value):
                        state.update(best=value, stale=0)
                        best_state = copy.deepcopy(self.model.state_dict())
                        self.best_epoch_ = epoch + 1
                    else:
                        state["stale"] += 1
                    bar.update(task, status=f"epoch {epoch + 1}: {self.monitor} {value:.4f}")
                self.history_.append(record)
                if self.patience is not None and val is not None and state["stale"] > self.patience:
                    state["done"] = True
                if self.checkpoint_dir is not None and ctx.is_main:
                    self._save_checkpoint(epoch + 1, opt, sched, generator, state, best_state)
        self._forward = None
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return self

    # -- checkpoints --------------------------------------------------------------

    def _save_checkpoint(self, epoch, opt, sched, generator, state, best_state) -> None:
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        tensors.update({f"objective.{k}": v for k, v in self.objective.state_dict().items()})
        if best_state is not None:
            tensors.update({f"best.{k}": v for k, v in best_state.items()})
        o_state, o_groups = optimizer_tensors("opt", opt)
        rng, rng_meta = rng_state(generator)
        tensors.update({**o_state, **rng})
        meta = {"history": self.history_, "best_epoch": self.best_epoch_, "best": state["best"], "stale": state["stale"],
                "done": state["done"], "objective": type(self.objective).__name__, "model": type(self.model).__name__,
                "optimizer_groups": o_groups, "scheduler": None if sched is None else jsonable(sched.state_dict()),
                "rng": rng_meta, "options": self._options()}
        save_checkpoint(self.checkpoint_dir, epoch, tensors, meta)

    def _options(self) -> dict:
        """The options a resumed run must share with the run that saved the checkpoint."""
        names = ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "schedule", "step_size", "gamma",
                 "max_grad_norm", "seed", "monitor", "patience")
        options = {k: getattr(self, k) for k in names}
        # the method's own settings (FAS c, a penalty's eta, a resampling strength...): a
        # resumed run would otherwise take the checkpoint's objective state with new settings
        # (flat, so a refusal names the one setting: "objective.c=0.5")
        options.update({f"objective.{k}": v for k, v in self.objective.config().items()})
        for name in ("sampler", "batch_sampler"):
            s = getattr(self, name)
            if s is not None:  # not the epoch counter, which advances
                options.update({f"{name}.{k}": v for k, v in
                                {"class": type(s).__name__, **plain_settings(s, skip=("epoch",))}.items()})
        return options

    def _load_checkpoint(self, opt, sched, generator, state) -> tuple[int, dict | None]:
        """Restore the newest whole checkpoint; (0, None) when there is none (a fresh start)."""
        from reprogram.artifacts import read_artifact

        found = latest_checkpoint(self.checkpoint_dir, required=("rng.torch",)) if D.is_main() else None
        path = D.broadcast_object(None if found is None else str(found[2]))  # every rank loads the same epoch
        if path is None:
            return 0, None
        tensors, meta = found[:2] if found is not None else read_artifact(path, "checkpoint")
        if meta.get("objective") != type(self.objective).__name__ or meta.get("model") != type(self.model).__name__:
            raise ArtifactError(f"the checkpoint in {self.checkpoint_dir} is for a {meta.get('model')} trained with "
                                f"{meta.get('objective')}, not this {type(self.model).__name__} with "
                                f"{type(self.objective).__name__}")
        check_options(meta, self._options(), self.checkpoint_dir)

        def part(prefix):
            return {k[len(prefix) + 1 :]: v.to(self.device) for k, v in tensors.items() if k.startswith(prefix + ".")}

        try:
            self.model.load_state_dict(part("model"))
            self.objective.load_state_dict(part("objective"))
        except RuntimeError as e:
            raise ArtifactError(f"the checkpoint in {self.checkpoint_dir} does not fit this model: "
                                f"{str(e).splitlines()[0]}") from None
        load_optimizer(opt, "opt", tensors, meta["optimizer_groups"])
        if sched is not None and meta.get("scheduler") is not None:
            sched.load_state_dict(meta["scheduler"])
        set_rng_state(tensors, meta.get("rng", {}), generator)
        self.history_ = list(meta["history"])
        self.best_epoch_ = meta.get("best_epoch")
        state.update(best=meta.get("best"), stale=int(meta.get("stale", 0)), done=bool(meta.get("done")))
        return int(meta["epoch"]), (part("best") or None)

    # -- using the trained model --------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "history_"):
            raise NotFittedError("this Trainer has not been fitted: call fit() first")

    def predict_proba(self, ds: Dataset) -> np.ndarray:
        """Class probabilities, one row per dataset row, in dataset order."""
        from reprogram.models import predict_proba

        return predict_proba(self.model, ds, device=self.device, collate_fn=self.collate_fn,
                             batch_size=self.eval_batch_size)

    def evaluate(self, ds: Dataset, **report_kw):
        """The :class:`~reprogram.metrics.FairnessReport` of the model on ``ds``."""
        from reprogram.metrics import dataset_report

        return dataset_report(ds, self.predict_proba(ds), **report_kw)

    def save(self, path: str | Path, dataset: Dataset, *, arch: str | None = None, extra: dict | None = None) -> Path:
        """Save the model as the frozen model other commands take (see :func:`save_frozen`)."""
        self._check_fitted()
        meta = {"objective": type(self.objective).__name__, **(extra or {})}
        return save_frozen(self.model, path, dataset, arch=arch, collate_fn=self.collate_fn, extra=meta)


def save_frozen(model: nn.Module, path: str | Path, dataset: Dataset, *, arch: str | None = None,
                collate_fn: Callable | None = None, extra: dict | None = None) -> Path:
    """Save ``model`` as the frozen model other commands take; return its path.

    Torch models become a TorchScript file with a JSON sidecar (``ckpt.pt`` +
    ``ckpt.json``); Hugging Face models a folder (``save_pretrained``, the tokenizer
    and ``reprogram.json``). The sidecar holds what ``dataset`` knows: the input kind,
    class and group names, the feature encoding or image normalisation. Both are
    written atomically.
    """
    from reprogram.io import atomic_dir, atomic_path
    from reprogram.models import write_sidecar

    meta = dataset_meta(dataset)
    meta["arch"] = arch
    if extra:
        meta.update(extra)
    model = model.eval()
    path = Path(path)
    if hasattr(model, "save_pretrained"):  # Hugging Face: a folder, like its source
        with atomic_dir(path) as tmp:
            model.save_pretrained(tmp)
            tok = getattr(collate_fn, "tokenizer", None)
            if tok is not None:
                tok.save_pretrained(tmp)
            write_sidecar(tmp, meta)
        return path
    x = _with_index(collate_fn)([(*dataset[i], i) for i in range(min(2, len(dataset)))])[0]
    cpu_model = copy.deepcopy(model).cpu()
    with torch.no_grad():
        traced = torch.jit.trace(cpu_model, move_to(x, torch.device("cpu")))
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))
        # the sidecar goes first: one that cannot be written leaves no model without it
        write_sidecar(path, meta)
    return path


def dataset_meta(ds: Dataset) -> dict:
    """What a frozen model's sidecar should know about the data it was trained on."""
    from reprogram.data import ImageDataset, TabularDataset, TextDataset

    meta: dict[str, Any] = {
        "classes": [c.item() if hasattr(c, "item") else c for c in ds.classes],
        "groups": ds.groups.to_dict(),
    }
    if isinstance(ds, TabularDataset):
        meta["input_kind"] = "tabular"
        if ds.feature_encoder is not None:
            meta["features"] = ds.feature_encoder.to_dict()
    elif isinstance(ds, TextDataset):
        meta["input_kind"] = "text"
    elif isinstance(ds, ImageDataset):
        meta["input_kind"] = "image"
        meta["image"] = ds.transform.to_meta()
    elif hasattr(ds, "image_meta"):
        meta["input_kind"] = "image"
        meta["image"] = ds.image_meta
    return meta
