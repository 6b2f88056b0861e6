"""How much does a trigger step cost over the work it cannot avoid?

For ResNet-18 at 64x64 (batch 64, border trigger) and the tabular MLP 512-256-64 (batch
512, feature trigger), median step times, interleaved in rounds so that every contender
sees the same machine state:

* floor: the frozen model's forward pass and the backward pass to its *input* only (what
  any input-space method must pay);
* trigger step: ``TriggerFitter``'s whole step (trigger, model, one discriminator update,
  the trigger update), weights frozen. Target: <= 1.15x the floor;
* naive step: the same game written as research code does, ``loss.backward()`` on a model
  whose weights still require gradients, so every weight gradient is computed too: the
  speed-up of freezing.

    python benchmarks/trigger_speed.py [--rounds 15] [--out FILE]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from reprogram.models import FrozenModel
from reprogram.train import mlp, resnet18
from reprogram.triggers import BorderTrigger, Discriminator, FeatureTrigger, TriggerFitter
from reprogram.triggers.fitter import _optimizer

console = Console(highlight=False, width=150)


def contenders(net: torch.nn.Module, trigger: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, g: torch.Tensor):
    frozen = FrozenModel(copy.deepcopy(net))
    fitter = TriggerFitter(frozen, trigger, "eo", 1.0, progress=False)
    fitter.discriminator_ = Discriminator(2, 2, criterion="eo")
    # the optimizers TriggerFitter.fit makes (fused Adam where torch has it)
    t_opt = _optimizer("adam", trigger.parameters(), 1e-2)
    d_opt = _optimizer("adam", fitter.discriminator_.parameters(), 1e-3)

    def floor():
        xi = x.detach().requires_grad_(True)
        F.cross_entropy(frozen(xi), y).backward()

    def step():
        fitter._trigger_step(x, y, g, t_opt, d_opt)

    # the naive loop: the same game with loss.backward() on a model whose weights still
    # require gradients, as research code does; backward then fills every weight's .grad
    naive_model = copy.deepcopy(net).eval()
    naive_trigger = copy.deepcopy(trigger)
    naive_disc = Discriminator(2, 2, criterion="eo")
    nt_opt = torch.optim.Adam(naive_trigger.parameters(), lr=1e-2)
    nd_opt = torch.optim.Adam(naive_disc.parameters(), lr=1e-3)

    def naive_step():
        logits = naive_model(naive_trigger(x))
        d_loss = F.cross_entropy(naive_disc(logits.detach(), y), g)
        nd_opt.zero_grad()
        d_loss.backward()
        nd_opt.step()
        loss = F.cross_entropy(logits, y) - F.cross_entropy(naive_disc(logits, y), g)
        nt_opt.zero_grad()
        naive_model.zero_grad()
        loss.backward()
        nt_opt.step()

    return {"floor": floor, "trigger step": step, "naive step": naive_step}


def measure(fns: dict, rounds: int, reps: int) -> dict:
    for fn in fns.values():
        for _ in range(2):
            fn()
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            times[k].append((time.perf_counter() - t0) / reps)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "trigger_speed.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    cases = {}
    x = torch.randn(64, 3, 64, 64)
    y, g = torch.randint(0, 2, (64,)), torch.randint(0, 2, (64,))
    net = resnet18(2).eval()
    cases["ResNet-18 64x64, batch 64, border"] = measure(
        contenders(net, BorderTrigger((64, 64), 4, mode="shrink"), x, y, g), args.rounds, 1)
    net = mlp(104, 2).eval()
    # batch 512 is the target case; 4096 shows what the alternating game costs is a fixed
    # per-step amount (the small discriminator's update and pass are per-op overhead)
    for batch in (512, 4096):
        x = torch.randn(batch, 104)
        y, g = torch.randint(0, 2, (batch,)), torch.randint(0, 2, (batch,))
        cases[f"MLP 512-256-64, batch {batch}, feature"] = measure(
            contenders(net, FeatureTrigger.from_data(x), x, y, g), args.rounds, 10 if batch <= 512 else 3)

    t = Table(title="Trigger step vs its floor (frozen forward + backward to the input), median seconds")
    for col in ("case", "floor", "trigger step", "ratio (target <= 1.15x)", "naive step", "speed-up of freezing"):
        t.add_column(col, justify="right")
    result = {"machine": {"platform": platform.platform(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()}, "cases": {}}
    for name, m in cases.items():
        ratio, speedup = m["trigger step"] / m["floor"], m["naive step"] / m["trigger step"]
        result["cases"][name] = {**m, "ratio": ratio, "freezing_speedup": speedup}
        t.add_row(name, f"{m['floor'] * 1e3:.2f} ms", f"{m['trigger step'] * 1e3:.2f} ms", f"{ratio:.3f}x",
                  f"{m['naive step'] * 1e3:.2f} ms", f"{speedup:.2f}x")
    console.print(t)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
