"""Building the architecture a state_dict belongs to, and fitting the weights into it.

``arch`` is a torchvision classification model name (``"resnet18"``), a
``"module.path:ClassName"`` to import, or (from Python) a class or factory. Models are
built without pretrained weights: the weights come from the checkpoint.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from reprogram.errors import CheckpointError, InputError, first_line
from reprogram.models.torchvision_compat import import_torchvision

__all__ = ["ArchSpec", "resolve_arch", "load_into"]

# Prefixes that wrappers add to every key: DataParallel/DDP and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_SHOWN = 5
# Every torchvision classification builder defaults to ImageNet's class count.
_TORCHVISION_DEFAULT_CLASSES = 1000


class ArchSpec:
    """A resolved ``arch``: its name, how to build it, and whether it is torchvision's."""

    def __init__(self, name: str, factory: Callable[..., nn.Module], *, torchvision: bool, takes_num_classes: bool):
        self.name = name
        self.factory = factory
        self.torchvision = torchvision
        self.takes_num_classes = takes_num_classes

    def build(self, num_classes: int | None) -> nn.Module:
        """Construct the model, with ``num_classes=`` when given."""
        if num_classes is not None and not self.takes_num_classes:
            raise InputError(f"arch {self.name!r} does not take num_classes; leave num_classes out")
        kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": int(num_classes)}
        if self.torchvision:
            kwargs["weights"] = None
        try:
            model = self.factory(**kwargs)
        except Exception as e:  # a user's constructor can raise anything
            shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if k != "weights")
            raise InputError(f"cannot build arch {self.name!r}({shown}): {type(e).__name__}: {first_line(e)}") from None
        if not isinstance(model, nn.Module):
            raise InputError(f"arch {self.name!r} built a {type(model).__name__}, not a torch nn.Module")
        return model


def _takes_num_classes(factory: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins and some C extensions have no signature
        return True
    return any(p.name == "num_classes" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def resolve_arch(arch: str | Callable[..., nn.Module]) -> ArchSpec:
    """Turn an ``arch`` argument into an :class:`ArchSpec` (InputError if it names nothing)."""
    if callable(arch) and not isinstance(arch, str):
        name = getattr(arch, "__qualname__", None) or type(arch).__name__
        return ArchSpec(name, arch, torchvision=False, takes_num_classes=_takes_num_classes(arch))
    if not isinstance(arch, str) or not arch.strip():
        raise InputError(f"arch must be a torchvision model name or 'module.path:ClassName', got {arch!r}")
    arch = arch.strip()
    if ":" in arch:
        module_name, _, attr = arch.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as e:
            raise InputError(f"arch {arch!r}: cannot import module {module_name!r} ({e})") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise InputError(f"arch {arch!r}: {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        if not callable(obj):
            raise InputError(f"arch {arch!r} is not a class or function")
        return ArchSpec(arch, obj, torchvision=False, takes_num_classes=_takes_num_classes(obj))
    tv = import_torchvision()
    name = arch.lower()
    known = tv.models.list_models(module=tv.models)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise InputError(
            f"unknown arch {arch!r}: {hint}give a torchvision classification model (resnet18, vit_b_16, ...) "
            "or 'module.path:ClassName'"
        )
    return ArchSpec(name, tv.models.get_model_builder(name), torchvision=True, takes_num_classes=True)


def _strip_wrapper_prefix(state: dict[str, Any], model_keys: set[str]) -> dict[str, Any]:
    for prefix in _WRAPPER_PREFIXES:
        if state and all(k.startswith(prefix) for k in state) and not any(k.startswith(prefix) for k in model_keys):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _shape(v: Any) -> tuple[int, ...] | None:
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def _diff(state: Mapping[str, Any], expected: Mapping[str, Any]) -> tuple[list[str], list[str], list[str]]:
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in expected if k in state and _shape(state[k]) != _shape(expected[k])]
    return missing, unexpected, mismatched


def _head_size(state: Mapping[str, Any], expected: Mapping[str, Any], mismatched: list[str]) -> int | None:
    """The class count implied by the file, if the only difference is the output layer's size."""
    sizes = set()
    for k in mismatched:
        got, want = _shape(state[k]), _shape(expected[k])
        if not got or not want or got[1:] != want[1:]:
            return None
        sizes.add(got[0])
    return sizes.pop() if len(sizes) == 1 else None


def _listing(label: str, keys: list[str], detail: Callable[[str], str] = str) -> str:
    shown = ", ".join(detail(k) for k in keys[:_SHOWN])
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return f"{label} ({len(keys)}): {shown}{more}"


def load_into(
    state: Mapping[str, Any], spec: ArchSpec, num_classes: int | None, *, source: str
) -> tuple[nn.Module, int | None]:
    """Build ``spec`` and load ``state`` into it; return the model and its class count.

    Keys must match exactly (CheckpointError listing a few missing, unexpected and
    wrongly-shaped ones otherwise). When ``num_classes`` is not given and the output
    layer is all that differs, the class count is read from the file and the model
    built again with it. Tensors are assigned as they are, so the model keeps the
    file's dtypes.
    """
    model = spec.build(num_classes)
    expected = model.state_dict()
    state = _strip_wrapper_prefix(dict(state), set(expected))
    missing, unexpected, mismatched = _diff(state, expected)
    if mismatched and not missing and not unexpected and num_classes is None and spec.takes_num_classes:
        inferred = _head_size(state, expected, mismatched)
        if inferred is not None:
            model = spec.build(inferred)
            expected = model.state_dict()
            missing, unexpected, mismatched = _diff(state, expected)
            num_classes = inferred
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(_listing("missing keys", missing))
        if unexpected:
            parts.append(_listing("unexpected keys", unexpected))
        if mismatched:
            parts.append(
                _listing(
                    "shape mismatches",
                    mismatched,
                    lambda k: f"{k} {list(_shape(state[k]) or [])} in file vs {list(_shape(expected[k]) or [])} in arch",
                )
            )
        raise CheckpointError(f"{source} does not match arch {spec.name!r}: {'; '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(f"cannot load {source} into arch {spec.name!r}: {first_line(e)}") from None
    if num_classes is None and spec.torchvision:
        num_classes = _TORCHVISION_DEFAULT_CLASSES
    return model, num_classes
