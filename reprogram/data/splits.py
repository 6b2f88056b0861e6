"""Stratified train / validation / test splits of a table.

One helper for the CLI, the Pareto sweeps and the benchmarks, built on scikit-learn's
``train_test_split``: every split keeps the share of each stratum (by default each
label x group cell), so a small group is not left out of the validation set by chance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from reprogram.errors import GroupError, InputError

__all__ = ["split_frame", "load_train_val"]


def split_frame(
    frame: pd.DataFrame,
    fractions: Sequence[float],
    *,
    stratify: Sequence[str] | None = None,
    seed: int = 0,
) -> list[pd.DataFrame]:
    """Split ``frame`` into ``len(fractions)`` parts of those shares of the rows.

    ``fractions`` must be positive and sum to 1 (e.g. ``(0.4, 0.3, 0.3)``, FFB's protocol).
    ``stratify`` names the columns whose value combinations keep their share in every
    part; strata too small to appear in every part are pooled into one "rare" stratum
    (scikit-learn refuses a stratum of one row), and that pool joins the largest stratum
    when it is itself too small. Each part has a fresh 0..n-1 index.
    """
    from sklearn.model_selection import train_test_split

    fr = [float(f) for f in fractions]
    if len(fr) < 2 or any(not f > 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise InputError(f"split fractions must be >= 2 positive numbers summing to 1, got {list(fractions)}")
    if len(frame) < 2 * len(fr):
        raise InputError(f"{len(frame)} rows are too few to split into {len(fr)} parts")
    strata = None
    if stratify:
        # object first: string columns of pandas' own dtypes keep NaN through astype(str)
        keys = frame[list(stratify)].astype(object).fillna("<missing>").astype(str).agg("|".join, axis=1)
        keys = keys.to_numpy(dtype=object).astype(str)
        _, codes, counts = np.unique(keys, return_inverse=True, return_counts=True)
        rare = counts[codes] < 2 * len(fr)
        strata = np.where(rare, -1, codes)
        if 0 < rare.sum() < 2 * len(fr):
            strata[rare] = np.argmax(counts)
    parts: list[pd.DataFrame] = []
    rest, rest_strata, left = frame.reset_index(drop=True), strata, 1.0
    for f in fr[:-1]:
        share = f / left
        try:
            a, b = train_test_split(np.arange(len(rest)), train_size=share, random_state=seed, stratify=rest_strata)
        except ValueError as e:  # a pooled "rare" stratum of one row, or an extreme share
            raise GroupError(f"cannot split {len(rest)} rows {share:.2f}/{1 - share:.2f} by {list(stratify or [])}: "
                             f"{str(e).splitlines()[0]}") from None
        a, b = np.sort(a), np.sort(b)
        parts.append(rest.iloc[a].reset_index(drop=True))
        rest = rest.iloc[b].reset_index(drop=True)
        rest_strata = None if rest_strata is None else rest_strata[b]
        left -= f
    parts.append(rest)
    return parts


def load_train_val(
    data,
    *,
    label: str,
    sensitive,
    val=None,
    val_fraction: float = 0.2,
    seed: int = 0,
    **load_kw,
):
    """Training and validation datasets from one table (split) or two tables.

    ``data`` and ``val`` are table paths or DataFrames. Without ``val``, ``data`` is split
    ``1 - val_fraction`` / ``val_fraction``, stratified by label and group
    (:func:`split_frame`). The validation set reuses the training set's feature, label
    and group encodings. ``load_kw`` go to :func:`~reprogram.data.load_dataset`
    (``features``, ``text``, ``image``, ``image_meta``...); image paths stay relative
    to the table's folder.
    """
    import os
    from pathlib import Path

    from reprogram.data.datasets import load_dataset
    from reprogram.data.tables import read_table, require_columns

    sens = [sensitive] if isinstance(sensitive, str) else list(sensitive)
    base = {}
    if isinstance(data, (str, os.PathLike)):
        base = {"base_dir": Path(data).resolve().parent}
        frame, source = read_table(data), os.fspath(data)
    else:
        frame, source = data, None
    if val is None:
        if not 0.0 < float(val_fraction) < 1.0:
            raise InputError(f"val_fraction must lie in (0, 1), got {val_fraction}")
        require_columns(frame, [label, *sens], role="column", source=source)
        train_frame, val_frame = split_frame(frame, (1.0 - val_fraction, val_fraction), stratify=[label, *sens],
                                             seed=seed)
        val_base = base
    else:
        train_frame = frame
        if isinstance(val, (str, os.PathLike)):
            val_base = {"base_dir": Path(val).resolve().parent}
            val_frame = read_table(val)
        else:
            val_base, val_frame = base, val
    train = load_dataset(train_frame, label=label, sensitive=sens, **base, **load_kw)
    reuse = {"label_classes": train.label_encoder, "group_encoder": train.groups}
    if getattr(train, "feature_encoder", None) is not None:
        reuse["feature_encoder"] = train.feature_encoder
        load_kw = {k: v for k, v in load_kw.items() if k != "features"}
    return train, load_dataset(val_frame, label=label, sensitive=sens, **val_base, **load_kw, **reuse)
