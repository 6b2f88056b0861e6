"""Telling checkpoint formats apart by their bytes, and reading each one safely.

A file's suffix says little (``.pt`` is used for TorchScript, state_dicts and whole
pickled modules alike), so the format is read from the content:

- a zip whose entries include ``<root>/constants.pkl`` and ``<root>/code/``: TorchScript;
- a zip with ``<root>/archive_format`` (``pt2``) or ``<root>/models/*.json``, or the
  torch 2.7 layout with ``serialized_exported_program.json``: a ``torch.export`` archive;
- any other zip with ``<root>/data.pkl``, or a stream starting with a pickle opcode:
  ``torch.save`` output (a state_dict, or a pickled object);
- an 8-byte little-endian length followed by a JSON object of that length: safetensors.

Nothing here unpickles arbitrary objects unless the caller passed ``allow_pickle``:
``torch.save`` files are read with ``weights_only=True``, and ``torch.export`` archives
are checked before ``torch.export.load`` sees them (see :func:`check_export_archive`).
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from reprogram.errors import CheckpointError, PickleRefusedError, first_line

__all__ = ["detect_format", "pickle_refused", "read_torch_save", "read_safetensors", "check_export_archive", "training_ops"]

_ZIP_MAGIC = b"PK\x03\x04"
# The first opcode of every pickle from protocol 2 on; torch.save's legacy (pre-zip)
# format also starts with one.
_PICKLE_PROTO = 0x80
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
_ALLOW_HINT = "pass --allow-pickle (allow_pickle=True in Python) to load it anyway only if you trust the file"


def pickle_refused(path: Path, what: str) -> PickleRefusedError:
    """The error for a checkpoint that can only be read by unpickling Python objects."""
    return PickleRefusedError(
        f"{path} is a pickled Python object ({what}); unpickling can run arbitrary code, so it is refused "
        f"(a state_dict, safetensors, TorchScript or torch.export file is not); {_ALLOW_HINT}"
    )


def _zip_roots(names: list[str]) -> dict[str, set[str]]:
    """Entry names grouped by their top folder (torch writers put everything under one)."""
    roots: dict[str, set[str]] = {}
    for name in names:
        root, _, rest = name.partition("/")
        roots.setdefault(root, set()).add(rest)
    return roots


def _safetensors_header_ok(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= _SAFETENSORS_MAX_HEADER and 8 + n <= size and head[8:9] == b"{"


def detect_format(path: Path) -> str:
    """Return "torchscript", "export", "torch_save" or "safetensors" for the file at ``path``.

    Raises :class:`CheckpointError` for content that is none of those (random bytes, a
    truncated zip), naming the file and what was found.
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(16)
    if size == 0:
        raise CheckpointError(f"{path} is empty")
    if head.startswith(_ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as zf:
                infos = zf.infolist()
        except zipfile.BadZipFile as e:
            raise CheckpointError(f"{path} is a truncated or corrupt zip archive ({e})") from None
        # Cut short, an archive loses its own directory, and zipfile may then find the
        # directory of a zip stored inside it (torch.export keeps one for its sample
        # inputs) and list that one's entries. Torch writes its first entry at offset 0.
        if not infos or min(i.header_offset for i in infos) != 0:
            raise CheckpointError(f"{path} is a truncated or corrupt zip archive (its directory is missing)")
        names = [i.filename for i in infos]
        if "serialized_exported_program.json" in names:
            return "export"
        for rest in _zip_roots(names).values():
            if "constants.pkl" in rest and any(r.startswith("code/") for r in rest):
                return "torchscript"
            if "archive_format" in rest or any(r.startswith("models/") and r.endswith(".json") for r in rest):
                return "export"
            if "data.pkl" in rest:
                return "torch_save"
        raise CheckpointError(f"{path} is a zip archive but not a TorchScript, torch.export or torch.save file")
    if _safetensors_header_ok(head, size):
        return "safetensors"
    if head[0] == _PICKLE_PROTO and 2 <= head[1] <= 5:
        return "torch_save"
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path} is not a valid safetensors file (bad or truncated header)")
    raise CheckpointError(
        f"{path} is not a model file this can read (not TorchScript, torch.export, torch.save or safetensors; "
        f"it starts with bytes {head[:8].hex()})"
    )


_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _pickle_parses(data: bytes) -> bool:
    try:
        for _ in pickletools.genops(data):
            pass
    except Exception:  # genops raises ValueError, struct.error, UnicodeDecodeError...
        return False
    return True


def _data_pkl(path: Path) -> bytes | None:
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if name.endswith("/data.pkl") and name.count("/") == 1:
                    return zf.read(name)
    except (zipfile.BadZipFile, OSError):
        return None
    return None


def read_torch_save(path: Path, *, allow_pickle: bool) -> Any:
    """Read ``torch.save`` output with ``weights_only=True``.

    A file that needs more than tensors and plain containers raises
    :class:`PickleRefusedError` unless ``allow_pickle``, in which case it is fully
    unpickled. A corrupt file raises :class:`CheckpointError`.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises RuntimeError, UnpicklingError, EOFError...
        error = e
    if not isinstance(error, pickle.UnpicklingError):
        raise CheckpointError(f"cannot read {path} (torch.save file): {first_line(error)}") from None
    # weights_only refused something. Tell a well-formed pickle of objects (refuse, it is
    # a real pickle) from a damaged one (corrupt): torch says the same for both.
    found = _UNSUPPORTED_GLOBAL.search(str(error))
    if found:
        what = f"it needs {found.group(1).rstrip('.')}"
    else:
        data = _data_pkl(path)
        if data is None or not _pickle_parses(data):
            raise CheckpointError(f"cannot read {path} (torch.save file): {first_line(error)}") from None
        what = "it holds more than tensors"
    if not allow_pickle:
        raise pickle_refused(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)  # allow_pickle: the caller trusts this file
    except Exception as e:  # unpickling runs the file's code: anything can come out
        raise CheckpointError(f"cannot unpickle {path}: {type(e).__name__}: {first_line(e)}") from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file into a CPU state_dict (CheckpointError if it is damaged)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {path} (safetensors): {first_line(e)}") from None


def _loads_weights_only(data: bytes) -> bool:
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # any failure means torch.export would retry with weights_only=False
        return False
    return True


def check_export_archive(path: Path, *, allow_pickle: bool) -> None:
    """Refuse a ``torch.export`` archive that ``torch.export.load`` would unpickle.

    ``torch.export.load`` reads the graph from JSON and plain tensors from raw bytes, but
    it also fully unpickles weights and constants stored as pickles (tensor subclasses)
    and opaque constant objects, retries with full unpickling when the sample inputs (or
    the weights of the torch 2.7 layout) fail a weights-only load, and loads AOTInductor
    shared libraries found in the archive. Each of those runs code from the file, so
    each is refused here (raising :class:`PickleRefusedError`) unless ``allow_pickle``.
    An archive with no exported program in it raises :class:`CheckpointError`.
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"cannot read {path} (torch.export archive): {e}") from None
    risks: list[str] = []
    with zf:
        names = zf.namelist()
        if "serialized_exported_program.json" in names:  # the torch 2.7 layout, unrooted
            for name in ("serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt"):
                if name in names and not _loads_weights_only(zf.read(name)):
                    risks.append(f"{name} needs full unpickling")
        else:
            models = [n for n in names if n.partition("/")[2].startswith("models/") and n.endswith(".json")]
            if not models:
                raise CheckpointError(f"{path} holds no exported program (an AOTInductor-only package is not loadable here)")
            for name in names:
                rest = name.partition("/")[2]
                if rest.startswith("data/aotinductor/"):
                    risks.append("it contains compiled AOTInductor code")
                    break
            for name in names:
                rest = name.partition("/")[2]
                if rest.endswith("_config.json") and rest.startswith(("data/weights/", "data/constants/")):
                    risks += _payload_risks(zf.read(name), rest)
                elif rest.startswith(("data/sample_inputs/", "data/weights/", "data/constants/")) and rest.endswith(".pt"):
                    # sample inputs, and the weights/constants of older archives, go
                    # through torch.load with a fallback to weights_only=False
                    if not _loads_weights_only(zf.read(name)):
                        risks.append(f"{rest} needs full unpickling")
    if risks and not allow_pickle:
        raise PickleRefusedError(
            f"{path} is a torch.export archive holding pickled Python objects or code ({'; '.join(sorted(set(risks))[:3])}); "
            f"loading it can run arbitrary code, so it is refused; {_ALLOW_HINT}"
        )


def _payload_risks(raw: bytes, where: str) -> list[str]:
    try:
        config = json.loads(raw)["config"]
        entries = list(config.items())
    except (ValueError, KeyError, TypeError, AttributeError):
        return [f"{where} is unreadable"]
    risks = []
    for fqn, entry in entries:
        if not isinstance(entry, Mapping):
            risks.append(f"{where} is unreadable")
            continue
        if entry.get("use_pickle"):
            risks.append(f"{fqn} is a pickled tensor")
        elif where.startswith("data/constants/") and not str(entry.get("path_name", "")).startswith("tensor_"):
            risks.append(f"constant {fqn} is a pickled object")
    return risks


# instance_norm's use_input_stats is left out: it is True in eval mode too.
_TRAINING_ARGS = ("training", "train")


def _export_training_ops(graph_module: torch.nn.Module) -> list[str]:
    found = []
    for gm in graph_module.modules():
        graph = getattr(gm, "graph", None)
        if not isinstance(graph, torch.fx.Graph):
            continue
        for node in graph.nodes:
            schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
            if schema is None:
                continue
            for i, arg in enumerate(schema.arguments):
                if arg.name in _TRAINING_ARGS:
                    value = node.args[i] if i < len(node.args) else node.kwargs.get(arg.name)
                    if value is True:
                        found.append(str(node.target).split(".")[1] if "." in str(node.target) else str(node.target))
    return found


def _script_nodes(block: Any):
    for node in block.nodes():
        yield node
        for sub in node.blocks():
            yield from _script_nodes(sub)


def _script_training_ops(module: torch.jit.ScriptModule) -> list[str]:
    try:
        graph = module.inlined_graph
    except (AttributeError, RuntimeError):  # a module with no forward
        return []
    found = []
    for node in _script_nodes(graph):
        if not node.kind().startswith("aten::"):
            continue
        try:
            schema = torch._C.parse_schema(node.schema())
        except RuntimeError:  # "(no schema)"
            continue
        inputs = list(node.inputs())
        for i, arg in enumerate(schema.arguments):
            if arg.name in _TRAINING_ARGS and i < len(inputs):
                if inputs[i].node().kind() == "prim::Constant" and inputs[i].toIValue() is True:
                    found.append(node.kind().split("::")[1])
    return found


def training_ops(module: torch.nn.Module) -> list[str]:
    """Ops in a traced or exported graph that were recorded in training mode.

    Tracing and ``torch.export`` bake ``training=True`` into dropout and batch-norm
    calls of a model captured in train mode; ``eval()`` cannot switch them off later
    (scripted modules read ``self.training`` at run time and are not affected).
    """
    if isinstance(module, torch.jit.ScriptModule):
        return sorted(set(_script_training_ops(module)))
    return sorted(set(_export_training_ops(module)))
