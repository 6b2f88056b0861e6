"""The one artifact format of `reprogram`: a folder of ``meta.json`` + safetensors weights.

Triggers, calibrators and training checkpoints are saved this way. ``meta.json`` says
what the folder holds (``format``: ``"reprogram.<kind>"``), its ``version``, what made it
(``made_by``), and whatever the writer adds (model fingerprint, class and group names...).
Weights are safetensors: loading them runs no code, unlike a pickle. The folder is built
under a temporary name and renamed into place (:func:`reprogram.io.atomic_dir`), so an
interrupted save never leaves a half artifact.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from reprogram.errors import ArtifactError
from reprogram.io import atomic_dir

__all__ = ["write_artifact", "read_artifact", "ARTIFACT_VERSION"]

ARTIFACT_VERSION = 1
META_NAME = "meta.json"
WEIGHTS_NAME = "weights.safetensors"


def write_artifact(path: str | os.PathLike, kind: str, tensors: Mapping[str, torch.Tensor],
                   meta: Mapping[str, Any], *, extra_files: Mapping[str, bytes] | None = None) -> Path:
    """Write the artifact folder ``path`` (replacing an existing one only once complete)."""
    from safetensors.torch import save_file

    import reprogram

    body = {"format": f"reprogram.{kind}", "version": ARTIFACT_VERSION, "made_by": f"reprogram {reprogram.__version__}",
            **meta}
    text = json.dumps(body, indent=2, default=_jsonable) + "\n"
    plain = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_dir(path) as tmp:
        save_file(plain, str(tmp / WEIGHTS_NAME))
        (tmp / META_NAME).write_text(text)
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
    return Path(path)


def read_artifact(path: str | os.PathLike, kind: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The weights and meta of the ``kind`` artifact at ``path``; ArtifactError if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = Path(path)
    what = f"reprogram.{kind}"
    if not p.is_dir():
        raise ArtifactError(f"{p} is not a {kind} folder (expected {META_NAME} and {WEIGHTS_NAME} inside)")
    try:
        meta = json.loads((p / META_NAME).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{p} has no {META_NAME}: not a {kind} folder, or an incomplete one") from None
    except (OSError, ValueError, RecursionError) as e:
        raise ArtifactError(f"{p / META_NAME} cannot be read: {' '.join(str(e).split())}") from None
    if not isinstance(meta, dict) or meta.get("format") != what:
        fmt = meta.get("format") if isinstance(meta, dict) else None
        raise ArtifactError(f"{p} holds {fmt!r}, not a {what}")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > ARTIFACT_VERSION:
        raise ArtifactError(f"{p} has version {meta.get('version')!r}; this reprogram reads up to {ARTIFACT_VERSION}")
    try:
        tensors = load_file(str(p / WEIGHTS_NAME))
    except FileNotFoundError:
        raise ArtifactError(f"{p} has no {WEIGHTS_NAME}") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{p / WEIGHTS_NAME} is damaged: {str(e).splitlines()[0]}") from None
    return tensors, meta


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"{type(v).__name__} is not JSON-serialisable")
