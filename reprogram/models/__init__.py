"""Frozen models: load a trained model from any common format, freeze it, fingerprint it.

See :func:`load_frozen` for the formats and :class:`FrozenModel` for what comes back.
"""

from reprogram.models.device import DEVICE_CHOICES, call_model, move_to, resolve_device, seed_everything
from reprogram.models.fingerprint import weights_fingerprint
from reprogram.models.frozen import FrozenModel, freeze
from reprogram.models.loading import load_frozen, prepare_transformers
from reprogram.models.predict import iter_proba, predict_proba
from reprogram.models.sidecar import read_sidecar, write_sidecar
from reprogram.models.torchvision_compat import import_torchvision

__all__ = [
    "load_frozen",
    "FrozenModel",
    "freeze",
    "import_torchvision",
    "prepare_transformers",
    "iter_proba",
    "predict_proba",
    "read_sidecar",
    "write_sidecar",
    "weights_fingerprint",
    "resolve_device",
    "move_to",
    "call_model",
    "seed_everything",
    "DEVICE_CHOICES",
]
