"""Captum attributions on real small models trained here: images (a CNN that learned the
spurious-digits tint, saved and reloaded as TorchScript), tabular (an MLP) and text (a
tiny BERT with a PromptTrigger)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from reprogram.data import load_dataset, spurious_digits
from reprogram.errors import InputError
from reprogram.explain.attributions import (
    Attribution,
    attribute_images,
    attribute_tabular,
    attribute_text,
    find_last_conv,
    group_feature_importance,
)
from reprogram.models import FrozenModel, load_frozen
from reprogram.train import Trainer, mlp, small_cnn
from reprogram.triggers import BorderTrigger, FeatureTrigger, PatchTrigger, PromptTrigger

SIZE = 16


def _complete(attr: Attribution, rel: float = 0.05) -> None:
    """IG completeness: the row sums are f(x)[t] - f(b)[t] up to a small convergence delta.

    Small: under 5 % of that output gap, plus 0.2 % of the total |attribution| for the
    rows whose output barely moves between baseline and input while their path swings
    (there a delta of a few thousandths of a logit is still an excellent sum).
    """
    flat = attr.values.reshape(len(attr.values), -1).astype(float)
    gap = attr.output_gap.astype(float)
    bound = rel * np.abs(gap) + 2e-3 * np.abs(flat).sum(1) + 1e-3
    assert np.all(np.abs(attr.delta) < bound), (attr.delta, gap)
    np.testing.assert_allclose(flat.sum(1), gap + attr.delta, atol=1e-4, rtol=1e-4)


def _logit(model, x, trigger=None, target=None):
    with torch.no_grad():
        out = model(trigger(x) if trigger is not None else x)
    return out.gather(1, torch.as_tensor(target).view(-1, 1)).squeeze(1).numpy()


# ---- images ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small CNN trained on spurious digits (tint = shortcut), as the Trainer saves it
    (TorchScript + sidecar) and loaded back; the eager module with the same weights; the test split."""
    train = spurious_digits("train", size=SIZE, train_correlation=0.95)
    test = spurious_digits("test", size=SIZE)
    torch.manual_seed(0)
    trainer = Trainer(small_cnn(2, width=8), epochs=5, batch_size=64, lr=3e-3, progress=False).fit(train)
    path = trainer.save(tmp_path_factory.mktemp("cnn") / "cnn.pt", train)
    scripted = load_frozen(path)
    assert scripted.format == "torchscript" and scripted.input_kind == "image"
    eager = FrozenModel(trainer.model, input_kind="image")
    return scripted, eager, test


def _patch(seed=1):
    trig = PatchTrigger(SIZE, size=4, position="top_left")
    with torch.no_grad():
        trig.theta.copy_(torch.randn(trig.theta.shape, generator=torch.Generator().manual_seed(seed)) * 2)
    return trig


def test_image_maps_have_the_input_shape_and_torchscript_matches_eager(digits):
    scripted, eager, test = digits
    x = test.images[:12]
    got = attribute_images(scripted, x, smoothgrad=True, nt_samples=3)
    assert list(got) == ["integrated_gradients", "grad_cam", "smoothgrad"]
    for name, a in got.items():
        assert a.method == name and a.values.shape == (12, SIZE, SIZE) and a.target.shape == (12,)
        assert np.isfinite(a.values).all()
        assert (a.delta is None) == (name == "grad_cam")
        norm = a.abs_normalized()
        assert norm.shape == a.values.shape and norm.min() >= 0 and np.allclose(norm.reshape(12, -1).max(1), 1)
    assert got["grad_cam"].layer == "features.6" and (got["grad_cam"].values >= 0).all()
    # target=None explains the predicted class
    np.testing.assert_array_equal(got["grad_cam"].target, scripted(x).argmax(1).numpy())
    # Grad-CAM on TorchScript (no hooks there: run through the graph interpreter) equals the eager model's
    ref = attribute_images(eager, x)
    for name in ("integrated_gradients", "grad_cam"):
        np.testing.assert_allclose(got[name].values, ref[name].values, atol=1e-5)
    # the scripted model is left as it was
    assert isinstance(scripted.model, torch.jit.ScriptModule) and isinstance(scripted.model.features, torch.jit.ScriptModule)


@pytest.mark.parametrize("trigger", [None, "patch", "border"])
def test_image_ig_completeness_base_and_triggered(digits, trigger):
    scripted, _, test = digits
    trig = {None: None, "patch": _patch(), "border": BorderTrigger(SIZE, 2, mode="shrink", seed=3)}[trigger]
    x = test.images[20:36]
    a = attribute_images(scripted, x, trigger=trig, methods=("integrated_gradients",), n_steps=128)[
        "integrated_gradients"]
    _complete(a)
    # w.r.t. the original x: the gap is f(trigger(x)) - f(trigger(black)), black = 0 (no normalisation here)
    black = torch.zeros_like(x)
    np.testing.assert_allclose(a.output_gap, _logit(scripted, x, trig, a.target) - _logit(scripted, black, trig, a.target),
                               atol=1e-5)
    if trigger == "patch":  # pixels the patch overwrites no longer matter to the triggered model
        assert np.all(a.values[:, :4, :4] == 0) and np.abs(a.values[:, 4:, 4:]).sum() > 0


def test_grad_cam_puts_more_mass_on_the_tinted_strokes_than_on_random_regions(digits):
    # The group signal of spurious digits is the tint of the digit's strokes: green
    # strokes are (0.15, 1, 0.15) x intensity, red ones (1, 0.15, 0.15) x intensity, and
    # the background is black in every channel, so the tinted region is where the strokes are.
    scripted, _, test = digits
    x = test.images[:96]
    cam = attribute_images(scripted, x, methods=("grad_cam",))["grad_cam"].values.astype(float)
    total = cam.reshape(len(x), -1).sum(1)
    shown = total > 0  # a ReLU-ed map can be all zero (no positive evidence at that layer)
    assert shown.mean() > 0.9
    cam, total = cam[shown], total[shown]
    tinted = (x.max(1).values > 0.5).numpy()[shown]
    in_tint = (cam * tinted).reshape(len(cam), -1).sum(1) / total
    rng = np.random.default_rng(0)
    rand = np.empty(len(cam))
    for i in range(len(cam)):  # random pixel sets of the same area, 20 draws per image
        k = int(tinted[i].sum())
        draws = [cam[i].ravel()[rng.choice(SIZE * SIZE, k, replace=False)].sum() / total[i] for _ in range(20)]
        rand[i] = np.mean(draws)
    # (over 8 training seeds: mean 0.36-0.42 in the tint against 0.31 at random, 70-100 % of images)
    assert in_tint.mean() > rand.mean() + 0.02
    assert (in_tint > rand).mean() > 0.6


def test_the_layer_is_found_or_named(digits):
    scripted, eager, test = digits
    assert find_last_conv(scripted) is getattr(scripted.model.features, "6")  # TorchScript: by original_name
    assert find_last_conv(eager) is eager.model.features[6]
    x = test.images[:4]
    by_name = attribute_images(scripted, x, methods="grad_cam", layer="features.3")["grad_cam"]
    by_module = attribute_images(scripted, x, methods="grad_cam", layer=getattr(scripted.model.features, "3"))["grad_cam"]
    eager_ref = attribute_images(eager, x, methods="grad_cam", layer="model.features.3")["grad_cam"]
    assert by_name.layer == by_module.layer == eager_ref.layer == "features.3"
    np.testing.assert_allclose(by_name.values, by_module.values, atol=1e-6)
    np.testing.assert_allclose(by_name.values, eager_ref.values, atol=1e-5)


@pytest.mark.slow
def test_grad_cam_through_scripted_resnet_and_export_program(tmp_path):
    # residual adds, a scripted (not traced) graph with if-branches, and a torch.export
    # program (no layer modules at all) all give the eager model's Grad-CAM
    from reprogram.train import resnet18

    torch.manual_seed(0)
    net = resnet18(3).eval()
    x = torch.rand(3, 3, 32, 32)
    ref = attribute_images(FrozenModel(net, input_kind="image"), x, methods="grad_cam")["grad_cam"]
    assert ref.layer == "features.layer4.1.conv2"
    traced = FrozenModel(torch.jit.trace(net, x), input_kind="image")
    scripted = FrozenModel(torch.jit.script(net), input_kind="image")
    for m in (traced, scripted):
        got = attribute_images(m, x, methods="grad_cam")["grad_cam"]
        assert got.layer == "features.layer4.1.conv2"
        np.testing.assert_allclose(got.values, ref.values, atol=1e-5)

    cnn = small_cnn(2, width=8).eval()
    program = torch.export.export(cnn, (x[:2],), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "cnn.pt2")
    exported = load_frozen(tmp_path / "cnn.pt2")
    assert exported.format == "export"
    with pytest.raises(InputError, match="layer="):
        find_last_conv(exported)
    for layer in (None, "features.3"):
        got = attribute_images(exported, x, methods="grad_cam", layer=layer)["grad_cam"]
        want = attribute_images(FrozenModel(cnn, input_kind="image"), x, methods="grad_cam", layer=layer)["grad_cam"]
        np.testing.assert_allclose(got.values, want.values, atol=1e-5)


class _Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        a, b = torch.chunk(x, 2, dim=1)
        y = torch.cat([b, a], 1).to(torch.float32)
        y = nn.functional.interpolate(y, scale_factor=1.0, mode="nearest")
        return nn.functional.relu(self.bn(self.conv(y)) * 0.5 + x)


class _OpsNet(nn.Module):
    """Multi-output ops, sizes turned into tensors and back, a ModuleList, calls to functions."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.ModuleList([_Block(), _Block()])
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        v, _ = x.max(dim=3)
        return self.fc(v.mean(2).view(x.size(0), -1))


def test_grad_cam_on_torchscript_graphs_with_many_ops():
    torch.manual_seed(0)
    net = _OpsNet().eval()
    x = torch.rand(3, 3, 12, 12)
    traced = FrozenModel(torch.jit.trace(net, x), input_kind="image")
    scripted = FrozenModel(torch.jit.script(net), input_kind="image")
    for layer in (None, "blocks.1", "stem"):
        want = attribute_images(FrozenModel(net, input_kind="image"), x, methods="grad_cam", layer=layer)["grad_cam"]
        got = attribute_images(traced, x, methods="grad_cam", layer=layer)["grad_cam"]
        np.testing.assert_allclose(got.values, want.values, atol=1e-5)
        if layer is not None:  # the scripted blocks call F.relu: only layers above them can be reached
            got = attribute_images(scripted, x, methods="grad_cam", layer=layer)["grad_cam"]
            np.testing.assert_allclose(got.values, want.values, atol=1e-5)
    with pytest.raises(InputError, match="'blocks.1'") as e:  # names the module to hook instead
        attribute_images(scripted, x, methods="grad_cam")
    assert "\n" not in str(e.value)
    # Integrated Gradients needs no hook and works on any of them
    ig = attribute_images(scripted, x, methods="integrated_gradients")["integrated_gradients"]
    assert ig.values.shape == (3, 12, 12)


# ---- tabular --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def credit(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 600
    group = rng.choice(["a", "b"], n)
    x1 = rng.normal(size=n) + 1.0 * (group == "b")
    x2, x3 = rng.normal(size=n), rng.normal(size=n)
    y = (1.5 * x1 - 1.0 * x2 + 0.3 * rng.normal(size=n) > 0).astype(int)
    df = pd.DataFrame({"x1": x1, "x2": x2, "x3": x3, "kind": rng.choice(["p", "q"], n), "group": group, "y": y})
    ds = load_dataset(df, label="y", sensitive="group")
    torch.manual_seed(0)
    trainer = Trainer(mlp(ds.n_features, 2, hidden=(16,), dropout=0.0), epochs=15, batch_size=64, lr=1e-2,
                      progress=False).fit(ds)
    model = load_frozen(trainer.save(tmp_path_factory.mktemp("mlp") / "mlp.pt", ds))
    assert model.input_kind == "tabular" and model.format == "torchscript"
    return model, ds


@pytest.mark.parametrize("triggered", [False, True])
def test_tabular_ig_shape_and_completeness(credit, triggered):
    model, ds = credit
    x = torch.as_tensor(ds.features[:40])
    trig = None
    if triggered:
        trig = FeatureTrigger.from_data(torch.as_tensor(ds.features))
        with torch.no_grad():
            trig.theta.copy_(torch.linspace(-1, 1, ds.n_features))
    a = attribute_tabular(model, x, trigger=trig, n_steps=128)  # ReLU kinks: more steps, smaller delta
    assert a.method == "integrated_gradients" and a.values.shape == (40, ds.n_features)
    _complete(a)
    assert np.abs(a.output_gap).min() > 0
    # x1 and x2 carry the label, x3 is noise
    names = list(ds.feature_encoder.feature_names_out_)
    mean_abs = np.abs(a.values).mean(0)
    assert mean_abs[names.index("x1")] > 3 * mean_abs[names.index("x3")]
    assert mean_abs[names.index("x2")] > 3 * mean_abs[names.index("x3")]
    # a given baseline (the training means) and a fixed target
    means = ds.features.mean(0)
    b = attribute_tabular(model, x, trigger=trig, baseline=means, target=1, n_steps=128)
    assert (b.target == 1).all()
    _complete(b)
    np.testing.assert_allclose(b.output_gap, _logit(model, x, trig, b.target)
                               - _logit(model, torch.as_tensor(means).expand_as(x), trig, b.target), atol=1e-5)


def test_group_feature_importance(credit):
    model, ds = credit
    x = torch.as_tensor(ds.features[:200])
    a = attribute_tabular(model, x, n_steps=16)
    names = list(ds.feature_encoder.feature_names_out_)
    table = group_feature_importance(a, ds.group_ids[:200], list(ds.group_names), names)
    assert isinstance(table, pd.DataFrame) and list(table.index) == list(ds.group_names) and list(table.columns) == names
    assert table.shape == (2, ds.n_features) and (table.to_numpy() >= 0).all()
    rows = ds.group_ids[:200] == 1
    np.testing.assert_allclose(table.iloc[1].to_numpy(), np.abs(a.values[rows]).mean(0), rtol=1e-5)
    # groups given by name give the same table
    by_name = group_feature_importance(a, np.asarray(ds.group_names)[ds.group_ids[:200]], list(ds.group_names), names)
    pd.testing.assert_frame_equal(by_name, table)
    with pytest.raises(InputError):
        group_feature_importance(a, ds.group_ids[:199], list(ds.group_names), names)


# ---- text -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    """The tiny BERT of tests/tiny_models.py, taught for a few steps that "bad" means toxic."""
    from tiny_models import VOCAB, tiny_bert_folder

    d, hf = tiny_bert_folder(tmp_path_factory.mktemp("bert") / "tiny")
    model = load_frozen(d)
    tok = model.tokenizer
    rng = np.random.default_rng(0)
    words = [w for w in VOCAB[5:] if w != "bad"]
    texts = []
    for i in range(64):  # same lengths in both classes, "bad" anywhere: the word is the only cue
        t = list(rng.choice(words, rng.integers(2, 7)))
        if i % 2:
            t[rng.integers(len(t))] = "bad"
        texts.append(" ".join(t))
    y = torch.tensor([i % 2 for i in range(64)])
    enc = tok(texts, padding=True, return_tensors="pt")
    torch.manual_seed(0)
    hf.train()
    # gently: a model trained hard on this toy task becomes a step function of the
    # embeddings, which no integration with a few dozen steps follows
    opt = torch.optim.Adam(hf.parameters(), lr=1e-3)
    for _ in range(60):
        loss = nn.functional.cross_entropy(hf(**enc).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    hf.eval().save_pretrained(d)
    return load_frozen(d)


TEXTS = ["the movie was good", "bad", "not very good movie is bad"]


def _complete_text(a) -> None:
    sums = np.array([s.sum() for s in a.scores])
    total = np.array([np.abs(s).sum() for s in a.scores])
    assert np.all(np.abs(a.delta) < 0.05 * np.abs(a.output_gap) + 2e-3 * total + 1e-3), (a.delta, a.output_gap)
    np.testing.assert_allclose(sums, a.output_gap + a.delta, atol=1e-4)


def test_text_scores_one_per_token_and_complete(bert):
    a = attribute_text(bert, TEXTS, n_steps=128)
    enc = bert.tokenizer(TEXTS)
    assert [len(t) for t in a.tokens] == [len(i) for i in enc["input_ids"]]
    assert a.tokens[1] == ["[CLS]", "bad", "[SEP]"]
    assert all(len(s) == len(t) and not f.any() for s, t, f in zip(a.scores, a.tokens, a.is_trigger))
    assert a.target.shape == a.delta.shape == (3,)
    np.testing.assert_array_equal(a.target, [0, 1, 1])  # taught: "bad" means toxic
    _complete_text(a)
    # the word the model learned is what it attributes the toxic class to
    third = a.tokens[2]
    assert third[int(np.argmax(a.scores[2]))] == "bad"


@pytest.mark.parametrize("mode", ["embedding", "hard"])
def test_text_trigger_tokens_are_flagged_and_scored(bert, mode):
    k = 3
    trig = PromptTrigger(bert, n_tokens=k, mode=mode, special_ids=bert.tokenizer.all_special_ids, seed=1)
    if mode == "embedding":  # a trigger that says "bad" three times
        with torch.no_grad():
            bad = bert.tokenizer.convert_tokens_to_ids("bad")
            trig.vectors.copy_(bert.get_input_embeddings().weight[bad].expand(k, -1))
    a = attribute_text(bert, TEXTS, trigger=trig, n_steps=128)
    enc = bert.tokenizer(TEXTS)
    for ids, toks, flags, scores in zip(enc["input_ids"], a.tokens, a.is_trigger, a.scores):
        assert len(toks) == len(ids) + k == len(flags) == len(scores)
        assert flags.tolist() == [False] + [True] * k + [False] * (len(ids) - 1)
        assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    if mode == "embedding":
        assert a.tokens[0][1 : 1 + k] == ["⟨t1⟩", "⟨t2⟩", "⟨t3⟩"]
        # the "bad" trigger tokens push towards toxic
        np.testing.assert_array_equal(a.target, [1, 1, 1])
        assert all((s[f] > 0).all() for s, f in zip(a.scores, a.is_trigger))
    else:
        assert a.tokens[0][1 : 1 + k] == bert.tokenizer.convert_ids_to_tokens(trig.token_ids())
    _complete_text(a)
    # the triggered model's prediction is what is explained
    with torch.no_grad():
        pred = bert(**trig(bert.tokenizer(TEXTS, padding=True, return_tensors="pt"))).argmax(1).numpy()
    np.testing.assert_array_equal(a.target, pred)


# ---- bad input ------------------------------------------------------------------------------


def _one_line(excinfo):
    msg = str(excinfo.value)
    assert msg and "\n" not in msg
    return msg


def test_bad_input_is_one_line_input_error(digits, credit, bert):
    scripted, _, test = digits
    tab, ds = credit
    x = test.images[:2]
    xt = torch.as_tensor(ds.features[:2])
    cases = [
        (lambda: attribute_tabular(scripted, x), "reads image"),
        (lambda: attribute_images(tab, xt), "reads tabular"),
        (lambda: attribute_text(scripted, ["good"]), "reads image"),
        (lambda: attribute_images(scripted, x, layer="features.99"), "features.99"),
        (lambda: attribute_images(scripted, x, layer="head"), "Grad-CAM|shape"),
        (lambda: attribute_images(scripted, x, layer=nn.Conv2d(3, 3, 1)), "not a submodule"),
        (lambda: attribute_images(scripted, x, methods=("lime",)), "lime"),
        (lambda: attribute_images(scripted, x[0]), "4-D"),
        (lambda: attribute_images(scripted, torch.rand(2, 1, SIZE, SIZE)), "cannot read"),
        (lambda: attribute_images(scripted, x, target=[0, 5]), "0..1"),
        (lambda: attribute_tabular(tab, xt, baseline=np.zeros(3)), "baseline"),
        (lambda: attribute_text(bert, "just a string"), "list of strings"),
        (lambda: attribute_text(bert, TEXTS, trigger=_patch()), "PromptTrigger"),
        (lambda: find_last_conv(nn.Sequential(nn.Linear(2, 2))), "layer="),
    ]
    for call, match in cases:
        with pytest.raises(InputError, match=match) as e:
            call()
        _one_line(e)
