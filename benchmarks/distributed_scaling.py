"""How does data-parallel fitting and training scale with the number of processes?

Throughput (training rows per second, validation left out) of a trigger fit
(``TriggerFitter``: a feature trigger on a frozen MLP 512-256-64) and of a training run
(``Trainer``: the same MLP, cross-entropy) on one process and on N processes of one
machine, each process one thread, the global batch fixed (the fastest of ``--repeats``
runs counts, as the machine may be shared). On CPU the processes talk
through gloo (on GPUs it would be NCCL); every process group is started with
``torch.multiprocessing`` exactly as torchrun would (``init_process_group`` per rank),
and the loops are the library's own. Each setting is timed after a warm-up epoch.

Two global batches by default: at 512 a step of this MLP is a few milliseconds, about
what gloo needs to all-reduce its 0.2M gradients over loopback TCP, so a second process
cannot pay for itself; at 4096 the compute dominates and the speed-up shows.

    python benchmarks/distributed_scaling.py [--procs 1 2] [--batch-size 512 4096] [--rows 65536] [--epochs 3] [--repeats 3] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
from rich.console import Console
from rich.table import Table

console = Console(highlight=False, width=150)
N_FEATURES = 104


def _data(rows: int):
    from reprogram.data.datasets import TabularDataset
    from reprogram.data.groups import GroupEncoder

    rng = np.random.default_rng(0)
    g = rng.integers(0, 2, rows)
    x = (rng.normal(size=(rows, N_FEATURES)) + 0.5 * g[:, None]).astype(np.float32)
    y = (x[:, :8].sum(1) + rng.normal(size=rows) > 2).astype(int)
    names = np.array(["a", "b"])[g]
    enc = GroupEncoder().fit(names)
    return TabularDataset(x, y, enc.transform(names), groups=enc, classes=[0, 1])


def _run(kind: str, rows: int, epochs: int, batch: int, repeats: int) -> float:
    """Seconds for ``epochs`` epochs of ``kind`` on this rank: after one warm-up epoch, the
    fastest of ``repeats`` runs (the machine may be shared)."""
    from reprogram.models import FrozenModel
    from reprogram.train import Trainer, mlp
    from reprogram.triggers import FeatureTrigger, TriggerFitter

    ds = _data(rows)
    torch.manual_seed(0)

    def once(n_epochs: int) -> float:
        if kind == "trigger fit":
            frozen = FrozenModel(mlp(N_FEATURES, 2, dropout=0.0), input_kind="tabular")
            job = TriggerFitter(frozen, FeatureTrigger(N_FEATURES), "eo", 1.0, epochs=n_epochs, batch_size=batch,
                                device="cpu", progress=False)
        else:
            job = Trainer(mlp(N_FEATURES, 2, dropout=0.0), epochs=n_epochs, batch_size=batch, device="cpu",
                          progress=False)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        t0 = time.perf_counter()
        job.fit(ds)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        return time.perf_counter() - t0

    once(1)  # warm-up
    return min(once(epochs) for _ in range(repeats))


def _worker(rank: int, world: int, port: int, kind: str, rows: int, epochs: int, batch: int, repeats: int,
            out: str) -> None:
    torch.set_num_threads(1)
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                             world_size=world)
    seconds = _run(kind, rows, epochs, batch, repeats)
    if rank == 0:
        Path(out).write_text(json.dumps(seconds))
    if world > 1:
        from reprogram.distributed import finish

        finish()  # a barrier, then teardown (after an error the spawner ends the other ranks)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(kind: str, world: int, rows: int, epochs: int, batch: int, repeats: int) -> float:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "seconds.json")
        mp.start_processes(_worker, args=(world, _port(), kind, rows, epochs, batch, repeats, out), nprocs=world,
                           start_method="spawn", join=True)
        return json.loads(Path(out).read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2], help="Process counts to compare.")
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[512, 4096],
                    help="Global batches to compare (each split across the processes).")
    ap.add_argument("--repeats", type=int, default=3, help="Timed runs per setting; the fastest counts.")
    ap.add_argument("--quick", action="store_true", help="A smoke run: 2048 rows, 1 epoch, 1 timed run.")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "distributed_scaling.json")
    args = ap.parse_args()
    if args.quick:
        args.rows, args.epochs, args.repeats, args.batch_size = 2048, 1, 1, args.batch_size[:1]
    result = {"machine": {"platform": platform.platform(), "torch": torch.__version__, "cpus": os.cpu_count(),
                          "backend": "gloo", "threads_per_process": 1},
              "settings": {"rows": args.rows, "epochs": args.epochs, "global_batches": args.batch_size,
                           "repeats": args.repeats}, "cases": []}
    t = Table(title=f"Data-parallel throughput, {args.rows} rows x {args.epochs} epochs, gloo, 1 thread per process")
    for col in ("run", "global batch", "processes", "seconds", "rows/s", "speed-up", "efficiency"):
        t.add_column(col, justify="right")
    for batch in args.batch_size:
        for kind in ("trigger fit", "train"):
            base = None
            for world in args.procs:
                seconds = measure(kind, world, args.rows, args.epochs, batch, args.repeats)
                rate = args.rows * args.epochs / seconds
                base = base or rate
                row = {"run": kind, "global_batch": batch, "processes": world, "seconds": seconds, "rows_per_s": rate,
                       "speedup": rate / base, "efficiency": rate / base / world}
                result["cases"].append(row)
                t.add_row(kind, str(batch), str(world), f"{seconds:.2f}", f"{rate:,.0f}", f"{rate / base:.2f}x",
                          f"{rate / base / world:.0%}")
                console.print(f"{kind}, batch {batch}, {world} process(es): {rate:,.0f} rows/s")
    console.print(t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
