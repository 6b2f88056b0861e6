"""Crash safety of `reprogram fit` and `reprogram train`, with real processes.

A run killed with SIGKILL at a random moment after its first checkpoint and restarted
with --resume ends with the same tensors as an uninterrupted run; a damaged newest
checkpoint is skipped, never loaded; Ctrl-C stops with exit code 130 and a message.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from reprogram.cli import main
from reprogram.models import load_frozen

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from reprogram.cli import main; main()"]
ENV = {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("crash")
    rng = np.random.default_rng(2)
    n = 1200
    group = rng.choice(["a", "b"], n, p=[0.6, 0.4])
    x1 = rng.normal(size=n) + 1.0 * (group == "b")
    x2 = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(1.5 * x1 + 0.5 * x2 - 0.5)))).astype(int)
    df = pd.DataFrame({"x1": x1, "x2": x2, "group": group, "y": y})
    df.iloc[:600].to_csv(d / "train.csv", index=False)
    df.iloc[600:].to_csv(d / "tune.csv", index=False)
    with pytest.raises(SystemExit) as done:
        main(["train", "--data", str(d / "train.csv"), "--label", "y", "--sensitive", "group", "--epochs", "3",
              "--hidden", "16", "--out", str(d / "model.pt")])
    assert done.value.code in (0, None)
    return d


def _args(kind: str, d: Path, out: Path, ckpt: Path) -> list[str]:
    if kind == "fit":
        return ["fit", "--model", str(d / "model.pt"), "--data", str(d / "tune.csv"), "--label", "y", "--sensitive",
                "group", "--epochs", "15", "--batch-size", "32", "--out", str(out), "--checkpoint", str(ckpt)]
    return ["train", "--data", str(d / "train.csv"), "--label", "y", "--sensitive", "group", "--epochs", "15",
            "--batch-size", "32", "--hidden", "32,16", "--schedule", "cosine", "--out", str(out),
            "--checkpoint", str(ckpt)]


def _run(args, **kw) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(CLI + args, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=300, **kw)


def _start(args) -> subprocess.Popen:
    import os

    return subprocess.Popen(CLI + args, env={**os.environ, **ENV}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for_checkpoint(proc: subprocess.Popen, ckpt: Path, timeout: float = 120, count: int = 1) -> None:
    end = time.monotonic() + timeout
    while len(list(ckpt.glob("epoch-*"))) < count:
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.stdout.read()}"
        assert time.monotonic() < end, "no checkpoint appeared"
        time.sleep(0.02)


def _tensors(kind: str, out: Path) -> dict:
    if kind == "fit":
        return load_file(str(out / "weights.safetensors"))
    return {k: v.detach().clone() for k, v in load_frozen(out).state_dict().items()}


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        assert np.array_equal(a[k].numpy(), b[k].numpy()), k


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory):
    """The uninterrupted runs' final tensors."""
    d, res = setup, {}
    for kind in ("fit", "train"):
        tmp = tmp_path_factory.mktemp(f"straight_{kind}")
        out = tmp / ("trigger" if kind == "fit" else "m.pt")
        done = _run(_args(kind, d, out, tmp / "ckpt"))
        assert done.returncode == 0, done.stdout + done.stderr
        res[kind] = _tensors(kind, out)
    return res


@pytest.mark.parametrize("kind", ["fit", "train"])
def test_kill_9_at_a_random_moment_then_resume_gives_the_uninterrupted_result(setup, straight, tmp_path, kind):
    out, ckpt = tmp_path / ("trigger" if kind == "fit" else "m.pt"), tmp_path / "ckpt"
    args = _args(kind, setup, out, ckpt)
    proc = _start(args)
    _wait_for_checkpoint(proc, ckpt)
    time.sleep(random.uniform(0.0, 1.0))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = _run(args + ["--resume"])
    assert done.returncode == 0, done.stdout + done.stderr
    _same(_tensors(kind, out), straight[kind])


@pytest.mark.parametrize("kind", ["fit", "train"])
def test_a_damaged_newest_checkpoint_is_skipped_not_loaded(setup, straight, tmp_path, kind):
    out, ckpt = tmp_path / ("trigger" if kind == "fit" else "m.pt"), tmp_path / "ckpt"
    args = _args(kind, setup, out, ckpt)
    proc = _start(args)
    _wait_for_checkpoint(proc, ckpt, count=2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    newest = sorted(ckpt.glob("epoch-*"))[-1]
    weights = newest / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # as a torn write would leave it
    (ckpt / ".epoch-00099.x1.tmp").mkdir()  # a half-built folder from a kill: never read, cleaned up
    done = _run(args + ["--resume"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skipping a damaged checkpoint" in done.stderr + done.stdout
    _same(_tensors(kind, out), straight[kind])
    assert not (ckpt / ".epoch-00099.x1.tmp").exists()


@pytest.mark.parametrize("kind", ["fit", "train"])
def test_ctrl_c_stops_with_130_and_a_message_and_resume_finishes(setup, straight, tmp_path, kind):
    out, ckpt = tmp_path / ("trigger" if kind == "fit" else "m.pt"), tmp_path / "ckpt"
    args = _args(kind, setup, out, ckpt)
    proc = _start(args)
    _wait_for_checkpoint(proc, ckpt)
    proc.send_signal(signal.SIGINT)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text
    assert "interrupted after" in text and "--resume" in text
    assert not out.exists()
    done = _run(args + ["--resume"])
    assert done.returncode == 0, done.stdout + done.stderr
    _same(_tensors(kind, out), straight[kind])
