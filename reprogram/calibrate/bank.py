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
gets a uniform bucket grid over its knot range. A score's bucket is
``floor((x - lo) * scale)``; the knots of the buckets before it are all below the score
and those after it all above (floor of a monotone float expression is monotone), so
only the knots of its own bucket remain, found by an unrolled binary search of
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
    """Evaluate ``tables[table[i]]`` at ``score[i]`` for every element (any shape, same for both)."""

    def __init__(self, tables: Sequence[Table]):
        super().__init__()
        if not tables:
            raise ValueError("a MapBank needs at least one table")
        n = len(tables)
        kind = torch.tensor([KINDS.index(t.kind) for t in tables], dtype=torch.int64)
        w = torch.tensor([t.w if t.kind == "sigmoid" else (0.0, 0.0, 0.0) for t in tables], dtype=torch.float32)
        self.has = tuple(bool((kind == k).any()) for k in range(3))
        self.register_buffer("kind", kind)
        self.register_buffer("w", w)
        self._build_knots(tables)
        self.n_tables = n

    def _build_knots(self, tables: Sequence[Table]) -> None:
        # Knots of all tables concatenated; each table has its own bucket grid of M cells.
        knotted = [t for t in tables if t.kind != "sigmoid"]
        most = max((len(t.x) for t in knotted), default=1)
        m = min(max(_next_pow2(2 * most), 8), 1 << 14)
        xs, ys, slopes, k0, kn, v0, lo, scale = [], [], [], [], [], [], [], []
        starts, ends = [], []
        kx_total = vy_total = 0
        worst = 0
        for t in tables:
            if t.kind == "sigmoid":
                x = np.zeros(0)
                y = np.zeros(0)
            else:
                x = np.asarray(t.x, dtype=np.float64)
                y = np.asarray(t.y, dtype=np.float64)
            x32 = x.astype(np.float32)
            k0.append(kx_total)
            kn.append(len(x))
            v0.append(vy_total)
            if t.kind == "linear":
                dx = np.diff(x)
                with np.errstate(divide="ignore", invalid="ignore"):
                    s = np.where(dx > 0, np.diff(y) / np.where(dx > 0, dx, 1.0), 0.0)
                slopes.append(np.concatenate([s, [0.0]]))
            else:
                slopes.append(np.zeros(len(y)))
            if len(x):
                a, b = np.float32(x32[0]), np.float32(x32[-1])
                sc = np.float32(m / (b - a)) if b > a else np.float32(0.0)
                kb = np.clip(np.floor((x32 - a) * sc), 0, m - 1).astype(np.int64)
                cnt = np.bincount(kb, minlength=m)
            else:
                a, sc = np.float32(0.0), np.float32(0.0)
                cnt = np.zeros(m, dtype=np.int64)
            before = np.concatenate([[0], np.cumsum(cnt)])  # knots in buckets < b
            # window of bucket b: buckets b-1..b+1, widened against runtime rounding
            lo_b = before[np.maximum(np.arange(m) - 1, 0)]
            hi_b = before[np.minimum(np.arange(m) + 2, m)]
            worst = max(worst, int((hi_b - lo_b).max(initial=0)))
            starts.append(lo_b + kx_total)
            ends.append(hi_b + kx_total)
            lo.append(float(a))
            scale.append(float(sc))
            xs.append(x)
            ys.append(y)
            kx_total += len(x)
            vy_total += len(y)
        self.m = m
        self.steps = max(1, math.ceil(math.log2(worst + 1))) if worst else 0
        cat = lambda parts, dt: torch.tensor(np.concatenate(parts) if parts else np.zeros(0), dtype=dt)  # noqa: E731
        # a dummy knot keeps every gather in range when no table has knots
        kx = cat(xs, torch.float32)
        self.register_buffer("kx", kx if len(kx) else torch.zeros(1))
        vy = cat(ys, torch.float32)
        self.register_buffer("vy", vy if len(vy) else torch.zeros(1))
        sl = cat(slopes, torch.float32)
        self.register_buffer("slope", sl if len(sl) else torch.zeros(1))
        self.register_buffer("k0", torch.tensor(k0, dtype=torch.int64))
        self.register_buffer("kn", torch.tensor(kn, dtype=torch.int64))
        self.register_buffer("v0", torch.tensor(v0, dtype=torch.int64))
        self.register_buffer("lo", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.register_buffer("b_start", cat(starts, torch.int64))
        self.register_buffer("b_end", cat(ends, torch.int64))
        self.register_buffer("x_first", torch.tensor([x[0] if len(x) else 0.0 for x in xs], dtype=torch.float32))
        self.register_buffer("x_last", torch.tensor([x[-1] if len(x) else 0.0 for x in xs], dtype=torch.float32))

    def _count_le(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Global index just past the last knot of table ``t`` that is <= x (see module docstring)."""
        m = self.m
        b = torch.floor((x - self.lo[t]) * self.scale[t]).clamp(0, m - 1).to(torch.int64)
        cell = t * m + b
        pos = self.b_start[cell]
        end = self.b_end[cell]
        last = self.kx.shape[0] - 1
        for s in range(self.steps - 1, -1, -1):
            cand = pos + (1 << s)
            knot = self.kx[(cand - 1).clamp(0, last)]
            pos = torch.where((cand <= end) & (knot <= x), cand, pos)
        return pos

    def forward(self, score: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        out = torch.zeros_like(score)
        kind = self.kind[table]
        if self.has[SIGMOID]:
            q = score.clamp(EPS, 1.0 - EPS)
            w = self.w[table]
            z = w[..., 0] * torch.log(q) + w[..., 1] * torch.log1p(-q) + w[..., 2]
            out = torch.where(kind == SIGMOID, torch.sigmoid(z), out)
        if self.has[LINEAR] or self.has[STEP]:
            k0 = self.k0[table]
            kn = self.kn[table]
            if self.has[LINEAR]:
                # clamp to the knot range first: the map is constant outside it
                xc = torch.minimum(torch.maximum(score, self.x_first[table]), self.x_last[table])
                pos = self._count_le(xc, table)
                seg = torch.minimum(torch.maximum(pos - 1, k0), k0 + kn - 1)
                last_v = self.vy.shape[0] - 1  # rows of other kinds index past their (empty) tables
                vseg = (self.v0[table] + (seg - k0)).clamp(0, last_v)
                lin = self.vy[vseg] + (xc - self.kx[seg.clamp(0, self.kx.shape[0] - 1)]) * self.slope[vseg]
                out = torch.where(kind == LINEAR, lin, out)
            if self.has[STEP]:
                pos = self._count_le(score, table)
                step = self.vy[(self.v0[table] + (pos - k0)).clamp(0, self.vy.shape[0] - 1)]
                out = torch.where(kind == STEP, step, out)
        return out
