"""Import torchvision even where its compiled ops do not match the installed torch.

torchvision ships C++ operators (``nms``, ``roi_align``...) in a shared library built
against one torch build. Installed next to a torch it was not built for (the CUDA wheel
of torchvision beside the CPU wheel of torch, the usual result of a bare ``pip install``)
that library does not load, and ``import torchvision`` then dies in
``torchvision._meta_registrations`` with ``RuntimeError: operator torchvision::nms does
not exist``: registering a fake (meta) kernel needs the operator's schema first.

Nothing in `reprogram` runs those detection ops; it needs ``torchvision.models`` and
``torchvision.transforms``, which are pure Python. So when, and only when, the import fails
that way, :func:`import_torchvision` defines the two missing schemas itself and imports
again. The models then build and run normally; calling ``torchvision.ops.nms`` would fail
with "no kernel registered", which is the truth.

torchvision is never imported when `reprogram` is imported: only through this helper,
when a model or transform needs it. That keeps ``import reprogram`` fast and keeps an
environment with a broken torchvision usable for everything else (and transformers, which
imports torchvision when it finds it installed, goes through here too; see
``reprogram.models.loading``).
"""

from __future__ import annotations

import importlib
import sys
import threading
from types import ModuleType

import torch

__all__ = ["import_torchvision"]

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

_lock = threading.Lock()
_torchvision: ModuleType | None = None
# The registrations live only as long as this object: it must stay referenced for the
# life of the process, or torch drops the schemas and torchvision breaks again.
_library: torch.library.Library | None = None


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _define_missing_ops() -> None:
    global _library
    missing = [name for name in _SCHEMAS if not _op_exists(name)]
    if not missing:
        return
    if _library is None:
        try:
            _library = torch.library.Library("torchvision", "DEF")
        except RuntimeError:  # someone else already owns the namespace: add to it instead
            _library = torch.library.Library("torchvision", "FRAGMENT")
    for name in missing:
        _library.define(_SCHEMAS[name])


def _forget_torchvision() -> None:
    # A failed import leaves half-initialised torchvision modules behind; importing again
    # would hand those back instead of running the package's __init__ from the start.
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]


def import_torchvision() -> ModuleType:
    """Return the ``torchvision`` module, importing it on first use.

    If the import fails because torchvision's compiled operators cannot load against the
    installed torch (``operator torchvision::nms does not exist``), the missing operator
    schemas are defined and the import is retried; any other failure propagates as it
    is. The module is cached, so later calls cost nothing.
    """
    global _torchvision
    if _torchvision is not None:
        return _torchvision
    with _lock:
        if _torchvision is not None:
            return _torchvision
        try:
            module = importlib.import_module("torchvision")
        except RuntimeError as e:
            if "torchvision::" not in str(e) or "does not exist" not in str(e):
                raise
            _forget_torchvision()
            _define_missing_ops()
            try:
                module = importlib.import_module("torchvision")
            except RuntimeError as again:
                _forget_torchvision()
                raise RuntimeError(
                    f"torchvision cannot be imported with torch {torch.__version__}: {again}; "
                    "install the torchvision build that matches this torch"
                ) from again
        _torchvision = module
        return module
