"""ONNX export of calibrators, and of model + trigger + calibrator fused into one graph.

Every file written here is checked in the same call: onnxruntime runs it on sample
inputs and its output must match the PyTorch/numpy result to ``atol`` (1e-5), or the
export fails with :class:`~reprogram.errors.ExportError` and no file is left behind
(the graph is written under a temporary name and renamed only once it passed).

Graph inputs and outputs:

* a calibrator alone: ``score`` (float32, ``[N]`` binary P(class 1) or ``[N, C]``),
  plus ``group`` (int64 ``[N]``, an index into the calibrator's ``groups_``; -1 for a
  group not seen when fitting) for group calibrators and multicalibrators; output
  ``calibrated``.
* fused: ``input`` (the model's input: encoded features ``[N, F]`` or normalized images
  ``[N, C, H, W]``; one-hot encoding and image normalization stay outside the graph),
  ``group`` when the calibrator needs it; outputs ``probabilities`` (``[N]`` binary
  P(class 1) -- calibrated if a calibrator is given -- or ``[N, C]``), ``logits`` (the
  frozen model's, after the trigger) and, with a calibrator, ``uncalibrated`` (the
  probabilities before it).

The batch dimension is dynamic. The TorchScript-based exporter (``dynamo=False``) is
used: it reads the TorchScript checkpoints `reprogram` writes, which the dynamo exporter
cannot trace through.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from reprogram.errors import ExportError, InputError, first_line
from reprogram.io import atomic_path

__all__ = ["export_calibrator_onnx", "export_onnx", "check_onnx", "needs_group", "OPSET"]

OPSET = 17
ATOL = 1e-5


def needs_group(calibrator: Any) -> bool:
    """Whether ``calibrator`` reads a group index besides the score."""
    return hasattr(calibrator, "groups_")


def _n_classes(calibrator: Any) -> int:
    return int(getattr(calibrator, "n_classes_", 2))


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str]) -> None:
    dynamic = {name: {0: "batch"} for name in input_names + output_names}
    module.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints baked into the graph
            torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
    except Exception as e:  # the exporter raises many types; all mean the same to the caller
        raise ExportError(f"ONNX export failed: {first_line(e)}") from None


def run_onnx(path: str | os.PathLike, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The outputs of ``path`` in onnxruntime (CPU) by name; ExportError if it cannot run."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(None, feeds)))
    except Exception as e:
        raise ExportError(f"onnxruntime cannot run the exported graph: {first_line(e)}") from None


def _compare(name: str, have: np.ndarray, want: np.ndarray, tol: float) -> float:
    if have.shape != want.shape:
        raise ExportError(f"exported output {name!r} has shape {have.shape}, expected {want.shape}")
    diff = float(np.max(np.abs(have.astype(np.float64) - want))) if want.size else 0.0
    if not np.isfinite(diff) or diff > tol:
        raise ExportError(f"exported output {name!r} differs from PyTorch/numpy by {diff:.3g} (> {tol:g})")
    return diff


def check_onnx(path: str | os.PathLike, feeds: dict[str, np.ndarray], expected: dict[str, np.ndarray], *,
               atol: float | dict[str, float] = ATOL) -> float:
    """Run ``path`` in onnxruntime on ``feeds``; ExportError unless every output is within ``atol``.

    ``atol`` may be given per output name. Returns the largest absolute difference seen.
    """
    got = run_onnx(path, feeds)
    return max(_compare(name, got[name], want, atol[name] if isinstance(atol, dict) else atol)
               for name, want in expected.items())


def _sample_scores(calibrator: Any, n: int, seed: int) -> np.ndarray:
    """Scores to check an export on: random ones, the extremes, and every knot of the maps (float32 values)."""
    rng = np.random.default_rng(seed)
    c = _n_classes(calibrator)
    if c == 2:
        knots = [np.asarray(t.x) for m in _maps(calibrator) for t in getattr(m, "tables_", []) if t.x is not None]
        special = np.concatenate([[0.0, 1e-9, 1e-7, 0.5, 1 - 1e-7, 1.0], *knots]) if knots else np.array([0.0, 1.0])
        s = np.concatenate([rng.uniform(0, 1, n), rng.beta(0.3, 0.3, n), special])
        return s.astype(np.float32).astype(np.float64)
    s = rng.dirichlet(np.full(c, 0.5), size=2 * n).astype(np.float32)
    s /= s.sum(axis=1, keepdims=True)
    return s.astype(np.float64)


def _maps(calibrator: Any) -> list:
    return list(calibrator.maps_.values()) if hasattr(calibrator, "maps_") else [calibrator]


def export_calibrator_onnx(calibrator: Any, path: str | os.PathLike, *, n_check: int = 2000, seed: int = 0,
                           atol: float = ATOL) -> Path:
    """Write ``calibrator`` as an ONNX graph (inputs ``score`` [+ ``group``], output ``calibrated``), verified."""
    module = calibrator.to_module().eval()
    scores = _sample_scores(calibrator, n_check, seed)
    feeds = {"score": scores.astype(np.float32)}
    if needs_group(calibrator):
        g = len(calibrator.groups_)
        codes = np.random.default_rng(seed + 1).integers(-1, g, size=len(scores)).astype(np.int64)
        feeds["group"] = codes
        expected = calibrator._transform_codes(scores, codes)
        args = (torch.from_numpy(feeds["score"][:2]), torch.from_numpy(codes[:2]))
    else:
        expected = calibrator.transform(scores)
        args = (torch.from_numpy(feeds["score"][:2]),)
    with torch.no_grad():
        eager = module(*(torch.from_numpy(v) for v in feeds.values())).double().numpy()
    if np.max(np.abs(eager - expected)) > atol:  # the torch module itself disagrees: a bug, say so
        raise ExportError(f"the torch form of the calibrator differs from its numpy map by "
                          f"{np.max(np.abs(eager - expected)):.3g}")
    path = Path(path)
    with atomic_path(path) as tmp:
        _export(module, args, tmp, list(feeds), ["calibrated"])
        check_onnx(tmp, feeds, {"calibrated": expected}, atol=atol)
    return path


class _Head(nn.Module):
    """``logits [+ group] -> (probabilities, logits[, uncalibrated])``: softmax, binary P(class 1), calibrator."""

    def __init__(self, calibrator: nn.Module | None, binary: bool, grouped: bool):
        super().__init__()
        self.calibrator = calibrator
        self.binary = binary
        self.grouped = grouped

    def forward(self, logits: torch.Tensor, group: torch.Tensor | None = None):
        proba = torch.softmax(logits, dim=-1)
        if self.binary:
            proba = proba[:, 1]
        if self.calibrator is None:
            return proba, logits
        calibrated = self.calibrator(proba, group) if self.grouped else self.calibrator(proba)
        return calibrated, logits, proba


def _traceable(model: nn.Module) -> nn.Module:
    """The module to export for ``model``: a TorchScript model is exported as itself.

    The tracing exporter cannot trace a TorchScript module called from inside an eager
    one ("not part of the active trace"), so the fused graph is exported in parts
    (trigger, model, head) and joined with ``onnx.compose`` (see :func:`_chain`).
    """
    if getattr(model, "input_kind", None) == "text":
        raise InputError("ONNX export of text models (with prompt triggers) is not supported yet; "
                         "export the calibrator alone with export_calibrator_onnx")
    inner = getattr(model, "model", None)
    if isinstance(inner, torch.jit.ScriptModule):
        return inner
    return model


def _export_part(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str], prefix: str):
    import onnx
    import onnx.compose

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "part.onnx"
        _export(module, args, f, inputs, outputs)
        part = onnx.load(str(f))
    # internal names are made unique per part; graph inputs and outputs keep theirs
    return onnx.compose.add_prefix(part, prefix, rename_inputs=False, rename_outputs=False)


def _chain(parts: list, links: list[tuple[str, str]]):
    """Join exported parts in order, ``links[i]`` = (output of part i, input of part i + 1)."""
    import onnx.compose

    merged = parts[0]
    for part, link in zip(parts[1:], links):
        merged = onnx.compose.merge_models(merged, part, io_map=[link])
    return merged


def export_onnx(model: nn.Module, trigger: nn.Module | None = None, calibrator: Any = None, *,
                path: str | os.PathLike, example: torch.Tensor, groups: np.ndarray | None = None,
                atol: float = ATOL) -> Path:
    """Fuse ``trigger`` (optional) -> ``model`` -> calibrator (optional) into one verified ONNX graph.

    ``example`` is a batch of real (or realistic) model inputs (at least 2 rows): it is
    traced for the export and used to check the result. ``groups`` gives their group
    indices when the calibrator needs them (random valid indices otherwise).
    """
    module = _traceable(model)
    if not isinstance(example, torch.Tensor) or example.dim() < 2 or len(example) < 2:
        raise InputError("example must be a batch tensor of at least 2 model inputs")
    example = example.detach().to(torch.float32).cpu()
    model = model.cpu().eval()
    if trigger is not None:
        trigger = trigger.cpu().eval()
    with torch.no_grad():
        triggered = trigger(example) if trigger is not None else example
        logits = model(triggered)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise InputError(f"the model must return [N, classes] logits with 2+ classes, got shape {tuple(logits.shape)}")
    n_classes = logits.shape[1]
    binary = n_classes == 2
    grouped = calibrator is not None and needs_group(calibrator)
    if calibrator is not None and _n_classes(calibrator) != n_classes:
        raise InputError(f"the calibrator was fitted on {_n_classes(calibrator)} classes; the model has {n_classes}")
    head = _Head(calibrator.to_module().eval() if calibrator is not None else None, binary, grouped).eval()

    proba = torch.softmax(logits.double(), dim=-1).numpy()
    score = proba[:, 1] if binary else proba
    feeds = {"input": example.numpy()}
    head_args: tuple = (logits,)
    codes = None
    if grouped:
        if groups is None:
            groups = np.random.default_rng(0).integers(0, len(calibrator.groups_), size=len(example))
        codes = np.asarray(groups, dtype=np.int64)
        if codes.shape != (len(example),):
            raise InputError(f"groups must have one index per example row ({len(example)}), got shape {codes.shape}")
        feeds["group"] = codes
        head_args = (logits, torch.from_numpy(codes))

    import onnx

    parts, links = [], []
    model_input = "input"
    if trigger is not None:
        parts.append(_export_part(trigger, (example,), ["input"], ["triggered"], "trigger/"))
        model_input = "triggered_in"
        links.append(("triggered", model_input))
    parts.append(_export_part(module, (triggered,), [model_input], ["model_logits"], "model/"))
    links.append(("model_logits", "logits_in"))
    head_inputs = ["logits_in"] + (["group"] if grouped else [])
    outputs = ["probabilities", "logits"] + (["uncalibrated"] if calibrator is not None else [])
    parts.append(_export_part(head, head_args, head_inputs, outputs, "head/"))
    try:
        fused = _chain(parts, links)
        onnx.checker.check_model(fused)
    except Exception as e:
        raise ExportError(f"joining the exported parts failed: {first_line(e)}") from None
    path = Path(path)
    with atomic_path(path) as tmp:
        onnx.save(fused, str(tmp))
        got = run_onnx(tmp, feeds)
        # Each stage is checked against its own input, so a float32 rounding upstream is
        # not blamed on (or amplified by) a steep stretch of an isotonic map downstream:
        # logits relative to their size (float32 sums over a big model drift by ~1e-6 of
        # the magnitude); the softmax against the PyTorch logits; the calibrated
        # probabilities against the numpy map applied to the graph's own uncalibrated ones.
        want_logits = logits.double().numpy()
        _compare("logits", got["logits"], want_logits, max(atol, 1e-5 * float(np.abs(want_logits).max())))
        raw = "uncalibrated" if calibrator is not None else "probabilities"
        _compare(raw, got[raw], score, atol)
        if calibrator is not None:
            seen = got["uncalibrated"].astype(np.float64)
            want = calibrator._transform_codes(seen, codes) if grouped else calibrator.transform(seen)
            _compare("probabilities", got["probabilities"], want, atol)
    return path
