"""Captum attributions of a frozen model, alone and with its fairness trigger.

Every map here comes from Captum (no hand-written gradients):

* images — :class:`~captum.attr.IntegratedGradients`, :class:`~captum.attr.LayerGradCam`
  on the last convolution (upsampled to the input with
  :meth:`~captum.attr.LayerAttribution.interpolate`) and, optionally, SmoothGrad as
  :class:`~captum.attr.NoiseTunnel` around Integrated Gradients;
* text — :class:`~captum.attr.LayerIntegratedGradients` on the model's token-embedding
  layer, the trigger's soft tokens scored as tokens of their own;
* tabular — Integrated Gradients per feature, and :func:`group_feature_importance`
  (mean |attribution| per demographic group).

**What is explained.** With ``trigger=None`` the function explained is ``model(x)``; with
a trigger it is ``model(trigger(x))``, *with respect to the original input x*: the
trigger is part of the explained function, so the base and triggered maps share their
coordinates pixel by pixel and feature by feature and can be subtracted. Pixels a patch
or frame trigger overwrites get zero Integrated-Gradients attribution in the triggered
map (the output no longer depends on them); the trigger's own effect sits in the
baseline term ``f(trigger(baseline))``. Grad-CAM is read on the activations of the
triggered image, which has the input's size. ``target=None`` explains, row by row, the
class that the explained function predicts (base and triggered may then differ: pass the
true labels as ``target`` to compare like with like).

**Baselines.** Images: the *black image in the model's input space*,
``(0 - mean) / std`` per channel, with mean/std from the model's sidecar
(``meta["image"]``), else from an image trigger's own mean/std, else 0 (raw pixels) —
zeros in normalised space would be a mid-grey image, not "no signal". Tabular: zeros,
which for the encoded tables `reprogram` makes (numeric columns standardised to the
training mean and unit variance, one-hot blocks) is the training mean of every numeric
feature and "no category" for one-hot blocks; pass ``baseline=`` (e.g. the training
means) for anything else. Text: every non-special token replaced by ``[PAD]`` ([CLS],
[SEP] and padding kept), trigger tokens included, so a trigger token's score is what
the trigger vector adds over a padding token at that position.

**Faithfulness.** Integrated Gradients satisfies completeness: the attributions of a row
add up to ``f(x)[t] − f(baseline)[t]``. Captum's *convergence delta* (``delta``) is the
gap left by the finite Riemann/Gauss–Legendre sum; it is reported per row next to that
output gap (``output_gap``), so ``|delta| / |output_gap|`` says how far to trust a map.
Raise ``n_steps`` when it is large.

**TorchScript.** The models :func:`~reprogram.models.load_frozen` reads are often
TorchScript (what :class:`~reprogram.train.Trainer` saves). Integrated Gradients,
SmoothGrad and the text attributions only differentiate the forward pass and work on
any differentiable module, TorchScript included. Grad-CAM needs a forward hook on a
layer, and ``register_forward_hook`` is refused on TorchScript modules ("not supported
on ScriptModules"). The work-around used here: the forward graph of every TorchScript
module *on the path to the chosen layer* is run op by op from Python (each ``aten`` op
through ``torch.ops``, calls into other submodules through TorchScript itself), and the
call into the layer goes through a small eager module that takes Captum's hooks; while
the attribution runs that interpreter stands in for the scripted module in its parent,
and the model is put back afterwards. Outputs are the model's own (checked in the
tests against the eager model). Traced graphs (what ``torch.jit.trace`` and the Trainer
make) are straight-line and run; scripted graphs (``torch.jit.script``) run too as long
as the modules on the path call only modules and tensor ops (torchvision's ResNet does);
a scripted module that calls a *function* (``F.relu(...)`` in its forward) on the path
cannot be run from Python, and gives an :class:`InputError` that names it and suggests
``layer=`` that module instead (a layer whose parents can be run), Integrated Gradients,
or loading the weights into the eager architecture. TorchScript keeps each layer's class as ``original_name``, so
:func:`find_last_conv` finds scripted ``Conv2d`` layers. ``torch.export`` programs
keep no layer modules at all: give ``layer=`` as a dotted name (``"features.6"``, or let
it be found), and a hook point is inserted into a copy of the graph after the last node
the program's ``nn_module_stack`` records for that layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from reprogram.errors import InputError, LengthMismatchError, first_line
from reprogram.models.device import resolve_device
from reprogram.models.frozen import as_logits

__all__ = [
    "Attribution",
    "TokenAttribution",
    "IMAGE_METHODS",
    "find_last_conv",
    "attribute_images",
    "attribute_tabular",
    "attribute_text",
    "group_feature_importance",
]

IMAGE_METHODS = ("integrated_gradients", "grad_cam", "smoothgrad")

# About this many input values (rows x features) go through the model in one pass when
# internal_batch_size is not given: ~20 MB of float32 inputs, a few hundred small images,
# a couple of dozen 224 x 224 ones.
_VALUES_PER_PASS = 2**22


# ---- results ---------------------------------------------------------------------------


@dataclass
class Attribution:
    """One attribution method's maps for a batch.

    ``values``: images ``[N, H, W]`` (Integrated Gradients and SmoothGrad summed over
    channels, signed; Grad-CAM, ReLU-ed, upsampled to H x W), tabular ``[N, F]``.
    ``target``: ``[N]`` class explained. ``delta``: ``[N]`` IG convergence delta (None
    for Grad-CAM; for SmoothGrad the mean over the noisy copies). ``output_gap``: ``[N]``
    ``f(x)[t] − f(baseline)[t]``, what IG's attributions should add up to (IG only).
    ``layer``: the layer Grad-CAM read (dotted name), else None.
    """

    method: str
    values: np.ndarray
    target: np.ndarray
    delta: np.ndarray | None
    output_gap: np.ndarray | None = None
    layer: str | None = None

    def abs_normalized(self) -> np.ndarray:
        """``|values|`` scaled to [0, 1] per sample (an all-zero map stays 0), for display."""
        a = np.abs(self.values)
        peak = a.reshape(len(a), -1).max(axis=1) if a.size else np.zeros(len(a))
        peak = peak.reshape((-1,) + (1,) * (a.ndim - 1))
        return np.divide(a, peak, out=np.zeros_like(a, dtype=float), where=peak > 0)

    def relative_delta(self) -> np.ndarray | None:
        """``|delta| / |output_gap|`` per sample (inf where the gap is 0), or None."""
        if self.delta is None or self.output_gap is None:
            return None
        gap = np.abs(self.output_gap)
        return np.divide(np.abs(self.delta), gap, out=np.full(gap.shape, np.inf), where=gap > 0)


@dataclass
class TokenAttribution:
    """Layer Integrated Gradients on a text model's token embeddings, one score per token.

    ``tokens`` per sample (padding dropped; trigger tokens as ``"⟨t1⟩"``... or, for a
    ``hard`` trigger, its vocabulary words), ``scores`` per sample (signed, summed over
    the embedding dimension), ``is_trigger`` per sample (bool per token), ``target``
    ``[N]``, ``delta`` ``[N]`` convergence delta, ``output_gap`` ``[N]``
    ``f(x)[t] − f(baseline)[t]``.
    """

    tokens: list[list[str]]
    scores: list[np.ndarray]
    is_trigger: list[np.ndarray]
    target: np.ndarray
    delta: np.ndarray
    output_gap: np.ndarray | None = None

    def abs_normalized(self) -> list[np.ndarray]:
        """Per sample, ``|scores|`` scaled to [0, 1] (an all-zero row stays 0), for display."""
        out = []
        for s in self.scores:
            a = np.abs(np.asarray(s, dtype=float))
            peak = a.max() if a.size else 0.0
            out.append(a / peak if peak > 0 else np.zeros_like(a))
        return out


# ---- small helpers ----------------------------------------------------------------------


def _check_kind(model: nn.Module, expected: str, func: str) -> None:
    if not isinstance(model, nn.Module):
        raise InputError(f"{func} explains a torch model (nn.Module), got {type(model).__name__}")
    kind = getattr(model, "input_kind", None)
    if kind is not None and kind != expected:
        raise InputError(f"{func} explains {expected} models; this model reads {kind} (use attribute_{kind})")


def _check_trigger(trigger: Any) -> None:
    if trigger is not None and not isinstance(trigger, nn.Module):
        raise InputError(f"trigger must be an nn.Module (a reprogram trigger), got {type(trigger).__name__}")


def _as_float_tensor(x: Any, dims: int, what: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"{what} must be a tensor, got {type(x).__name__}")
    if x.dim() != dims or x.shape[0] == 0:
        raise InputError(f"{what} must be a non-empty {dims}-D tensor, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    if not bool(torch.isfinite(x).all()):
        raise InputError(f"{what} holds NaN or infinite values")
    return x


def _check_steps(n_steps: int) -> int:
    if not isinstance(n_steps, (int, np.integer)) or isinstance(n_steps, bool) or n_steps < 2:
        raise InputError(f"n_steps must be an integer >= 2, got {n_steps!r}")
    return int(n_steps)


def _pass_size(x: torch.Tensor, internal_batch_size: int | None) -> int:
    if internal_batch_size is not None:
        if int(internal_batch_size) < 1:
            raise InputError(f"internal_batch_size must be >= 1, got {internal_batch_size}")
        return int(internal_batch_size)
    per_row = max(1, int(np.prod(x.shape[1:])))
    return int(min(512, max(8, _VALUES_PER_PASS // per_row)))


@contextlib.contextmanager
def _eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Put the triggers (and a plain model) in eval mode for the attribution, then back."""
    modes = [(m, m.training) for m in modules if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        yield
    finally:
        for m, was in modes:
            m.train(was)


def _targets(fn: Callable[..., torch.Tensor], args: tuple, target: Any, n: int, chunk: int) -> torch.Tensor:
    """The class to explain per row: ``target`` checked, or (None) what ``fn(*args)`` predicts.

    ``args`` are ``fn``'s arguments: tensors with one row per sample (run ``chunk`` rows
    at a time) or anything else (passed as is).
    """
    def rows(a: Any, i: int) -> Any:
        return a[i : i + chunk] if isinstance(a, torch.Tensor) else a

    with torch.no_grad():
        try:
            logits = torch.cat([fn(*(rows(a, i) for a in args)) for i in range(0, n, chunk)])
        except InputError:
            raise
        except (RuntimeError, ValueError, TypeError, IndexError) as e:
            raise InputError(f"the model cannot read inputs of shape {tuple(args[0].shape)}: {first_line(e)}") from None
    if logits.dim() != 2:
        raise InputError(f"the model must return (batch, classes) logits, got shape {tuple(logits.shape)}")
    n_classes = logits.shape[1]
    if target is None:
        return logits.argmax(1)
    t = torch.as_tensor(np.asarray(target))
    if t.dim() == 0:
        t = t.expand(n)
    if t.dim() != 1 or t.shape[0] != n:
        raise LengthMismatchError(f"target must be one class index or {n} of them, got shape {tuple(t.shape)}")
    if t.is_floating_point() and bool((t != t.round()).any()):
        raise InputError("target must hold integer class indices")
    t = t.long()
    if bool((t < 0).any()) or bool((t >= n_classes).any()):
        raise InputError(f"target class indices must lie in 0..{n_classes - 1}")
    return t.to(logits.device)


def _output_gap(fn: Callable[..., torch.Tensor], x: torch.Tensor, base: torch.Tensor, t: torch.Tensor,
                extra: tuple = ()) -> torch.Tensor:
    with torch.no_grad():
        fx = fn(x, *extra).gather(1, t.view(-1, 1)).squeeze(1)
        fb = fn(base, *extra).gather(1, t.view(-1, 1)).squeeze(1)
    return fx - fb


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return t.numpy() if t.dtype == torch.int64 else t.float().numpy()


# ---- finding the layer Grad-CAM reads -------------------------------------------------------


def _is_script(m: Any) -> bool:
    return isinstance(m, torch.jit.ScriptModule)


def _is_conv2d(m: nn.Module) -> bool:
    if isinstance(m, nn.Conv2d):
        return True
    # TorchScript keeps the class name of each module as original_name, not the class.
    return _is_script(m) and getattr(m, "original_name", None) == "Conv2d"


def _conv_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if name and _is_conv2d(m)]


def _graph_modules(model: nn.Module) -> list[tuple[str, torch.fx.GraphModule]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, torch.fx.GraphModule)]


def _stack_paths(node: torch.fx.Node) -> list[tuple[str, Any]]:
    stack = node.meta.get("nn_module_stack") or {}
    return [v for v in stack.values() if isinstance(v, tuple) and len(v) == 2]


def _graph_layer_names(gm: torch.fx.GraphModule, *, convs_only: bool) -> list[str]:
    """Dotted names of the layers an exported program's graph records, in the order they run."""
    seen: dict[str, None] = {}
    for node in gm.graph.nodes:
        for path, cls in _stack_paths(node):
            cls_name = cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
            if path and (not convs_only or cls_name.rsplit(".", 1)[-1] == "Conv2d"):
                seen.setdefault(path, None)
    return list(seen)


def find_last_conv(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` of ``model`` in registration order (what Grad-CAM reads by default).

    Looks through a :class:`~reprogram.models.FrozenModel` into the wrapped module; finds
    TorchScript convolutions by their ``original_name``. Raises :class:`InputError` when
    there is none (e.g. a ``torch.export`` program, whose layers are graph nodes, not
    modules): pass ``layer=`` to :func:`attribute_images` then.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"find_last_conv takes a torch model (nn.Module), got {type(model).__name__}")
    convs = [m for name, m in model.named_modules() if _is_conv2d(m)]
    if convs:
        return convs[-1]
    for _, gm in _graph_modules(model):
        names = _graph_layer_names(gm, convs_only=True)
        if names:
            raise InputError(f"{type(model).__name__} is a torch.export program: its layers are graph nodes, not "
                             f"modules; pass layer= the dotted name of a convolution (the last one is {names[-1]!r})")
    raise InputError(f"no nn.Conv2d layer found in {type(model).__name__}; pass layer= (a module or a dotted name "
                     "such as 'features.6')")


def _unless_graph_held(mods: dict[str, nn.Module], name: str) -> nn.Module | None:
    """The module called ``name``, or None when an export graph above it holds only its
    weights (the graph runs its ops itself and never calls it, so a hook on it would not fire)."""
    parts = name.split(".")
    for i in range(len(parts) - 1, -1, -1):
        gm = mods.get(".".join(parts[:i]))
        if isinstance(gm, torch.fx.GraphModule):
            rel = ".".join(parts[i:])
            called = any(n.op == "call_module" and n.target == rel for n in gm.graph.nodes)
            return mods[name] if called else None
    return mods[name]


def _shown(model: nn.Module, name: str) -> str:
    """A layer's name as the user writes it: without the ``model.`` of a FrozenModel's wrapper."""
    return name[len("model."):] if name.startswith("model.") and hasattr(model, "input_kind") else name


def _resolve_layer(model: nn.Module, layer: Any) -> tuple[str, nn.Module | None]:
    """(qualified name in ``model``, the module, or None for a layer known only to an export graph)."""
    mods = dict(model.named_modules())
    if layer is None:
        convs = _conv_names(model)
        if convs:
            return convs[-1], mods[convs[-1]]
        for prefix, gm in _graph_modules(model):
            names = _graph_layer_names(gm, convs_only=True)
            if names:
                return ".".join(p for p in (prefix, names[-1]) if p), None
        find_last_conv(model)  # raises the error that says what to do
    if isinstance(layer, str):
        prefixes = [""] + [p + "." for p in ("model",) if isinstance(mods.get(p), nn.Module)]
        for pre in prefixes:
            if pre + layer in mods and layer:
                return pre + layer, _unless_graph_held(mods, pre + layer)
        for prefix, gm in _graph_modules(model):
            rel = layer[len(prefix) + 1:] if prefix and layer.startswith(prefix + ".") else layer
            if rel in _graph_layer_names(gm, convs_only=False):
                return ".".join(p for p in (prefix, rel) if p), None
        convs = _conv_names(model)
        for prefix, gm in _graph_modules(model):
            convs += [".".join(p for p in (prefix, c) if p) for c in _graph_layer_names(gm, convs_only=True)]
        convs = [_shown(model, c) for c in convs]
        hint = f"; its convolution layers: {', '.join(convs[-6:])}" if convs else ""
        raise InputError(f"layer {layer!r} not found in the model{hint}")
    if isinstance(layer, nn.Module):
        for name, m in mods.items():
            if m is layer:
                if not name:
                    raise InputError("layer= must be a layer inside the model, not the model itself")
                return name, _unless_graph_held(mods, name)
        raise InputError(f"the layer given ({type(layer).__name__}) is not a submodule of the model")
    raise InputError(f"layer must be a module, a dotted name such as 'features.6', or None; got {type(layer).__name__}")


# ---- running TorchScript graphs from Python, so that one layer can take hooks --------------


class _Unsupported(Exception):
    """A TorchScript node the interpreter cannot run; ``where`` is the module whose graph holds it."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind
        self.where: str | None = None


def _call_script_method(obj: Any, name: str, args: Sequence[Any]) -> Any:
    c = getattr(obj, "_c", None)
    # freshly traced submodules refuse Python calls ("Trace submodules cannot be called");
    # their C++ methods do not
    return c._get_method(name)(*args) if c is not None else getattr(obj, name)(*args)


_PRIM_VALUE_OPS: dict[str, Callable[..., Any]] = {
    "prim::ListConstruct": lambda *a: list(a),
    "prim::TupleConstruct": lambda *a: tuple(a),
    "prim::DictConstruct": lambda *a: dict(zip(a[::2], a[1::2])),
    "prim::unchecked_cast": lambda a: a,
    "prim::Uninitialized": lambda: None,
    "prim::NumToTensor": lambda a: a if isinstance(a, torch.Tensor) else torch.tensor(a),
    "aten::Int": int,
    "aten::Float": float,
    "aten::Bool": bool,
    "aten::ScalarImplicit": lambda a: a.item() if isinstance(a, torch.Tensor) else a,
    "aten::__is__": lambda a, b: a is b,
    "aten::__isnot__": lambda a, b: a is not b,
    "aten::__not__": lambda a: not a,
    "aten::len": len,
    "aten::__getitem__": lambda a, i: a[i],
    "prim::dtype": lambda a: a.dtype,
    "prim::device": lambda a: a.device,
    "aten::dim": lambda a: a.dim(),
}


def _aten(node: torch._C.Node, ins: list[Any]) -> Any:
    try:
        schema = torch._C.parse_schema(node.schema())
    except RuntimeError:
        raise _Unsupported(node.kind()) from None
    try:
        packet = getattr(torch.ops.aten, schema.name.split("::", 1)[1])
        op = getattr(packet, schema.overload_name or "default")
    except (AttributeError, RuntimeError):
        raise _Unsupported(node.kind()) from None
    args, kwargs = [], {}
    for arg, value in zip(schema.arguments, ins):
        if arg.kwarg_only:
            kwargs[arg.name] = value
        else:
            args.append(value)
    return op(*args, **kwargs)


_MULTI_OUT = ("prim::TupleUnpack", "prim::ListUnpack", "prim::If", "prim::Loop")


def _run_nodes(nodes: Any, env: dict[int, Any], runner: _ScriptRunner) -> None:
    """Execute TorchScript graph nodes with Python values.

    A call into a module on ``runner``'s path (any method: ResNet's ``forward`` calls
    ``self._forward_impl``) is interpreted as well; the layer's ``forward`` goes to the
    probe; every other call runs in TorchScript.
    """
    for node in nodes:
        kind = node.kind()
        ins = [env[v.unique()] for v in node.inputs()]
        outs = list(node.outputs())
        if kind == "prim::GetAttr":
            res = getattr(ins[0], node.s("name"))
        elif kind == "prim::CallMethod":
            name, obj, args = node.s("name"), ins[0], ins[1:]
            if obj is runner.layer and name == "forward":
                res = runner.probe(*args)
            elif id(obj) in runner.path:
                res = runner.run(obj, name, args)
            else:
                res = _call_script_method(obj, name, args)
        elif kind == "prim::Constant":
            res = outs[0].toIValue()
        elif kind in ("prim::TupleUnpack", "prim::ListUnpack"):
            res = tuple(ins[0])
        elif kind == "prim::If":
            then_block, else_block = list(node.blocks())
            block = then_block if ins[0] else else_block
            _run_nodes(block.nodes(), env, runner)
            res = tuple(env[v.unique()] for v in block.outputs())
        elif kind == "prim::Loop":
            body = next(iter(node.blocks()))
            params = list(body.inputs())
            trips, cond, carried = ins[0], ins[1], list(ins[2:])
            i = 0
            while cond and i < trips:
                env[params[0].unique()] = i
                for p, v in zip(params[1:], carried):
                    env[p.unique()] = v
                _run_nodes(body.nodes(), env, runner)
                results = [env[v.unique()] for v in body.outputs()]
                cond, carried = results[0], results[1:]
                i += 1
            res = tuple(carried)
        elif kind == "prim::RaiseException":
            raise InputError(f"the TorchScript model raised: {ins[0] if ins else 'an exception'}")
        elif kind in _PRIM_VALUE_OPS:
            res = _PRIM_VALUE_OPS[kind](*ins)
        elif kind.startswith("aten::"):
            res = _aten(node, ins)
        else:
            raise _Unsupported(kind)
        if not outs:
            continue
        if kind in _MULTI_OUT or len(outs) != 1:  # res holds one value per output
            for o, r in zip(outs, res):
                env[o.unique()] = r
        else:
            env[outs[0].unique()] = res


class _Probe(nn.Module):
    """An eager stand-in that takes Captum's hooks: calls the (TorchScript) layer it replaces,
    or passes its input through (a hook point inserted into an export graph)."""

    def __init__(self, layer: nn.Module | None = None):
        super().__init__()
        self._layer = [layer]  # a list: not a submodule, so .to()/state_dict never see it twice
        self.calls = 0

    def forward(self, *args: Any) -> Any:
        self.calls += 1
        layer = self._layer[0]
        if layer is None:
            return args[0]
        return _call_script_method(layer, "forward", args) if _is_script(layer) else layer(*args)


class _ScriptRunner(nn.Module):
    """Runs TorchScript module ``path[0]``'s forward graph from Python.

    ``path`` is the chain of TorchScript modules from it down to (not including) the
    layer: calls into any of them are interpreted too, so the call into ``layer`` is seen
    and sent to ``probe``, whatever containers (ModuleList, methods) lie between.
    """

    def __init__(self, path: Sequence[nn.Module], names: Sequence[str], layer: nn.Module, probe: _Probe):
        super().__init__()
        self._modules_on_path = list(path)  # a plain list: the model owns these modules
        self.path = {id(m): m for m in path}
        self.names = {id(m): name for m, name in zip(path, names)}
        self._layer = [layer]
        self.probe = probe
        self.where = names[0]

    @property
    def layer(self) -> nn.Module:
        return self._layer[0]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        script = self._modules_on_path[0]
        schema = script._c._get_method("forward").schema
        values: list[Any] = list(args)
        for arg in schema.arguments[1 + len(args):]:
            if arg.name in kwargs:
                values.append(kwargs.pop(arg.name))
            elif arg.has_default_value():
                values.append(arg.default_value)
            else:
                raise InputError(f"the TorchScript module {self.where or 'model'} needs its argument {arg.name!r}")
        if kwargs:
            raise InputError(f"the TorchScript module {self.where or 'model'} has no argument(s) {sorted(kwargs)}")
        try:
            return self.run(script, "forward", values)
        except _Unsupported as e:
            where = repr(e.where) if e.where else "the model"
            higher = f"a layer above the one asked for (e.g. {e.where!r}), " if e.where else ""
            raise InputError(
                f"Grad-CAM needs a hook on a layer, which TorchScript modules refuse, and the graph of {where} "
                f"could not be run op by op from Python ({e.kind} is not supported: scripted code calling "
                f"functions); pass layer= {higher}use integrated_gradients, or load the model as a "
                "state_dict with its architecture"
            ) from None

    def run(self, module: nn.Module, method: str, args: Sequence[Any]) -> Any:
        """Interpret ``module.<method>(*args)`` (all arguments given, as TorchScript passes them)."""
        graph = module._c._get_method(method).graph
        params = list(graph.inputs())
        env: dict[int, Any] = {params[0].unique(): module}
        for p, v in zip(params[1:], args):
            env[p.unique()] = v
        try:
            _run_nodes(graph.nodes(), env, self)
        except _Unsupported as e:
            if e.where is None:
                e.where = self.names.get(id(module))
            raise
        outs = [env[v.unique()] for v in graph.outputs()]
        return outs[0] if len(outs) == 1 else tuple(outs)


def _export_probe(gm: torch.fx.GraphModule, rel: str) -> tuple[nn.Module, _Probe]:
    """A copy of export graph ``gm`` with a :class:`_Probe` call after layer ``rel``'s last node."""
    graph = torch.fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    # the program's pytree calling convention (read only, so shared rather than deep-copied)
    graph._codegen = gm.graph._codegen
    last = None
    for node in graph.nodes:
        if any(path == rel for path, _ in _stack_paths(node)) and node.op == "call_function":
            last = node
    if last is None:
        raise InputError(f"layer {rel!r} runs no operation in the exported program's graph")
    probe = _Probe(None)
    with graph.inserting_after(last):
        hook = graph.call_module("_reprogram_probe", (last,))
    last.replace_all_uses_with(hook, delete_user_cb=lambda user: user is not hook)
    root: dict[str, Any] = {"_reprogram_probe": probe}
    for node in graph.nodes:
        if node.op in ("get_attr", "call_module") and node.target not in root:
            obj: Any = gm
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
            root[str(node.target)] = obj
    try:
        new = torch.fx.GraphModule(root, graph)
    except (RuntimeError, AttributeError, TypeError, ValueError) as e:  # fx: graphs it cannot rebuild
        raise InputError(f"cannot add a Grad-CAM hook point to the exported program: {first_line(e)}") from None
    return new, probe


@contextlib.contextmanager
def _hook_point(model: nn.Module, name: str, layer: nn.Module | None) -> Iterator[tuple[nn.Module, nn.Module]]:
    """Yield ``(module to call in place of model, module Captum hooks)`` for layer ``name``.

    Eager layers are hooked directly. A TorchScript layer (or one inside a TorchScript
    module) is reached through :class:`_ScriptRunner` interpreters from the outermost
    TorchScript module down, the layer itself wrapped in a :class:`_Probe`; an export
    graph gets a probe node. Stand-ins are swapped into the model for the duration and
    the original modules put back afterwards.
    """
    parts = name.split(".")
    chain: list[nn.Module] = [model]
    for p in parts:
        nxt = getattr(chain[-1], p, None) if isinstance(chain[-1], nn.Module) else None
        if not isinstance(nxt, nn.Module):
            break
        chain.append(nxt)
    if layer is None:  # a layer of an export graph: chain[-1] is the GraphModule holding it
        gm_depth = max(i for i, m in enumerate(chain) if isinstance(m, torch.fx.GraphModule))
        rel = ".".join(parts[gm_depth:])
        stand_in, probe = _export_probe(chain[gm_depth], rel)
        start = gm_depth
    else:
        script_at = [i for i, m in enumerate(chain) if _is_script(m)]
        if not script_at:
            yield model, layer
            return
        start = script_at[0]
        probe = _Probe(layer)
        # the layer alone is scripted: the probe replaces it; else interpret from the
        # outermost TorchScript module down
        names = [_shown(model, ".".join(parts[:i])) for i in range(start, len(parts))]
        stand_in = probe if start == len(parts) else _ScriptRunner(chain[start:-1], names, layer, probe)
    if start == 0:
        yield stand_in, probe
        return
    parent, attr = chain[start - 1], parts[start - 1]
    original = chain[start]
    setattr(parent, attr, stand_in)
    try:
        yield model, probe
    finally:
        setattr(parent, attr, original)


# ---- images ------------------------------------------------------------------------------


def _image_baseline(model: nn.Module, trigger: nn.Module | None, x: torch.Tensor, baseline: Any) -> torch.Tensor:
    if baseline is not None:
        b = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
        if b.dim() == 3:
            b = b.unsqueeze(0)
        try:
            return torch.broadcast_to(b, x.shape).contiguous()
        except RuntimeError:
            raise InputError(f"baseline of shape {tuple(b.shape)} does not fit images of shape {tuple(x.shape)}") from None
    c = x.shape[1]
    meta = getattr(model, "meta", None) or {}
    image = meta.get("image") if isinstance(meta, Mapping) else None
    mean = std = None
    if isinstance(image, Mapping) and image.get("mean") is not None and image.get("std") is not None:
        mean, std = image["mean"], image["std"]
    elif trigger is not None and isinstance(getattr(trigger, "mean", None), torch.Tensor) and \
            isinstance(getattr(trigger, "std", None), torch.Tensor):
        mean, std = trigger.mean.flatten().tolist(), trigger.std.flatten().tolist()
    if mean is None:
        return torch.zeros_like(x)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).flatten()
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).flatten()
    if mean_t.numel() == 1:
        mean_t, std_t = mean_t.expand(c), std_t.expand(c)
    if mean_t.numel() != c:
        return torch.zeros_like(x)
    black = (-mean_t / std_t).view(1, c, 1, 1)
    return black.expand_as(x).contiguous()


def _explained(model: nn.Module, trigger: nn.Module | None) -> Callable[[torch.Tensor], torch.Tensor]:
    def f(x: torch.Tensor) -> torch.Tensor:
        return as_logits(model(trigger(x) if trigger is not None else x))

    return f


def attribute_images(
    model: nn.Module,
    x: torch.Tensor,
    *,
    trigger: nn.Module | None = None,
    target: Any = None,
    methods: Sequence[str] = ("integrated_gradients", "grad_cam"),
    layer: nn.Module | str | None = None,
    smoothgrad: bool = False,
    n_steps: int = 32,
    baseline: Any = None,
    device: str | torch.device = "cpu",
    internal_batch_size: int | None = None,
    nt_samples: int = 8,
    noise: float = 0.15,
    seed: int = 0,
) -> dict[str, Attribution]:
    """Attributions of an image model (and trigger) for images ``x`` ``[N, C, H, W]``.

    ``methods``: any of ``"integrated_gradients"``, ``"grad_cam"``, ``"smoothgrad"``;
    ``smoothgrad=True`` adds the last. Returns ``{method: Attribution}`` with values
    ``[N, H, W]``. ``layer``: Grad-CAM's layer, a module or a dotted name (default: the
    last ``Conv2d``, see :func:`find_last_conv`). ``baseline``: IG's reference image
    (default the black image in the model's input space, see the module docstring).
    SmoothGrad is :class:`~captum.attr.NoiseTunnel` around IG, ``nt_samples`` copies
    with Gaussian noise of std ``noise`` x the range of ``x``, drawn from ``seed``.
    ``internal_batch_size`` bounds the images per forward pass (default: about 4M input
    values per pass).
    """
    from captum.attr import IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel

    _check_kind(model, "image", "attribute_images")
    _check_trigger(trigger)
    x = _as_float_tensor(x, 4, "images x (N, C, H, W)")
    n_steps = _check_steps(n_steps)
    if isinstance(methods, str):
        methods = (methods,)
    wanted = list(dict.fromkeys(list(methods) + (["smoothgrad"] if smoothgrad else [])))
    bad = [m for m in wanted if m not in IMAGE_METHODS]
    if bad or not wanted:
        raise InputError(f"unknown attribution method(s) {bad}; choose from {', '.join(IMAGE_METHODS)}")
    if "smoothgrad" in wanted and (int(nt_samples) < 1 or not float(noise) > 0):
        raise InputError(f"SmoothGrad needs nt_samples >= 1 and noise > 0, got {nt_samples} and {noise}")
    dev = resolve_device(device)
    model.to(dev)
    if trigger is not None:
        trigger.to(dev)
    x = x.to(dev)
    n, h, w = x.shape[0], x.shape[2], x.shape[3]
    chunk = _pass_size(x, internal_batch_size)
    fn = _explained(model, trigger)
    out: dict[str, Attribution] = {}
    plain = None if hasattr(model, "input_kind") else model  # FrozenModels stay in eval on their own
    with _eval_mode(trigger, plain):
        t = _targets(fn, (x,), target, n, chunk)
        base = _image_baseline(model, trigger, x, baseline)
        gap = torch.cat([_output_gap(fn, x[i : i + chunk], base[i : i + chunk], t[i : i + chunk])
                         for i in range(0, n, chunk)])
        if "integrated_gradients" in wanted:
            ig = IntegratedGradients(fn)
            vals, deltas = [], []
            for i in range(0, n, chunk):
                a, d = ig.attribute(x[i : i + chunk], baselines=base[i : i + chunk], target=t[i : i + chunk],
                                    n_steps=n_steps, internal_batch_size=chunk, return_convergence_delta=True)
                vals.append(a.sum(1))
                deltas.append(d)
            out["integrated_gradients"] = Attribution("integrated_gradients", _np(torch.cat(vals)), _np(t),
                                                      _np(torch.cat(deltas)), _np(gap))
        if "smoothgrad" in wanted:
            nt = NoiseTunnel(IntegratedGradients(fn))
            spread = float((x.max() - x.min()).item()) or 1.0
            k = int(nt_samples)
            vals, deltas = [], []
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                torch.manual_seed(int(seed))
                for i in range(0, n, chunk):
                    a, d = nt.attribute(x[i : i + chunk], nt_type="smoothgrad", nt_samples=k,
                                        stdevs=float(noise) * spread, baselines=base[i : i + chunk],
                                        target=t[i : i + chunk], n_steps=n_steps,
                                        internal_batch_size=chunk, return_convergence_delta=True)
                    vals.append(a.sum(1))
                    deltas.append(d.view(-1, k).mean(1))  # copies of one row are consecutive
            out["smoothgrad"] = Attribution("smoothgrad", _np(torch.cat(vals)), _np(t), _np(torch.cat(deltas)))
        if "grad_cam" in wanted:
            name, module = _resolve_layer(model, layer)
            with _hook_point(model, name, module) as (runner, hooked):
                cam_fn = _explained(runner, trigger)
                if isinstance(hooked, _Probe):  # check the stand-ins reach the layer before Captum relies on it
                    with torch.no_grad():
                        cam_fn(x[:1])
                    if hooked.calls == 0:
                        raise InputError(f"layer {_shown(model, name)!r} is not used by the model's forward pass")
                cam = LayerGradCam(cam_fn, hooked)
                vals = []
                for i in range(0, n, chunk):
                    try:
                        a = cam.attribute(x[i : i + chunk], target=t[i : i + chunk], relu_attributions=True)
                    except AssertionError:  # Captum: "Forward hook did not obtain any outputs for given layer"
                        raise InputError(f"layer {_shown(model, name)!r} is not used by the model's forward "
                                         "pass") from None
                    if a.dim() != 4:
                        raise InputError(f"Grad-CAM needs a layer with (batch, channels, H, W) output; "
                                         f"{_shown(model, name)!r} gives shape {tuple(a.shape)}")
                    vals.append(LayerAttribution.interpolate(a, (h, w), interpolate_mode="bilinear")[:, 0])
            out["grad_cam"] = Attribution("grad_cam", _np(torch.cat(vals)), _np(t), None, layer=_shown(model, name))
    return {m: out[m] for m in wanted}


# ---- tabular -----------------------------------------------------------------------------


def attribute_tabular(
    model: nn.Module,
    x: torch.Tensor,
    *,
    trigger: nn.Module | None = None,
    target: Any = None,
    baseline: Any = None,
    n_steps: int = 64,
    device: str | torch.device = "cpu",
    internal_batch_size: int | None = None,
) -> Attribution:
    """Integrated Gradients per feature of a tabular model (and trigger) for ``x`` ``[N, F]``.

    ``baseline``: None (zeros: the training mean of standardised numeric features, see
    the module docstring), a scalar, ``[F]`` (e.g. the training means) or ``[N, F]``.
    Returns an :class:`Attribution` with values ``[N, F]``.
    """
    from captum.attr import IntegratedGradients

    _check_kind(model, "tabular", "attribute_tabular")
    _check_trigger(trigger)
    x = _as_float_tensor(x, 2, "features x (N, F)")
    n_steps = _check_steps(n_steps)
    dev = resolve_device(device)
    model.to(dev)
    if trigger is not None:
        trigger.to(dev)
    x = x.to(dev)
    n = x.shape[0]
    if baseline is None:
        base = torch.zeros_like(x)
    else:
        b = torch.as_tensor(np.asarray(baseline, dtype=np.float32) if not isinstance(baseline, torch.Tensor)
                            else baseline, dtype=x.dtype, device=dev)
        try:
            base = torch.broadcast_to(b, x.shape).contiguous()
        except RuntimeError:
            raise InputError(f"baseline of shape {tuple(b.shape)} does not fit features of shape {tuple(x.shape)}") \
                from None
    chunk = _pass_size(x, internal_batch_size)
    fn = _explained(model, trigger)
    plain = None if hasattr(model, "input_kind") else model
    with _eval_mode(trigger, plain):
        t = _targets(fn, (x,), target, n, chunk)
        ig = IntegratedGradients(fn)
        vals, deltas, gaps = [], [], []
        for i in range(0, n, chunk):
            a, d = ig.attribute(x[i : i + chunk], baselines=base[i : i + chunk], target=t[i : i + chunk],
                                n_steps=n_steps, internal_batch_size=chunk, return_convergence_delta=True)
            vals.append(a)
            deltas.append(d)
            gaps.append(_output_gap(fn, x[i : i + chunk], base[i : i + chunk], t[i : i + chunk]))
    return Attribution("integrated_gradients", _np(torch.cat(vals)), _np(t), _np(torch.cat(deltas)),
                       _np(torch.cat(gaps)))


def group_feature_importance(attr: Attribution, groups: Any, group_names: Sequence[str],
                             feature_names: Sequence[str]) -> pd.DataFrame:
    """Mean |attribution| of each feature within each group: rows = groups, columns = features.

    ``groups``: per row of ``attr.values`` a group id (an index into ``group_names``) or
    a group name. A group without rows gets a row of NaN.
    """
    if not isinstance(attr, Attribution):
        raise InputError(f"group_feature_importance takes an Attribution, got {type(attr).__name__}")
    values = np.asarray(attr.values, dtype=float)
    if values.ndim != 2:
        raise InputError(f"group_feature_importance needs tabular attributions (N, F), got shape {values.shape}")
    group_names, feature_names = [str(g) for g in group_names], [str(f) for f in feature_names]
    if len(feature_names) != values.shape[1]:
        raise LengthMismatchError(f"{len(feature_names)} feature names for {values.shape[1]} features")
    if len(set(group_names)) != len(group_names) or not group_names:
        raise InputError(f"group_names must be distinct and non-empty, got {group_names}")
    g = np.asarray(groups)
    if g.dtype.kind == "f" and np.all(np.isfinite(g)) and np.all(g == np.round(g)):
        g = g.astype(np.int64)  # ids that travelled as floats
    if g.ndim != 1 or len(g) != values.shape[0]:
        raise LengthMismatchError(f"groups must have one entry per row ({values.shape[0]}), got shape {g.shape}")
    if g.dtype.kind in "iu":
        if len(g) and (g.min() < 0 or g.max() >= len(group_names)):
            raise InputError(f"group ids must lie in 0..{len(group_names) - 1}")
        ids = g.astype(int)
    else:
        lookup = {name: i for i, name in enumerate(group_names)}
        unknown = sorted({str(v) for v in g} - set(lookup))
        if unknown:
            raise InputError(f"group(s) {unknown[:5]} not in group_names {group_names}")
        ids = np.array([lookup[str(v)] for v in g], dtype=int)
    a = np.abs(values)
    table = np.full((len(group_names), len(feature_names)), np.nan)
    for k in range(len(group_names)):
        rows = ids == k
        if rows.any():
            table[k] = a[rows].mean(axis=0)
    return pd.DataFrame(table, index=pd.Index(group_names, name="group"), columns=feature_names)


# ---- text --------------------------------------------------------------------------------


class _PromptEmbedding(nn.Module):
    """The model's token embeddings, extended by the trigger's k tokens as ids V..V+k-1.

    ``ids`` holding the extended sequence ([CLS], V..V+k-1, the text) give exactly the
    ``inputs_embeds`` :class:`~reprogram.triggers.PromptTrigger` builds, as the output of
    one layer that Layer Integrated Gradients can attribute to, trigger positions included.
    """

    def __init__(self, embeddings: nn.Module, trigger: nn.Module, vocab_size: int):
        super().__init__()
        self._parts = [embeddings, trigger]  # not submodules: they belong to the model and trigger
        self.vocab_size = vocab_size

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        embeddings, trigger = self._parts
        is_trig = ids >= self.vocab_size
        emb = embeddings(ids.masked_fill(is_trig, 0))
        vectors = trigger.token_embeddings().to(emb.dtype)
        trig = vectors[(ids - self.vocab_size).clamp(0, vectors.shape[0] - 1)]
        return torch.where(is_trig.unsqueeze(-1), trig, emb)


def _text_parts(model: nn.Module, tokenizer: Any) -> tuple[nn.Module, Any]:
    from reprogram.models.frozen import is_hf_model

    hf = getattr(model, "hf_model", None)
    if hf is None and is_hf_model(model):
        hf = model
    if hf is None:
        kind = getattr(model, "input_kind", None)
        raise InputError("attribute_text explains Hugging Face text models"
                         + (f"; this model reads {kind} (use attribute_{kind})" if kind and kind != "text" else ""))
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise InputError("the text model has no tokenizer: save it in the model folder next to the weights, "
                         "or pass tokenizer=")
    return hf, tok


def attribute_text(
    model: nn.Module,
    texts: Sequence[str],
    *,
    trigger: nn.Module | None = None,
    target: Any = None,
    n_steps: int = 32,
    max_length: int = 128,
    device: str | torch.device = "cpu",
    batch_size: int = 16,
    internal_batch_size: int | None = None,
    tokenizer: Any = None,
) -> TokenAttribution:
    """Layer Integrated Gradients of a Hugging Face classifier on its token embeddings.

    ``model``: a text :class:`~reprogram.models.FrozenModel` (its tokenizer is used).
    With a :class:`~reprogram.triggers.PromptTrigger`, the explained function is the model
    reading the trigger's k tokens after [CLS]; they are scored like the text's tokens
    (against a [PAD] baseline) and flagged in ``is_trigger``. Texts are tokenised with
    truncation to ``max_length`` tokens (fewer with a trigger when the model's position
    embeddings would overflow); ``batch_size`` texts are attributed together,
    ``internal_batch_size`` (default 64) interpolated sequences per forward pass.
    ``tokenizer`` defaults to the model's own (needed for a plain Hugging Face model).
    """
    from captum.attr import LayerIntegratedGradients

    _check_kind(model, "text", "attribute_text")
    _check_trigger(trigger)
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts \
            or not all(isinstance(s, str) for s in texts):
        raise InputError("texts must be a non-empty list of strings")
    n_steps = _check_steps(n_steps)
    hf, tok = _text_parts(model, tokenizer)
    k = 0
    if trigger is not None:
        if not (hasattr(trigger, "token_embeddings") and hasattr(trigger, "n_tokens")):
            raise InputError(f"attribute_text takes a PromptTrigger as trigger, got {type(trigger).__name__}")
        k = int(trigger.n_tokens)
    dev = resolve_device(device)
    model.to(dev)
    if trigger is not None:
        trigger.to(dev)
    embeddings = hf.get_input_embeddings()
    vocab = int(embeddings.weight.shape[0])
    limit = getattr(getattr(hf, "config", None), "max_position_embeddings", None)
    length = int(max_length)
    if isinstance(limit, int) and trigger is not None:
        length = min(length, limit - k)
    if length < 2:
        raise InputError(f"max_length leaves no room for text ({length} tokens)")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    special = torch.tensor(sorted(set(tok.all_special_ids)), dtype=torch.long)

    def run(ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor | None) -> torch.Tensor:
        kw: dict[str, Any] = {"attention_mask": mask}
        if types is not None:
            kw["token_type_ids"] = types
        if trigger is None:
            return as_logits(model(input_ids=ids, **kw))
        return as_logits(model(inputs_embeds=layer(ids), **kw))

    if trigger is None:
        layer: nn.Module = embeddings
        trig_names: list[str] = []
    else:
        layer = _PromptEmbedding(embeddings, trigger, vocab)
        if getattr(trigger, "mode", None) == "hard":
            trig_names = list(tok.convert_ids_to_tokens(trigger.token_ids()))
        else:
            trig_names = [f"⟨t{j + 1}⟩" for j in range(k)]

    tokens: list[list[str]] = []
    scores: list[np.ndarray] = []
    flags: list[np.ndarray] = []
    targets, deltas, gaps = [], [], []
    target_all = None if target is None else np.asarray(target)
    if target_all is not None and target_all.ndim == 1 and len(target_all) != len(texts):
        raise LengthMismatchError(f"target must be one class index or {len(texts)} of them, got {len(target_all)}")
    plain = None if hasattr(model, "input_kind") else model
    with _eval_mode(trigger, plain):
        lig = LayerIntegratedGradients(run, layer)
        for start in range(0, len(texts), int(batch_size)):
            part = list(texts[start : start + int(batch_size)])
            enc = tok(part, padding=True, truncation=True, max_length=length, return_tensors="pt")
            ids, mask = enc["input_ids"].to(dev), enc["attention_mask"].to(dev)
            types = enc.get("token_type_ids")
            types = types.to(dev) if types is not None else None
            m = ids.shape[0]
            keep = torch.isin(ids, special.to(dev))
            base_ids = torch.where(keep, ids, torch.full_like(ids, pad))
            if trigger is not None:
                with torch.no_grad():
                    ref = model(**trigger({"input_ids": ids, "attention_mask": mask,
                                           **({"token_type_ids": types} if types is not None else {})}))
                ext = (vocab + torch.arange(k, device=dev)).expand(m, k)
                ids = torch.cat([ids[:, :1], ext, ids[:, 1:]], 1)
                base_ids = torch.cat([base_ids[:, :1], torch.full_like(ext, pad), base_ids[:, 1:]], 1)
                mask = torch.cat([mask[:, :1], torch.ones_like(ext, dtype=mask.dtype), mask[:, 1:]], 1)
                if types is not None:
                    types = torch.cat([types[:, :1], torch.zeros_like(ext, dtype=types.dtype), types[:, 1:]], 1)
                with torch.no_grad():
                    mine = run(ids, mask, types)
                if not torch.allclose(mine, as_logits(ref).detach(), atol=1e-4, rtol=1e-3):
                    raise InputError("the trigger does not insert its tokens right after the first token as "
                                     "PromptTrigger does; cannot attribute to its tokens")
            sub_target = target_all[start : start + m] if target_all is not None and target_all.ndim == 1 \
                else target_all
            t = _targets(run, (ids, mask, types), sub_target, m, m)
            ibs = int(internal_batch_size or 64)
            attr, delta = lig.attribute(ids, baselines=base_ids, target=t, additional_forward_args=(mask, types),
                                        n_steps=n_steps, internal_batch_size=ibs, return_convergence_delta=True)
            per_token = attr.sum(-1)
            gaps.append(_output_gap(run, ids, base_ids, t, extra=(mask, types)))
            targets.append(t)
            deltas.append(delta)
            for r in range(m):
                real = mask[r].bool()
                row_ids = ids[r][real].tolist()
                is_t = np.array([i >= vocab for i in row_ids], dtype=bool)
                words = tok.convert_ids_to_tokens([i if i < vocab else pad for i in row_ids])
                words = [trig_names[i - vocab] if i >= vocab else w for i, w in zip(row_ids, words)]
                tokens.append(list(words))
                scores.append(_np(per_token[r][real]).astype(float))
                flags.append(is_t)
    return TokenAttribution(tokens, scores, flags, _np(torch.cat(targets)), _np(torch.cat(deltas)),
                            _np(torch.cat(gaps)))
