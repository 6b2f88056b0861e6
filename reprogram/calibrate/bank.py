"""Torch form of calibration maps: a *bank* of binary maps evaluated per element.

Every binary map the calibrators fit is one of three shapes:

* ``sigmoid``: ``sigmoid(w1 * ln p + w2 * ln(1 - p) + w3)`` -- Platt (``w1 = a, w2 = -a,
  w3 = b``), binary temperature (``w1 = 1/T, w2 = -1/T``) and beta calibration
  (``w1 = a, w2 = -b, w3 = c``) are all linear in the two log-odds features;
* ``linear``: piecewise-linear interpolation between knots ``(x_k, y_k)``, constant
  outside them (isotonic regression, applied as scikit-learn applies it);
* ``step``: ``values[#edges <= x]`` (histogram binning).

A :class:`MapBank` holds T such maps ("tables") and evaluates ``score[i]`` with table
``table[i]``, all rows at once: a group calibrator is one bank indexed by group, a
one-vs-rest map one bank indexed by class. Being plain tensor ops, it exports to ONNX.

Why a hand-written lookup: ``torch.searchsorted`` does not export to ONNX, and the
export-friendly ``(x.unsqueeze(-1) >= knots).sum(-1)`` costs O(N*K) time and memory
(an isotonic map has hundreds of knots; scores come by millions). Here each table
gets a uniform bucket grid over its knot range (16 buckets per knot). A score's bucket
is ``floor((x - lo) * scale)``; the knots of the buckets before it are all below the
score and those after it all above (floor of a monotone float expression is monotone),
so only the knots of its own bucket remain, found by an unrolled binary search of
``ceil(log2(width + 1))`` steps, where ``width`` is the most knots any (widened) bucket
window holds -- usually 1 to 3 steps. Time O(N log w), memory O(N). The window spans
the neighbouring buckets too, so a score that another runtime rounds into the next
bucket still finds its knot: the result is exact, not approximate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from reprogram.calibrate.scores import EPS

__all__ = ["Table", "MapBank", "table_values"]

KINDS = ("sigmoid", "linear", "step")
SIGMOID, LINEAR, STEP = range(3)


@dataclass(frozen=True)
class Table:
    """One binary map: ``kind`` with weights ``w`` (sigmoid) or knots ``x`` and values ``y``.

    For ``linear``, ``len(y) == len(x) >= 1``; for ``step``, ``x`` are the inner bin
    edges and ``len(y) == len(x) + 1``.
    """

    kind: str
    w: tuple[float, float, float] = (0.0, 0.0, 0.0)
    x: np.ndarray | None = None
    y: np.ndarray | None = None


def table_values(t: Table, p: np.ndarray) -> np.ndarray:
    """The numpy reference for one table (float64); the bank must match it."""
    if t.kind == "sigmoid":
        q = np.clip(p, EPS, 1.0 - EPS)
        z = t.w[0] * np.log(q) + t.w[1] * np.log1p(-q) + t.w[2]
        return 1.0 / (1.0 + np.exp(-z))
    if t.kind == "linear":
        return np.interp(p, t.x, t.y)
    if t.kind == "step":
        # a step map reads scores at float32 precision, as its exported graph does: the
        # bin of a score a hair below an edge must not depend on the runtime
        return np.asarray(t.y)[np.searchsorted(t.x, p.astype(np.float32).astype(np.float64), side="right")]
    raise ValueError(f"unknown table kind {t.kind!r}")


def _next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


class MapBank(nn.Module):
    """Evaluate ``tables[table[i]]`` at ``score[i]`` for every element (any shape, same for both).

    A bank of one table (a plain map) bakes that table's constants into the graph and
    ignores ``table``; a bank whose tables are all of one kind skips the other kinds.
    Each table's knots are followed by ``2**steps`` +inf entries, so the binary search
    needs no bound check: it can never step past a knot greater than the score.
    """

    def __init__(self, tables: Sequence[Table]):
        super().__init__()
        if not tables:
            raise ValueError("a MapBank needs at least one table")
        kinds = [KINDS.index(t.kind) for t in tables]
        self.n_tables = len(tables)
        self.single = self.n_tables == 1
        self.has = tuple(k in kinds for k in range(3))
        self.mixed = sum(self.has) > 1
        self.register_buffer("kind", torch.tensor(kinds, dtype=torch.int64))
        w = [t.w if t.kind == "sigmoid" else (0.0, 0.0, 0.0) for t in tables]
        self.register_buffer("w", torch.tensor(w, dtype=torch.float32))
        self.w0 = tuple(float(v) for v in w[0])
        self._build_knots(tables)

    def _build_knots(self, tables: Sequence[Table]) -> None:
        knots = [np.asarray(t.x, dtype=np.float64) if t.kind != "sigmoid" else np.zeros(0) for t in tables]
        values = [np.asarray(t.y, dtype=np.float64) if t.kind != "sigmoid" else np.zeros(0) for t in tables]
        most = max(len(x) for x in knots)
        # 16 buckets per knot keeps the windows to a few knots (1-3 search steps); the
        # whole grid stays under 4M cells however many tables there are
        m = max(8, min(_next_pow2(16 * most), 1 << 14))
        while m > 8 and m * len(tables) > (1 << 22):
            m //= 2
        grids = []
        worst = 0
        for x in knots:
            x32 = x.astype(np.float32)
            if len(x):
                a, b = np.float32(x32[0]), np.float32(x32[-1])
                sc = np.float32(m / (b - a)) if b > a else np.float32(0.0)
                cnt = np.bincount(np.clip(np.floor((x32 - a) * sc), 0, m - 1).astype(np.int64), minlength=m)
            else:
                a, sc, cnt = np.float32(0.0), np.float32(0.0), np.zeros(m, dtype=np.int64)
            before = np.concatenate([[0], np.cumsum(cnt)])  # knots in buckets < b
            # a bucket's window spans buckets b-1..b+1: a score another runtime rounds
            # into the neighbouring bucket still finds its knot
            start = before[np.maximum(np.arange(m) - 1, 0)]
            end = before[np.minimum(np.arange(m) + 2, m)]
            worst = max(worst, int((end - start).max(initial=0)))
            grids.append((float(a), float(sc), start))
        self.m = m
        self.steps = math.ceil(math.log2(worst + 1)) if worst else 0
        pad = 1 << self.steps
        kx, vy, slope, k0, kn, v0, b_start = [], [], [], [], [], [], []
        k_total = v_total = 0
        for t, x, y, (a, sc, start) in zip(tables, knots, values, grids):
            k0.append(k_total)
            kn.append(len(x))
            v0.append(v_total)
            b_start.append(start + k_total)
            kx.append(np.concatenate([x, np.full(pad, np.inf)]))
            k_total += len(x) + pad
            if t.kind == "linear":
                dx = np.diff(x)
                with np.errstate(divide="ignore", invalid="ignore"):
                    sl = np.where(dx > 0, np.diff(y) / np.where(dx > 0, dx, 1.0), 0.0)
                slope.append(np.concatenate([sl, [0.0]]))
            else:
                slope.append(np.zeros(len(y)))
            vy.append(y)
            v_total += len(y)
        vy.append(np.zeros(1))  # keeps every gather in range when no table has values
        slope.append(np.zeros(1))
        f32 = lambda parts: torch.tensor(np.concatenate(parts), dtype=torch.float32)  # noqa: E731
        i64 = lambda v: torch.tensor(np.asarray(v), dtype=torch.int64)  # noqa: E731
        self.register_buffer("kx", f32(kx))
        self.register_buffer("vy", f32(vy))
        self.register_buffer("slope", f32(slope))
        self.register_buffer("k0", i64(k0))
        self.register_buffer("kn", i64(kn))
        self.register_buffer("v0", i64(v0))
        self.register_buffer("b_start", i64(np.concatenate(b_start)))
        self.register_buffer("lo", torch.tensor([g[0] for g in grids], dtype=torch.float32))
        self.register_buffer("scale", torch.tensor([g[1] for g in grids], dtype=torch.float32))
        firsts = [x[0] if len(x) else 0.0 for x in knots]
        lasts = [x[-1] if len(x) else 0.0 for x in knots]
        self.register_buffer("x_first", torch.tensor(firsts, dtype=torch.float32))
        self.register_buffer("x_last", torch.tensor(lasts, dtype=torch.float32))
        # the one table of a plain map, as Python numbers the export bakes in
        self.c = {"lo": float(np.float32(grids[0][0])), "scale": float(np.float32(grids[0][1])),
                  "first": float(np.float32(firsts[0])), "last": float(np.float32(lasts[0])),
                  "k0": k0[0], "v0": v0[0]}

    def _per(self, name: str, table: torch.Tensor):
        """A per-table value for each element: a constant for a one-table bank."""
        return self.c[name] if self.single else getattr(self, {"first": "x_first", "last": "x_last"}.get(name, name))[table]

    def _count_le(self, x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Global index just past the last knot of the element's table that is <= x (module docstring)."""
        b = torch.floor((x - self._per("lo", table)) * self._per("scale", table)).clamp(0, self.m - 1).to(torch.int64)
        pos = self.b_start[b if self.single else table * self.m + b]
        for s in range(self.steps - 1, -1, -1):
            cand = pos + (1 << s)
            pos = torch.where(self.kx[cand - 1] <= x, cand, pos)
        return pos

    def forward(self, score: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(score)
        kind = self.kind[table] if self.mixed else None
        if self.has[SIGMOID]:
            q = score.clamp(EPS, 1.0 - EPS)
            w = self.w[table] if not self.single else None
            w1, w2, w3 = (self.w0 if self.single else (w[..., 0], w[..., 1], w[..., 2]))
            sig = torch.sigmoid(w1 * torch.log(q) + w2 * torch.log1p(-q) + w3)
            out = torch.where(kind == SIGMOID, sig, out) if self.mixed else sig
        if self.has[LINEAR]:
            # clamp to the knot range first: the map is constant outside it
            xc = score.clamp(self.c["first"], self.c["last"]) if self.single else torch.minimum(
                torch.maximum(score, self.x_first[table]), self.x_last[table])
            seg = self._count_le(xc, table) - 1  # >= the table's first knot, as xc is
            k0, v0 = self._per("k0", table), self._per("v0", table)
            vseg = seg - k0 + v0
            if self.mixed:  # rows of other kinds look past their (empty) tables: keep them in range
                seg = seg.clamp(0, self.kx.shape[0] - 1)
                vseg = vseg.clamp(0, self.vy.shape[0] - 1)
            lin = self.vy[vseg] + (xc - self.kx[seg]) * self.slope[vseg]
            out = torch.where(kind == LINEAR, lin, out) if self.mixed else lin
        if self.has[STEP]:
            vi = self._count_le(score, table) - self._per("k0", table) + self._per("v0", table)
            if self.mixed:
                vi = vi.clamp(0, self.vy.shape[0] - 1)
            step = self.vy[vi]
            out = torch.where(kind == STEP, step, out) if self.mixed else step
        return out
