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
