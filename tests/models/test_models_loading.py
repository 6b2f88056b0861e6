"""load_frozen on every checkpoint format: same logits, same fingerprint, frozen."""

from __future__ import annotations

import os
import zipfile

import pytest
import toy_arch
import torch
from torch import nn

from reprogram.errors import CheckpointError, InputError, PickleRefusedError, UnsupportedFileError
from reprogram.models import FrozenModel, freeze, import_torchvision, load_frozen, weights_fingerprint

FORMATS = {
    # fixture file key -> (load_frozen kwargs, expected .format)
    "torchscript": ({}, "torchscript"),
    "export": ({}, "export"),
    "state_dict": ({"arch": "toy_arch:SmallConvNet", "num_classes": 3}, "state_dict"),
    "safetensors": ({"arch": "toy_arch:SmallConvNet", "num_classes": 3}, "state_dict"),
    "pickle": ({"allow_pickle": True}, "pickle"),
}


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


@pytest.mark.parametrize("key", list(FORMATS))
def test_every_format_gives_the_original_logits_and_fingerprint(conv_files, key):
    kwargs, fmt = FORMATS[key]
    path = conv_files["files"][key]
    fm = load_frozen(path, **kwargs)
    assert isinstance(fm, FrozenModel)
    assert fm.format == fmt
    assert not any(m.training for m in fm.modules())
    assert fm.source == path
    assert fm.input_kind == "image"  # the first layer is a Conv2d
    assert fm.meta == {} and fm.classes is None
    with torch.no_grad():
        out = fm(conv_files["x"])
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, conv_files["expected"], rtol=1e-5, atol=1e-6)
    assert fm.fingerprint == weights_fingerprint(conv_files["model"])
    assert len(fm.fingerprint) == 64 and int(fm.fingerprint, 16) >= 0


@pytest.mark.parametrize("key", list(FORMATS))
def test_loaded_model_is_frozen_and_stays_in_eval(conv_files, key):
    kwargs, _ = FORMATS[key]
    fm = load_frozen(conv_files["files"][key], **kwargs)
    assert all(not p.requires_grad for p in fm.parameters())
    trigger = nn.Conv2d(3, 3, 1)
    pipeline = nn.Sequential(trigger, fm).train()
    assert trigger.training
    assert not fm.training and not any(m.training for m in fm.modules())
    x = conv_files["x"].clone().requires_grad_(True)
    first = fm(x)
    torch.testing.assert_close(first, fm(x))  # dropout off: the same input gives the same output
    first.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradients reach the input
    assert all(p.grad is None for p in fm.parameters())
    assert pipeline[1] is fm
    with pytest.raises(InputError):
        fm.requires_grad_(True)
    fm.requires_grad_(False)


def test_train_mode_original_is_frozen_by_freeze():
    model = toy_arch.TabularMLP().train()
    out = freeze(model)
    assert out is model and not model.training
    assert all(not p.requires_grad for p in model.parameters())


def test_resnet18_state_dict_with_torchvision_arch(tmp_path):
    tv = import_torchvision()
    assert tv is import_torchvision()  # cached
    torch.manual_seed(0)
    model = tv.models.get_model("resnet18", weights=None, num_classes=3).eval()
    path = tmp_path / "resnet18.pth"
    torch.save(model.state_dict(), path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    fm = load_frozen(path, arch="resnet18", num_classes=3)
    assert (fm.format, fm.arch, fm.num_classes, fm.input_kind) == ("state_dict", "resnet18", 3, "image")
    with torch.no_grad():
        torch.testing.assert_close(fm(x), expected)
    assert fm.fingerprint == weights_fingerprint(model)
    # Without num_classes the class count is read from the file's output layer.
    inferred = load_frozen(path, arch="ResNet18")
    assert inferred.num_classes == 3 and inferred.fingerprint == fm.fingerprint
    # A num_classes that contradicts the file is a mismatch, reported by key and shape.
    with pytest.raises(CheckpointError) as e:
        load_frozen(path, arch="resnet18", num_classes=5)
    msg = one_line(e)
    assert "fc.weight [3, 512] in file vs [5, 512] in arch" in msg and str(path) in msg


def test_module_class_arch_by_path_and_by_object(conv_files):
    path = conv_files["files"]["state_dict"]
    by_name = load_frozen(path, arch="toy_arch:SmallConvNet")  # default num_classes=3 fits
    by_class = load_frozen(path, arch=toy_arch.SmallConvNet, num_classes=3)
    assert by_name.fingerprint == by_class.fingerprint == weights_fingerprint(conv_files["model"])
    assert by_name.arch == "toy_arch:SmallConvNet" and by_class.num_classes == 3
    assert by_name.num_classes is None  # not given, not knowable without running the model


def test_module_class_arch_without_num_classes_parameter(tmp_path):
    model = toy_arch.FixedNet().eval()
    path = tmp_path / "fixed.bin"
    torch.save(model.state_dict(), path)
    fm = load_frozen(path, arch="toy_arch:FixedNet")
    assert fm.input_kind == "tabular"
    x = torch.randn(3, 4)
    torch.testing.assert_close(fm(x), model(x))
    with pytest.raises(InputError) as e:
        load_frozen(path, arch="toy_arch:FixedNet", num_classes=2)
    assert "does not take num_classes" in one_line(e)


def test_tabular_state_dict_with_nested_checkpoint_and_wrapper_prefix(tmp_path):
    torch.manual_seed(0)
    model = toy_arch.TabularMLP(num_classes=2).eval()
    path = tmp_path / "ckpt.pt"
    state = {f"module.{k}": v for k, v in model.state_dict().items()}  # as saved from DataParallel
    torch.save({"epoch": 3, "model_state_dict": state}, path)
    fm = load_frozen(path, arch="toy_arch:TabularMLP", num_classes=2)
    assert fm.input_kind == "tabular" and fm.num_classes == 2
    x = torch.randn(6, 5)
    torch.testing.assert_close(fm(x), model(x))


def test_pickled_module_is_refused_unless_allowed(conv_files):
    path = conv_files["files"]["pickle"]
    with pytest.raises(PickleRefusedError) as e:
        load_frozen(path)
    msg = one_line(e)
    assert isinstance(e.value, CheckpointError)
    for part in (str(path), "pickled Python object", "arbitrary code", "--allow-pickle", "allow_pickle=True"):
        assert part in msg
    assert "toy_arch.SmallConvNet" in msg  # what the pickle needs
    fm = load_frozen(path, allow_pickle=True)
    assert fm.format == "pickle"


def test_export_archive_with_pickled_payload_is_refused(conv_files, tmp_path):
    src = conv_files["files"]["export"]
    dst = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data/weights/model_weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true', 1)
            zout.writestr(info, data)
    with pytest.raises(PickleRefusedError) as e:
        load_frozen(dst)
    msg = one_line(e)
    assert "torch.export" in msg and "--allow-pickle" in msg and "pickled tensor" in msg


@pytest.mark.parametrize("key", ["torchscript", "export", "state_dict", "safetensors", "pickle"])
def test_truncated_checkpoint_is_a_checkpoint_error(conv_files, tmp_path, key):
    src = conv_files["files"][key]
    data = src.read_bytes()
    path = tmp_path / f"half{src.suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        load_frozen(path, arch="toy_arch:SmallConvNet", allow_pickle=True)
    assert not isinstance(e.value, PickleRefusedError)
    assert str(path) in one_line(e)


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".pt2", ".onnx"])
def test_random_bytes_are_a_checkpoint_error(tmp_path, suffix):
    path = tmp_path / f"noise{suffix}"
    path.write_bytes(os.urandom(4096).replace(b"\x80", b"\x00"))  # no pickle opcode up front
    with pytest.raises(CheckpointError) as e:
        load_frozen(path, arch="resnet18")
    assert str(path) in one_line(e)


def test_empty_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        load_frozen(path)
    assert "empty" in one_line(e)


def test_state_dict_without_arch_says_arch_is_needed(conv_files):
    for key in ("state_dict", "safetensors"):
        with pytest.raises(InputError) as e:
            load_frozen(conv_files["files"][key])
        msg = one_line(e)
        assert "--arch" in msg and "arch" in msg and "state_dict" in msg


def test_state_dict_with_keys_of_another_arch_lists_them(conv_files):
    with pytest.raises(CheckpointError) as e:
        load_frozen(conv_files["files"]["state_dict"], arch="toy_arch:TabularMLP")
    msg = one_line(e)
    assert "missing keys" in msg and "net.0.weight" in msg
    assert "unexpected keys" in msg and "conv.weight" in msg


def test_missing_path_and_bad_arguments(tmp_path, conv_files):
    with pytest.raises(InputError) as e:
        load_frozen(tmp_path / "nope.pt")
    assert "not found" in one_line(e) and "nope.pt" in str(e.value)
    with pytest.raises(UnsupportedFileError) as e:
        load_frozen(tmp_path)
    assert "config.json" in one_line(e)
    path = conv_files["files"]["state_dict"]
    with pytest.raises(InputError) as e:
        load_frozen(path, arch="resnet181")
    assert "did you mean resnet18" in one_line(e)
    with pytest.raises(InputError) as e:
        load_frozen(path, arch="no_such_module_xyz:Net")
    assert "cannot import" in one_line(e)
    with pytest.raises(InputError) as e:
        load_frozen(path, arch="toy_arch:Missing")
    assert "no attribute" in one_line(e)
    with pytest.raises(InputError):
        load_frozen(path, arch="toy_arch:SmallConvNet", input_kind="audio")
    with pytest.raises(InputError):
        load_frozen(path, arch="toy_arch:SmallConvNet", num_classes=0)


def test_models_captured_in_training_mode_are_refused(tmp_path):
    torch.manual_seed(0)
    model = toy_arch.TabularMLP().train()
    x = torch.randn(4, 5)
    traced = tmp_path / "traced.ts"
    torch.jit.save(torch.jit.trace(model, x, check_trace=False), traced)
    with pytest.raises(CheckpointError) as e:
        load_frozen(traced)
    assert "training mode" in one_line(e) and "dropout" in str(e.value)
    exported = tmp_path / "exported.pt2"
    torch.export.save(torch.export.export(model, (x,)), exported)
    with pytest.raises(CheckpointError) as e:
        load_frozen(exported)
    assert "training mode" in one_line(e)
    # A scripted module reads self.training at run time: saved in train mode, it loads fine.
    scripted = tmp_path / "scripted.ts"
    torch.jit.save(torch.jit.script(model), scripted)
    fm = load_frozen(scripted)
    torch.testing.assert_close(fm(x), model.eval()(x))


def test_wrapping_an_in_memory_module(conv_files):
    fm = FrozenModel(toy_arch.TabularMLP(num_classes=2), classes=["no", "yes"])
    assert (fm.format, fm.input_kind, fm.num_classes, fm.source) == ("module", "tabular", 2, None)
    with pytest.raises(InputError):
        FrozenModel(toy_arch.TabularMLP(), classes=["a", "b"], num_classes=3)
    with pytest.raises(InputError) as e:
        fm.get_input_embeddings()
    one_line(e)
    assert fm.hf_model is None and fm.tokenizer is None
    assert "format='module'" in repr(fm)


def test_fingerprint_tracks_values_dtypes_and_names():
    torch.manual_seed(0)
    a = toy_arch.TabularMLP()
    b = toy_arch.TabularMLP()
    b.load_state_dict(a.state_dict())
    assert weights_fingerprint(a) == weights_fingerprint(b) == weights_fingerprint(a.state_dict())
    with torch.no_grad():
        b.net[0].weight[0, 0] += 1e-3
    assert weights_fingerprint(a) != weights_fingerprint(b)
    assert weights_fingerprint(a) != weights_fingerprint(a.double())
    renamed = {f"x.{k}": v for k, v in a.state_dict().items()}
    assert weights_fingerprint(renamed) != weights_fingerprint(a)
    with pytest.raises(InputError):
        weights_fingerprint([1, 2])


def test_fingerprint_follows_dtype_moves_and_deepcopy(conv_files):
    import copy

    fm = load_frozen(conv_files["files"]["state_dict"], arch="toy_arch:SmallConvNet")
    before = fm.fingerprint
    twin = copy.deepcopy(fm)
    assert twin.fingerprint == before and not twin.training
    fm.double()
    assert fm.fingerprint != before and fm.fingerprint == weights_fingerprint(fm.model)
    fm.float()
    assert fm.fingerprint == before
