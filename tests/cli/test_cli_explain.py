"""`reprogram explain` on models made the way users make them: image, tabular and text."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from cli_helpers import invoke


def images_in(html: str) -> int:
    return html.count("<img ")


def assert_self_contained(html: str) -> None:
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "<script" not in html.lower() and "<link" not in html.lower()
    assert not re.search(r"https?://|(?:src|href)\s*=\s*[\"']?//|url\(|@import", html)
    srcs = re.findall(r'src="([^"]*)"', html)
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert 'id="fairness-by-group"' in html and 'id="fairness-overall"' in html


def one_error_line(code: int, text: str, *words: str) -> None:
    err = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(err) == 1, text
    assert all(w in err[0] for w in words), err[0]
    assert "Traceback" not in text


@pytest.fixture(scope="module")
def tabular(tmp_path_factory):
    """A model trained by `reprogram train`, a feature trigger by `reprogram fit`, a test table."""
    from reprogram.cli import main

    d = tmp_path_factory.mktemp("explain_tab")
    rng = np.random.default_rng(1)
    n = 1300
    group = rng.choice(["a", "b"], n, p=[0.6, 0.4])
    x1 = rng.normal(size=n) + 1.0 * (group == "b")
    kind = rng.choice(["x", "y", "z"], n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * x1 + 0.5 * (kind == "x") - 0.5)))).astype(int)
    df = pd.DataFrame({"x1": x1, "kind": kind, "group": group, "y": y})
    paths = {}
    for name, part in zip(("train", "tune", "test"), (df.iloc[:600], df.iloc[600:1000], df.iloc[1000:])):
        paths[name] = d / f"{name}.csv"
        part.to_csv(paths[name], index=False)
    ckpt, trig = d / "model.pt", d / "trigger"
    for args in (["train", "--data", paths["train"], "--label", "y", "--sensitive", "group", "--epochs", "5",
                  "--lr", "0.01", "--hidden", "16", "--out", ckpt],
                 ["fit", "--model", ckpt, "--data", paths["tune"], "--label", "y", "--sensitive", "group",
                  "--criterion", "dp", "--lambda", "5", "--epochs", "3", "--out", trig]):
        with pytest.raises(SystemExit) as done:
            main([str(a) for a in args])
        assert done.value.code in (0, None)
    return d, paths, ckpt, trig


def test_tabular_report_with_trigger_and_calibrator(tabular, capsys):
    d, paths, ckpt, trig = tabular
    preds, calib, out = d / "preds.csv", d / "calib", d / "report.html"
    code, text = invoke(["apply", "--model", ckpt, "--trigger", trig, "--data", paths["tune"], "--keep", "y", "group",
                         "--out", preds], capsys)
    assert code == 0, text
    code, text = invoke(["calibrate", "--predictions", preds, "--score", "score", "--label", "y", "--sensitive",
                         "group", "--method", "platt", "--out", calib], capsys)
    assert code == 0, text
    code, text = invoke(["explain", "--model", ckpt, "--trigger", trig, "--calibrator", calib, "--data", paths["test"],
                         "--label", "y", "--sensitive", "group", "--samples", "3", "--out", out, "--device", "cpu"],
                        capsys)
    assert code == 0, text
    assert f"wrote {out}" in text
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert images_in(html) == 2 + 1  # a feature chart per group, the reliability diagram
    assert "FeatureTrigger" in html and "criterion dp" in html and "+ trigger" in html
    assert "kind=x" in html or "x1" in html
    test = pd.read_csv(paths["test"])
    assert html.count('class="sample"') == 0 and html.count("<tr>") > 2 * 3  # sample rows in tables
    assert f">{test['kind'].iloc[0]}<" in html or ">x<" in html


def test_tabular_report_without_trigger(tabular, capsys):
    d, paths, ckpt, _ = tabular
    out = d / "plain.html"
    code, text = invoke(["explain", "--model", ckpt, "--data", paths["test"], "--label", "y", "--sensitive", "group",
                         "--samples", "2", "--seed", "1", "--out", out], capsys)
    assert code == 0, text
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert images_in(html) == 2 and "+ trigger" not in html


@pytest.mark.parametrize("args, words", [
    (["--label", "nope"], ["'nope'", "not found", "columns present"]),
    (["--sensitive", "race"], ["'race'", "not found"]),
    (["--out", "report.txt"], ["--out", ".html"]),
    (["--text", "kind"], ["tabular"]),
    (["--trigger", "IMAGE_TRIGGER"], ["image trigger", "tabular"]),
])
def test_bad_input_is_one_line_and_exit_2(tabular, capsys, tmp_path, args, words):
    from reprogram.triggers import BorderTrigger, save_trigger

    _, paths, ckpt, _ = tabular
    if "IMAGE_TRIGGER" in args:
        img = save_trigger(BorderTrigger(8, 1), tmp_path / "border")
        args = [str(img) if a == "IMAGE_TRIGGER" else a for a in args]
    opts = {"--label": "y", "--sensitive": "group", "--out": str(tmp_path / "r.html")}
    extra = []
    it = iter(args)
    for a in it:
        if a in opts:
            opts[a] = next(it)
        else:
            extra += [a, next(it)]
    if not opts["--out"].startswith("/"):
        opts["--out"] = str(tmp_path / opts["--out"])
    code, text = invoke(["explain", "--model", ckpt, "--data", paths["test"], *[x for kv in opts.items() for x in kv],
                         *extra], capsys)
    one_error_line(code, text, *words)
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".html", ".txt") or p.name.startswith(".r.")]


def test_image_report_from_a_saved_cnn_and_border_trigger(tmp_path, capsys):
    from reprogram.data import spurious_digits, spurious_digits_table
    from reprogram.train import Trainer, small_cnn

    train = spurious_digits("train", size=8, train_correlation=0.95)
    torch.manual_seed(0)
    trainer = Trainer(small_cnn(2, width=8), epochs=6, batch_size=64, lr=3e-3, progress=False).fit(train)
    ckpt = trainer.save(tmp_path / "cnn.pt", train, arch="cnn")
    tune, test = (spurious_digits_table(tmp_path / "data", s, size=8, train_correlation=0.95) for s in ("val", "test"))
    trig, out = tmp_path / "border", tmp_path / "digits.html"
    common = ["--image", "path", "--label", "label", "--sensitive", "group"]
    code, text = invoke(["fit", "--model", ckpt, "--data", tune, *common, "--trigger", "border", "--size", "1",
                         "--mode", "overlay", "--epochs", "2", "--out", trig], capsys)
    assert code == 0, text
    code, text = invoke(["explain", "--model", ckpt, "--trigger", trig, "--data", test, *common, "--samples", "2",
                         "--steps", "8", "--out", out], capsys)
    assert code == 0, text
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert images_in(html) == 2 * 2 + 1  # one figure per sample, and the trigger's pixels
    assert "Grad-CAM" in html and "BorderTrigger" in html and "test/" in html  # the image files are named
    # an image model without --image, and a layer that does not exist
    code, text = invoke(["explain", "--model", ckpt, "--data", test, "--label", "label", "--sensitive", "group",
                         "--out", tmp_path / "x.html"], capsys)
    one_error_line(code, text, "--image")
    code, text = invoke(["explain", "--model", ckpt, "--data", test, *common, "--layer", "nope",
                         "--out", tmp_path / "y.html"], capsys)
    one_error_line(code, text, "'nope'")
    assert not (tmp_path / "x.html").exists() and not (tmp_path / "y.html").exists()


def test_text_report_from_a_hugging_face_folder(tmp_path, capsys):
    from tiny_models import tiny_bert_folder

    folder, _ = tiny_bert_folder(tmp_path / "bert" / "tiny")
    rng = np.random.default_rng(0)
    words = "the a movie was good bad not very is".split()
    df = pd.DataFrame({"text": [" ".join(rng.choice(words, 5)) for _ in range(60)],
                       "label": rng.choice(["ok", "toxic"], 60), "dialect": rng.choice(["d1", "d2"], 60)})
    table = tmp_path / "texts.csv"
    df.to_csv(table, index=False)
    trig, out = tmp_path / "prompt", tmp_path / "text.html"
    common = ["--text", "text", "--label", "label", "--sensitive", "dialect"]
    code, text = invoke(["fit", "--model", folder, "--data", table, *common, "--trigger", "prompt", "--size", "2",
                         "--epochs", "1", "--out", trig], capsys)
    assert code == 0, text
    code, text = invoke(["explain", "--model", folder, "--trigger", trig, "--data", table, *common, "--samples", "2",
                         "--steps", "4", "--out", out], capsys)
    assert code == 0, text
    html = out.read_text(encoding="utf-8")
    assert_self_contained(html)
    assert images_in(html) == 0
    assert html.count('class="tok trig"') == 2 * 2 * 2 and "PromptTrigger" in html
    code, text = invoke(["explain", "--model", folder, "--data", table, "--label", "label", "--sensitive", "dialect",
                         "--out", tmp_path / "t.html"], capsys)
    one_error_line(code, text, "--text")
