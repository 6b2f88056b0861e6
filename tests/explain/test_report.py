"""saliency_report on small real models: a spurious-digits CNN, a tabular MLP, a tiny BERT.

Each page must parse, hold one <img> per expected figure, the fairness tables without and
with the trigger, and reference nothing outside itself (no URL, script, import or font).
"""

import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import torch

from reprogram.errors import InputError
from reprogram.explain import SaliencyReport, saliency_report, select_samples
from reprogram.explain.report import expected_figures

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class PageParser(HTMLParser):
    """Collects tags, checks they nest, and records every reference out of the page."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.stack, self.errors, self.external = [], [], [], []
        self.imgs, self.table_ids, self.styles, self._in_style = [], [], [], False
        self.text = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)
        if tag == "img":
            self.imgs.append(a)
        if tag == "table" and a.get("id"):
            self.table_ids.append(a["id"])
        if tag in ("script", "link", "iframe", "object", "embed", "base"):
            self.external.append(f"<{tag}>")
        for key in ("src", "href", "srcset", "action", "data", "poster"):
            v = (a.get(key) or "").strip()
            if v and not v.startswith(("data:image/png;base64,", "#")):
                self.external.append(f"{key}={v[:60]}")
        if "url(" in (a.get("style") or "") or "@import" in (a.get("style") or ""):
            self.external.append("style url()")
        self._in_style = tag == "style"

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
        else:
            self.stack.pop()
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self.styles.append(data)
        else:
            self.text.append(data)


def parse(html: str) -> PageParser:
    p = PageParser()
    p.feed(html)
    p.close()
    assert not p.errors and not p.stack, (p.errors, p.stack)
    assert not p.external, p.external
    css = "".join(p.styles)
    assert "@import" not in css and "url(" not in css and "@font-face" not in css
    assert not re.search(r"https?://|(?:src|href)\s*=\s*[\"']?//", html)
    assert "<script" not in html.lower()
    for img in p.imgs:  # every picture inlined as a PNG that decodes
        import base64

        png = base64.b64decode(img["src"].split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return p


def sample_counts(report: SaliencyReport) -> list[int]:
    return [len(r) for r in report.samples.values()]


# ---- fixtures: small models trained here -----------------------------------------------


@pytest.fixture(scope="module")
def digits():
    """A CNN that learned the tint shortcut of spurious digits (8x8), and a border trigger."""
    from reprogram.data import spurious_digits
    from reprogram.models import FrozenModel
    from reprogram.train import Trainer, small_cnn
    from reprogram.triggers import TriggerFitter, make_trigger

    train, val, test = (spurious_digits(s, size=8, train_correlation=0.95) for s in ("train", "val", "test"))
    torch.manual_seed(0)
    trainer = Trainer(small_cnn(2, width=8), epochs=10, batch_size=64, lr=3e-3, progress=False).fit(train)
    model = FrozenModel(trainer.model, input_kind="image")
    trig = make_trigger("border", model, val, size=1, mode="overlay", seed=0)
    TriggerFitter(model, trig, "eo", lam=1.0, epochs=3, batch_size=64, lr=0.05, progress=False).fit(val, val)
    return model, trig.eval(), test


@pytest.fixture(scope="module")
def tabular():
    """An MLP on a table where group b has higher x1, a fitted feature trigger, and a group calibrator."""
    from reprogram.calibrate import GroupCalibrator
    from reprogram.data import load_dataset
    from reprogram.models import FrozenModel, predict_proba
    from reprogram.train import Trainer, mlp
    from reprogram.triggers import TriggerFitter, make_trigger

    rng = np.random.default_rng(1)
    n = 1200
    group = rng.choice(["a", "b"], n, p=[0.6, 0.4])
    x1 = rng.normal(size=n) + 1.0 * (group == "b")
    color = rng.choice(["red", "blue", "green"], n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * x1 + 0.5 * (color == "red") - 0.5)))).astype(int)
    df = pd.DataFrame({"x1": x1, "color": color, "group": group, "y": y})
    train = load_dataset(df.iloc[:600], label="y", sensitive="group")
    reuse = dict(label="y", sensitive="group", feature_encoder=train.feature_encoder, label_classes=train.label_encoder,
                 group_encoder=train.groups)
    tune, test = load_dataset(df.iloc[600:900], **reuse), load_dataset(df.iloc[900:], **reuse)
    torch.manual_seed(0)
    trainer = Trainer(mlp(train.n_features, 2, hidden=(16,), dropout=0.0), epochs=10, lr=1e-2,
                      progress=False).fit(train)
    model = FrozenModel(trainer.model, input_kind="tabular")
    trig = make_trigger("feature", model, tune)
    TriggerFitter(model, trig, "dp", lam=5.0, epochs=5, batch_size=64, progress=False).fit(tune, tune)
    scores = predict_proba(model, tune, trigger=trig)[:, 1]
    cal = GroupCalibrator(method="platt", min_group_size=10).fit(scores, tune.labels,
                                                                 df.iloc[600:900][["group"]].reset_index(drop=True))
    return model, trig.eval(), test, df.iloc[900:].reset_index(drop=True), cal


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """A tiny BERT (one layer, built offline), a prompt trigger, and short texts in two groups."""
    from tiny_models import tiny_bert_folder

    from reprogram.data import TextDataset
    from reprogram.data.groups import GroupEncoder
    from reprogram.models import load_frozen
    from reprogram.triggers import make_trigger

    d, _ = tiny_bert_folder(tmp_path_factory.mktemp("bert") / "tiny")
    model = load_frozen(d)
    rng = np.random.default_rng(0)
    words = "the a movie was good bad not very is".split()
    texts = [" ".join(rng.choice(words, 5)) for _ in range(40)]
    y, g = rng.integers(0, 2, 40), rng.integers(0, 2, 40)
    ds = TextDataset(np.array(texts, dtype=object), y, g, groups=GroupEncoder().fit(np.array(["d1", "d2"])),
                     classes=["ok", "toxic"])
    trig = make_trigger("prompt", model, ds, size=2, mode="simplex")
    return model, trig, ds


# ---- choosing samples ----------------------------------------------------------------------


def test_samples_are_seeded_balanced_and_flipped_first():
    rng = np.random.default_rng(0)
    gid = rng.integers(0, 3, 300)
    labels = rng.integers(0, 2, 300)
    flipped = rng.random(300) < 0.05
    a = select_samples(gid, 3, 5, seed=7, flipped=flipped, labels=labels)
    b = select_samples(gid, 3, 5, seed=7, flipped=flipped, labels=labels)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert any(not np.array_equal(x, y) for x, y in zip(a, select_samples(gid, 3, 5, seed=8, flipped=flipped,
                                                                          labels=labels)))
    for g, rows in enumerate(a):
        assert len(rows) == 5 and (gid[rows] == g).all() and len(set(rows)) == 5
        k = int(min(5, flipped[gid == g].sum()))
        assert flipped[rows[:k]].all() and not flipped[rows[k:]].any()  # flipped cases first
        rest = labels[rows[k:]]
        assert len(set(rest[:2])) == min(2, len(rest))  # the true labels take turns after them


def test_samples_of_a_small_group_and_without_trigger():
    gid = np.array([0] * 10 + [1] * 2 + [2] * 0)
    out = select_samples(gid, 3, 4, seed=0)
    assert [len(r) for r in out] == [4, 2, 0]
    # one group's choice does not depend on the others
    gid2 = np.concatenate([gid, [1] * 5])
    assert np.array_equal(select_samples(gid2, 2, 4, seed=0)[0], out[0])


# ---- pages -----------------------------------------------------------------------------------


def test_image_report_with_trigger(digits, tmp_path):
    model, trig, test = digits
    out = tmp_path / "image.html"
    meta = {"trigger": "BorderTrigger", "criterion": "eo", "lambda": 1.0, "model": {"fingerprint": model.fingerprint}}
    rep = saliency_report(model, test, trig, out=out, samples=2, progress=False, n_steps=8, trigger_meta=meta)
    html = out.read_text(encoding="utf-8")
    assert html == rep.html and rep.path == out
    page = parse(html)
    assert sample_counts(rep) == [2, 2]
    n = expected_figures("image", sample_counts(rep), image_trigger=True)
    assert len(page.imgs) == n == len(rep.figures) == 5
    assert set(rep.figures) == {"sample_0_0", "sample_0_1", "sample_1_0", "sample_1_1", "trigger"}
    assert page.table_ids == ["fairness-by-group", "fairness-overall"]
    text = " ".join(page.text)
    assert "+ trigger" in text and "base" in text and model.fingerprint in text
    assert "criterion eo" in text and "fingerprint matches" in text and "|δ|" in text
    # the samples the trigger flips come first
    pb = rep.base.by_group  # the reports are the dataset's
    assert list(pb.index) == ["green", "red"] and rep.triggered is not None
    for g, rows in rep.samples.items():
        a = rep.attributions[g]
        assert set(a) == {"base", "triggered"}
        assert a["base"]["integrated_gradients"].values.shape == (len(rows), 8, 8)
        assert a["triggered"]["grad_cam"].values.shape == (len(rows), 8, 8)
    fig = rep.figures["sample_0_0"]
    assert len(fig.axes) >= 6  # input, +trigger, IG pair, Grad-CAM pair (+ colorbars)
    assert rep.png("sample_0_0")[:4] == b"\x89PNG"
    assert "<html" not in rep._repr_html_() and ".rp-report" in rep._repr_html_()


def test_image_report_without_trigger_and_deterministic(digits):
    model, _, test = digits
    a = saliency_report(model, test, out=None, samples=1, seed=3, progress=False, n_steps=4)
    b = saliency_report(model, test, out=None, samples=1, seed=3, progress=False, n_steps=4)
    assert a.path is None and a.triggered is None
    assert {g: list(r) for g, r in a.samples.items()} == {g: list(r) for g, r in b.samples.items()}
    assert a.html == b.html
    page = parse(a.html)
    assert len(page.imgs) == expected_figures("image", sample_counts(a)) == 2
    assert "+ trigger" not in " ".join(page.text)
    assert page.table_ids == ["fairness-by-group", "fairness-overall"]


def test_tabular_report_with_calibrator(tabular, tmp_path):
    model, trig, test, frame, cal = tabular
    rep = saliency_report(model, test, trig, calibrator=cal, out=tmp_path / "t.html", samples=3, progress=False,
                          table=frame, importance_rows=50)
    page = parse(rep.html)
    assert len(page.imgs) == expected_figures("tabular", sample_counts(rep), calibrator=True) == 3
    assert set(rep.figures) == {"features_0", "features_1", "reliability"}
    assert "calibration" in rep.sections and "GroupCalibrator" in rep.html
    text = " ".join(page.text)
    assert "color=red" in text or "x1" in text  # feature names on the chart's page (table header)
    # the sample rows show the table's own values
    rows = rep.samples["a"]
    first = frame.loc[int(rows[0])]
    assert f">{first['x1']:.4g}<" in rep.html and f">{first['color']}<" in rep.html
    # the importance attribution covers the samples first
    a = rep.attributions["a"]["triggered"]
    assert a.values.shape[1] == test.n_features and a.values.shape[0] >= len(rows)
    # without the table, values are decoded from the encoding: same numbers to 4 digits
    rep2 = saliency_report(model, test, trig, out=None, samples=3, progress=False, importance_rows=20)
    x = float(frame.loc[int(rows[0]), "x1"])
    assert f">{x:.4g}<" in rep2.html
    assert len(parse(rep2.html).imgs) == 2


def test_group_calibrator_reads_groups_from_the_dataset(tabular):
    model, trig, test, _, cal = tabular
    rep = saliency_report(model, test, trig, calibrator=cal, out=None, samples=1, progress=False, importance_rows=10)
    assert "reliability" in rep.figures


def test_text_report_marks_trigger_tokens(text, tmp_path):
    model, trig, ds = text
    rep = saliency_report(model, ds, trig, out=tmp_path / "x.html", samples=2, progress=False, n_steps=4)
    page = parse(rep.html)
    assert len(page.imgs) == expected_figures("text", sample_counts(rep)) == 0
    assert rep.html.count('class="tok trig"') >= 2 * 2 * 2  # 2 trigger tokens x 2 samples x 2 groups
    assert "class=\"legend\"" in rep.html and "[CLS]" in rep.html
    assert page.table_ids == ["fairness-by-group", "fairness-overall"]
    for g in rep.samples:
        a = rep.attributions[g]["triggered"]
        assert all(t.sum() == 2 for t in a.is_trigger)
        assert not any(rep.attributions[g]["base"].is_trigger[0])


def test_bad_input_is_refused_and_nothing_is_written(digits, tabular, tmp_path):
    model, _, test = digits
    tmodel, ttrig, ttest, _, _ = tabular
    with pytest.raises(InputError, match=r"\.html"):
        saliency_report(model, test, out=tmp_path / "r.txt", progress=False)
    with pytest.raises(InputError, match="tabular trigger; the model reads image"):
        saliency_report(model, test, ttrig, out=tmp_path / "r.html", progress=False)
    with pytest.raises(InputError, match="samples"):
        saliency_report(model, test, samples=0, out=tmp_path / "r.html", progress=False)
    with pytest.raises(InputError, match="reprogram dataset"):
        saliency_report(model, [1, 2, 3], out=tmp_path / "r.html", progress=False)
    with pytest.raises(InputError, match="dataset holds tabular"):
        saliency_report(model, ttest, out=tmp_path / "r.html", progress=False)
    assert list(tmp_path.iterdir()) == []
    # a failure after the attributions leaves an existing page as it was, and no temporary file
    old = tmp_path / "keep.html"
    old.write_text("old")
    with pytest.raises(InputError, match="3 classes"):
        saliency_report(tmodel, ttest, ttrig, calibrator=type("Cal", (), {"n_classes_": 3})(), out=old,
                        progress=False)

    class Broken:
        n_classes_ = 2

        def transform(self, scores):
            raise InputError("broken calibrator")

    with pytest.raises(InputError, match="broken"):
        saliency_report(tmodel, ttest, ttrig, calibrator=Broken(), out=old, samples=1, progress=False,
                        importance_rows=10)
    assert old.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["keep.html"]
