"""The JSON sidecar: round trip, validation, and its effect on load_frozen."""

from __future__ import annotations

import json

import numpy as np
import pytest

from reprogram.errors import CheckpointError, InputError
from reprogram.models import load_frozen, read_sidecar, write_sidecar
from reprogram.models.sidecar import sidecar_path


def test_round_trip_and_path_rules(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    meta = {
        "input_kind": "image",
        "classes": [np.int64(0), np.int64(1)],  # labels straight from a DataFrame
        "groups": {"columns": ["sex"]},
        "image": {"size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "channels": 3},
        "arch": "resnet18",
        "extra_field": {"kept": True},
    }
    written = write_sidecar(ckpt, meta)
    assert written == tmp_path / "ckpt.json" == sidecar_path(ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.json"]  # no temporary left behind
    back = read_sidecar(ckpt)
    assert back == {**meta, "classes": [0, 1], "format": "reprogram.model", "version": 1}
    assert read_sidecar(written) == back  # the sidecar's own path works too
    assert read_sidecar(tmp_path / "other.pt") == {}
    assert sidecar_path(tmp_path) == tmp_path / "reprogram.json"


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"input_kind": "audio"}', "input_kind"),
        ('{"format": "something.else"}', "format"),
        ('{"version": 99}', "newer"),
        ('{"classes": ["a", "a"]}', "duplicate"),
        ('{"image": {"size": [32]}}', "image.size"),
        ('{"image": {"mean": [0.5], "channels": 3}}', "image.mean"),
    ],
)
def test_bad_sidecar_is_a_checkpoint_error_naming_the_file(tmp_path, text, fragment):
    (tmp_path / "ckpt.json").write_text(text)
    with pytest.raises(CheckpointError) as e:
        read_sidecar(tmp_path / "ckpt.pt")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "ckpt.json") in msg and fragment in msg


def test_write_refuses_what_read_would_refuse(tmp_path):
    with pytest.raises(InputError):
        write_sidecar(tmp_path / "m.pt", {"input_kind": "video"})
    with pytest.raises(InputError):
        write_sidecar(tmp_path / "m.pt", {"classes": [object()]})
    with pytest.raises(InputError):
        write_sidecar(tmp_path / "m.pt", ["not", "a", "mapping"])
    assert list(tmp_path.iterdir()) == []


def test_sidecar_sets_classes_input_kind_and_arch(conv_files, tmp_path):
    src = conv_files["files"]["state_dict"]
    ckpt = tmp_path / "weights.pt"
    ckpt.write_bytes(src.read_bytes())
    write_sidecar(ckpt, {"arch": "toy_arch:SmallConvNet", "classes": ["cat", "dog", "bird"], "input_kind": "tabular"})
    fm = load_frozen(ckpt)  # the arch comes from the sidecar
    assert (fm.classes, fm.num_classes, fm.input_kind, fm.arch) == (["cat", "dog", "bird"], 3, "tabular", "toy_arch:SmallConvNet")
    assert fm.meta["classes"] == ["cat", "dog", "bird"]
    assert load_frozen(ckpt, input_kind="image").input_kind == "image"  # the argument wins
    with pytest.raises(InputError) as e:
        load_frozen(ckpt, num_classes=2)
    assert "3 classes" in str(e.value)


def test_sidecar_of_a_torchscript_file(conv_files, tmp_path):
    ckpt = tmp_path / "model.ts"
    ckpt.write_bytes(conv_files["files"]["torchscript"].read_bytes())
    (tmp_path / "model.json").write_text(json.dumps({"classes": ["a", "b", "c"]}))
    fm = load_frozen(ckpt)
    assert fm.classes == ["a", "b", "c"] and fm.num_classes == 3 and fm.input_kind == "image"
