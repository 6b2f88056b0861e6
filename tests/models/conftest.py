"""Fixtures for tests/models: one small trained-looking model saved in every format."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

# toy_arch must be importable by name: state_dicts name it as their arch
# ("toy_arch:SmallConvNet") and pickled modules refer to its classes.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import toy_arch  # noqa: E402


def _randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every saved float tensor non-default values (BN statistics too).

    Non-persistent buffers are left alone: no checkpoint but the scripted and exported
    ones carries them, so they must stay what the constructor makes.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if t.dim() == 1 else torch.randn(t.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="session")
def conv_files(tmp_path_factory):
    """SmallConvNet saved as TorchScript, export, state_dict (.pt, .safetensors) and pickle."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("conv")
    model = _randomise(toy_arch.SmallConvNet(num_classes=3), seed=0)
    x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
    files = {
        "torchscript": d / "model.ts",
        "export": d / "model.pt2",
        "state_dict": d / "weights.pt",
        "safetensors": d / "weights.safetensors",
        "pickle": d / "whole.pt",
    }
    torch.jit.save(torch.jit.script(model), files["torchscript"])
    batch = torch.export.Dim("batch")
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, files["export"])
    torch.save(model.state_dict(), files["state_dict"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(files["safetensors"]))
    torch.save(model, files["pickle"])
    return {"model": model, "x": x, "expected": expected, "files": files, "dir": d}
