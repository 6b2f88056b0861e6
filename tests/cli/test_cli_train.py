"""`reprogram train` and `reprogram pareto`, run as a user would."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cli_helpers import invoke
from reprogram.data import load_dataset
from reprogram.models import load_frozen, read_sidecar
from toy_tables import group_leaning_table


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """A credit-like table whose label leans on the group (strings in features and groups)."""
    base, rng = group_leaning_table(900, 0, shift=1.2, bias=-0.6)
    df = pd.DataFrame({"x1": base.x1, "x2": base.x2, "kind": rng.choice(["p", "q"], len(base)), "group": base.group,
                       "y": np.where(base.y == 1, "good", "bad")})
    path = tmp_path_factory.mktemp("tab") / "credit.csv"
    df.to_csv(path, index=False)
    return path, df


BASE = ["--label", "y", "--sensitive", "group", "--epochs", "5", "--lr", "0.01", "--hidden", "16", "--seed", "0"]


def test_train_saves_a_frozen_model_that_reproduces_the_printed_table(table, tmp_path, capsys):
    path, df = table
    out = tmp_path / "m.pt"
    code, text = invoke(["train", "--data", path, *BASE, "--method", "regularizer", "--eta", "2", "--out", out], capsys)
    assert code == 0, text
    assert "demographic_parity_difference" in text and f"wrote {out}" in text
    model = load_frozen(out)
    meta = read_sidecar(out)
    assert model.input_kind == "tabular" and meta["method"] == "regularizer"
    assert meta["method_options"] == {"eta": 2.0} and meta["classes"] == ["bad", "good"]
    # the saved model scores the raw table through the saved encoding
    ds = load_dataset(df, label="y", sensitive="group", feature_encoder=meta["features"])
    with torch.no_grad():
        proba = torch.softmax(model(ds.tensors[0]), 1)
    assert proba.shape == (len(df), 2) and torch.isfinite(proba).all()
    assert (proba.argmax(1).numpy() == ds.labels).mean() > 0.7
    # the printed validation accuracy is the saved model's, on the same stratified split
    from reprogram.data import load_train_val

    _, val = load_train_val(path, label="y", sensitive=["group"], seed=0)
    with torch.no_grad():
        val_acc = (model(val.tensors[0]).argmax(1).numpy() == val.labels).mean()
    printed = next(ln for ln in text.splitlines() if ln.strip("│ ").startswith("accuracy "))
    assert f"{val_acc:.4f}" in printed


def test_train_reductions_saves_the_mixture(table, tmp_path, capsys):
    path, df = table
    out = tmp_path / "red.pt"
    args = ["train", "--data", path, *BASE, "--method", "reductions", "--constraint", "dp",
            "--difference-bound", "0.02", "--out", out]
    code, text = invoke(args, capsys)
    assert code == 0, text
    meta = read_sidecar(out)
    assert meta["method_options"] == {"constraints": "dp", "difference_bound": 0.02}
    assert load_frozen(out).input_kind == "tabular"


def test_train_on_an_image_table(tmp_path, capsys):
    from reprogram.data import spurious_digits_table

    csv = spurious_digits_table(tmp_path / "digits", "val", size=8)
    out = tmp_path / "cnn.pt"
    code, text = invoke(["train", "--data", csv, "--image", "path", "--label", "label", "--sensitive", "group",
                         "--arch", "cnn", "--image-size", "8", "--epochs", "1", "--method", "groupdro",
                         "--adjust", "1", "--out", out], capsys)
    assert code == 0, text
    assert read_sidecar(out)["method_options"] == {"adjust": 1.0}
    model = load_frozen(out)
    assert model.input_kind == "image" and read_sidecar(out)["image"]["size"] == [8, 8]
    assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 2)
    # a trigger sweep without --val splits the table: its image paths still resolve from
    # the table's folder, not from the working directory
    code, text = invoke(["pareto", "--data", csv, "--image", "path", "--label", "label", "--sensitive", "group",
                         "--model", out, "--trigger", "border", "--lambdas", "1", "--epochs", "1",
                         "--out", tmp_path / "sweep"], capsys)
    assert code == 0, text
    assert (tmp_path / "sweep" / "points.json").is_file()


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--method", "fas", "--eta", "1"], ["fas", "eta"]),
        (["--method", "magic"], ["unknown --method", "magic"]),
        (["--method", "reductions", "--eta", "1"], ["reductions", "--eta"]),
        (["--method", "regularizer", "--penalty", "odd"], ["penalty", "odd"]),
        (["--hidden", "a,b"], ["--hidden"]),
        (["--arch", "resnet18"], ["resnet18", "tabular"]),
    ],
)
def test_bad_options_are_one_line_and_exit_2(table, tmp_path, capsys, extra, words):
    path, _ = table
    out = tmp_path / "x.pt"
    code, text = invoke(["train", "--data", path, *BASE, *extra, "--out", out], capsys)
    assert code == 2
    err = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and all(w in err[0] for w in words), text
    assert not out.exists()  # nothing half-written


def test_missing_column_names_it(table, tmp_path, capsys):
    path, _ = table
    code, text = invoke(["train", "--data", path, "--label", "nope", "--sensitive", "group", "--out",
                         tmp_path / "x.pt"], capsys)
    assert code == 2 and "'nope' not found" in text and "x1" in text


def test_pareto_writes_points_and_append_shares_one_plot(table, tmp_path, capsys):
    path, _ = table
    out = tmp_path / "sweep"
    code, text = invoke(["pareto", "--data", path, *BASE, "--method", "lagrangian", "--values", "0.3", "0.02",
                         "--out", out], capsys)
    assert code == 0, text
    rows = json.loads((out / "points.json").read_text())
    assert [(r["method"], r["value"]) for r in rows] == [("erm", None), ("lagrangian", 0.3), ("lagrangian", 0.02)]
    assert any(r["pareto"] for r in rows) and all("val" in r["reports"] for r in rows)
    code, text = invoke(["pareto", "--data", path, *BASE, "--method", "reweight", "--values", "1", "--no-erm",
                         "--append", "--out", out], capsys)
    assert code == 0, text
    methods = [r["method"] for r in json.loads((out / "points.json").read_text())]
    assert methods == ["erm", "lagrangian", "lagrangian", "reweight"]
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    code, text = invoke(["pareto", "--data", path, *BASE, "--method", "regularizer", "--out", out], capsys)
    assert code == 2 and "--values" in text


def test_train_a_text_classifier_head_on_a_hugging_face_encoder(tmp_path, capsys):
    from tiny_models import tiny_bert_folder

    hf, _ = tiny_bert_folder(tmp_path / "tiny-bert")
    rng = np.random.default_rng(0)
    words = np.array("the a movie was good bad not very is".split())
    n = 120
    y = rng.integers(0, 2, n)
    texts = [" ".join(rng.choice(words, 5)) + (" good" if t else " bad") for t in y]
    csv = tmp_path / "reviews.csv"
    pd.DataFrame({"review": texts, "label": np.where(y == 1, "pos", "neg"),
                  "dialect": rng.choice(["d1", "d2"], n)}).to_csv(csv, index=False)
    out = tmp_path / "clf"
    code, text = invoke(["train", "--data", csv, "--text", "review", "--label", "label", "--sensitive", "dialect",
                         "--arch", hf, "--freeze-encoder", "--epochs", "2", "--batch-size", "32", "--lr", "0.01",
                         "--max-length", "16", "--out", out], capsys)
    assert code == 0, text
    model = load_frozen(out)
    assert model.input_kind == "text" and read_sidecar(out)["classes"] == ["neg", "pos"]
    # the encoder stayed as it was: only the head trained
    from reprogram.models.loading import prepare_transformers

    original = prepare_transformers().AutoModel.from_pretrained(hf)
    trained = model.module if hasattr(model, "module") else model
    enc = dict(trained.named_parameters())
    name, p0 = next((k, v) for k, v in original.named_parameters() if "embeddings.word_embeddings" in k)
    match = [v for k, v in enc.items() if k.endswith(name)]
    assert match and torch.equal(match[0], p0)
