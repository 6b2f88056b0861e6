"""Data-parallel fitting and training on torch.distributed (gloo, 2 CPU processes).

Two ranks taking half of every global batch, with gradients averaged (DDP for the
discriminator and the trained model, an all-reduce for the trigger), learn what one
process learns with the same global batch and seed, up to float rounding.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from reprogram.data.datasets import TabularDataset
from reprogram.data.groups import GroupEncoder
from reprogram.distributed import ShardedBatchSampler, ShardedSampler
from reprogram.models import FrozenModel
from reprogram.train import Trainer
from reprogram.triggers import FeatureTrigger, TriggerFitter

WORLD = 2


def _data(n: int = 384, seed: int = 3) -> TabularDataset:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4)) + 0.8 * g[:, None]
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(scale=0.5, size=n) > 0.6).astype(int)
    groups = GroupEncoder().fit(np.array(["a", "b"])[g])
    return TabularDataset(x.astype(np.float32), y, groups.transform(np.array(["a", "b"])[g]), groups=groups,
                          classes=[0, 1])


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # no BatchNorm, no dropout: nothing that depends on the batch split
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))


def _fit_trigger(rule: str):
    ds = _data()
    frozen = FrozenModel(_net(), input_kind="tabular")
    fitter = TriggerFitter(frozen, FeatureTrigger(4), "eo", 1.0, rule=rule, epochs=3, batch_size=64, lr=0.05,
                           device="cpu", seed=7, progress=False)
    fitter.fit(ds, ds)
    return {k: v.detach().clone() for k, v in fitter.trigger.state_dict().items()}, fitter.history_, fitter.best_epoch_


def _train():
    ds = _data()
    trainer = Trainer(_net(1), epochs=3, batch_size=64, lr=0.01, device="cpu", seed=5, progress=False)
    trainer.fit(ds, ds)
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}, trainer.history_, trainer.best_epoch_


def _worker(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        results = {"minmax": _fit_trigger("minmax"), "projection": _fit_trigger("projection"), "train": _train()}
        torch.save(results, f"{out}/rank{rank}.pt")
        from reprogram.distributed import finish

        finish()  # a barrier, then teardown
    except BaseException:
        torch.distributed.destroy_process_group()
        raise


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, start_method="spawn", join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def _close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=1e-4), (k, (a[k] - b[k]).abs().max())


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["minmax", "projection"])
def test_two_processes_learn_the_single_process_trigger(two_ranks, rule):
    single, hist, best = _fit_trigger(rule)
    for rank in two_ranks:
        state, r_hist, r_best = rank[rule]
        _close(state, single, atol=1e-5)
        assert r_best == best
        assert [round(h["task_loss"], 4) for h in r_hist] == [round(h["task_loss"], 4) for h in hist]
    _close(two_ranks[0][rule][0], two_ranks[1][rule][0], atol=0)  # the ranks never diverge


@pytest.mark.slow
def test_two_processes_train_the_single_process_model(two_ranks):
    single, hist, best = _train()
    for rank in two_ranks:
        state, r_hist, r_best = rank["train"]
        _close(state, single, atol=1e-5)
        assert r_best == best and len(r_hist) == len(hist)
        assert r_hist[-1]["train_loss"] == pytest.approx(hist[-1]["train_loss"], rel=1e-5)


def test_sharded_samplers_split_each_global_batch():
    order = list(range(10))
    shards = [list(ShardedSampler(order, 3, r)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]  # padded from the start, like DistributedSampler
    assert sorted(sum(shards, [])) == sorted(order + [0, 1])
    # per-rank batches of 2 from 3 ranks: their union is the single-process batch of 6
    assert sorted(shards[0][:2] + shards[1][:2] + shards[2][:2]) == order[:6]
    batches = [[0, 1, 2, 3, 4], [5, 6]]
    assert [list(ShardedBatchSampler(batches, 2, r)) for r in range(2)] == [[[0, 2, 4], [5]], [[1, 3, 0], [6]]]


def test_without_a_process_group_nothing_changes(monkeypatch):
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    from reprogram.distributed import context, init_distributed

    assert init_distributed("cpu") == context() and not context().enabled
    assert os.environ.get("WORLD_SIZE") is None


@pytest.mark.slow
def test_torchrun_fit_command_matches_one_process_and_only_rank_0_writes(tmp_path):
    import subprocess
    import sys

    import pandas as pd
    from safetensors.torch import load_file

    from reprogram.train import save_frozen

    ds = _data()
    frame = pd.DataFrame(ds.features, columns=[f"f{i}" for i in range(4)])
    frame["y"], frame["group"] = ds.labels, np.array(ds.group_names)[ds.group_ids]
    frame.to_csv(tmp_path / "tune.csv", index=False)
    save_frozen(_net(), tmp_path / "model.pt", ds)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = ["-m", "reprogram", "fit", "--model", str(tmp_path / "model.pt"), "--data", str(tmp_path / "tune.csv"),
              "--label", "y", "--sensitive", "group", "--epochs", "3", "--batch-size", "64", "--device", "cpu"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *common, "--out", str(tmp_path / "t2")], env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("kept epoch") == 1  # rank 1 prints nothing
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "t1")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert one.returncode == 0, one.stdout + one.stderr
    a, b = (load_file(str(tmp_path / t / "weights.safetensors")) for t in ("t1", "t2"))
    _close(a, b, atol=1e-5)


class _InfiniteOnRank1(nn.Module):
    """The model, except that rank 1's logits are infinite: a NaN loss on one rank only."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        out = self.net(x)
        return out * float("inf") if torch.distributed.get_rank() == 1 else out


def _diverging_worker(rank: int, port: int, out: str) -> None:
    import datetime

    from reprogram.errors import TrainingDiverged

    torch.set_num_threads(1)
    # a short collective timeout: were the ranks not to agree, rank 0 would wait in an
    # all-reduce that never completes, and this test fails instead of hanging
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    messages = []
    try:
        for run in ("train", "fit"):
            try:
                if run == "train":
                    Trainer(_InfiniteOnRank1(_net()), epochs=2, batch_size=64, device="cpu", progress=False).fit(_data())
                else:
                    frozen = FrozenModel(_InfiniteOnRank1(_net()), input_kind="tabular")
                    TriggerFitter(frozen, FeatureTrigger(4), "dp", epochs=2, batch_size=64, device="cpu",
                                  progress=False).fit(_data())
                messages.append(f"{run}: finished")
            except TrainingDiverged as e:
                messages.append(f"{run}: {e}")
        with open(f"{out}/rank{rank}.txt", "w") as f:
            f.write("\n".join(messages))
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_a_nan_on_one_rank_stops_every_rank_with_one_line(tmp_path):
    mp.start_processes(_diverging_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, start_method="spawn",
                       join=True)
    r0, r1 = ((tmp_path / f"rank{r}.txt").read_text().splitlines() for r in range(WORLD))
    assert r1[0].startswith("train: training diverged at epoch 1: the loss is")
    assert r0[0] == ("train: training diverged at epoch 1: the loss is not finite on another rank; "
                     "try a lower learning rate")
    assert r1[1].startswith("fit: trigger fitting diverged at epoch 1: the task loss is")
    # rank 0's adversary may read NaN itself by then: DDP averaged rank 1's NaN gradients into it
    assert r0[1].startswith("fit: trigger fitting diverged at epoch 1: ") and r0[1].endswith("try a lower --lr or --lambda")
