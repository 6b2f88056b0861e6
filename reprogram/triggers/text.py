"""The text trigger: k learned tokens inserted after the first special token.

The trigger turns a tokenizer batch (``input_ids``, ``attention_mask``, maybe
``token_type_ids``) into ``inputs_embeds`` with k extra positions right after the first
token ([CLS] for BERT-like models), the attention mask and token types extended to
match. Position ids are left to the model, which numbers the longer sequence 0..L+k-1,
so they stay consistent. The pooler still reads position 0, [CLS] (the paper's code put
the trigger *before* [CLS], which moved what the pooler reads).

Modes:

* ``"embedding"`` — k free vectors in the embedding space (initialised from the
  embeddings of random vocabulary tokens);
* ``"simplex"`` — each token a convex mix ``softmax(α_j) @ E`` of the vocabulary's
  embeddings E (the paper's "soft" trigger); special tokens are left out of the mix;
* ``"hard"`` — the straight-through argmax of that mix: the forward pass uses a real
  token, the backward pass the gradient of the mix (the paper's "hard" trigger); its
  words (:meth:`to_text`) can be prepended to plain text.

The embedding table is the frozen model's own, attached with :meth:`attach`; it is not
part of the trigger's weights, so a saved trigger is small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from reprogram.errors import InputError

__all__ = ["PromptTrigger", "PROMPT_MODES"]

PROMPT_MODES = ("embedding", "simplex", "hard")


class PromptTrigger(nn.Module):
    """k trigger tokens for a Hugging Face text model; see the module docstring.

    Parameters: ``embeddings`` (the model's input embedding layer, or a model with
    ``get_input_embeddings``; may be attached later), ``n_tokens`` k, ``mode``,
    ``special_ids`` (token ids left out of the simplex: [CLS], [SEP], [PAD]...),
    ``seed`` for the initialisation.
    """

    kind = "text"

    def __init__(self, embeddings=None, n_tokens: int = 5, *, mode: str = "simplex", vocab_size: int | None = None,
                 dim: int | None = None, special_ids: Sequence[int] = (), seed: int = 0):
        super().__init__()
        if mode not in PROMPT_MODES:
            raise InputError(f"prompt mode must be one of {', '.join(PROMPT_MODES)}, got {mode!r}")
        if int(n_tokens) < 1:
            raise InputError(f"n_tokens must be >= 1, got {n_tokens}")
        table = self._table(embeddings) if embeddings is not None else None
        if table is not None:
            vocab_size, dim = table.shape
        if vocab_size is None or dim is None:
            raise InputError("PromptTrigger needs the model's embeddings (or vocab_size and dim)")
        self.n_tokens, self.mode, self.vocab_size, self.dim = int(n_tokens), mode, int(vocab_size), int(dim)
        self.special_ids = sorted({int(i) for i in special_ids if 0 <= int(i) < self.vocab_size})
        self._embeddings: list[nn.Module] = []  # a list, so the frozen table is not a submodule
        gen = torch.Generator().manual_seed(seed)
        if mode == "embedding":
            init = torch.randn(self.n_tokens, self.dim, generator=gen) * 0.02
            if table is not None:
                ids = torch.randint(0, self.vocab_size, (self.n_tokens,), generator=gen)
                init = table[ids].detach().clone().float()
            self.vectors = nn.Parameter(init)
        else:
            self.alpha = nn.Parameter(0.01 * torch.randn(self.n_tokens, self.vocab_size, generator=gen))
        blocked = torch.zeros(self.vocab_size, dtype=torch.bool)
        blocked[self.special_ids] = True
        self.register_buffer("blocked", blocked)
        if embeddings is not None:
            self.attach(embeddings)

    @staticmethod
    def _table(embeddings) -> torch.Tensor:
        layer = embeddings.get_input_embeddings() if hasattr(embeddings, "get_input_embeddings") else embeddings
        weight = getattr(layer, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise InputError("PromptTrigger needs an embedding layer with a (vocab, dim) weight")
        return weight

    def attach(self, embeddings) -> PromptTrigger:
        """Use the embedding layer of ``embeddings`` (a layer or a model); returns self."""
        layer = embeddings.get_input_embeddings() if hasattr(embeddings, "get_input_embeddings") else embeddings
        shape = tuple(self._table(layer).shape)
        if shape != (self.vocab_size, self.dim):
            raise InputError(f"the model's embeddings are {shape}; this trigger was made for "
                             f"({self.vocab_size}, {self.dim})")
        self._embeddings[:] = [layer]
        return self

    @property
    def embeddings(self) -> nn.Module:
        if not self._embeddings:
            raise InputError("attach the model's embeddings first: trigger.attach(model)")
        return self._embeddings[0]

    def mixture(self) -> torch.Tensor:
        """The (k, vocab) token weights of the simplex and hard modes."""
        alpha = self.alpha.masked_fill(self.blocked, float("-inf"))
        p = F.softmax(alpha, dim=1)
        if self.mode == "hard":  # straight-through: a one-hot forward, the mix's gradient backward
            hard = F.one_hot(p.argmax(1), self.vocab_size).to(p.dtype)
            p = hard + p - p.detach()
        return p

    def token_embeddings(self) -> torch.Tensor:
        """The k trigger vectors, (k, dim)."""
        if self.mode == "embedding":
            return self.vectors
        weight = self.embeddings.weight
        return self.mixture().to(weight.dtype) @ weight

    def token_ids(self) -> list[int]:
        """The vocabulary ids of the trigger: the argmax of the mix, or the nearest tokens."""
        with torch.no_grad():
            if self.mode != "embedding":
                return self.alpha.masked_fill(self.blocked, float("-inf")).argmax(1).tolist()
            weight = self.embeddings.weight.float()
            dist = torch.cdist(self.vectors.float(), weight)
            dist[:, self.blocked] = float("inf")
            return dist.argmin(1).tolist()

    def to_text(self, tokenizer) -> str:
        """The trigger as words: exact for ``hard``, the nearest tokens otherwise."""
        return tokenizer.convert_tokens_to_string(tokenizer.convert_ids_to_tokens(self.token_ids()))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not isinstance(batch, Mapping) or "input_ids" not in batch:
            raise InputError("PromptTrigger takes a tokenizer batch with input_ids (a text model's input)")
        ids = batch["input_ids"]
        n = ids.shape[0]
        emb = self.embeddings(ids)
        trig = self.token_embeddings().to(emb.dtype).unsqueeze(0).expand(n, -1, -1)
        out = {"inputs_embeds": torch.cat([emb[:, :1], trig, emb[:, 1:]], dim=1)}
        mask = batch.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
        ones = torch.ones(n, self.n_tokens, dtype=mask.dtype, device=mask.device)
        out["attention_mask"] = torch.cat([mask[:, :1], ones, mask[:, 1:]], dim=1)
        tt = batch.get("token_type_ids")
        if tt is not None:
            zeros = torch.zeros(n, self.n_tokens, dtype=tt.dtype, device=tt.device)
            out["token_type_ids"] = torch.cat([tt[:, :1], zeros, tt[:, 1:]], dim=1)
        return out

    def config(self) -> dict:
        return {"n_tokens": self.n_tokens, "mode": self.mode, "vocab_size": self.vocab_size, "dim": self.dim,
                "special_ids": self.special_ids}
