"""Trigger modules: shapes, value ranges, masks, batch sizes, ONNX export; the discriminator's inputs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from reprogram.errors import InputError
from reprogram.triggers import AdditiveTrigger, BorderTrigger, Discriminator, FeatureTrigger, PatchTrigger

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _images(n=5, seed=0):
    pixels = torch.rand(n, 3, 12, 10, generator=torch.Generator().manual_seed(seed))
    return pixels, (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _extreme(trigger, value):
    with torch.no_grad():
        trigger.theta.fill_(value)
    return trigger


@pytest.mark.parametrize("make", [
    lambda: BorderTrigger((12, 10), 2, mode="overlay", mean=MEAN, std=STD),
    lambda: BorderTrigger((12, 10), 2, mode="shrink", mean=MEAN, std=STD),
    lambda: PatchTrigger((12, 10), 4, position="top_right", mean=MEAN, std=STD),
    lambda: AdditiveTrigger((12, 10), 0.1, mean=MEAN, std=STD),
])
@pytest.mark.parametrize("theta", [-50.0, 0.0, 50.0])
def test_triggered_images_stay_valid_pixels_for_any_parameters(make, theta):
    trigger = _extreme(make(), theta)
    pixels, x = _images()
    out = trigger.to_pixels(trigger(x)).detach()
    assert out.shape == x.shape
    assert float(out.min()) >= -1e-5 and float(out.max()) <= 1 + 1e-5


def test_border_overlay_replaces_exactly_the_frame():
    t = BorderTrigger((12, 10), 2, mode="overlay", mean=MEAN, std=STD)
    _, x = _images()
    out = t(x)
    inner = (slice(None), slice(None), slice(2, 10), slice(2, 8))
    assert torch.equal(out[inner], x[inner])
    assert t.mask.sum() == 12 * 10 - 8 * 6
    # the frame is the same learned pattern for every image
    assert torch.allclose(out[0, :, 0], out[3, :, 0])


def test_border_shrink_keeps_the_whole_image_inside_the_frame():
    t = BorderTrigger((12, 10), 2, mode="shrink")
    _, x = _images()
    out = t(x)
    expected = F.interpolate(x, size=(8, 6), mode="bilinear", align_corners=False)
    assert torch.allclose(out[:, :, 2:10, 2:8], expected, atol=1e-6)


def test_patch_positions_and_additive_bound():
    t = PatchTrigger((12, 10), 3, position=(4, 5))
    assert t.mask[0, 0, 4:7, 5:8].sum() == 9 and t.mask.sum() == 9
    a = _extreme(AdditiveTrigger((12, 10), 0.05, mean=MEAN, std=STD), 20.0)
    pixels, x = _images()
    diff = (a.to_pixels(a(x)) - pixels).abs()
    assert float(diff.max()) <= 0.05 + 1e-6
    with pytest.raises(InputError, match="fit"):
        PatchTrigger((12, 10), 3, position=(11, 0))
    with pytest.raises(InputError, match="width"):
        BorderTrigger((12, 10), 5)
    with pytest.raises(InputError, match=r"\(batch, 3, 12, 10\)"):
        PatchTrigger((12, 10), 3)(torch.zeros(2, 3, 8, 8))


@pytest.mark.parametrize("make", [
    lambda: BorderTrigger((12, 10), 2, mode="overlay", mean=MEAN, std=STD),
    lambda: BorderTrigger((12, 10), 2, mode="shrink", mean=MEAN, std=STD),
    lambda: PatchTrigger((12, 10), 4, mean=MEAN, std=STD),
    lambda: AdditiveTrigger((12, 10), 0.1, mean=MEAN, std=STD),
    lambda: FeatureTrigger(7, scale=torch.linspace(0.5, 2, 7), features=[0, 3]),
])
def test_triggers_export_to_onnx_for_any_batch_size(make, tmp_path):
    import onnxruntime as ort

    trigger = make().eval()
    with torch.no_grad():
        for p in trigger.parameters():
            p.normal_(0, 1)
    example = torch.randn(2, 7) if isinstance(trigger, FeatureTrigger) else _images(2)[1]
    path = tmp_path / "t.onnx"
    torch.onnx.export(trigger, (example,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (1, 9):
        x = torch.randn(n, 7) if isinstance(trigger, FeatureTrigger) else _images(n, seed=n)[1]
        got = sess.run(None, {"x": x.numpy()})[0]
        assert np.allclose(got, trigger(x).detach().numpy(), atol=1e-5)


def test_feature_trigger_scales_by_spread_and_leaves_other_features_alone():
    X = torch.tensor([[0.0, 10.0, 1.0], [2.0, 30.0, 1.0], [4.0, 50.0, 1.0]])
    t = FeatureTrigger.from_data(X, features=[0, 1])
    assert torch.allclose(t.scale.flatten(), X.std(0, unbiased=False))
    with torch.no_grad():
        t.theta.fill_(1.0)
    out = t(X)
    assert torch.allclose(out[:, :2] - X[:, :2], X.std(0, unbiased=False)[:2].expand(3, 2))
    assert torch.equal(out[:, 2], X[:, 2])
    with pytest.raises(InputError, match="indices"):
        FeatureTrigger(3, features=[3])


def test_discriminator_inputs_for_dp_and_eo():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]])
    y = torch.tensor([1, 2])
    dp = Discriminator(3, 4, criterion="dp", learn_temperature=False)
    s = torch.softmax(logits, 1)
    assert torch.allclose(dp.features(logits), s) and dp(logits).shape == (2, 4)
    eo = Discriminator(3, 4, criterion="eo")
    f = eo.features(logits, y)
    assert f.shape == (2, 3 + 9)
    assert torch.allclose(f[:, :3], s)
    blocks = f[:, 3:].view(2, 3, 3)  # block k holds s when y == k, zeros elsewhere
    assert torch.allclose(blocks[0, 1], s[0]) and blocks[0, 0].abs().sum() == 0 and blocks[0, 2].abs().sum() == 0
    assert torch.allclose(blocks[1, 2], s[1])
    with torch.no_grad():
        eo.log_temperature.fill_(np.log(0.5))  # a learnable temperature sharpens s
    assert torch.allclose(eo.features(logits, y)[:, :3], torch.softmax(logits / 0.5, 1))
    with pytest.raises(InputError, match="true labels"):
        eo(logits)
    with pytest.raises(InputError, match="criterion"):
        Discriminator(2, 2, criterion="parity")
