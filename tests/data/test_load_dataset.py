"""load_dataset over tabular, text and image tables: items, encodings reused, and errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from reprogram.data import (
    FeatureEncoder,
    GroupEncoder,
    ImageDataset,
    TabularDataset,
    TextDataset,
    collate_text,
    image_transform_from_meta,
    load_dataset,
    tokenize_collate,
)
from reprogram.errors import ColumnNotFoundError, GroupError, InputError, MissingValuesError, UnsupportedFileError


def test_tabular_from_csv(tmp_path, people):
    path = tmp_path / "people.csv"
    people.to_csv(path, index=False)
    ds = load_dataset(path, label="y", sensitive="sex")
    assert isinstance(ds, TabularDataset) and len(ds) == 4
    # features: everything but label and sensitive
    assert ds.feature_encoder.columns_ == ["age", "const", "job", "flag", "race"]
    assert ds.classes == ["no", "yes"] and ds.group_names == ["F", "M"]
    np.testing.assert_array_equal(ds.labels, [0, 1, 1, 0])
    np.testing.assert_array_equal(ds.group_ids, [0, 1, 0, 1])
    x, y, g = ds[1]
    assert x.dtype == torch.float32 and x.shape == (ds.n_features,)
    assert y.dtype == torch.int64 and int(y) == 1 and g.dtype == torch.int64 and int(g) == 1
    xb, yb, gb = next(iter(DataLoader(ds, batch_size=3)))
    assert xb.shape == (3, ds.n_features) and yb.tolist() == [0, 1, 1] and gb.tolist() == [0, 1, 0]


def test_named_features_and_encoder_reuse_on_new_data(people):
    train = load_dataset(people, label="y", sensitive=["sex"], features=["age", "job"])
    assert train.feature_encoder.feature_names_out_ == ["age", "job=chef", "job=clerk", "job=pilot"]
    new = pd.DataFrame(
        {"row": [7, 8], "age": [35, 45], "job": ["chef", "diver"], "sex": ["M", "F"], "y": ["yes", "no"]}
    )
    # JSON forms, as a model sidecar stores them
    test = load_dataset(
        new,
        label="y",
        sensitive="sex",
        feature_encoder=json.loads(json.dumps(train.feature_encoder.to_dict())),
        label_classes=train.classes,
        group_encoder=json.loads(json.dumps(train.groups.to_dict())),
    )
    assert test.n_features == 4 and test.classes == train.classes and test.group_names == train.group_names
    np.testing.assert_allclose(test.features[:, 0], [0.0, 10 / np.sqrt(125.0)], rtol=1e-6)
    np.testing.assert_array_equal(test.features[:, 1:], [[1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(test.labels, [1, 0])
    np.testing.assert_array_equal(test.group_ids, [1, 0])
    with pytest.raises(GroupError, match="X"):
        load_dataset(new.assign(sex=["X", "F"]), label="y", sensitive="sex", group_encoder=train.groups)
    with pytest.raises(InputError, match="not classes of the model"):
        load_dataset(new.assign(y=["yes", "perhaps"]), label="y", sensitive="sex", label_classes=train.classes)


def test_intersectional_groups(people):
    ds = load_dataset(people, label="y", sensitive=["sex", "race"])
    assert ds.group_names == ["sex=F|race=A", "sex=F|race=B", "sex=M|race=A", "sex=M|race=B"]
    np.testing.assert_array_equal(ds.group_ids, [0, 2, 1, 3])
    assert ds.groups.columns_ == ["sex", "race"]
    assert "race" not in ds.feature_encoder.columns_


def test_missing_column_is_named_and_present_ones_listed(tmp_path, people):
    path = tmp_path / "p.csv"
    people.to_csv(path, index=False)
    with pytest.raises(ColumnNotFoundError) as e:
        load_dataset(path, label="y", sensitive=["sex", "gender"])
    msg = str(e.value)
    assert "sensitive column 'gender' not found" in msg and str(path) in msg
    assert "columns present: age, const, job, flag, sex, race, y" in msg
    with pytest.raises(ColumnNotFoundError, match="label column 'target'"):
        load_dataset(people, label="target", sensitive="sex")
    with pytest.raises(ColumnNotFoundError, match="feature column 'height'"):
        load_dataset(people, label="y", sensitive="sex", features=["age", "height"])
    with pytest.raises(ColumnNotFoundError, match="text column 'review'"):
        load_dataset(people, label="y", sensitive="sex", text="review")


def test_nan_in_label_or_sensitive_says_how_many_rows(people):
    with pytest.raises(MissingValuesError, match=r"label column 'y'.* 2 missing value\(s\).* of 4 rows"):
        load_dataset(people.assign(y=["no", None, np.nan, "yes"]), label="y", sensitive="sex")
    with pytest.raises(MissingValuesError, match=r"'race'.* 1 missing value\(s\)"):
        load_dataset(people.assign(race=["A", None, "B", "B"]), label="y", sensitive=["sex", "race"])


def test_bad_arguments_are_input_errors(tmp_path, people):
    with pytest.raises(InputError, match="not both"):
        load_dataset(people, label="y", sensitive="sex", text="job", image="job")
    with pytest.raises(InputError, match="both as the label and as a sensitive"):
        load_dataset(people, label="y", sensitive=["y"])
    with pytest.raises(InputError, match="more than once"):
        load_dataset(people, label="y", sensitive=["sex", "sex"])
    with pytest.raises(InputError, match="no rows"):
        load_dataset(people.iloc[:0], label="y", sensitive="sex")
    with pytest.raises(InputError, match="no feature columns"):
        load_dataset(people[["y", "sex"]], label="y", sensitive="sex")
    with pytest.raises(InputError, match="used more than once"):
        load_dataset(pd.concat([people, people[["age"]]], axis=1), label="y", sensitive="sex")
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(UnsupportedFileError, match="p.json"):
        load_dataset(tmp_path / "p.json", label="y", sensitive="sex")


# ---- text ---------------------------------------------------------------------------


@pytest.fixture
def reviews() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": ["good movie", "bad movie", "good good good movie", "bad"],
            "label": ["pos", "neg", "pos", "neg"],
            "lang": ["en", "de", "de", "en"],
        }
    )


def test_text_dataset_and_plain_collate(reviews):
    ds = load_dataset(reviews, label="label", sensitive="lang", text="text")
    assert isinstance(ds, TextDataset)
    x, y, g = ds[2]
    assert x == "good good good movie" and int(y) == 1 and int(g) == 0
    texts, yb, gb = next(iter(DataLoader(ds, batch_size=4, collate_fn=collate_text)))
    assert texts == list(reviews["text"]) and yb.tolist() == [1, 0, 1, 0] and gb.tolist() == [1, 0, 0, 1]
    with pytest.raises(MissingValuesError, match="text column 'text'.* 1 missing"):
        load_dataset(reviews.assign(text=["a", None, "b", "c"]), label="label", sensitive="lang", text="text")


def _tiny_bert_tokenizer(tmp_path):
    transformers = pytest.importorskip("transformers")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    try:  # transformers 5 takes the vocabulary as `vocab`, 4.x as `vocab_file`
        tok = transformers.BertTokenizerFast(vocab=str(path))
    except TypeError:
        tok = transformers.BertTokenizerFast(vocab_file=str(path))
    if len(tok.get_vocab()) != len(vocab):
        tok = transformers.BertTokenizerFast(vocab_file=str(path))
    assert tok.convert_tokens_to_ids("movie") == 7
    return tok


def test_tokenize_collate_with_a_real_tokenizer(tmp_path, reviews):
    tok = _tiny_bert_tokenizer(tmp_path)
    ds = load_dataset(reviews, label="label", sensitive="lang", text="text")
    batch, y, g = next(iter(DataLoader(ds, batch_size=4, collate_fn=tokenize_collate(tok, max_length=5))))
    assert set(batch) == {"input_ids", "attention_mask"}
    # [CLS] good movie [SEP] [PAD] / ... / [CLS] good good good [SEP] (truncated) / [CLS] bad [SEP] [PAD] [PAD]
    assert batch["input_ids"].tolist() == [
        [2, 5, 7, 3, 0],
        [2, 6, 7, 3, 0],
        [2, 5, 5, 5, 3],
        [2, 6, 3, 0, 0],
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert y.tolist() == [1, 0, 1, 0] and g.dtype == torch.int64


# ---- images -------------------------------------------------------------------------


@pytest.fixture
def image_table(tmp_path):
    """Three 2x3 RGB PNGs with known pixels, in a sub-folder, and their manifest."""
    rng = np.random.default_rng(1)
    (tmp_path / "imgs").mkdir()
    pixels = rng.integers(0, 256, size=(3, 2, 3, 3), dtype=np.uint8)
    for i, a in enumerate(pixels):
        Image.fromarray(a).save(tmp_path / "imgs" / f"{i}.png")
    df = pd.DataFrame({"file": [f"imgs/{i}.png" for i in range(3)], "y": [1, 0, 1], "site": ["a", "b", "b"]})
    df.to_csv(tmp_path / "manifest.csv", index=False)
    return tmp_path / "manifest.csv", pixels


def test_image_pixels_after_normalization_are_exact(image_table):
    path, pixels = image_table
    meta = {"image": {"size": [2, 3], "mean": [0.5, 0.25, 0.0], "std": [0.5, 2.0, 1.0], "channels": 3}}
    ds = load_dataset(path, label="y", sensitive="site", image="file", image_meta=meta)
    assert isinstance(ds, ImageDataset)
    x, y, g = ds[1]
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32 and int(y) == 0 and int(g) == 1
    scaled = pixels[1].astype(np.float32).transpose(2, 0, 1) / np.float32(255)
    expected = (scaled - np.array([0.5, 0.25, 0.0], np.float32)[:, None, None]) / np.array(
        [0.5, 2.0, 1.0], np.float32
    )[:, None, None]
    np.testing.assert_array_equal(x.numpy(), expected)
    xb, yb, gb = next(iter(DataLoader(ds, batch_size=3)))
    assert xb.shape == (3, 3, 2, 3) and yb.tolist() == [1, 0, 1] and gb.tolist() == [0, 1, 1]


def test_image_grey_and_resize(tmp_path):
    Image.fromarray(np.full((5, 7, 3), 100, np.uint8)).save(tmp_path / "g.png")
    df = pd.DataFrame({"p": ["g.png"], "y": [0], "s": ["a"]})
    ds = load_dataset(df, label="y", sensitive="s", image="p", base_dir=tmp_path,
                      image_meta={"size": 4, "channels": 1, "mean": [0.0], "std": [1.0]})  # fmt: skip
    x, _, _ = ds[0]
    assert x.shape == (1, 4, 4)
    np.testing.assert_allclose(x.numpy(), np.float32(100) / np.float32(255), rtol=0, atol=1e-7)


def test_image_transform_defaults():
    t = image_transform_from_meta({"format": 1})
    assert t.size == (224, 224) and t.channels == 3 and t.mean == (0.485, 0.456, 0.406)
    assert image_transform_from_meta(None) == t
    assert image_transform_from_meta({"image": t.to_meta()}) == t
    grey = image_transform_from_meta({"image": {"channels": 1, "size": [32, 16]}})
    assert grey.size == (32, 16) and len(grey.mean) == 1
    with pytest.raises(InputError, match="channels"):
        image_transform_from_meta({"channels": 2})
    with pytest.raises(InputError, match="std"):
        image_transform_from_meta({"std": [0, 1, 1]})


def test_missing_image_file_is_named_with_its_row(image_table):
    path, _ = image_table
    (path.parent / "imgs" / "2.png").unlink()
    with pytest.raises(InputError, match=r"2\.png.*row 2 of .*manifest\.csv.*not found; 1 of 3"):
        load_dataset(path, label="y", sensitive="site", image="file")
    ds = load_dataset(path, label="y", sensitive="site", image="file", check_files=False)
    ds[0]
    with pytest.raises(InputError, match=r"2\.png.*row 2 of .*manifest\.csv.*not found"):
        ds[2]


def test_unreadable_image_is_named_with_its_row(image_table):
    path, _ = image_table
    (path.parent / "imgs" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\n but then garbage")
    ds = load_dataset(path, label="y", sensitive="site", image="file")
    with pytest.raises(InputError, match=r"cannot read image file .*0\.png.*row 0 of"):
        ds[0]


def test_group_encoder_is_the_shared_one(people):
    ds = load_dataset(people, label="y", sensitive="sex")
    assert isinstance(ds.groups, GroupEncoder) and isinstance(ds.feature_encoder, FeatureEncoder)
    np.testing.assert_array_equal(ds.groups.transform(people[["sex"]]), ds.group_ids)
