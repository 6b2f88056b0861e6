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

__all__ = ["save_calibrator", "load_calibrator", "check_calibrator_groups", "KIND"]

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
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise ArtifactError(f"{path}: the {name} in it is malformed ({type(e).__name__}: {e})") from None


def check_calibrator_groups(calibrator: Any, frame: Any, path: str | os.PathLike, *,
                            source: str | None = None) -> int:
    """Check that the rows of ``frame`` belong to ``calibrator``'s fitted groups.

    A calibrator fitted on groups (``groups_`` and ``encoder_``) reads its sensitive
    columns from ``frame``: a missing column raises :class:`ColumnNotFoundError`, and
    when *no* row falls in any fitted group (``sex=M`` vs ``sex=male``, or the calibrator
    of another data set) an :class:`InputError` names the calibrator, the fitted groups
    and the ones found. Rows of groups not seen when fitting (some, not all) are allowed:
    they get the global map. Returns how many rows are of unseen groups (0 for a
    calibrator without groups).
    """
    import numpy as np

    from reprogram.data.groups import GroupEncoder
    from reprogram.data.tables import require_columns
    from reprogram.errors import InputError

    enc = getattr(calibrator, "encoder_", None)
    if not hasattr(calibrator, "groups_") or enc is None:
        return 0
    cols = list(enc.columns_)
    require_columns(frame, cols, role="sensitive column (of the calibrator)", source=source)
    if len(frame) == 0:
        return 0
    codes = np.asarray(enc.transform(frame[cols], unknown="code"), dtype=np.int64)
    unknown = int((codes < 0).sum())
    if unknown == len(codes):
        try:
            found = GroupEncoder().fit(frame[cols]).names_
        except Exception:  # noqa: BLE001  only for the message
            found = []
        shown = ", ".join(map(str, found[:10])) + (f", ... ({len(found)} in all)" if len(found) > 10 else "")
        fitted = ", ".join(map(str, calibrator.groups_[:10])) + (", ..." if len(calibrator.groups_) > 10 else "")
        where = f" of {source}" if source else ""
        raise InputError(f"the calibrator in {path} was fitted on groups {fitted}; none of the {len(codes)} rows{where} "
                         f"belongs to any of them (found: {shown or 'none'})")
    return unknown
