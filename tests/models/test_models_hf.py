"""Hugging Face sequence-classification folders: tiny BERT built offline."""

from __future__ import annotations

import pytest
import torch

from reprogram.errors import CheckpointError
from reprogram.models import load_frozen, weights_fingerprint
from reprogram.models.loading import prepare_transformers
from tiny_models import tiny_bert_folder
from tiny_models import tiny_config as _tiny_config

@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    d, model = tiny_bert_folder(tmp_path_factory.mktemp("hf") / "tiny-bert")
    return {"dir": d, "model": model}


def test_hf_folder_gives_the_original_logits(hf_folder):
    fm = load_frozen(hf_folder["dir"])
    assert (fm.format, fm.input_kind, fm.num_classes, fm.classes) == ("huggingface", "text", 2, ["ok", "toxic"])
    assert fm.hf_model is fm.model
    assert not any(m.training for m in fm.modules())
    assert all(not p.requires_grad for p in fm.parameters())
    fm.train()
    assert not fm.hf_model.training
    ids = torch.tensor([[2, 5, 7, 8, 9, 3], [2, 10, 3, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        expected = hf_folder["model"](input_ids=ids, attention_mask=mask).logits
        torch.testing.assert_close(fm(ids, mask), expected)
        torch.testing.assert_close(fm(input_ids=ids, attention_mask=mask), expected)
        # the path a soft-prompt trigger takes: embeddings in, not token ids
        embeds = fm.get_input_embeddings()(ids)
        torch.testing.assert_close(fm(inputs_embeds=embeds, attention_mask=mask), expected)
    assert fm.fingerprint == weights_fingerprint(hf_folder["model"])


def test_hf_tokenizer_is_loaded_lazily_from_the_folder(hf_folder):
    fm = load_frozen(hf_folder["dir"])
    assert fm._tokenizer_loaded is False
    tok = fm.tokenizer
    assert tok is fm.tokenizer  # cached
    batch = tok(["the movie was good", "bad"], padding=True, return_tensors="pt")
    assert batch["input_ids"][0].tolist() == [2, 5, 7, 8, 9, 3]
    with torch.no_grad():
        torch.testing.assert_close(fm(batch), fm(batch["input_ids"], batch["attention_mask"], token_type_ids=batch["token_type_ids"]))


def test_hf_folder_without_a_classifier_head_is_refused(tmp_path):
    transformers = prepare_transformers()
    d = tmp_path / "bare-bert"
    transformers.BertModel(_tiny_config(transformers)).save_pretrained(d)
    with pytest.raises(CheckpointError) as e:
        load_frozen(d)
    msg = str(e.value)
    assert "\n" not in msg and "classifier" in msg and str(d) in msg


def test_reprogram_json_inside_the_folder_is_its_sidecar(hf_folder, tmp_path):
    import shutil

    from reprogram.models import write_sidecar

    d = tmp_path / "with-sidecar"
    shutil.copytree(hf_folder["dir"], d)
    assert write_sidecar(d, {"classes": ["fine", "harmful"], "groups": {"columns": ["dialect"]}}) == d / "reprogram.json"
    fm = load_frozen(d)
    assert fm.classes == ["fine", "harmful"] and fm.meta["groups"] == {"columns": ["dialect"]}
    assert fm.input_kind == "text"
