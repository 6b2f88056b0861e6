"""Saving and loading triggers: safetensors weights + ``meta.json`` (never a pickle)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from reprogram.artifacts import read_artifact, write_artifact
from reprogram.errors import ArtifactError
from reprogram.triggers.image import AdditiveTrigger, BorderTrigger, PatchTrigger
from reprogram.triggers.tabular import FeatureTrigger
from reprogram.triggers.text import PromptTrigger

__all__ = ["save_trigger", "load_trigger", "TRIGGER_TYPES", "FingerprintWarning"]

TRIGGER_TYPES: dict[str, type[nn.Module]] = {
    cls.__name__: cls for cls in (BorderTrigger, PatchTrigger, AdditiveTrigger, PromptTrigger, FeatureTrigger)
}


class FingerprintWarning(UserWarning):
    """A trigger used with a model other than the one it was fitted on (transfer)."""


def save_trigger(trigger: nn.Module, path: str | os.PathLike, *, model=None, **meta: Any) -> Path:
    """Save ``trigger`` as a folder; ``meta`` (criterion, lambda, columns, metrics...) goes to meta.json.

    With ``model`` (a :class:`~reprogram.models.FrozenModel`) its fingerprint, input kind,
    class names and source are recorded.
    """
    name = type(trigger).__name__
    if name not in TRIGGER_TYPES:
        raise ArtifactError(f"cannot save a {name}: not a reprogram trigger ({', '.join(TRIGGER_TYPES)})")
    info: dict[str, Any] = {"trigger": name, "config": trigger.config(), "input_kind": trigger.kind}
    if model is not None:
        info["model"] = {"fingerprint": getattr(model, "fingerprint", None),
                         "source": str(getattr(model, "source", None) or ""),
                         "classes": getattr(model, "classes", None)}
    return write_artifact(path, "trigger", trigger.state_dict(), {**info, **meta})


def load_trigger(path: str | os.PathLike, model=None) -> tuple[nn.Module, dict]:
    """The trigger saved at ``path`` and its meta.

    A text trigger is attached to ``model``'s embeddings. When ``model``'s fingerprint
    differs from the one the trigger was fitted on, a :class:`FingerprintWarning` says so
    (using a trigger on another model of the same input space is allowed: transfer).
    """
    tensors, meta = read_artifact(path, "trigger")
    cls = TRIGGER_TYPES.get(meta.get("trigger"))
    if cls is None:
        raise ArtifactError(f"{path} holds an unknown trigger type {meta.get('trigger')!r}")
    try:
        trigger = cls(**meta.get("config", {}))
        trigger.load_state_dict(tensors)
    except (TypeError, ValueError, RuntimeError, KeyError) as e:
        raise ArtifactError(f"{path}: the saved {cls.__name__} does not load: {str(e).splitlines()[0]}") from None
    if model is not None:
        kind = getattr(model, "input_kind", None)
        if kind is not None and kind != trigger.kind:
            raise ArtifactError(f"{path} is a {trigger.kind} trigger; the model reads {kind}")
        if isinstance(trigger, PromptTrigger):
            trigger.attach(model)
        fitted_on = (meta.get("model") or {}).get("fingerprint")
        fp = getattr(model, "fingerprint", None)
        if fitted_on and fp and fitted_on != fp:
            warnings.warn(f"the trigger in {path} was fitted on model {fitted_on[:12]}, not on this one ({fp[:12]}): "
                          "using it on another model (transfer)", FingerprintWarning, stacklevel=2)
    return trigger, meta
