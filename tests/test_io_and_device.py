"""The atomic writer and the device option."""

import os

import pytest
import torch

from reprogram.errors import InputError
from reprogram.io import atomic_dir, atomic_path, atomic_write_text
from reprogram.models import resolve_device


def test_atomic_write_replaces_whole_file(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_text(target, "one")
    atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["a.json"]  # no temporary left behind
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.csv"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["a.csv"]


def test_atomic_dir_swaps_in_complete_folder_only(tmp_path):
    target = tmp_path / "artifact"
    with atomic_dir(target) as d:
        (d / "meta.json").write_text("{}")
    assert (target / "meta.json").exists()
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as d:
            (d / "weights.safetensors").write_text("partial")
            raise RuntimeError("interrupted")
    assert sorted(os.listdir(target)) == ["meta.json"]
    assert os.listdir(tmp_path) == ["artifact"]
    with atomic_dir(target) as d:
        (d / "new.json").write_text("{}")
    assert sorted(os.listdir(target)) == ["new.json"]


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")
