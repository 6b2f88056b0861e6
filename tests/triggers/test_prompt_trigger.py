"""PromptTrigger on a tiny BERT built offline: insertion after [CLS], masks, the three modes."""

import numpy as np
import pytest
import torch

from reprogram.errors import InputError
from reprogram.models import load_frozen
from reprogram.triggers import PromptTrigger, TriggerFitter, load_trigger, make_trigger, save_trigger


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    from tiny_models import tiny_bert_folder

    d, _ = tiny_bert_folder(tmp_path_factory.mktemp("bert") / "tiny")
    return load_frozen(d)


def _batch(model):
    return model.tokenizer(["the movie was good", "bad"], padding=True, return_tensors="pt")


@pytest.mark.parametrize("mode", ["embedding", "simplex", "hard"])
def test_tokens_go_right_after_cls_with_masks_extended(bert, mode):
    trig = make_trigger("prompt", bert, None, size=3, mode=mode)
    batch = _batch(bert)
    out = trig(batch)
    emb = bert.get_input_embeddings()(batch["input_ids"])
    n, length = batch["input_ids"].shape
    assert out["inputs_embeds"].shape == (n, length + 3, emb.shape[2])
    assert torch.equal(out["inputs_embeds"][:, 0], emb[:, 0])  # [CLS] stays first, for the pooler
    assert torch.equal(out["inputs_embeds"][:, 4:], emb[:, 1:])
    assert out["attention_mask"][:, 1:4].eq(1).all()
    assert torch.equal(out["attention_mask"][:, 4:], batch["attention_mask"][:, 1:])
    assert out["token_type_ids"].shape == (n, length + 3)
    logits = bert(**out)
    assert logits.shape == (2, 2) and torch.isfinite(logits).all()
    words = trig.to_text(bert.tokenizer).split()
    assert 1 <= len(words) <= 3 and not {"[CLS]", "[SEP]", "[PAD]"} & set(words)


def test_hard_mode_uses_real_token_embeddings_and_passes_the_mix_gradient(bert):
    trig = make_trigger("prompt", bert, None, size=2, mode="hard")
    table = bert.get_input_embeddings().weight
    vecs = trig.token_embeddings()
    assert torch.allclose(vecs, table[trig.token_ids()])
    vecs.sum().backward()
    assert trig.alpha.grad is not None and trig.alpha.grad.abs().sum() > 0
    # plain text made of the trigger's words is read as the same tokens
    ids = bert.tokenizer(trig.to_text(bert.tokenizer), add_special_tokens=False)["input_ids"]
    assert ids == trig.token_ids()


def test_fit_save_load_on_text(bert, tmp_path):
    from reprogram.data import TextDataset, tokenize_collate
    from reprogram.data.groups import GroupEncoder

    rng = np.random.default_rng(0)
    words = "the a movie was good bad not very is".split()
    texts = [" ".join(rng.choice(words, 4)) for _ in range(60)]
    y, g = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    ds = TextDataset(np.array(texts, dtype=object), y, g, groups=GroupEncoder().fit(np.array(["d1", "d2"])),
                     classes=["ok", "toxic"])
    trig = make_trigger("prompt", bert, ds, size=2, mode="simplex")
    fp = bert.fingerprint
    fitter = TriggerFitter(bert, trig, "eo", 1.0, epochs=2, batch_size=16, progress=False,
                           collate_fn=tokenize_collate(bert.tokenizer)).fit(ds, ds)
    assert len(fitter.history_) == 2 and bert.fingerprint == fp
    path = save_trigger(fitter.trigger, tmp_path / "prompt", model=bert, criterion="eo")
    loaded, meta = load_trigger(path, bert)
    assert meta["config"]["mode"] == "simplex" and meta["input_kind"] == "text"
    batch = _batch(bert)
    assert torch.equal(loaded(batch)["inputs_embeds"], fitter.trigger(batch)["inputs_embeds"])
    assert (tmp_path / "prompt" / "weights.safetensors").stat().st_size < 20_000  # no copy of the embedding table


def test_prompt_trigger_refuses_what_it_cannot_read(bert):
    trig = PromptTrigger(bert, 2)
    with pytest.raises(InputError, match="input_ids"):
        trig(torch.zeros(2, 3))
    with pytest.raises(InputError, match="attach"):
        PromptTrigger(vocab_size=10, dim=4).token_embeddings()
    with pytest.raises(InputError, match="mode"):
        PromptTrigger(bert, 2, mode="soft")
