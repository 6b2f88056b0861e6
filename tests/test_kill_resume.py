"""Crash safety of `reprogram fit` and `reprogram train`, with real processes.

A run killed with SIGKILL at a random moment after its first checkpoint and restarted
with --resume ends with the same tensors as an uninterrupted run; a damaged newest
checkpoint is skipped, never loaded; Ctrl-C stops with exit code 130 and a message.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file

from reprogram.cli import main
from reprogram.models import load_frozen
from toy_tables import group_leaning_table

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from reprogram.cli import main; main()"]
ENV = {"OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("crash")
    df, _ = group_leaning_table(1200, 2)
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
    return subprocess.run(CLI + args, env={**os.environ, **ENV}, capture_output=True, text=True, timeout=300, **kw)


def _start(args) -> subprocess.Popen:
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


def _interrupt(kind: str, d: Path, tmp: Path, sig: int, *, count: int = 1, delay: float = 0.0):
    """Start a checkpointed run, send ``sig`` once ``count`` checkpoints exist (plus ``delay``
    seconds); its args, output path, checkpoint folder and process."""
    out, ckpt = tmp / ("trigger" if kind == "fit" else "m.pt"), tmp / "ckpt"
    args = _args(kind, d, out, ckpt)
    proc = _start(args)
    _wait_for_checkpoint(proc, ckpt, count=count)
    time.sleep(delay)
    proc.send_signal(sig)
    return args, out, ckpt, proc


def _resume(args: list[str]) -> str:
    """Run ``args --resume`` to the end; its output."""
    done = _run(args + ["--resume"])
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


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
    args, out, _, proc = _interrupt(kind, setup, tmp_path, signal.SIGKILL, delay=random.uniform(0.0, 1.0))
    proc.wait(timeout=30)
    _resume(args)
    _same(_tensors(kind, out), straight[kind])


@pytest.mark.parametrize("kind", ["fit", "train"])
def test_a_damaged_newest_checkpoint_is_skipped_not_loaded(setup, straight, tmp_path, kind):
    args, out, ckpt, proc = _interrupt(kind, setup, tmp_path, signal.SIGKILL, count=2)
    proc.wait(timeout=30)
    newest = sorted(ckpt.glob("epoch-*"))[-1]
    weights = newest / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # as a torn write would leave it
    (ckpt / ".epoch-00099.x1.tmp").mkdir()  # a half-built folder from a kill: never read, cleaned up
    assert "skipping a damaged checkpoint" in _resume(args)
    _same(_tensors(kind, out), straight[kind])
    assert not (ckpt / ".epoch-00099.x1.tmp").exists()


@pytest.mark.parametrize("kind", ["fit", "train"])
def test_ctrl_c_stops_with_130_and_a_message_and_resume_finishes(setup, straight, tmp_path, kind):
    args, out, _, proc = _interrupt(kind, setup, tmp_path, signal.SIGINT)
    text, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, text
    assert "interrupted after" in text and "--resume" in text
    assert not out.exists()
    _resume(args)
    _same(_tensors(kind, out), straight[kind])
