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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from reprogram.errors import InputError, NotFittedError, ReprogramError
from reprogram.models.device import call_model, move_to, resolve_device, seed_everything
from reprogram.train.objective import CrossEntropy, Objective

__all__ = ["Trainer", "TrainingDiverged", "monitor_mode", "save_frozen", "dataset_meta"]


class TrainingDiverged(ReprogramError):
    """The loss became NaN or infinite."""


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

    def _loader(self, ds: Dataset, generator: torch.Generator) -> DataLoader:
        kw: dict[str, Any] = {"collate_fn": _with_index(self.collate_fn)}
        if self.batch_sampler is not None:
            kw["batch_sampler"] = self.batch_sampler
        else:
            kw.update(batch_size=self.batch_size, sampler=self.sampler, shuffle=self.sampler is None, generator=generator)
        return DataLoader(_Indexed(ds), **kw)

    def _step_loss(self, x, y, g, idx) -> torch.Tensor:
        obj = self.objective
        if obj.needs_representation:
            if not hasattr(self.model, "features") or not hasattr(self.model, "head"):
                raise InputError(f"{type(obj).__name__} needs a model split into features and head (see train.models)")
            rep = self.model.features(x)
            return obj(self.model.head(rep), y, g, index=idx, representation=rep)
        return obj(call_model(self.model, x), y, g, index=idx)

    def fit(self, train: Dataset, val: Dataset | None = None) -> Trainer:
        """Train on ``train``; validate (and early-stop) on ``val`` when given."""
        if len(train) == 0:
            raise InputError("the training set is empty")
        generator = seed_everything(self.seed)
        self.model.to(self.device)
        self.objective.to(self.device)
        opt, sched = self._make_optimizer()
        loader = self._loader(train, generator)
        mode = monitor_mode(self.monitor)
        best, best_state, stale = None, None, 0
        self.history_: list[dict] = []
        self.best_epoch_ = None
        n_batches = len(loader)
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[status]}"))  # fmt: skip
        with Progress(*columns, transient=True, disable=not self.progress) as bar:
            task = bar.add_task("training", total=self.epochs * n_batches, status="")
            for epoch in range(self.epochs):
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
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"training diverged at epoch {epoch + 1}: the loss is {loss.item()}; try a lower learning rate"
                        )
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if self.max_grad_norm:
                        nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
                    opt.step()
                    self.objective.after_step()
                    total += loss.item() * len(y)
                    rows += len(y)
                    bar.update(task, advance=1)
                if sched is not None:
                    sched.step()
                record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": total / max(rows, 1)}
                record.update(self.objective.epoch_logs())
                if val is not None:
                    report = self.evaluate(val)
                    record.update({f"val_{k}": v for k, v in report.overall.items()})
                    key = f"val_{self.monitor}"
                    if key not in record:
                        raise InputError(f"unknown monitor {self.monitor!r}; use one of {', '.join(report.overall)}")
                    value = record[key]
                    better = best is None or (value > best if mode == "max" else value < best)
                    if better and not math.isnan(value):
                        best, best_state, stale = value, copy.deepcopy(self.model.state_dict()), 0
                        self.best_epoch_ = epoch + 1
                    else:
                        stale += 1
                    bar.update(task, status=f"epoch {epoch + 1}: {self.monitor} {value:.4f}")
                self.history_.append(record)
                if self.patience is not None and val is not None and stale > self.patience:
                    break
        if best_state is not None:
            self.model.load_state_dict(best_state)
        self.model.eval()
        return self

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
