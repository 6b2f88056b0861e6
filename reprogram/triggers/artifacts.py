"""Saving and loading triggers: safetensors weights + ``meta.json`` (never a pickle)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from reprogram.artifacts import read_artifact, write_artifact
from reprogram.errors import ArtifactError, InputError
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
    trigger_name = meta.get("trigger")
    cls = TRIGGER_TYPES.get(trigger_name) if isinstance(trigger_name, str) else None
    if cls is None:
        raise ArtifactError(f"{path} holds an unknown trigger type {meta.get('trigger')!r}")
    try:
        config = meta.get("config", {})
        if not isinstance(config, dict):
            raise TypeError(f"its config is a {type(config).__name__}, not an object")
        trigger = cls(**config)
        trigger.load_state_dict(tensors)
    except (TypeError, ValueError, RuntimeError, KeyError, IndexError, AttributeError) as e:
        raise ArtifactError(f"{path}: the saved {cls.__name__} does not load: {str(e).splitlines()[0]}") from None
    if model is not None:
        kind = getattr(model, "input_kind", None)
        if kind is not None and kind != trigger.kind:
            raise ArtifactError(f"{path} is a {trigger.kind} trigger; the model reads {kind}")
        _check_shape(trigger, model, path)
        if isinstance(trigger, PromptTrigger):
            try:
                trigger.attach(model)
            except InputError as e:
                raise ArtifactError(f"{path} does not fit this model: {e}") from None
        fitted_on = (meta.get("model") or {}).get("fingerprint")
        fp = getattr(model, "fingerprint", None)
        if fitted_on and fp and fitted_on != fp:
            warnings.warn(f"the trigger in {path} was fitted on model {fitted_on[:12]}, not on this one ({fp[:12]}): "
                          "using it on another model (transfer)", FingerprintWarning, stacklevel=2)
    return trigger, meta


def _model_input_shape(model) -> tuple[str, tuple[int, ...]] | None:
    """What the model's sidecar says it reads: ("features", (n,)) or ("image", (C, H, W)), if it says."""
    meta = getattr(model, "meta", None) or {}
    kind = getattr(model, "input_kind", None)
    try:
        if kind == "tabular" and meta.get("features"):
            from reprogram.data.encoding import FeatureEncoder

            return "features", (int(FeatureEncoder.from_dict(meta["features"]).n_features_out_),)
        if kind == "image" and isinstance(meta.get("image"), dict) and meta["image"].get("size"):
            from reprogram.data.datasets import image_transform_from_meta

            t = image_transform_from_meta(meta)
            return "image", (t.channels, *t.size)
    except Exception:  # noqa: BLE001  load_frozen has already judged the sidecar; don't fail twice
        return None
    return None


def _check_shape(trigger: nn.Module, model, path) -> None:
    """A trigger made for inputs of another shape than the model reads is refused."""
    shape = _model_input_shape(model)
    if shape is None:
        return
    what, dims = shape
    if what == "features" and isinstance(trigger, FeatureTrigger) and trigger.n_features != dims[0]:
        raise ArtifactError(f"{path} is a trigger for {trigger.n_features} features; the model reads {dims[0]}")
    if what == "image" and hasattr(trigger, "image_size"):
        mine = (int(trigger.channels), *trigger.image_size)
        if mine != dims:
            raise ArtifactError(f"{path} is a trigger for {mine[0]} x {mine[1]} x {mine[2]} images; "
                                f"the model reads {dims[0]} x {dims[1]} x {dims[2]}")
