"""The frozen model every other part of `reprogram` works against.

A :class:`FrozenModel` wraps whatever :func:`~reprogram.models.load_frozen` read (a
TorchScript module, the module of an exported program, an eager ``nn.Module``, a Hugging
Face classifier) behind one contract: eval mode for good, no parameter that wants a
gradient, and ``forward`` returning a logits tensor. Gradients still flow through it to
its *inputs*, which is what a trigger learns from.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reprogram.errors import CheckpointError, InputError, first_line
from reprogram.models.fingerprint import weights_fingerprint
from reprogram.models.sidecar import INPUT_KINDS

__all__ = ["FrozenModel", "as_logits", "freeze", "is_hf_model", "infer_input_kind"]

FORMATS = ("torchscript", "export", "state_dict", "huggingface", "pickle", "module")

_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def _set_eval(module: nn.Module) -> None:
    if "train" in vars(module):
        # The module of a torch.export program has train()/eval() replaced on the
        # instance by methods that raise: its mode was fixed when it was exported. Flag
        # it anyway and reach the children below it.
        module.training = False
        for child in module.children():
            _set_eval(child)
    else:
        module.train(False)


def freeze(module: nn.Module) -> nn.Module:
    """Put ``module`` in eval mode, turn off ``requires_grad`` on every parameter, drop stale ``.grad``.

    Returns the same module, changed in place. Works on TorchScript modules and on the
    modules of exported programs, whose ``eval()`` raises (their mode is already fixed).
    """
    _set_eval(module)
    for p in module.parameters():
        p.requires_grad_(False)
        p.grad = None  # gradients left from training mean nothing for a frozen model
    return module


def is_hf_model(module: nn.Module) -> bool:
    """Whether ``module`` is a Hugging Face ``PreTrainedModel`` (told without importing transformers)."""
    return any(c.__name__ == "PreTrainedModel" and c.__module__.startswith("transformers.") for c in type(module).__mro__)


def infer_input_kind(module: nn.Module) -> str:
    """Guess what ``module`` reads: "text" (Hugging Face), "image" or "tabular".

    A model whose first weight of two or more dimensions is four-dimensional starts with
    a 2-D convolution and reads images; anything else is taken as tabular. Parameters are
    registered in the order layers are created, which is, for the models this meets, the
    order they run. The weight's shape is used rather than the layer's class because the
    modules of exported programs no longer have layer classes.
    """
    if is_hf_model(module):
        return "text"
    for _, p in module.named_parameters():
        if p.dim() >= 2:
            return "image" if p.dim() == 4 else "tabular"
    return "tabular"


def as_logits(out: Any) -> torch.Tensor:
    """The logits tensor in a model's output: a tensor, ``.logits``, ``["logits"]`` or the first of a tuple."""
    if isinstance(out, torch.Tensor):
        return out
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    # Models with auxiliary heads (torchvision's Inception, GoogLeNet) return the main
    # logits first.
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise CheckpointError(f"the model returned {type(out).__name__}, not a tensor of logits")


class FrozenModel(nn.Module):
    """A trained model in eval mode with frozen weights, returning logits.

    Usually made by :func:`~reprogram.models.load_frozen`; wrapping an in-memory module
    directly (``FrozenModel(net, input_kind="tabular")``) gives ``format="module"``.

    ``train()`` does not leave eval mode: a frozen model must not switch dropout or
    batch-norm statistics on, even when a trigger module that contains it is put in
    training mode, since its outputs would then be noisy and its buffers would drift.
    ``requires_grad_(True)`` is refused for the same reason.

    Attributes: ``model`` (the wrapped module), ``fingerprint`` (hex SHA-256 of the
    weights, see :func:`~reprogram.models.weights_fingerprint`; computed on first use
    and again after a dtype or device move or ``load_state_dict``),
    ``input_kind`` ("image", "text" or "tabular"), ``meta`` (the sidecar, ``{}`` if
    none), ``classes`` (class names or None), ``num_classes`` (int or None), ``source``
    (the path loaded, or None), ``format`` ("torchscript", "export", "state_dict",
    "huggingface", "pickle" or "module"), ``arch`` (the architecture a state_dict was
    loaded into, or None). Text models also have ``hf_model``, ``tokenizer`` and
    :meth:`get_input_embeddings`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        format: str = "module",
        source: str | Path | None = None,
        input_kind: str | None = None,
        meta: Mapping[str, Any] | None = None,
        classes: list | None = None,
        num_classes: int | None = None,
        arch: str | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise InputError(f"FrozenModel wraps an nn.Module, got {type(model).__name__}")
        if format not in FORMATS:
            raise InputError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
        if input_kind is None:
            input_kind = infer_input_kind(model)
        if input_kind not in INPUT_KINDS:
            raise InputError(f"input_kind must be one of {', '.join(INPUT_KINDS)}, got {input_kind!r}")
        if classes is not None:
            classes = list(classes)
            if num_classes is not None and num_classes != len(classes):
                raise InputError(f"num_classes={num_classes} but {len(classes)} class names are given")
            num_classes = len(classes)
        self.model = freeze(model)
        self.training = False
        self.format = format
        self.source = Path(source) if source is not None else None
        self.input_kind = input_kind
        self.meta = dict(meta or {})
        self.classes = classes
        self.num_classes = None if num_classes is None else int(num_classes)
        self.arch = arch
        self._is_hf = is_hf_model(model)
        self._fingerprint: str | None = None
        self._tokenizer: Any = None
        self._tokenizer_loaded = False

    @property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the weights; the same weights give the same value in any format."""
        if self._fingerprint is None:
            self._fingerprint = weights_fingerprint(self.model)
        return self._fingerprint

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> FrozenModel:
        # .to(), .half(), .cuda()... go through here; a dtype change changes the weights.
        self._fingerprint = None
        return super()._apply(fn, *args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        """As ``nn.Module.load_state_dict``; the fingerprint is recomputed afterwards."""
        self._fingerprint = None
        return super().load_state_dict(state_dict, *args, **kwargs)

    @property
    def hf_model(self) -> nn.Module | None:
        """The wrapped Hugging Face model, or None for other models."""
        return self.model if self._is_hf else None

    @property
    def tokenizer(self) -> Any:
        """The tokenizer saved in a Hugging Face folder (loaded on first use), or None."""
        if not self._tokenizer_loaded:
            self._tokenizer = self._load_tokenizer()
            self._tokenizer_loaded = True
        return self._tokenizer

    def _load_tokenizer(self) -> Any:
        folder = self.source
        if not self._is_hf or folder is None or not folder.is_dir():
            return None
        if not any((folder / name).is_file() for name in _TOKENIZER_FILES):
            return None
        from reprogram.models.loading import prepare_transformers

        transformers = prepare_transformers()
        try:
            return transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
        except Exception as e:  # tokenizers raise anything from OSError to their own types
            raise CheckpointError(f"cannot load the tokenizer in {folder}: {first_line(e)}") from None

    def get_input_embeddings(self) -> nn.Module:
        """The token embedding layer of a text model (soft-prompt triggers read it)."""
        if not self._is_hf:
            raise InputError(f"only text (Hugging Face) models have input embeddings; this model reads {self.input_kind}")
        return self.model.get_input_embeddings()

    def train(self, mode: bool = True) -> FrozenModel:
        """Stay in eval mode whatever ``mode`` is (see the class docstring); return self."""
        self.training = False
        _set_eval(self.model)
        return self

    def requires_grad_(self, requires_grad: bool = True) -> FrozenModel:
        """Allow only ``False``: a frozen model's weights never take gradients."""
        if requires_grad:
            raise InputError("a FrozenModel's weights stay frozen; learn a trigger instead of unfreezing the model")
        return self

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Run the model and return its logits.

        Text models take ``(input_ids=None, attention_mask=None, inputs_embeds=None,
        **kwargs)``, or a tokenizer's output as the one positional argument; other models
        take what the wrapped module takes.
        """
        if self._is_hf:
            return self._forward_hf(*args, **kwargs)
        return as_logits(self.model(*args, **kwargs))

    def _forward_hf(
        self,
        input_ids: Any = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if isinstance(input_ids, Mapping):  # model(tokenizer(texts, return_tensors="pt"))
            kwargs = {**input_ids, **kwargs}
            input_ids = kwargs.pop("input_ids", None)
            attention_mask = kwargs.pop("attention_mask", attention_mask)
            inputs_embeds = kwargs.pop("inputs_embeds", inputs_embeds)
        kwargs["return_dict"] = True  # a ModelOutput with .logits, whatever the config says
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs)
        return as_logits(out)

    def extra_repr(self) -> str:
        parts = [f"format={self.format!r}", f"input_kind={self.input_kind!r}"]
        if self.source is not None:
            parts.append(f"source={str(self.source)!r}")
        if self.num_classes is not None:
            parts.append(f"num_classes={self.num_classes}")
        if self._fingerprint is not None:
            parts.append(f"fingerprint={self._fingerprint[:12]}...")
        return ", ".join(parts)
