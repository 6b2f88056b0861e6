"""Training checkpoints that survive ``kill -9``: the pieces TriggerFitter and Trainer share.

A checkpoint folder holds one artifact per saved epoch, ``epoch-00003/`` (safetensors +
``meta.json``, written by the one artifact writer, so each appears whole or not at all);
the newest ``keep`` are kept. :func:`latest_checkpoint` reads the newest one that reads
back whole and skips (with a :class:`CheckpointWarning`) any that does not, so a
damaged checkpoint is never loaded. Optimizer states are flattened into named tensors
plus JSON (no pickle); RNG states (Python, numpy, torch, CUDA) go along so a resumed run
draws the same numbers as an uninterrupted one. :class:`GracefulInterrupt` turns Ctrl-C
into a request the loops honour at the next batch.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprogram.errors import ArtifactError, InputError

__all__ = ["CheckpointWarning", "TrainingInterrupted", "GracefulInterrupt", "optimizer_tensors", "load_optimizer",
           "rng_state", "set_rng_state", "save_checkpoint", "latest_checkpoint", "check_options",
           "checkpoint_folder"]

_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")


class CheckpointWarning(UserWarning):
    """A checkpoint was skipped because it does not read back whole."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a fit; the message says what was saved and how to resume."""


class GracefulInterrupt:
    """While active, the first SIGINT only sets ``requested`` (a second one interrupts at once)."""

    def __init__(self):
        self.requested = False
        self._old = None

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    """An optimizer's state as flat named tensors (safetensors) and its param groups (JSON)."""
    sd = opt.state_dict()
    tensors = {f"{prefix}.{pid}.{k}": (v if torch.is_tensor(v) else torch.tensor(v))
               for pid, st in sd["state"].items() for k, v in st.items()}
    return tensors, sd["param_groups"]


def load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict, groups: list) -> None:
    state: dict[int, dict] = {}
    for key, t in tensors.items():
        if key.startswith(prefix + "."):
            _, pid, k = key.split(".", 2)
            state.setdefault(int(pid), {})[k] = t
    opt.load_state_dict({"state": state, "param_groups": groups})


def rng_state(generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Every RNG a loop draws from: tensors for safetensors, the rest for JSON."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    if generator is not None:
        tensors["rng.data"] = generator.get_state()
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, py_gauss = random.getstate()
    meta = {"numpy": [kind, int(pos), int(has_gauss), float(gauss)], "python": [version, list(internal), py_gauss]}
    return tensors, meta


def set_rng_state(tensors: dict, meta: dict, generator: torch.Generator | None = None) -> None:
    torch.set_rng_state(tensors["rng.torch"].cpu())
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"].cpu())
    if generator is not None and "rng.data" in tensors:
        generator.set_state(tensors["rng.data"].cpu())
    if "rng.numpy" in tensors and "numpy" in meta:
        kind, pos, has_gauss, gauss = meta["numpy"]
        np.random.set_state((kind, tensors["rng.numpy"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "python" in meta:
        version, internal, py_gauss = meta["python"]
        random.setstate((version, tuple(internal), py_gauss))


def save_checkpoint(folder: str | Path, epoch: int, tensors: dict, meta: dict, *, keep: int = 2) -> Path:
    """Write ``folder/epoch-NNNNN`` atomically, then drop all but the newest ``keep``.

    Epochs past ``epoch`` are dropped too: they are left by a run this one replaced (a
    fresh start in a used folder, or a resume that found them damaged), and kept they
    would outrank this run's checkpoints, which would be pruned in their place."""
    from reprogram.artifacts import write_artifact

    folder = Path(folder)
    path = write_artifact(folder / f"epoch-{epoch:05d}", "checkpoint", tensors, {**meta, "epoch": epoch})
    found = _numbered(folder)
    superseded = [p for n, p in found if n > epoch]
    for old in superseded + [p for n, p in found if n <= epoch][keep:]:
        shutil.rmtree(old, ignore_errors=True)
    # left by a kill in the middle of a write (.tmp) or of the swap that replaces a folder (.old)
    for stale in [*folder.glob(".epoch-*.tmp"), *folder.glob(".epoch-*.old")]:
        shutil.rmtree(stale, ignore_errors=True)
    return path


def _numbered(folder: Path) -> list[tuple[int, Path]]:
    """The ``epoch-NNNNN`` folders in ``folder`` with their epochs, newest first."""
    found = [(int(m.group(1)), p) for p in folder.glob("epoch-*") if (m := _EPOCH_DIR.match(p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def _candidates(folder: Path) -> list[Path]:
    return [p for _, p in _numbered(folder)]


def latest_checkpoint(folder: str | Path, required: tuple[str, ...] = ()) -> tuple[dict, dict, Path] | None:
    """The newest checkpoint in ``folder`` that reads back whole (with the ``required``
    tensor names), as ``(tensors, meta, path)``; None when there is none. Damaged ones
    are skipped with a :class:`CheckpointWarning`."""
    from reprogram.artifacts import read_artifact

    folder = Path(folder)
    if not folder.is_dir():
        return None
    paths = _candidates(folder)
    if (folder / "meta.json").is_file():  # the single-folder layout of earlier versions
        paths.append(folder)
    for path in paths:
        try:
            tensors, meta = read_artifact(path, "checkpoint")
            missing = [k for k in required if k not in tensors]
            if missing or not isinstance(meta.get("epoch"), int):
                raise ArtifactError(f"{path} lacks {', '.join(missing) or 'its epoch'}")
        except ArtifactError as e:
            warnings.warn(f"skipping a damaged checkpoint: {e}", CheckpointWarning, stacklevel=2)
            continue
        return tensors, meta, path
    return None


def checkpoint_folder(path: str | Path | None) -> Path | None:
    """``path`` as the checkpoint folder of a run; InputError, before any training, when
    it is something other than a folder (else the first save would fail an epoch in)."""
    if path is None:
        return None
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"the checkpoint folder {folder} exists and is not a folder")
    return folder


def check_options(meta: dict, options: dict, folder: Path | None) -> None:
    """Refuse (one line) to resume a checkpoint saved with other training ``options``: the
    restored optimizer, schedule and RNG states would quietly keep the old ones (a new
    learning rate, say, is overwritten by the saved param groups). Checkpoints from
    before the options were recorded are not checked."""
    saved = meta.get("options")
    if not isinstance(saved, dict):
        return
    for name, value in json.loads(json.dumps(jsonable(options))).items():
        if name in saved and saved[name] != value:
            raise InputError(f"cannot resume from the checkpoint in {folder}: it was made with {name}={saved[name]!r}, "
                             f"this run has {name}={value!r}; resume with the same {name}, or start afresh with "
                             "another checkpoint folder")


def interrupted_message(folder: Path | None, epoch_done: int, flag: str = "--resume") -> str:
    if folder is None:
        return f"interrupted after {epoch_done} complete epoch(s); nothing was saved (give a checkpoint folder to resume)"
    if epoch_done == 0:
        return "interrupted during the first epoch; no checkpoint was saved yet"
    return (f"interrupted after {epoch_done} complete epoch(s); the checkpoint is in {folder}: "
            f"run the same command with {flag} to continue")


def jsonable(meta: Any) -> Any:
    """Scheduler state dicts and the like, with tensors turned into lists."""
    if isinstance(meta, dict):
        return {k: jsonable(v) for k, v in meta.items()}
    if isinstance(meta, (list, tuple)):
        return [jsonable(v) for v in meta]
    if torch.is_tensor(meta):
        return meta.tolist()
    return meta
