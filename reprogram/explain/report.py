"""The saliency report: what a fairness trigger changes in a frozen model, on one HTML page.

:func:`saliency_report` predicts a dataset with the model alone and with the model +
trigger, puts the two fairness reports side by side, picks a few inputs per group (the
ones whose prediction the trigger flips first), explains each with Captum attributions
(Integrated Gradients and Grad-CAM for images, IG over token embeddings for text, IG per
feature for tables) without and with the trigger, adds the calibrator's reliability
diagram when there is one, and writes a single self-contained HTML file (figures inlined
as PNG data URIs, no scripts, nothing fetched). The figures and the page's sections come
back in a :class:`SaliencyReport`, for notebooks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reprogram.errors import InputError
from reprogram.explain import html as H

__all__ = ["SaliencyReport", "expected_figures", "saliency_report", "select_samples"]

METHOD_LABELS = {"integrated_gradients": "IG", "grad_cam": "Grad-CAM", "smoothgrad": "SmoothGrad"}
BASE_COLOR, TRIGGER_COLOR = "#7f8fa6", "#e07b00"
# Overall figures shown, and whether higher is better (colours the change column).
OVERALL = [
    ("accuracy", True), ("worst_group_accuracy", True), ("accuracy_gap", False),
    ("demographic_parity_difference", False), ("demographic_parity_ratio", True),
    ("equalized_odds_difference", False), ("equal_opportunity_difference", False),
    ("false_positive_rate_difference", False), ("eo_score_F", True), ("equity_scaled_accuracy", True),
    ("ece", False), ("max_group_ece", False), ("calibration_disparity", False),
]
BY_GROUP_BINARY = ["accuracy", "selection_rate", "tpr", "fpr", "ece"]
BY_GROUP_MULTI = ["accuracy", "recall_sum", "ece"]
LABELS = {"accuracy": "accuracy", "selection_rate": "selection rate", "base_rate": "base rate", "tpr": "TPR",
          "fpr": "FPR", "ece": "ECE", "recall_sum": "Σ recall",
          "worst_group_accuracy": "worst-group accuracy", "accuracy_gap": "accuracy gap (max − min)",
          "demographic_parity_difference": "demographic parity difference",
          "demographic_parity_ratio": "demographic parity ratio", "equalized_odds_difference": "equalized odds difference",
          "equal_opportunity_difference": "equal opportunity difference",
          "false_positive_rate_difference": "false positive rate difference",
          "eo_score_F": "equal-opportunity score F (1 = fair)", "equity_scaled_accuracy": "equity-scaled accuracy",
          "max_group_ece": "max group ECE", "calibration_disparity": "calibration disparity (ECE gap)"}


@dataclass
class SaliencyReport:
    """What :func:`saliency_report` made.

    ``html`` is the standalone page; ``fragment`` the same content without ``<html>``
    (its styles scoped to ``.rp-report``, as ``_repr_html_`` shows it in a notebook);
    ``sections`` the fragment's parts by name (``"header"``, ``"fairness"``,
    ``"samples"``, ``"calibration"``) without styles; ``figures`` the matplotlib Figures
    by name (``sample_<g>_<k>`` per image sample, ``features_<g>`` per group for tabular
    models, ``trigger`` for an image trigger's pattern, ``reliability`` with a
    calibrator); ``samples`` the chosen row indices by group name; ``base`` and
    ``triggered`` the fairness reports (``triggered`` None without a trigger);
    ``attributions`` the attribution objects by group name and ``"base"`` /
    ``"triggered"``; ``path`` where the page was written (None if not written).
    """

    html: str
    fragment: str
    sections: dict[str, str]
    figures: dict[str, Any]
    samples: dict[str, np.ndarray]
    base: Any
    triggered: Any
    attributions: dict[str, dict[str, Any]]
    input_kind: str
    path: Path | None = None
    pngs: dict[str, bytes] = field(default_factory=dict, repr=False)

    def _repr_html_(self) -> str:
        return f"<style>{H.STYLE}</style>{self.fragment}"

    def png(self, name: str) -> bytes:
        """The PNG bytes of figure ``name``, as embedded in the page."""
        if name not in self.pngs:
            raise InputError(f"no figure {name!r}; figures: {', '.join(self.figures)}")
        return self.pngs[name]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the page (atomically) to ``path``, which must end in .html."""
        from reprogram.io import atomic_write_text

        p = _check_out(path)
        atomic_write_text(p, self.html)
        self.path = p
        return p


# ---- choosing samples --------------------------------------------------------------------


def _round_robin(rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``rows`` reordered so the labels take turns (keeping each label's own order)."""
    if rows.size == 0:
        return rows
    _, first, codes = np.unique(labels, return_index=True, return_inverse=True)
    # label order = order of first appearance, so the caller's (seeded) order decides it
    rank_of_label = np.argsort(np.argsort(first))
    within = np.zeros(rows.size, dtype=np.int64)
    for c in range(first.size):
        m = codes == c
        within[m] = np.arange(int(m.sum()))
    return rows[np.lexsort((rank_of_label[codes], within))]


def select_samples(group_ids: np.ndarray, n_groups: int, n: int, *, seed: int = 0, flipped: np.ndarray | None = None,
                   labels: np.ndarray | None = None) -> list[np.ndarray]:
    """Up to ``n`` row indices per group, chosen deterministically from ``seed``.

    Each group's rows are shuffled by their own generator (``seed``, group id), so one
    group's choice does not depend on the others. Rows whose prediction the trigger
    changes (``flipped``) come first, then the rest with the true ``labels`` taking
    turns, so both kinds of cases and every class show up.
    """
    group_ids = np.asarray(group_ids)
    out = []
    for g in range(int(n_groups)):
        idx = np.random.default_rng([int(seed), g]).permutation(np.flatnonzero(group_ids == g))
        if flipped is not None:
            f = np.asarray(flipped, dtype=bool)[idx]
            first, rest = idx[f], idx[~f]
        else:
            first, rest = idx[:0], idx
        if labels is not None:
            rest = _round_robin(rest, np.asarray(labels)[rest])
            first = _round_robin(first, np.asarray(labels)[first])
        out.append(np.concatenate([first, rest])[: int(n)].astype(np.int64))
    return out


def expected_figures(input_kind: str, sample_counts: Sequence[int], *, image_trigger: bool = False,
                     calibrator: bool = False) -> int:
    """How many figures (``<img>`` elements) a report holds: one per image sample, one
    bar chart per group with samples for tabular models, none for text; plus the image
    trigger's pattern and the reliability diagram."""
    counts = [int(c) for c in sample_counts]
    n = sum(counts) if input_kind == "image" else sum(c > 0 for c in counts) if input_kind == "tabular" else 0
    return n + int(image_trigger and input_kind == "image") + int(calibrator)


# ---- checks ------------------------------------------------------------------------------


def _check_out(out: str | os.PathLike) -> Path:
    p = Path(out)
    if p.suffix.lower() != ".html":
        raise InputError(f"the report is an HTML page: --out must end in .html, got {p.name!r}")
    return p


def _dataset_kind(ds) -> str:
    from reprogram.data.datasets import ImageDataset, TabularDataset, TextDataset

    if isinstance(ds, TextDataset):
        return "text"
    if isinstance(ds, TabularDataset):
        return "tabular"
    if isinstance(ds, ImageDataset):
        return "image"
    inputs = getattr(ds, "inputs", None)
    if isinstance(inputs, torch.Tensor):
        return "image" if inputs.dim() == 4 else "tabular" if inputs.dim() == 2 else "unknown"
    return "unknown"


def _check_inputs(model, data, trigger, samples, seed) -> str:
    if not isinstance(model, torch.nn.Module):
        raise InputError(f"model must be a torch module (a FrozenModel from load_frozen), got {type(model).__name__}")
    for attr in ("labels", "group_ids", "groups", "classes"):
        if not hasattr(data, attr):
            raise InputError(f"data must be a reprogram dataset (load_dataset / load_dataset_like), got "
                             f"{type(data).__name__}")
    if len(data) == 0:
        raise InputError("the dataset has no rows")
    ds_kind = _dataset_kind(data)
    kind = getattr(model, "input_kind", None) or ds_kind
    if ds_kind != kind:
        raise InputError(f"the model reads {kind} input but the dataset holds {ds_kind} rows")
    if kind not in ("image", "text", "tabular"):
        raise InputError(f"cannot explain a model of input kind {kind!r}")
    tkind = getattr(trigger, "kind", None) if trigger is not None else None
    if trigger is not None:
        if not isinstance(trigger, torch.nn.Module):
            raise InputError(f"trigger must be a trigger module (load_trigger), got {type(trigger).__name__}")
        if tkind is not None and tkind != kind:
            raise InputError(f"the trigger is a {tkind} trigger; the model reads {kind}")
    if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or not 1 <= int(samples) <= 100:
        raise InputError(f"samples must be an integer between 1 and 100 (per group), got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    return kind


# ---- pixels, names, rows -----------------------------------------------------------------


def _pixel_stats(ds, model, trigger) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Per-channel (mean, std) that map the model's input back to [0, 1] pixels."""
    if trigger is not None and isinstance(getattr(trigger, "mean", None), torch.Tensor):
        return trigger.mean.detach().cpu().view(-1), trigger.std.detach().cpu().view(-1)
    tf = getattr(ds, "transform", None)
    if tf is not None and hasattr(tf, "mean") and hasattr(tf, "std"):
        return torch.tensor(tf.mean), torch.tensor(tf.std)
    meta = getattr(ds, "image_meta", None) or (getattr(model, "meta", {}) or {}).get("image")
    if isinstance(meta, Mapping):
        from reprogram.data.datasets import image_transform_from_meta

        t = image_transform_from_meta(meta)
        return torch.tensor(t.mean), torch.tensor(t.std)
    return None


def _to_pixels(x: torch.Tensor, stats) -> np.ndarray:
    """(N, C, H, W) model-space images as (N, H, W, 3) or (N, H, W) arrays in [0, 1]."""
    x = x.detach().float().cpu()
    if stats is not None:
        mean, std = stats
        x = x * std.view(1, -1, 1, 1) + mean.view(1, -1, 1, 1)
    else:  # unknown normalisation: stretch each image to [0, 1]
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-12)
    a = x.clamp(0, 1).numpy()
    return a[:, 0] if a.shape[1] == 1 else a.transpose(0, 2, 3, 1)


def _cell(v: Any) -> str:
    """A table value as text: floats to 4 significant digits, the rest as they are."""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    return str(v)


def _feature_names(ds) -> list[str]:
    enc = getattr(ds, "feature_encoder", None)
    names = getattr(enc, "feature_names_out_", None)
    n = int(getattr(ds, "n_features", 0) or 0)
    if names is not None and len(names) == n:
        return [str(c) for c in names]
    return [f"x{i}" for i in range(n)]


def _raw_rows(ds, rows: np.ndarray, table=None):
    """The sample rows as the table had them (the table's own cells when given, else
    the encoded features decoded back: numbers un-standardised, one-hot blocks named)."""
    import pandas as pd

    enc = getattr(ds, "feature_encoder", None)
    cols = list(getattr(enc, "columns_", []) or [])
    if table is not None and cols and all(c in table.columns for c in cols) and len(table) == len(ds):
        return table.iloc[rows][cols].reset_index(drop=True)
    X = ds.features[rows]
    if not cols or not hasattr(enc, "kinds_"):
        return pd.DataFrame(X, columns=_feature_names(ds))
    out, off = {}, 0
    for col, kind in zip(cols, enc.kinds_):
        if kind == "numeric":
            v = X[:, off].astype(np.float64)
            if getattr(enc, "standardize", True):
                v = v * enc.scales_[col] + enc.means_[col]
            out[col] = v
            off += 1
        else:
            cats = list(enc.categories_[col])
            block = X[:, off: off + len(cats)]
            hit = block.argmax(1) if cats else np.zeros(len(rows), dtype=int)
            out[col] = [cats[h] if cats and block[i, h] > 0.5 else "(other)" for i, h in enumerate(hit)]
            off += len(cats)
    return pd.DataFrame(out)


def _relative(a) -> np.ndarray | None:
    """|delta| / |output gap| per row (None when the attribution has no gap to compare with)."""
    gap = getattr(a, "output_gap", None)
    if a.delta is None or gap is None:
        return None
    gap = np.abs(np.asarray(gap, dtype=np.float64))
    return np.divide(np.abs(np.asarray(a.delta, dtype=np.float64)), gap, out=np.full(gap.shape, np.inf),
                     where=gap > 0)


def _pct(r: float) -> str:
    if not np.isfinite(r):
        return ""
    return "<1%" if r < 0.01 else f"{r:.0%}"


def _row_delta(a, k: int, prefix: str = "|δ| ") -> str:
    """One row's convergence delta: ``|δ| 0.003 (2%)`` (the share of the explained logit's change)."""
    if a is None or a.delta is None:
        return ""
    rel = _relative(a)
    r = _pct(float(rel[k])) if rel is not None else ""
    return f"{prefix}{abs(float(a.delta[k])):.2g}" + (f" ({r})" if r else "")


def _median_delta(a, sl=slice(None)) -> str:
    """The median |δ| of a panel, and the median share of the logit change it leaves unexplained."""
    if a is None or a.delta is None:
        return "–"
    d = np.abs(np.asarray(a.delta, dtype=np.float64))[sl]
    if not d.size:
        return "–"
    rel = _relative(a)
    r = _pct(float(np.median(rel[sl]))) if rel is not None and np.isfinite(rel[sl]).any() else ""
    return f"{np.median(d):.2g}" + (f" ({r})" if r else "")


# ---- figures -----------------------------------------------------------------------------


def _new_figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _image_sample_figure(pix: np.ndarray, pix_t: np.ndarray | None, maps: dict[str, tuple], title: str):
    """Input, triggered input, then per method a base / triggered pair with one colorbar.

    ``maps[method] = (base_map, triggered_map or None, base_caption, triggered_caption)``.
    Signed maps (IG, SmoothGrad) share a symmetric scale (red +, blue −) per pair;
    Grad-CAM is drawn over the greyscale input with a shared [0, max] scale.
    """
    from matplotlib import colormaps

    two = pix_t is not None
    n_cols = (2 if two else 1) + sum(2 if m[1] is not None else 1 for m in maps.values())
    three = any("\n" in c for m in maps.values() for c in m[2:])
    fig = _new_figure(2.35 * n_cols + 0.5 * len(maps), 3.25 if three else 3.0)
    axes = fig.subplots(1, n_cols, squeeze=False)[0]
    grey = pix if pix.ndim == 2 else pix.mean(axis=2)
    kw = {"interpolation": "nearest"}
    axes[0].imshow(pix, cmap="gray" if pix.ndim == 2 else None, vmin=0, vmax=1, **kw)
    axes[0].set_title("input", fontsize=12)
    j = 1
    if two:
        axes[1].imshow(pix_t, cmap="gray" if pix_t.ndim == 2 else None, vmin=0, vmax=1, **kw)
        axes[1].set_title("input + trigger", fontsize=12)
        j = 2
    h, w = grey.shape
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    for method, (m0, m1, c0, c1) in maps.items():
        label = METHOD_LABELS.get(method, method)
        pair = [m for m in (m0, m1) if m is not None]
        caps = [c0, c1][: len(pair)]
        pair_axes = list(axes[j: j + len(pair)])
        if method == "grad_cam":
            pair = [np.clip(np.asarray(m, dtype=np.float64), 0, None) for m in pair]
            vmax = max(float(m.max()) for m in pair) or 1e-12
            for ax, m, cap, name in zip(pair_axes, pair, caps, ("base", "+ trigger")):
                ax.imshow(grey, cmap="gray", vmin=0, vmax=1, **kw)
                im = ax.imshow(m, cmap=colormaps["jet"], alpha=0.5, vmin=0, vmax=vmax, extent=extent,
                               interpolation="bilinear")
                ax.set_title(f"{label} · {name}\n{cap}", fontsize=11)
            cb = fig.colorbar(im, ax=pair_axes, location="right", shrink=0.82, pad=0.02, aspect=18)
            cb.set_label("Grad-CAM (≥ 0)", fontsize=10)
        else:
            pair = [np.asarray(m, dtype=np.float64) for m in pair]
            vmax = max(float(np.percentile(np.abs(m), 99.5)) for m in pair) or 1e-12
            for ax, m, cap, name in zip(pair_axes, pair, caps, ("base", "+ trigger")):
                im = ax.imshow(m, cmap=colormaps["RdBu_r"], vmin=-vmax, vmax=vmax, extent=extent, **kw)
                ax.set_title(f"{label} · {name}\n{cap}", fontsize=11)
            cb = fig.colorbar(im, ax=pair_axes, location="right", shrink=0.82, pad=0.02, aspect=18)
            cb.set_label(f"{label} attribution", fontsize=10)
        cb.ax.tick_params(labelsize=9)
        cb.formatter.set_powerlimits((-2, 3))
        j += len(pair)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _feature_figure(names: list[str], base: np.ndarray, trig: np.ndarray | None, title: str, top_k: int, xlabel: str):
    """Horizontal bars: mean |IG| per feature, base vs triggered, the top-k features."""
    score = base if trig is None else np.maximum(base, trig)
    order = np.argsort(-score, kind="stable")[: max(1, int(top_k))]
    k = len(order)
    fig = _new_figure(7.6, 0.42 * k + 1.5)
    ax = fig.add_subplot()
    y = np.arange(k)
    short = [n if len(n) <= 34 else n[:32] + "…" for n in (names[i] for i in order)]
    if trig is None:
        ax.barh(y, base[order], color=BASE_COLOR, label="base")
    else:
        ax.barh(y - 0.2, base[order], height=0.4, color=BASE_COLOR, label="base")
        ax.barh(y + 0.2, trig[order], height=0.4, color=TRIGGER_COLOR, label="+ trigger")
    ax.set_yticks(y, short, fontsize=11)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=10)
    ax.set_xlabel(xlabel, fontsize=11)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=12, loc="left")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if trig is not None:
        ax.legend(fontsize=10, loc="lower right", frameon=False)
    return fig


def _trigger_figure(trigger):
    p = trigger.pattern().detach().float().cpu()
    a = p.clamp(0, 1)[0].numpy()
    a = a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    fig = _new_figure(2.4, 2.4)
    ax = fig.add_subplot()
    ax.imshow(a, cmap="gray" if a.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


# ---- the report --------------------------------------------------------------------------


def _pred_html(classes, y, pb, pt, i, where: str = "") -> str:
    """True label, base and triggered prediction (class, probability) of row ``i``."""
    yb = int(pb[i].argmax())
    parts = [f"<span><b>row {i}</b>" + (f' <span class="muted small">{H.esc(where)}</span>' if where else "")
             + "</span>", f"<span>true: <b>{H.esc(classes[int(y[i])])}</b></span>"]
    ok = "ok" if yb == int(y[i]) else "bad"
    parts.append(f'<span>base: <span class="badge {ok}">{H.esc(classes[yb])} ({pb[i, yb]:.2f})</span></span>')
    if pt is not None:
        yt = int(pt[i].argmax())
        ok = "ok" if yt == int(y[i]) else "bad"
        parts.append(f'<span>+ trigger: <span class="badge {ok}">{H.esc(classes[yt])} ({pt[i, yt]:.2f})</span></span>')
        if yt != yb:
            parts.append('<span class="badge flip">flipped by the trigger</span>')
    return '<div class="preds">' + "".join(parts) + "</div>"


def _fairness_html(base, trig) -> str:
    """The by-group table (each figure base | + trigger) and the overall table with the change."""
    cols = BY_GROUP_BINARY if base.task == "binary" else BY_GROUP_MULTI
    cols = [c for c in cols if c in base.by_group.columns]
    bg = base.by_group
    fixed = ["group", "n"] + (["base rate"] if "base_rate" in bg.columns else [])  # the same with the trigger

    def fixed_cells(g):
        return [H.esc(g), H.fmt(int(bg.loc[g, "count"]))] + ([H.fmt(bg.loc[g, "base_rate"])] if len(fixed) > 2 else [])

    if trig is None:
        header = [*fixed, *(LABELS.get(c, c) for c in cols)]
        rows = [[*fixed_cells(g), *(H.fmt(bg.loc[g, c]) for c in cols)] for g in bg.index]
        by_group = H.table(header, rows, table_id="fairness-by-group", cls="fairness", raw=True, wrap_cols=(0,))
    else:
        tg = trig.by_group
        header = [[("", len(fixed)), *((LABELS.get(c, c), 2) for c in cols)],
                  [*((f, 1) for f in fixed), *((x, 1) for _ in cols for x in ("base", "+ trigger"))]]
        rows = []
        for g in bg.index:
            r = fixed_cells(g)
            for c in cols:
                r += [H.fmt(bg.loc[g, c]), H.fmt(tg.loc[g, c]) if g in tg.index else "–"]
            rows.append(r)
        by_group = H.table(header, rows, table_id="fairness-by-group", cls="fairness", raw=True, sep_every=2,
                           sep_after=len(fixed), wrap_cols=(0,))
    over_rows = []
    for k, higher in OVERALL:
        if k not in base.overall:
            continue
        b = base.overall[k]
        name = H.esc(LABELS.get(k, k.replace("_", " ")))
        if trig is None:
            over_rows.append([name, H.fmt(b)])
            continue
        a = trig.overall.get(k)
        change = "–"
        if a is not None and b is not None and np.isfinite(a) and np.isfinite(b):
            d = float(a) - float(b)
            cls = "" if abs(d) < 5e-4 else ("better" if (d > 0) == higher else "worse")
            change = f'<span class="{cls}">{d:+.3f}</span>'.replace("-", "−")
        over_rows.append([name, H.fmt(b), H.fmt(a), change])
    over_head = ["figure", "base"] if trig is None else ["figure", "base", "+ trigger", "change"]
    overall = H.table(over_head, over_rows, table_id="fairness-overall", cls="fairness", raw=True)
    small = ""
    if base.small_groups:
        small = (f'<p class="flag small">groups with fewer than {base.min_group_size} rows (their figures are noisy): '
                 f"{H.esc(', '.join(map(str, base.small_groups)))}</p>")
    pos = (f"; selection rate, base rate, TPR and FPR are of the positive class <b>{H.esc(base.positive_class)}</b>"
           if base.task == "binary" else "; Σ recall is the sum of the per-class recalls")
    legend = ('<p class="muted small">Predictions are the argmax of the model\'s probabilities' + pos + "."
              + (' Change: <span class="better">green</span> = fairer or more accurate with the trigger, '
                 '<span class="worse">red</span> = less so.' if trig is not None else "") + "</p>")
    title = "Fairness without and with the trigger" if trig is not None else "Fairness of the model"
    return (f'<section id="fairness"><h2>{title}</h2><h3>By group</h3>{by_group}{small}'
            f"<h3>Overall</h3>{overall}{legend}</section>")


def _header_html(model, ds, kind, trigger, trigger_meta, calibrator, settings: dict, proba_base, proba_trig,
                 trigger_png: str) -> str:
    from reprogram import __version__

    fp = getattr(model, "fingerprint", None)
    if fp is None:
        from reprogram.models import weights_fingerprint

        fp = weights_fingerprint(model)
    classes = [str(c) for c in ds.classes]
    counts = np.bincount(ds.group_ids, minlength=ds.n_groups)
    items = {
        "model": H.esc(getattr(model, "source", None) or type(getattr(model, "model", model)).__name__)
        + (f' <span class="muted">({H.esc(model.format)})</span>' if getattr(model, "format", None) else ""),
        "fingerprint": f"<code>{H.esc(fp)}</code>",
        "input kind": H.esc(kind),
        "classes": H.esc(", ".join(classes)),
        "data": H.esc(getattr(ds, "source", None) or type(ds).__name__) + f" · {len(ds):,} rows",
        "groups": H.esc(", ".join(f"{g} ({c:,})" for g, c in zip(ds.group_names, counts))),
    }
    if trigger is not None:
        meta = dict(trigger_meta or {})
        name = meta.get("trigger", type(trigger).__name__)
        cfg = dict(meta.get("config") or (trigger.config() if hasattr(trigger, "config") else {}))
        for k in ("mean", "std", "scale", "special_ids", "vocab_size", "dim", "seed", "image_size", "channels"):
            cfg.pop(k, None)  # internals (the model's normalisation, vocabulary) rather than settings
        cfg_text = ", ".join(f"{k}={v}" for k, v in cfg.items() if v is not None)
        t = f"<b>{H.esc(name)}</b>" + (f" <span class=\"muted\">({H.esc(cfg_text)})</span>" if cfg_text else "")
        fitted = {k: meta[k] for k in ("criterion", "lambda", "rule", "best_epoch") if k in meta}
        if fitted:
            t += "<br>fitted for " + H.esc(", ".join(f"{k.replace('_', ' ')} {v}" for k, v in fitted.items()))
        if hasattr(trigger, "to_text") and getattr(model, "tokenizer", None) is not None:
            with contextlib.suppress(Exception):
                t += f"<br>nearest words: <code>{H.esc(trigger.to_text(model.tokenizer))}</code>"
        on = (meta.get("model") or {}).get("fingerprint")
        if on:
            t += ("<br>fitted on this model (fingerprint matches)" if on == fp else
                  f'<br><span class="flag">fitted on another model ({H.esc(on[:16])}…): transfer</span>')
        flips = int((proba_base.argmax(1) != proba_trig.argmax(1)).sum())
        t += f"<br>changes {flips:,} of {len(ds):,} predictions ({flips / len(ds):.1%})"
        items["trigger"] = t
    else:
        items["trigger"] = '<span class="muted">none (the model alone is explained)</span>'
    if calibrator is not None:
        groups = getattr(calibrator, "groups_", None)
        c = H.esc(type(calibrator).__name__)
        if groups is not None:
            c += f" over {len(groups)} groups of {H.esc(', '.join(calibrator.encoder_.columns_))}"
        items["calibrator"] = c
    items["attributions"] = H.esc(settings["attributions"])
    items["samples"] = H.esc(settings["samples"])
    items["made by"] = H.esc(f"reprogram {__version__}")
    pattern = ""
    if trigger_png:
        what = ("its perturbation, stretched to the full range (grey = no change)" if not hasattr(trigger, "mask")
                else "its learned pixels (black = pixels it leaves as they are)")
        pattern = (f'<figure style="margin: 10px 0 0; max-width: 220px">{trigger_png}<figcaption>The trigger: {what}'
                   "</figcaption></figure>")
    lead = ("What the fairness trigger changes in the model's predictions, and in what they rest on, group by group."
            if trigger is not None else "What the model's predictions rest on, group by group.")
    head = '<div style="display: flex; gap: 20px; align-items: flex-start; flex-wrap: wrap">'
    head += f'<div style="flex: 1 1 640px; min-width: 0">{H.meta_list(items)}</div>'
    if pattern:
        head += f'<div style="flex: 0 0 auto">{pattern}</div>'
    head += "</div>"
    return ("<header id=\"header\"><h1>Saliency report</h1>"
            f'<p class="muted">{lead}</p>{head}</header>')


@dataclass
class _Context:
    """What the per-kind explainers share: model, data, predictions, the chosen rows,
    and where figures, PNGs and attributions are collected."""

    model: Any
    ds: Any
    trigger: Any
    device: Any
    seed: int
    chosen: list[np.ndarray]
    proba_base: np.ndarray
    proba_trig: np.ndarray | None
    steps_kw: dict
    bar: Any = None
    task: Any = None
    figures: dict = field(default_factory=dict)
    pngs: dict = field(default_factory=dict)
    attributions: dict = field(default_factory=dict)

    @property
    def variants(self) -> list[str]:
        return ["base"] + (["triggered"] if self.trigger is not None else [])

    @property
    def groups(self) -> list[str]:
        return list(self.ds.group_names)

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.ds.classes]

    @property
    def pred_b(self) -> np.ndarray:
        return self.proba_base.argmax(1)

    @property
    def pred_t(self) -> np.ndarray | None:
        return self.proba_trig.argmax(1) if self.proba_trig is not None else None

    @property
    def flipped(self) -> np.ndarray | None:
        return None if self.proba_trig is None else self.pred_b != self.pred_t

    def target(self, variant: str, rows) -> np.ndarray:
        """The class each row's attribution explains: the one predicted (by model + trigger)."""
        return (self.pred_t if variant == "triggered" else self.pred_b)[rows]

    def trigger_for(self, variant: str):
        return self.trigger if variant == "triggered" else None

    def run(self, label: str, fn, *args, **kw):
        """One attribution call, counted on the progress bar."""
        if self.bar is not None:
            self.bar.update(self.task, status=label)
        out = fn(*args, **kw)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, status=label)
        return out

    def add_figure(self, name: str, fig, dpi: int = 100) -> str:
        self.figures[name] = fig
        self.pngs[name] = H.figure_png(fig, dpi=dpi)
        return H.img_tag(self.pngs[name], name)

    def card(self, i: int, body: str) -> str:
        paths = getattr(self.ds, "paths", None)
        where = ""
        if paths is not None:  # an image file: its path, shortened to the last two parts
            where = "/".join(Path(str(paths[i])).parts[-2:])
        pred = _pred_html(self.classes, self.ds.labels, self.proba_base, self.proba_trig, i, where)
        return f'<div class="sample">{pred}{body}</div>'

    def group_html(self, g: int, rows, deltas: str, body: str) -> str:
        return _group_html(g, self.groups[g], self.ds, rows, self.pred_b, self.pred_t, deltas, body)


def _vname(v: str) -> str:
    return "base" if v == "base" else "+ trigger"


def _explain_images(ctx: _Context, *, layer, smoothgrad: bool) -> tuple[list[str], str]:
    from reprogram.explain import attributions as A

    ds, trigger, classes, groups = ctx.ds, ctx.trigger, ctx.classes, ctx.groups
    stats = _pixel_stats(ds, ctx.model, trigger)
    methods = ("integrated_gradients", "grad_cam")
    no_cam = ""
    out = []
    for g, rows in enumerate(ctx.chosen):
        if not len(rows):
            continue
        x = torch.stack([torch.as_tensor(ds[int(i)][0]) for i in rows]).float()

        kw = {"layer": layer, "smoothgrad": smoothgrad, "device": ctx.device, "seed": ctx.seed, **ctx.steps_kw}
        try:
            res = {v: ctx.run(f"{groups[g]} · {_vname(v)}", A.attribute_images, ctx.model, x,
                              trigger=ctx.trigger_for(v), target=ctx.target(v, rows), methods=methods, **kw)
                   for v in ctx.variants}
        except InputError as e:
            # a model with no convolution to read (and no layer named): IG alone, and say so;
            # any other problem raises again from the IG-only call
            if layer is not None or "grad_cam" not in methods:
                raise
            methods, no_cam = ("integrated_gradients",), str(e)
            res = {v: ctx.run(f"{groups[g]} · {_vname(v)}", A.attribute_images, ctx.model, x,
                              trigger=ctx.trigger_for(v), target=ctx.target(v, rows), methods=methods, **kw)
                   for v in ctx.variants}
        ctx.attributions[groups[g]] = res
        pix = _to_pixels(x, stats)
        pix_t = None
        if trigger is not None:
            with torch.no_grad():
                pix_t = _to_pixels(trigger(x.to(ctx.device)).cpu(), stats)
        cards = []
        for k, i in enumerate(rows):
            maps = {}
            for m, ab in res["base"].items():
                at = res["triggered"].get(m) if "triggered" in res else None
                caps = []
                for a in (ab, at):
                    cap = "" if a is None else f"explains {classes[int(a.target[k])]}"
                    if a is not None and a.delta is not None:
                        cap += f"\n{_row_delta(a, k)}"
                    caps.append(cap)
                maps[m] = (ab.values[k], at.values[k] if at is not None else None, *caps)
            fig = _image_sample_figure(pix[k], pix_t[k] if pix_t is not None else None, maps,
                                       f"{groups[g]} · row {int(i)} · true {classes[int(ds.labels[i])]}")
            cards.append(ctx.card(int(i), ctx.add_figure(f"sample_{g}_{k}", fig)))
        deltas = " · ".join(f"{METHOD_LABELS.get(m, m)} {_vname(v)} {_median_delta(a)}"
                            for v in ctx.variants for m, a in res[v].items() if a.delta is not None)
        out.append(ctx.group_html(g, rows, deltas, "".join(cards)))
    cam_layer = next((r["base"]["grad_cam"].layer for r in ctx.attributions.values() if "grad_cam" in r["base"]),
                     None) or layer
    where = f"layer {cam_layer}" if cam_layer else "the last convolution"
    pair = "per base / + trigger pair" if trigger is not None else "per sample"
    note = ("IG: Integrated Gradients from a black image, summed over colour channels and drawn on one symmetric "
            f"scale {pair} (red: pixels that raise the explained class's logit, blue: pixels that lower it). "
            + (f"Grad-CAM at {where}, upsampled to the image and drawn over it" if not no_cam else
               f"Grad-CAM is left out ({no_cam.rstrip('.')})")
            + ("; SmoothGrad: IG averaged over noisy copies of the image" if smoothgrad else "") + ".")
    if trigger is not None:
        note += (" With the trigger, the maps are of model(trigger(x)) with respect to the original pixels x, so "
                 "pixels a frame or patch overwrites get no IG attribution.")
    return out, note


def _explain_text(ctx: _Context) -> tuple[list[str], str]:
    from reprogram.explain import attributions as A

    ds, classes, groups = ctx.ds, ctx.classes, ctx.groups
    special = set(getattr(ctx.model.tokenizer, "all_special_tokens", []) or [])
    out = []
    for g, rows in enumerate(ctx.chosen):
        if not len(rows):
            continue
        texts = [str(ds.texts[int(i)]) for i in rows]
        res = {v: ctx.run(f"{groups[g]} · {_vname(v)}", A.attribute_text, ctx.model, texts,
                          trigger=ctx.trigger_for(v), target=ctx.target(v, rows), device=ctx.device, **ctx.steps_kw)
               for v in ctx.variants}
        ctx.attributions[groups[g]] = res
        cards = []
        for k, i in enumerate(rows):
            # each row on its own scale (its largest |attribution|, printed at its end): a trigger
            # that takes over a prediction can shrink the text's attributions by orders of magnitude
            lines = [H.token_row(f"{_vname(v)} · {classes[int(res[v].target[k])]}", res[v].tokens[k],
                                 res[v].scores[k], res[v].is_trigger[k], special=special)
                     for v in ctx.variants]
            dl = " · ".join(f"{_vname(v)} {_row_delta(res[v], k, prefix='')}" for v in ctx.variants
                            if res[v].delta is not None)
            cards.append(ctx.card(int(i), "".join(lines) + (f'<div class="muted small">IG |δ|: {dl}</div>' if dl else "")))
        deltas = " · ".join(f"IG {_vname(v)} {_median_delta(res[v])}" for v in ctx.variants)
        out.append(ctx.group_html(g, rows, deltas, H.token_legend(ctx.trigger is not None) + "".join(cards)))
    note = ("IG over the token embeddings (baseline: every token but [CLS]/[SEP] replaced by [PAD]), summed over "
            "the embedding dimensions; each row's label says which class it explains (the one predicted).")
    if ctx.trigger is not None:
        note += " The prompt trigger's inserted tokens are scored as tokens of their own."
    return out, note


def _explain_tabular(ctx: _Context, *, table, top_k: int, importance_rows: int) -> tuple[list[str], str]:
    from reprogram.explain import attributions as A

    ds, trigger, classes, groups = ctx.ds, ctx.trigger, ctx.classes, ctx.groups
    names = _feature_names(ds)
    # the rows the bar charts average over: each group's samples first, then more of its rows (seeded)
    more = select_samples(ds.group_ids, ds.n_groups, max(importance_rows, max(map(len, ctx.chosen))), seed=ctx.seed,
                          flipped=ctx.flipped, labels=ds.labels)
    imp_rows = [np.concatenate([c, m[~np.isin(m, c)]]) for c, m in zip(ctx.chosen, more)]
    all_rows = np.concatenate(imp_rows).astype(np.int64)
    x = torch.from_numpy(np.ascontiguousarray(ds.features[all_rows]))
    res = {v: ctx.run(_vname(v), A.attribute_tabular, ctx.model, x, trigger=ctx.trigger_for(v),
                      target=ctx.target(v, all_rows), device=ctx.device, **ctx.steps_kw)
           for v in ctx.variants}
    gids = ds.group_ids[all_rows]
    imp = {v: _importance(A.group_feature_importance(res[v], gids, groups, names), groups, names)
           for v in ctx.variants}
    starts = np.cumsum([0] + [len(r) for r in imp_rows])
    n_pred = 4 if trigger is not None else 3
    out = []
    for g, rows in enumerate(ctx.chosen):
        if not len(rows):
            continue
        sl = slice(int(starts[g]), int(starts[g + 1]))
        n_imp = sl.stop - sl.start
        ctx.attributions[groups[g]] = {v: _slice_attr(res[v], sl) for v in ctx.variants}
        dl = " · ".join(f"{_vname(v)} {_median_delta(res[v], sl)}" for v in ctx.variants
                        if res[v].delta is not None)
        fig = _feature_figure(names, imp["base"][g], imp["triggered"][g] if trigger is not None else None,
                              f"group {groups[g]}", top_k,
                              f"mean |IG| over {n_imp} rows of the group (top {min(top_k, len(names))} features)")
        img = ctx.add_figure(f"features_{g}", fig)
        raw = _raw_rows(ds, rows, table)
        head = ["row", "true", "base"] + (["+ trigger"] if trigger is not None else []) + [str(c) for c in raw.columns]
        trows = []
        for k, i in enumerate(int(r) for r in rows):
            r = [str(i), H.esc(classes[int(ds.labels[i])]), _pred_cell(classes, ctx.proba_base[i], ds.labels[i])]
            if trigger is not None:
                r.append(_pred_cell(classes, ctx.proba_trig[i], ds.labels[i], flipped=bool(ctx.flipped[i])))
            trows.append(r + [H.esc(_cell(val)) for val in raw.iloc[k].tolist()])
        sample_tab = H.table(head, trows, left=n_pred, raw=True, sep_after=n_pred, sep_every=10**6)
        body = (f"<figure>{img}<figcaption>Mean |IG| per encoded feature (one-hot columns are named column=value)"
                f"{', base vs + trigger' if trigger is not None else ''}, over {n_imp} rows of the group; median "
                f"IG |δ|: {H.esc(dl)}</figcaption></figure>"
                f'<h4 class="small">Sample rows (predicted class and its probability)</h4>{sample_tab}')
        out.append(ctx.group_html(g, rows, dl and f"IG {dl}", body))
    note = ("IG per encoded feature from an all-zero baseline (the training mean of standardised numeric columns, "
            "no category for one-hot blocks), explaining each row's predicted class.")
    if trigger is not None:
        note += (" With the feature trigger, the attribution is of model(trigger(x)) with respect to the original "
                 "features x.")
        if hasattr(trigger, "offset"):
            note += " " + _offset_note(trigger, names)
    return out, note


def saliency_report(
    model,
    data,
    trigger=None,
    *,
    calibrator=None,
    out: str | os.PathLike | None = "report.html",
    samples: int = 4,
    seed: int = 0,
    layer=None,
    smoothgrad: bool = False,
    device="cpu",
    trigger_meta: Mapping | None = None,
    progress: bool = True,
    table=None,
    n_steps: int | None = None,
    top_k: int = 12,
    importance_rows: int = 256,
    title: str = "reprogram saliency report",
) -> SaliencyReport:
    """Explain ``model`` (and ``model`` + ``trigger``) on ``data`` in one HTML page.

    ``data`` is a reprogram dataset (:func:`~reprogram.data.load_dataset_like` with the
    model's meta). Per group, ``samples`` rows are chosen from ``seed`` (rows the trigger
    flips first) and explained without and with the trigger: images by Integrated
    Gradients and Grad-CAM (at ``layer``, default the last convolution; ``smoothgrad``
    adds SmoothGrad), text by IG over the tokens, tables by IG per feature (the bar
    chart averages |IG| over up to ``importance_rows`` rows of each group and shows the
    ``top_k`` features). Each attribution explains the class the model (+ trigger)
    predicts for that row. ``calibrator`` (a fitted GroupCalibrator, Multicalibrator or
    map) adds its reliability diagram on the model's (+ trigger's) scores; a group
    calibrator reads its sensitive columns from ``table`` (the DataFrame ``data`` was
    loaded from) or, when they are the dataset's own sensitive columns, from its groups.
    ``trigger_meta`` (from :func:`~reprogram.triggers.load_trigger`) fills the trigger's
    settings in the header. The page is written atomically to ``out`` (``None``: not
    written). Returns a :class:`SaliencyReport`.
    """
    from reprogram.metrics import dataset_report
    from reprogram.models import predict_proba, resolve_device
    from reprogram.progress import progress_bar

    out_path = _check_out(out) if out is not None else None
    kind = _check_inputs(model, data, trigger, samples, seed)
    for name, v in (("top_k", top_k), ("importance_rows", importance_rows)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    dev = resolve_device(device)
    ds = data
    collate = None
    if kind == "text":
        tok = getattr(model, "tokenizer", None)
        if tok is None:
            raise InputError("this text model has no tokenizer saved with it; save one in its folder")
        from reprogram.data import tokenize_collate

        collate = tokenize_collate(tok)
    model = model.to(dev)
    if trigger is not None:
        trigger = trigger.to(dev).eval()

    proba_base = predict_proba(model, ds, device=dev, collate_fn=collate)
    proba_trig = predict_proba(model, ds, trigger=trigger, device=dev, collate_fn=collate) if trigger is not None \
        else None
    base_report = dataset_report(ds, proba_base)
    trig_report = dataset_report(ds, proba_trig) if proba_trig is not None else None
    if calibrator is not None and int(getattr(calibrator, "n_classes_", proba_base.shape[1])) != proba_base.shape[1]:
        raise InputError(f"the calibrator was fitted on {calibrator.n_classes_} classes; the model predicts "
                         f"{proba_base.shape[1]}")

    pred_b = proba_base.argmax(1)
    pred_t = proba_trig.argmax(1) if proba_trig is not None else None
    flipped = (pred_b != pred_t) if pred_t is not None else None
    chosen = select_samples(ds.group_ids, ds.n_groups, int(samples), seed=int(seed), flipped=flipped, labels=ds.labels)
    ctx = _Context(model=model, ds=ds, trigger=trigger, device=dev, seed=int(seed), chosen=chosen,
                   proba_base=proba_base, proba_trig=proba_trig,
                   steps_kw={} if n_steps is None else {"n_steps": int(n_steps)})
    n_calls = len(ctx.variants) * (sum(len(c) > 0 for c in chosen) if kind != "tabular" else 1)
    with progress_bar(progress) as bar:
        ctx.bar, ctx.task = bar, bar.add_task("attributions", total=n_calls, status="")
        if kind == "image":
            sample_html, method_note = _explain_images(ctx, layer=layer, smoothgrad=smoothgrad)
        elif kind == "text":
            sample_html, method_note = _explain_text(ctx)
        else:
            sample_html, method_note = _explain_tabular(ctx, table=table, top_k=int(top_k),
                                                        importance_rows=int(importance_rows))
    figures, pngs, attributions = ctx.figures, ctx.pngs, ctx.attributions
    groups = ctx.groups

    trigger_png = ""
    if kind == "image" and trigger is not None and hasattr(trigger, "pattern"):
        figures["trigger"] = _trigger_figure(trigger)
        pngs["trigger"] = H.figure_png(figures["trigger"])
        trigger_png = H.img_tag(pngs["trigger"], "trigger", width=200)

    calib_html = ""
    if calibrator is not None:
        fig = _reliability(calibrator, ds, proba_trig if proba_trig is not None else proba_base, table,
                           triggered=trigger is not None)
        img = ctx.add_figure("reliability", fig)
        calib_html = ("<section id=\"calibration\"><h2>Calibration</h2>"
                      f"<p class=\"muted\">Reliability per group of the {'model + trigger' if trigger is not None else 'model'}"
                      f"'s scores before (left) and after (right) the calibrator ({H.esc(type(calibrator).__name__)})."
                      f"</p><figure>{img}</figure></section>")

    settings = {
        "attributions": {"image": "Integrated Gradients + Grad-CAM" + (" + SmoothGrad" if smoothgrad else ""),
                         "text": "Integrated Gradients over token embeddings",
                         "tabular": "Integrated Gradients per feature"}[kind]
        + (f", {n_steps} steps" if n_steps else "") + "; each explains the predicted class",
        "samples": f"up to {samples} per group, seed {seed}"
        + (", rows the trigger flips first" if trigger is not None else ""),
    }
    header = _header_html(model, ds, kind, trigger, trigger_meta, calibrator, settings, proba_base,
                          proba_trig if proba_trig is not None else proba_base, trigger_png)
    fairness = _fairness_html(base_report, trig_report)
    samples_html = ("<section id=\"samples\"><h2>Attributions by group</h2>"
                    f'<p class="note">{H.esc(method_note)} IG |δ| is the convergence gap: the sum of the '
                    "attributions minus the change of the explained logit from the baseline to the input; in "
                    "brackets, its share of that change. A few percent means the map accounts for the prediction; "
                    "much more means it needs more steps (--steps) before it can be trusted.</p>"
                    + "".join(sample_html) + "</section>")
    sections = {"header": header, "fairness": fairness, "samples": samples_html}
    if calib_html:
        sections["calibration"] = calib_html
    fragment = '<div class="rp-report">' + "".join(sections.values()) + "</div>"
    page = H.page(title, fragment)
    report = SaliencyReport(html=page, fragment=fragment, sections=sections, figures=figures,
                            samples={groups[g]: rows for g, rows in enumerate(chosen)}, base=base_report,
                            triggered=trig_report, attributions=attributions, input_kind=kind, pngs=pngs)
    if out_path is not None:
        report.save(out_path)
    return report


def _group_html(g: int, name: str, ds, rows, pred_b, pred_t, deltas: str, body: str) -> str:
    members = ds.group_ids == g
    n = int(members.sum())
    acc_b = float((pred_b[members] == ds.labels[members]).mean()) if n else float("nan")
    badges = [f'<span class="badge">{n:,} rows</span>', f'<span class="badge">accuracy base {acc_b:.3f}</span>']
    if pred_t is not None:
        acc_t = float((pred_t[members] == ds.labels[members]).mean()) if n else float("nan")
        flips = int((pred_b[members] != pred_t[members]).sum())
        badges.append(f'<span class="badge">accuracy + trigger {acc_t:.3f}</span>')
        badges.append(f'<span class="badge flip">{flips:,} predictions flipped by the trigger</span>')
    if deltas:
        badges.append(f'<span class="muted small">median IG |δ|: {H.esc(deltas)}</span>')
    return (f'<div class="group" id="group-{g}"><div class="group-head"><h3>group {H.esc(name)}</h3>{"".join(badges)}'
            f"</div>{body}</div>")


def _pred_cell(classes, p: np.ndarray, y, flipped: bool = False) -> str:
    k = int(np.argmax(p))
    ok = "ok" if k == int(y) else "bad"
    flip = ' <span class="badge flip">flipped</span>' if flipped else ""
    return f'<span class="badge {ok}">{H.esc(classes[k])} ({p[k]:.2f})</span>{flip}'


def _importance(frame, groups: list[str], names: list[str]) -> np.ndarray:
    """group_feature_importance's table (rows groups, columns features) as a (G, F) array
    in the dataset's group and feature order (a group without rows gets zeros)."""
    frame = frame.copy()
    frame.index = [str(i) for i in frame.index]
    frame.columns = [str(c) for c in frame.columns]
    return frame.reindex(index=groups, columns=names).fillna(0.0).to_numpy(dtype=np.float64)


def _slice_attr(a, sl: slice):
    import dataclasses

    kw = {}
    for f in dataclasses.fields(a):
        v = getattr(a, f.name)
        kw[f.name] = v[sl] if isinstance(v, np.ndarray) else v
    return dataclasses.replace(a, **kw)


def _offset_note(trigger, names: list[str]) -> str:
    with torch.no_grad():
        off = trigger.offset().detach().cpu().numpy().ravel()
    if off.size != len(names) or not np.any(off):
        return ""
    top = np.argsort(-np.abs(off), kind="stable")[:5]
    shown = ", ".join(f"{names[i]} {off[i]:+.2f}" for i in top if off[i] != 0)
    return f"The trigger's largest offsets (encoded units): {shown}."


def _sensitive_frame(calibrator, ds, table):
    """The calibrator's sensitive columns for the dataset's rows."""
    import pandas as pd

    cols = list(calibrator.encoder_.columns_)
    if table is not None and all(c in table.columns for c in cols):
        if len(table) != len(ds):
            raise InputError(f"table has {len(table)} rows but the dataset has {len(ds)}")
        return table[cols].reset_index(drop=True)
    enc = ds.groups
    if set(cols) <= set(enc.columns_):
        # decode each row's group id back into its sensitive values
        values = {c: [] for c in enc.columns_}
        for combo in enc.to_dict()["combos"]:
            rest = int(combo)
            parts = []
            for lv in reversed(enc.levels_):
                rest, code = divmod(rest, len(lv))
                parts.append(lv[code])
            for c, v in zip(enc.columns_, reversed(parts)):
                values[c].append(v)
        frame = pd.DataFrame({c: np.asarray(values[c], dtype=object)[ds.group_ids] for c in enc.columns_})
        return frame[cols]
    from reprogram.errors import ColumnNotFoundError

    missing = [c for c in cols if c not in (table.columns if table is not None else enc.columns_)]
    raise ColumnNotFoundError(missing[0], list(table.columns) if table is not None else enc.columns_,
                              role="sensitive column (of the calibrator)")


def _reliability(calibrator, ds, proba: np.ndarray, table, *, triggered: bool):
    from reprogram.calibrate import reliability_diagram

    scores = proba[:, 1] if proba.shape[1] == 2 else proba
    if hasattr(calibrator, "encoder_"):
        after = calibrator.transform(scores, _sensitive_frame(calibrator, ds, table))
    else:
        after = calibrator.transform(scores)
    y = np.asarray(ds.classes, dtype=object)[ds.labels]
    sens = np.asarray(ds.group_names, dtype=object)[ds.group_ids]
    title = f"{'model + trigger' if triggered else 'model'}: before / after the calibrator"
    return reliability_diagram(y, scores, sens, scores_after=after, classes=list(ds.classes), title=title)
