"""Save and load calibrators as ``reprogram.calibrator`` artifacts (meta.json + safetensors).

Every calibrator class offers ``_state() -> (tensors, meta)`` and
``_from_state(tensors, meta)``; ``meta["calibrator"]`` names the class, which must be
one of :data:`CALIBRATORS` -- loading builds only known classes, never runs stored code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from reprogram.artifacts import read_artifact, write_artifact
from reprogram.errors import ArtifactError

__all__ = ["save_calibrator", "load_calibrator", "KIND"]

KIND = "calibrator"


def _classes() -> dict[str, type]:
    from reprogram.calibrate.group import GroupCalibrator
    from reprogram.calibrate.maps import MAPS
    from reprogram.calibrate.multicalibration import Multicalibrator

    out = {cls.__name__: cls for cls in MAPS.values()}
    out[GroupCalibrator.__name__] = GroupCalibrator
    out[Multicalibrator.__name__] = Multicalibrator
    return out


def save_calibrator(calibrator: Any, path: str | os.PathLike, *, extra_files: dict[str, bytes] | None = None,
                    **extra_meta: Any) -> Path:
    """Write ``calibrator`` to the folder ``path`` atomically; ``extra_meta`` goes into meta.json.

    ``extra_files`` (name -> bytes) are written into the same folder, in the same atomic step.
    """
    if type(calibrator).__name__ not in _classes():
        raise ArtifactError(f"cannot save a {type(calibrator).__name__}: not a reprogram calibrator")
    tensors, meta = calibrator._state()
    return write_artifact(path, KIND, tensors, {**meta, **extra_meta}, extra_files=extra_files)


def load_calibrator(path: str | os.PathLike) -> Any:
    """The calibrator saved at ``path`` (ArtifactError if the folder is not one or is damaged)."""
    tensors, meta = read_artifact(path, KIND)
    name = meta.get("calibrator")
    classes = _classes()
    if name not in classes:
        raise ArtifactError(f"{path} holds an unknown calibrator {name!r}; known: {', '.join(sorted(classes))}")
    try:
        return classes[name]._from_state(tensors, meta)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ArtifactError(f"{path}: the {name} in it is malformed ({type(e).__name__}: {e})") from None
