"""Data-parallel fitting and training on ``torch.distributed``.

``torchrun --nproc_per_node N $(which reprogram) fit ...`` (or ``train``) starts N
processes; each finds ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its environment and
:func:`init_distributed` joins the process group (NCCL on GPUs, gloo on CPU, the CUDA
device pinned by ``LOCAL_RANK``). :class:`~reprogram.triggers.TriggerFitter` and
:class:`~reprogram.train.Trainer` then run their one loop data parallel whenever a
process group is initialised:

* ``batch_size`` is the *global* batch; each rank takes ``batch_size / world_size`` rows.
  :class:`ShardedSampler` deals rank ``r`` the rows ``r, r + N, r + 2N, ...`` of the
  single-process order (the stock ``DistributedSampler`` scheme, but around whatever
  sampler the loop already uses), so the union of the ranks' k-th batches is exactly
  the single-process k-th batch;
* gradients are averaged over ranks: the module trained by ``.backward()`` is wrapped in
  ``DistributedDataParallel`` (the Trainer's model, the fitter's discriminator); the
  trigger, whose gradients are taken with ``torch.autograd.grad`` (the projection rule
  needs the task and adversary gradients separately), has them all-reduced with
  :func:`all_reduce_mean_`. Equal per-rank batch sizes make the mean of per-rank means
  the mean over the global batch, so a run on N processes follows the single-process
  run up to float rounding;
* validation and the epoch choice happen on rank 0 and are broadcast, so ranks never
  diverge; only rank 0 writes checkpoints and artifacts and prints.

Without a process group (a plain ``reprogram fit``) every helper here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler

__all__ = ["DistContext", "context", "init_distributed", "is_main", "launched_by_torchrun", "all_reduce_mean_",
           "all_reduce_sum", "broadcast_object", "ShardedSampler", "ShardedBatchSampler", "wrap_ddp", "barrier"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher setting the same variables)."""
    return all(k in os.environ for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))


def context() -> DistContext:
    """The rank and world size of the initialised process group; rank 0 of 1 without one."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistContext()


def is_main() -> bool:
    return context().is_main


def init_distributed(device: str | torch.device = "auto") -> DistContext:
    """Join the process group torchrun describes in the environment (idempotent; a no-op
    when not launched by torchrun). NCCL when the run uses CUDA, gloo otherwise; the CUDA
    device is pinned by ``LOCAL_RANK``."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) < 2 or not dist.is_available():
        return context()
    if dist.is_initialized():
        return context()
    local_rank = int(os.environ["LOCAL_RANK"])
    name = str(device).lower()
    cuda = torch.cuda.is_available() and (name == "auto" or name.startswith("cuda"))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return context()


def barrier() -> None:
    if context().enabled:
        dist.barrier()


def _flat_op(tensors: list[torch.Tensor], op) -> None:
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat, op=op)
    start = 0
    for t in tensors:
        t.copy_(flat[start : start + t.numel()].view_as(t))
        start += t.numel()


def all_reduce_mean_(tensors: list[torch.Tensor]) -> None:
    """Average ``tensors`` (in place) over the ranks, in one collective."""
    ctx = context()
    if not ctx.enabled or not tensors:
        return
    _flat_op(tensors, dist.ReduceOp.SUM)
    for t in tensors:
        t.div_(ctx.world_size)


def all_reduce_sum(values: list[float], device: torch.device | None = None) -> list[float]:
    """Sum a few numbers over the ranks (epoch loss totals and row counts)."""
    if not context().enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_rank_later(flag: bool) -> Callable[[], bool]:
    """Start asking whether ``flag`` is true on any rank; the returned function waits for
    the answer (``flag`` itself without a process group). So all ranks stop together when
    one must (a NaN loss, say). Started before the backward pass and read after it, the
    collective's latency (about 0.3 ms over gloo on loopback, a tenth of a small step)
    hides behind the backward's compute; every rank starts it at the same point, before
    DDP's own all-reduces, so the collectives stay in the same order on all ranks."""
    if not context().enabled:
        return lambda: bool(flag)
    t = torch.tensor([float(bool(flag))], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    work = dist.all_reduce(t, async_op=True)

    def answer() -> bool:
        work.wait()
        return bool(t.item() > 0)

    return answer


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (in memory; nothing is written)."""
    if not context().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def wrap_ddp(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` in ``DistributedDataParallel`` under a process group; itself otherwise."""
    if not context().enabled or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


class ShardedSampler(Sampler):
    """Rank ``rank``'s share of ``sampler``'s order: items ``rank, rank + N, ...``.

    The order is padded (from its start, as ``DistributedSampler`` does) to a multiple of
    ``num_replicas`` so every rank takes the same number of steps. ``sampler`` must give
    the same order on every rank (seeded); ``set_epoch`` is passed on.
    """

    def __init__(self, sampler, num_replicas: int, rank: int):
        self.sampler, self.num_replicas, self.rank = sampler, int(num_replicas), int(rank)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.num_replicas)

    def __iter__(self):
        order = list(self.sampler)
        if not order:
            return iter([])
        total = len(self) * self.num_replicas
        while len(order) < total:
            order += order[: total - len(order)]
        return iter(order[self.rank :: self.num_replicas])


class ShardedBatchSampler(Sampler):
    """Rank ``rank``'s share of every batch of ``batch_sampler`` (each batch padded from its
    start to a multiple of ``num_replicas``, so the ranks' batches have equal sizes)."""

    def __init__(self, batch_sampler, num_replicas: int, rank: int):
        self.batch_sampler, self.num_replicas, self.rank = batch_sampler, int(num_replicas), int(rank)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self):
        for batch in self.batch_sampler:
            batch = list(batch)
            total = -(-len(batch) // self.num_replicas) * self.num_replicas
            while len(batch) < total:
                batch += batch[: total - len(batch)]
            yield batch[self.rank :: self.num_replicas]


def per_rank_batch(batch_size: int) -> int:
    """The rows of the global ``batch_size`` each rank takes; it must divide evenly."""
    from reprogram.errors import InputError

    n = context().world_size
    if batch_size % n:
        raise InputError(f"the batch size {batch_size} is the global batch and must be divisible by the "
                         f"{n} processes")
    return batch_size // n


def finish() -> None:
    """Leave the process group (after the last collective; a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()  # no rank tears down its connections while another still uses them
        finally:
            dist.destroy_process_group()


def start_cli(device: str, console) -> DistContext:
    """For the ``fit`` and ``train`` commands: join torchrun's process group, and keep
    every rank but 0 quiet."""
    ctx = init_distributed(device)
    if not ctx.is_main:
        console.quiet = True
    return ctx
