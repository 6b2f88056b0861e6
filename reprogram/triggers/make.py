"""``make_trigger``: a trigger by name, shaped for a frozen model and its data."""

from __future__ import annotations

from torch import nn

from reprogram.errors import InputError
from reprogram.triggers.image import AdditiveTrigger, BorderTrigger, PatchTrigger
from reprogram.triggers.tabular import FeatureTrigger
from reprogram.triggers.text import PromptTrigger

__all__ = ["make_trigger", "TRIGGER_NAMES"]

TRIGGER_NAMES = {"border": "image", "patch": "image", "additive": "image", "prompt": "text", "feature": "tabular"}


def make_trigger(name: str, model, data, *, size: float | None = None, mode: str | None = None,
                 seed: int = 0) -> nn.Module:
    """Build trigger ``name`` for ``model`` (a FrozenModel) and ``data`` (its tuning dataset).

    ``size``: border width (default 2 pixels), patch side (default a quarter of the image),
    additive ε in pixel units (default 8/255), number of prompt tokens (default 5). ``mode``:
    border "shrink" (default) or "overlay"; prompt "simplex" (default), "embedding" or "hard".
    Image geometry and normalisation come from the dataset (or the model's sidecar).
    """
    if name not in TRIGGER_NAMES:
        raise InputError(f"unknown trigger {name!r}; use one of {', '.join(TRIGGER_NAMES)}")
    kind = TRIGGER_NAMES[name]
    if kind != model.input_kind:
        allowed = [n for n, k in TRIGGER_NAMES.items() if k == model.input_kind]
        raise InputError(f"a {name} trigger is for {kind} models; this model reads {model.input_kind}: "
                         f"use {' or '.join(allowed)}")
    if kind == "image":
        meta = getattr(data, "image_meta", None)
        if meta is None and hasattr(data, "transform"):
            meta = data.transform.to_meta()
        meta = meta or model.meta.get("image") or {}
        x0 = data[0][0]
        geo = {"image_size": tuple(x0.shape[-2:]), "channels": int(x0.shape[0]), "mean": meta.get("mean"),
               "std": meta.get("std")}
        if name == "border":
            return BorderTrigger(width=int(size or 2), mode=mode or "shrink", seed=seed, **geo)
        if name == "patch":
            return PatchTrigger(size=int(size or max(1, min(geo["image_size"]) // 4)), seed=seed, **geo)
        return AdditiveTrigger(epsilon=float(size or 8 / 255), **geo)
    if kind == "tabular":
        X = data.tensors[0] if hasattr(data, "tensors") else None
        if X is None:
            raise InputError("a feature trigger needs a tabular dataset")
        return FeatureTrigger.from_data(X)
    tok = model.tokenizer
    special = list(getattr(tok, "all_special_ids", []) or [])
    return PromptTrigger(model, int(size or 5), mode=mode or "simplex", special_ids=special, seed=seed)
