"""``load_frozen``: one call from a model on disk to a :class:`FrozenModel`.

Formats, told apart by content (see :mod:`reprogram.models.formats`):

- TorchScript (``torch.jit.save``): read with ``torch.jit.load``;
- ``torch.export`` archives (``torch.export.save``, ``.pt2``): checked for pickled
  payloads, then read with ``torch.export.load``;
- state_dicts (``torch.save(model.state_dict())`` as ``.pt``/``.pth``/``.bin``, or
  safetensors) together with ``arch``, the architecture to load them into;
- Hugging Face sequence-classification folders (``config.json`` + weights, and
  optionally a tokenizer);
- whole pickled modules (``torch.save(model)``), only with ``allow_pickle=True``:
  unpickling runs code from the file.

What the weights cannot tell (class names, the input kind, image size and
normalisation, the arch) comes from the JSON sidecar (:mod:`reprogram.models.sidecar`).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from reprogram.errors import CheckpointError, InputError, UnsupportedFileError, first_line
from reprogram.models.arch import load_into, resolve_arch
from reprogram.models.formats import (
    check_export_archive,
    detect_format,
    pickle_refused,
    read_safetensors,
    read_torch_save,
    training_ops,
)
from reprogram.models.frozen import FrozenModel
from reprogram.models.sidecar import INPUT_KINDS, read_sidecar, sidecar_path
from reprogram.models.torchvision_compat import import_torchvision

__all__ = ["load_frozen", "prepare_transformers"]

# Keys under which training scripts commonly nest the weights in a checkpoint dict.
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "weights")
_DEFAULT_LABEL = re.compile(r"LABEL_\d+")


def prepare_transformers() -> ModuleType:
    """Import ``transformers``, with torchvision made importable first.

    transformers imports torchvision whenever it is installed, and fails outright where
    torchvision's compiled ops do not load (see
    :mod:`reprogram.models.torchvision_compat`); importing it through the helper first
    avoids that.
    """
    if importlib.util.find_spec("torchvision") is not None:
        import_torchvision()
    return importlib.import_module("transformers")


def _check_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"not a torch device: {device!r} ({first_line(e)})") from None


def _load_torchscript(path: Path, device: torch.device) -> nn.Module:
    try:
        module = torch.jit.load(str(path), map_location=device)
    except Exception as e:  # the TorchScript deserializer raises RuntimeError and its own types
        raise CheckpointError(f"cannot read {path} (TorchScript): {first_line(e)}") from None
    baked = training_ops(module)
    if baked:
        raise CheckpointError(
            f"{path} was traced in training mode ({', '.join(baked)} always run as in training); "
            "trace it again after model.eval()"
        )
    return module


def _load_export(path: Path, device: torch.device, *, allow_pickle: bool) -> nn.Module:
    check_export_archive(path, allow_pickle=allow_pickle)
    try:
        # An open file rather than the name: torch.export.load warns about names not
        # ending in .pt2, and the format was already established from the content.
        with open(path, "rb") as f:
            program = torch.export.load(f)
    except Exception as e:  # deserialisation raises RuntimeError, KeyError, SerializeError...
        raise CheckpointError(f"cannot read {path} (torch.export): {first_line(e)}") from None
    baked = training_ops(program.graph_module)
    if baked:
        raise CheckpointError(
            f"{path} was exported in training mode ({', '.join(baked)} always run as in training); "
            "export it again after model.eval()"
        )
    if device.type != "cpu":
        from torch.export.passes import move_to_device_pass

        program = move_to_device_pass(program, device)
    return program.module()


def _tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(obj: Any, path: Path) -> nn.Module | dict[str, Any]:
    """A module, or a state_dict, out of what ``torch.load`` returned."""
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, Mapping):
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        for key in _NESTED_KEYS:
            inner = obj.get(key)
            if isinstance(inner, nn.Module) or _tensor_mapping(inner):
                return _unwrap(inner, path)
        keys = ", ".join(map(str, list(obj)[:8]))
        raise CheckpointError(f"{path} holds a dict without weights (keys: {keys}); expected a state_dict")
    raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a torch model or a state_dict")


def _load_hf(folder: Path, device: torch.device, *, allow_pickle: bool) -> nn.Module:
    transformers = prepare_transformers()
    try:
        model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(folder),
            local_files_only=True,
            trust_remote_code=False,
            weights_only=not allow_pickle,
            output_loading_info=True,
        )
    except pickle.UnpicklingError:
        raise pickle_refused(folder, "its PyTorch weights file holds more than tensors") from None
    except Exception as e:  # from_pretrained raises OSError, ValueError, KeyError, its own types
        raise CheckpointError(f"cannot load the Hugging Face model in {folder}: {first_line(e)}") from None
    missing = list(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(sorted(missing)[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise CheckpointError(
            f"{folder} has no trained weights for {shown}: a frozen model needs its trained classifier head"
        )
    return model.to(device)


def _hf_classes(model: nn.Module) -> list[str] | None:
    id2label = getattr(model.config, "id2label", None) or {}
    labels = [id2label[i] for i in sorted(id2label)]
    if not labels or all(_DEFAULT_LABEL.fullmatch(str(lab)) for lab in labels):
        return None
    return labels


def _need_arch(path: Path, n_tensors: int) -> InputError:
    return InputError(
        f"{path} holds only weights (a state_dict of {n_tensors} tensors): give the architecture with "
        f"arch (--arch), e.g. 'resnet18' or 'mypackage.models:Net', or put \"arch\" in {sidecar_path(path).name}"
    )


def _check_num_classes(num_classes: Any) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InputError(f"num_classes must be a positive integer, got {num_classes!r}")
    return num_classes


def _agree(name: str, a: int | None, b: int | None, what: str) -> int | None:
    if a is not None and b is not None and a != b:
        raise InputError(f"{name}={a} but {what} has {b} classes")
    return a if a is not None else b


def load_frozen(
    path: str | os.PathLike,
    arch: str | Callable[..., nn.Module] | None = None,
    num_classes: int | None = None,
    allow_pickle: bool = False,
    *,
    input_kind: str | None = None,
    device: str | torch.device = "cpu",
) -> FrozenModel:
    """Load a trained model from ``path`` as a :class:`FrozenModel`.

    ``path`` is a TorchScript file, a ``torch.export`` archive, a state_dict (``.pt``,
    ``.pth``, ``.bin`` or ``.safetensors``) or a Hugging Face sequence-classification
    folder. A state_dict needs ``arch``: a torchvision classification model name
    (``"resnet18"``, built without pretrained weights) or ``"module.path:ClassName"``
    (constructed with ``num_classes=`` when that is given, else with no arguments); the
    sidecar's ``"arch"`` is used when ``arch`` is None. Other formats ignore ``arch``.

    ``num_classes`` sizes the model built from ``arch``; when left out for a torchvision
    arch it is read from the file's output layer. ``allow_pickle=True`` allows files
    that can only be read by unpickling Python objects (``torch.save(model)``); do that
    only for files you trust, since unpickling runs code from the file.

    ``input_kind`` ("image", "text" or "tabular") overrides the sidecar and the guess
    (Hugging Face -> text, torchvision arch -> image, a first layer that is a 2-D
    convolution -> image, else tabular). ``device`` is where the model is put.

    Raises :class:`InputError` for a missing path or bad arguments,
    :class:`UnsupportedFileError` for a folder that is not a Hugging Face model,
    :class:`PickleRefusedError` for a pickle without ``allow_pickle``, and
    :class:`CheckpointError` for a corrupt, truncated or mismatched checkpoint.
    """
    if input_kind is not None and input_kind not in INPUT_KINDS:
        raise InputError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {input_kind!r}")
    num_classes = _check_num_classes(num_classes)
    dev = _check_device(device)
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"model file not found: {p}")
    meta = read_sidecar(p)
    classes = meta.get("classes")
    num_classes = _agree("num_classes", num_classes, len(classes) if classes else None, f"the sidecar {sidecar_path(p)}")
    kind = input_kind or meta.get("input_kind")
    arch_used: str | None = None

    if p.is_dir():
        if not (p / "config.json").is_file():
            raise UnsupportedFileError(f"{p} is a folder but not a Hugging Face model folder (it has no config.json)")
        fmt = "huggingface"
        model = _load_hf(p, dev, allow_pickle=allow_pickle)
        num_classes = _agree("num_classes", num_classes, int(model.config.num_labels), f"the model config in {p}")
        classes = classes or _hf_classes(model)
        kind = kind or "text"
    else:
        detected = detect_format(p)
        if detected == "torchscript":
            fmt, model = "torchscript", _load_torchscript(p, dev)
        elif detected == "export":
            fmt, model = "export", _load_export(p, dev, allow_pickle=allow_pickle)
        else:
            raw = read_safetensors(p) if detected == "safetensors" else read_torch_save(p, allow_pickle=allow_pickle)
            loaded = _unwrap(raw, p)
            if isinstance(loaded, nn.Module):
                fmt, model = "pickle", loaded
            else:
                fmt = "state_dict"
                arch = arch if arch is not None else meta.get("arch")
                if arch is None:
                    raise _need_arch(p, sum(isinstance(v, torch.Tensor) for v in loaded.values()))
                spec = resolve_arch(arch)
                model, num_classes = load_into(loaded, spec, num_classes, source=str(p))
                arch_used = spec.name
                if spec.torchvision:
                    kind = kind or "image"
        model = model.to(dev)

    frozen = FrozenModel(
        model,
        format=fmt,
        source=p,
        input_kind=kind,
        meta=meta,
        classes=classes,
        num_classes=num_classes,
        arch=arch_used,
    )
    _check_against_sidecar(frozen, p, dev)
    return frozen


def _probe_input(model: FrozenModel, sc: Path) -> tuple[torch.Tensor, str] | None:
    """A one-row zero input of the shape the sidecar describes, and that shape in words."""
    meta = model.meta
    if model.input_kind == "tabular" and isinstance(meta.get("features"), Mapping):
        from reprogram.data.encoding import FeatureEncoder

        try:
            n = int(FeatureEncoder.from_dict(meta["features"]).n_features_out_)
        except Exception as e:  # noqa: BLE001  a hand-edited encoding fails in many ways
            raise CheckpointError(f"model sidecar {sc} is not usable: its feature encoding is malformed "
                                  f"({first_line(e)})") from None
        return torch.zeros(1, n), f"{n} features"
    if model.input_kind == "image" and isinstance(meta.get("image"), Mapping) and meta["image"].get("size"):
        from reprogram.data.datasets import image_transform_from_meta

        try:
            t = image_transform_from_meta(meta)
        except InputError as e:
            raise CheckpointError(f"model sidecar {sc} is not usable: {e}") from None
        return torch.zeros(1, t.channels, *t.size), f"{t.channels} x {t.size[0]} x {t.size[1]} images"
    return None


def _check_against_sidecar(model: FrozenModel, path: Path, device: torch.device) -> None:
    """Run one zero input of the sidecar's shape through the model: the sidecar and the
    weights must agree on the input width (features, image shape) and the class count."""
    sc = sidecar_path(path)
    probe = _probe_input(model, sc)
    if probe is None:
        return
    x, shape = probe
    try:
        with torch.no_grad():
            out = model(x.to(device))
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001  shape errors come as RuntimeError, IndexError, ...
        if model.format == "export":
            return  # an exported program may fix its batch size: a one-row probe proves nothing
        raise CheckpointError(f"{path} does not match its sidecar {sc}: the sidecar says the model reads {shape}, "
                              f"but the model fails on them ({first_line(e)})") from None
    if out.ndim != 2 or out.shape[0] != 1:
        raise CheckpointError(f"{path} returns logits of shape {tuple(out.shape)} for one input; "
                              "expected (1, number of classes)")
    if model.num_classes is not None and out.shape[1] != model.num_classes:
        said = f"{len(model.classes)} classes ({', '.join(map(str, model.classes[:10]))})" if model.classes else \
            f"{model.num_classes} classes"
        raise CheckpointError(f"{path} does not match its sidecar {sc}: the sidecar says {said}, "
                              f"but the model outputs {out.shape[1]} logits")
