"""Accuracy-fairness trade-offs: one model per hyperparameter value, and their Pareto front.

``pareto_sweep`` trains a model for each value of a method's main knob
(``SWEEP_PARAMETER``), evaluates accuracy and a fairness figure on a validation set, and
marks the points no other point beats on both. ``plot_pareto`` draws one or several
methods' sweeps on one plot (the trigger issue adds trigger sweeps to the same plot).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reprogram.errors import InputError
from reprogram.io import atomic_path, atomic_write_text
from reprogram.train.trainer import monitor_mode

__all__ = ["ParetoPoint", "pareto_front", "pareto_sweep", "plot_pareto", "save_sweep"]


@dataclass
class ParetoPoint:
    method: str
    parameter: str | None
    value: float | None
    accuracy: float
    fairness: float
    metric: str
    pareto: bool = False
    # overall figures of this run by evaluation set ("val", and any extra sets such as "test")
    reports: dict = field(default_factory=dict, repr=False)


def pareto_front(accuracy: Sequence[float], fairness: Sequence[float], *, fairness_mode: str = "min") -> np.ndarray:
    """Boolean mask of the non-dominated points (accuracy up, fairness by its mode).

    A point is dominated when another is at least as good on both and better on one.
    """
    a = np.asarray(accuracy, dtype=float)
    f = np.asarray(fairness, dtype=float)
    f = f if fairness_mode == "min" else -f  # make "smaller is better" for both axes below
    cost = np.stack([-a, f], axis=1)
    le = (cost[None, :, :] <= cost[:, None, :]).all(-1)  # le[i, j]: j at least as good as i
    lt = (cost[None, :, :] < cost[:, None, :]).any(-1)
    dominated = (le & lt).any(axis=1)
    return ~dominated & np.isfinite(cost).all(axis=1)


def pareto_sweep(
    method: str,
    values: Sequence[float],
    train,
    val,
    *,
    build_model: Callable[[], Any] | None = None,
    metric: str = "demographic_parity_difference",
    trainer_kw: dict | None = None,
    method_kw: dict | None = None,
    evaluate_on: dict | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[ParetoPoint]:
    """Train ``method`` once per value of its sweep parameter; return the marked points.

    ``build_model()`` makes a fresh model for each run of a torch method; ``trainer_kw``
    go to the Trainer, ``method_kw`` to :func:`~reprogram.train.methods.train_method`.
    Points are placed by their figures on ``val``; ``evaluate_on`` (name -> dataset,
    e.g. ``{"test": test}``) adds more sets to each point's ``reports``. ``erm`` and
    ``resample`` (no parameter) give one point.
    """
    from reprogram.train.methods import METHODS, SWEEP_PARAMETER, train_method

    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    parameter = SWEEP_PARAMETER.get(method)
    runs = [None] if parameter is None else list(values)
    if not runs:
        raise InputError(f"give at least one value of {parameter} to sweep {method}")
    points = []
    for value in runs:
        kw = dict(method_kw or {})
        if parameter is not None:
            kw[parameter] = value
        fitted = train_method(method, train, build_model=build_model, trainer_kw=trainer_kw, **kw)
        reports = {name: fitted.report(ds).overall for name, ds in {"val": val, **(evaluate_on or {})}.items()}
        overall = reports["val"]
        if metric not in overall:
            raise InputError(f"unknown fairness metric {metric!r}; use one of {', '.join(overall)}")
        points.append(ParetoPoint(method, parameter, value, overall["accuracy"], overall[metric], metric,
                                  reports=reports))
        if progress is not None:
            shown = "" if parameter is None else f" {parameter}={value:g}"
            progress(f"{method}{shown}: accuracy {points[-1].accuracy:.4f}, {metric} {points[-1].fairness:.4f}")
    mark(points)
    return points


def mark(points: list[ParetoPoint]) -> list[ParetoPoint]:
    """Set ``pareto`` on the points no other point (of any method) dominates."""
    if points:
        mask = pareto_front([p.accuracy for p in points], [p.fairness for p in points],
                            fairness_mode=monitor_mode(points[0].metric))
        for p, m in zip(points, mask):
            p.pareto = bool(m)
    return points


def save_sweep(points: list[ParetoPoint], out_dir: str | Path, *, title: str | None = None) -> dict[str, Path]:
    """Write ``points.json``, ``points.csv`` and ``pareto.png`` into ``out_dir``."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [asdict(p) for p in points]
    paths = {"json": out / "points.json", "csv": out / "points.csv", "png": out / "pareto.png"}
    atomic_write_text(paths["json"], json.dumps(rows, indent=2) + "\n")
    with atomic_path(paths["csv"]) as tmp:  # the flat table; the per-set reports are in the JSON
        pd.DataFrame([{k: v for k, v in r.items() if k != "reports"} for r in rows]).to_csv(tmp, index=False)
    plot_pareto(points, paths["png"], title=title)
    return paths


def plot_pareto(points: list[ParetoPoint], out: str | Path, *, title: str | None = None) -> Path:
    """Accuracy against the fairness figure, one colour per method, the front joined."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    if not points:
        raise InputError("nothing to plot: no sweep points")
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for method in dict.fromkeys(p.method for p in points):
        mine = [p for p in points if p.method == method]
        ax.scatter([p.fairness for p in mine], [p.accuracy for p in mine], label=method, alpha=0.8)
        for p in mine:
            if p.value is not None:
                ax.annotate(f"{p.value:g}", (p.fairness, p.accuracy), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    front = sorted((p for p in points if p.pareto), key=lambda p: p.fairness)
    if front:
        ax.plot([p.fairness for p in front], [p.accuracy for p in front], "k--", lw=1, label="Pareto front")
    metric = points[0].metric
    ax.set_xlabel(f"{metric} ({'lower' if monitor_mode(metric) == 'min' else 'higher'} is fairer)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "accuracy vs fairness")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(out)
