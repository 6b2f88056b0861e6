"""The JSON sidecar that tells `reprogram` what a checkpoint expects and predicts.

A checkpoint file ``ckpt.pt`` may have ``ckpt.json`` beside it; a Hugging Face folder
carries ``reprogram.json`` inside it. The sidecar holds what weights cannot say::

    {"format": "reprogram.model", "version": 1,
     "input_kind": "image", "classes": ["cat", "dog"], "arch": "resnet18",
     "groups": {...}, "features": {...},
     "image": {"size": [224, 224], "mean": [...], "std": [...], "channels": 3}}

Every key is optional. Unknown keys are kept (and handed back in ``FrozenModel.meta``),
so later versions can add fields that older readers carry along untouched.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reprogram.errors import CheckpointError, InputError
from reprogram.io import atomic_write_text

__all__ = ["SIDECAR_FORMAT", "SIDECAR_VERSION", "INPUT_KINDS", "sidecar_path", "read_sidecar", "write_sidecar"]

SIDECAR_FORMAT = "reprogram.model"
SIDECAR_VERSION = 1
INPUT_KINDS = ("image", "text", "tabular")
HF_SIDECAR_NAME = "reprogram.json"


def sidecar_path(path: str | os.PathLike) -> Path:
    """Where the sidecar of the model at ``path`` lives.

    ``ckpt.pt`` -> ``ckpt.json``; a folder -> ``folder/reprogram.json``; a path that
    already ends in ``.json`` is taken to be the sidecar itself.
    """
    p = Path(path)
    if p.is_dir():
        return p / HF_SIDECAR_NAME
    if p.suffix == ".json":
        return p
    return p.with_suffix(".json")


def _problem(meta: Mapping[str, Any]) -> str | None:
    """What is wrong with a sidecar's contents, or None."""
    fmt = meta.get("format", SIDECAR_FORMAT)
    if fmt != SIDECAR_FORMAT:
        return f"its format is {fmt!r}, not {SIDECAR_FORMAT!r}"
    version = meta.get("version", SIDECAR_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        return f"version must be an integer, got {version!r}"
    if version > SIDECAR_VERSION:
        return f"it has version {version}, newer than this reprogram reads ({SIDECAR_VERSION}); upgrade reprogram"
    kind = meta.get("input_kind")
    if kind is not None and kind not in INPUT_KINDS:
        return f"input_kind is {kind!r}; expected one of {', '.join(INPUT_KINDS)}"
    classes = meta.get("classes")
    if classes is not None:
        if not isinstance(classes, list) or not classes:
            return "classes must be a non-empty list"
        if len({str(c) for c in classes}) != len(classes):
            return "classes has duplicate names"
    for key in ("groups", "features", "image"):
        if meta.get(key) is not None and not isinstance(meta[key], Mapping):
            return f"{key} must be an object"
    image = meta.get("image") or {}
    size = image.get("size")
    if size is not None and not (
        isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)
    ):
        return f"image.size must be [height, width] in pixels, got {size!r}"
    channels = image.get("channels")
    for key in ("mean", "std"):
        v = image.get(key)
        if v is None:
            continue
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) for x in v):
            return f"image.{key} must be a list of numbers"
        if isinstance(channels, int) and len(v) != channels:
            return f"image.{key} has {len(v)} values but image.channels is {channels}"
    if any(x == 0 for x in image.get("std") or []):
        return "image.std contains 0"
    arch = meta.get("arch")
    if arch is not None and not isinstance(arch, str):
        return f"arch must be a string, got {arch!r}"
    return None


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """Return the sidecar of the model at ``path`` as a dict, or ``{}`` if it has none.

    ``path`` is the checkpoint (or folder), or the sidecar file itself. A sidecar that
    is not valid JSON, not an object, or that contradicts the format raises
    :class:`CheckpointError` naming the file.
    """
    sc = sidecar_path(path)
    if not sc.is_file():
        return {}
    try:
        meta = json.loads(sc.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"model sidecar {sc} is not valid JSON: {e}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read model sidecar {sc}: {e.strerror or e}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"model sidecar {sc} must hold a JSON object, not {type(meta).__name__}")
    problem = _problem(meta)
    if problem:
        raise CheckpointError(f"model sidecar {sc} is not usable: {problem}")
    return meta


def _json_default(o: Any) -> Any:
    # numpy scalars and arrays (class labels straight from a DataFrame) have tolist().
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def write_sidecar(path: str | os.PathLike, meta: Mapping[str, Any]) -> Path:
    """Write ``meta`` as the sidecar of the model at ``path``; return the sidecar's path.

    ``format`` and ``version`` are filled in. The file is written under a temporary
    name in the same folder and renamed over the target, so a reader never sees half a
    sidecar. Contents the reader would refuse raise :class:`InputError` here instead.
    """
    if not isinstance(meta, Mapping):
        raise InputError(f"sidecar metadata must be a mapping, got {type(meta).__name__}")
    full = {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, **meta}
    try:
        text = json.dumps(full, indent=2, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InputError(f"sidecar metadata cannot be written as JSON: {e}") from None
    # Checked after the JSON round trip, so numpy values are judged as what gets stored.
    problem = _problem(json.loads(text))
    if problem:
        raise InputError(f"sidecar metadata is not usable: {problem}")
    sc = sidecar_path(path)
    atomic_write_text(sc, text + "\n")
    return sc
