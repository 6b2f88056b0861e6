"""A hash of a model's weights that does not depend on how the model was stored.

Artifacts (triggers, calibrators) record the fingerprint of the model they were fitted
on, so that applying them to another model is caught. The hash therefore has to be the
same for the same weights whether they came from TorchScript, ``torch.export``, a
state_dict with an architecture, safetensors or a pickle.

It covers every parameter and buffer, by name in sorted order, each with its dtype, shape
and raw bytes. Buffers are taken from ``named_buffers()`` rather than ``state_dict()``:
TorchScript forgets which buffers were registered with ``persistent=False`` and puts them
in its state_dict, so state_dict names differ between a module and its scripted copy,
while the set of all parameters and buffers does not. Tied weights are counted under
each of their names, as every format lists them.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from reprogram.errors import InputError

__all__ = ["weights_fingerprint", "named_tensors"]

# Bumped if the hashed layout ever changes, so old and new fingerprints never collide.
_DOMAIN = b"reprogram.weights.v1\n"


def named_tensors(module: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """Every parameter and buffer of ``module`` (tied ones under each name), sorted by name."""
    items = list(module.named_parameters(remove_duplicate=False))
    items += list(module.named_buffers(remove_duplicate=False))
    return sorted(items, key=lambda kv: kv[0])


def _tensor_bytes(name: str, t: torch.Tensor):
    t = t.detach()
    if t.is_quantized:
        t = t.int_repr()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.device.type == "meta":
        raise InputError(f"cannot fingerprint {name!r}: it is a meta tensor with no data")
    t = t.cpu().contiguous().reshape(-1)
    if t.numel() == 0:
        return b""
    # Viewed as bytes, every dtype (bfloat16 and float8 included) hashes the same way
    # without a numpy equivalent for it.
    return t.view(torch.uint8).numpy()


def _items(obj: nn.Module | Mapping[str, torch.Tensor]) -> Iterable[tuple[str, torch.Tensor]]:
    if isinstance(obj, nn.Module):
        return named_tensors(obj)
    if isinstance(obj, Mapping):
        return sorted(((str(k), v) for k, v in obj.items() if isinstance(v, torch.Tensor)), key=lambda kv: kv[0])
    raise InputError(f"can only fingerprint an nn.Module or a state_dict, got {type(obj).__name__}")


def weights_fingerprint(obj: nn.Module | Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 over the weights of a module or a state_dict mapping.

    For a module it hashes all parameters and buffers (see the module docstring); for a
    mapping, its tensor values (non-tensor entries such as ``_extra_state`` are skipped).
    A state_dict read from a file lacks the buffers registered with ``persistent=False``,
    so it matches the module's fingerprint exactly when the module has none.
    """
    h = hashlib.sha256(_DOMAIN)
    for name, t in _items(obj):
        header = json.dumps([name, str(t.dtype).removeprefix("torch."), list(t.shape)])
        h.update(header.encode("utf-8") + b"\n")
        h.update(_tensor_bytes(name, t))
    return h.hexdigest()
