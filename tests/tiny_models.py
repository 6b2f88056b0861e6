"""Tiny Hugging Face models built offline, shared by the tests (nothing is downloaded).

Importable as ``tiny_models`` from any test: ``tests/conftest.py`` puts this folder on
``sys.path``, as pytest does for every folder holding a conftest.
"""

from __future__ import annotations

from pathlib import Path

import torch

from reprogram.models.loading import prepare_transformers

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"the a movie was good bad not very is".split()]


def tiny_config(transformers, **kw):
    """A one-layer, 16-wide BERT configuration over :data:`VOCAB`."""
    return transformers.BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        **kw,
    )


def tiny_bert_folder(d: Path):
    """Save a tiny BERT sequence classifier (labels ok/toxic) and its tokenizer in ``d``."""
    transformers = prepare_transformers()
    torch.manual_seed(0)
    config = tiny_config(transformers, num_labels=2, id2label={0: "ok", 1: "toxic"}, label2id={"ok": 0, "toxic": 1})
    model = transformers.BertForSequenceClassification(config).eval()
    model.save_pretrained(d)
    vocab = d.parent / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    # Positional: the vocab file argument is called vocab_file in transformers 4, vocab in 5.
    transformers.BertTokenizerFast(str(vocab)).save_pretrained(d)
    return d, model


def fit_small(objective, x, y, g, *, hidden: int = 16, epochs: int = 30, batch: int = 500, lr: float = 0.05,
              seed: int = 0):
    """Train a small MLP (``hidden=0``: linear) on in-memory tensors with ``objective``.

    A minimal loop (Adam over the model and the objective's own parameter groups,
    shuffled mini-batches passing their dataset indices), so a loss's tests exercise the
    loss alone, apart from the Trainer.
    """
    from torch import nn

    torch.manual_seed(seed)
    n_in, n_out = x.shape[1], int(y.max()) + 1
    model = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out)) if hidden else nn.Linear(n_in, n_out)
    opt = torch.optim.Adam([{"params": model.parameters(), "lr": lr}] + objective.param_groups(lr))
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=gen).split(batch):
            loss = objective(model(x[idx]), y[idx], g[idx], index=idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            objective.after_step()
    return model
