"""Random small tables: every load either works or raises a ReprogramError, never anything else."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reprogram.data import FeatureEncoder, GroupEncoder, LabelEncoder, load_dataset, read_table
from reprogram.data.tables import SUPPORTED_SUFFIXES
from reprogram.errors import ReprogramError

# REPROGRAM_FUZZ_SCALE=20 for a long hunt; the default keeps the suite quick.
_SCALE = float(os.environ.get("REPROGRAM_FUZZ_SCALE", "1"))


def fuzz(n: int) -> settings:
    return settings(max_examples=max(1, int(n * _SCALE)), deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.text(min_size=0, max_size=4)
texts = st.text(max_size=6)


@st.composite
def columns(draw, n: int):
    kind = draw(st.sampled_from(["int", "float", "bool", "str", "cat", "mixed", "Int64", "datetime", "const"]))
    # Gaps in a third of the columns only: with a gap in most, nearly every load is refused.
    gaps = draw(st.sampled_from([False, False, True]))

    def cells(values):
        return draw(st.lists(st.none() | values if gaps else values, min_size=n, max_size=n))

    if kind == "int":
        ints = st.integers(-(2**63), 2**63 - 1) | st.integers(-3, 3)
        return pd.Series(draw(st.lists(ints, min_size=n, max_size=n)), dtype="int64")
    if kind == "float":
        finite = st.floats(-1e6, 1e6) | st.sampled_from([0.0, 0.5, 1.0])
        anything = st.floats(allow_nan=True, allow_infinity=True)
        return pd.Series(draw(st.lists(anything if gaps else finite, min_size=n, max_size=n)), dtype="float64")
    if kind == "bool":
        return pd.Series(draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    if kind == "str":
        return pd.Series(cells(texts | st.sampled_from(["a", "b"])), dtype=object)
    if kind == "cat":
        return pd.Series(cells(st.sampled_from(["x", "y", "z"])), dtype="category")
    if kind == "mixed":
        return pd.Series(cells(st.integers(-5, 5) | st.floats(-10, 10) | texts | st.booleans()), dtype=object)
    if kind == "Int64":
        return pd.Series(cells(st.integers(-3, 3)), dtype="Int64")
    if kind == "datetime":
        days = cells(st.integers(0, 20000))
        stamps = pd.Series(pd.to_datetime([None if d is None else pd.Timestamp(0) + pd.Timedelta(days=d) for d in days]))
        return stamps.dt.tz_localize("UTC") if draw(st.booleans()) else stamps
    return pd.Series([draw(st.sampled_from([0, 1.5, "k"]))] * n, dtype=object)


@st.composite
def tables(draw):
    n = draw(st.sampled_from([4, 7, 2, 5, 1, 3, 6, 0]))
    unique = draw(st.sampled_from([True] * 9 + [False]))  # sometimes a repeated column name
    k = draw(st.sampled_from([4, 3, 5, 2, 1]))
    cols = draw(st.lists(names, min_size=k, max_size=k, unique=unique))
    return pd.DataFrame({i: draw(columns(n)) for i in range(len(cols))}).set_axis(cols, axis=1)


@st.composite
def requests(draw, df: pd.DataFrame):
    """Arguments to load_dataset: mostly a sensible choice of existing columns, sometimes not."""
    present = list(dict.fromkeys(df.columns))
    col = st.sampled_from(present) | names if present else names
    if len(present) >= 2 and draw(st.sampled_from([True] * 4 + [False])):
        order = draw(st.permutations(present))
        label, rest = order[0], order[1:]
        k = draw(st.integers(1, min(2, len(rest))))
        sens = rest[:k]
        kwargs = {"label": label, "sensitive": sens[0] if k == 1 and draw(st.booleans()) else sens}
        others = rest[k:]
        mode = draw(st.sampled_from(["tabular", "tabular", "tabular", "text", "image"]))
        if mode in ("text", "image"):
            kwargs[mode] = others[0] if others and draw(st.booleans()) else draw(col)
        elif draw(st.booleans()):
            kwargs["features"] = draw(st.lists(st.sampled_from(others) if others else col, max_size=3, unique=True))
    else:
        kwargs = {"label": draw(col)}
        several = st.lists(col, min_size=1, max_size=3) | st.just([])
        kwargs["sensitive"] = draw(col) if draw(st.booleans()) else draw(several)
        mode = draw(st.sampled_from(["tabular", "text", "image", "both"]))
        if mode in ("text", "both"):
            kwargs["text"] = draw(col)
        if mode in ("image", "both"):
            kwargs["image"] = draw(col)
        if mode == "tabular" and draw(st.booleans()):
            kwargs["features"] = draw(st.lists(col, max_size=3))
    if "text" not in kwargs and "image" not in kwargs and draw(st.booleans()):
        kwargs["feature_encoder"] = FeatureEncoder(missing=draw(st.sampled_from(["error", "mean"])))
    return kwargs


def _check(ds, n_rows: int, df: pd.DataFrame, kwargs: dict) -> None:
    """Invariants of a dataset that loaded, and the same encodings re-applied via JSON."""
    assert len(ds) == n_rows
    assert ds.labels.min() >= 0 and ds.labels.max() < len(ds.classes)
    assert ds.group_ids.min() >= 0 and ds.group_ids.max() < len(ds.group_names)
    if "image" not in kwargs:
        x, y, g = ds[0]
        assert int(y) == ds.labels[0] and int(g) == ds.group_ids[0]
    again = dict(kwargs)
    again["label_classes"] = LabelEncoder.from_dict(json.loads(json.dumps(ds.label_encoder.to_dict())))
    again["group_encoder"] = GroupEncoder.from_dict(json.loads(json.dumps(ds.groups.to_dict())))
    if hasattr(ds, "feature_encoder"):
        again["feature_encoder"] = FeatureEncoder.from_dict(json.loads(json.dumps(ds.feature_encoder.to_dict())))
        again.pop("features", None)
    ds2 = load_dataset(df, **again, check_files=False)
    np.testing.assert_array_equal(ds2.labels, ds.labels)
    np.testing.assert_array_equal(ds2.group_ids, ds.group_ids)
    if hasattr(ds, "features"):
        np.testing.assert_array_equal(ds2.features, ds.features)


def _load(df: pd.DataFrame, kwargs: dict) -> None:
    try:
        ds = load_dataset(df, **kwargs)
    except ReprogramError as e:
        assert "\n" not in str(e)
        event(f"refused: {type(e).__name__}: {str(e)[:35]}")
        return
    event(f"loaded: {type(ds).__name__}")
    _check(ds, len(df), df, kwargs)


@fuzz(150)
@given(data=st.data())
def test_load_dataset_from_random_frames(data):
    df = data.draw(tables())
    _load(df, data.draw(requests(df)))


@fuzz(100)
@given(data=st.data(), suffix=st.sampled_from([".csv", ".parquet", ".tsv", ".csv.gz"]))
def test_load_dataset_from_random_files(data, suffix):
    df = data.draw(tables())
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t{suffix}"
        try:
            if suffix == ".parquet":
                df.to_parquet(path)
            else:
                df.to_csv(path, index=False, sep="\t" if suffix == ".tsv" else ",")
        except Exception:  # noqa: BLE001 - some frames have no Parquet form; that is pyarrow's call
            return
        try:
            read = read_table(path)
        except ReprogramError as e:
            assert "\n" not in str(e)
            return
        kwargs = data.draw(requests(read))
        _load(read, kwargs)
        try:
            load_dataset(path, **kwargs)
        except ReprogramError:
            pass


@fuzz(100)
@given(content=st.binary(max_size=300), suffix=st.sampled_from(SUPPORTED_SUFFIXES))
def test_read_table_on_random_bytes(content, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"t{suffix}"
        path.write_bytes(content)
        try:
            df = read_table(path)
        except ReprogramError as e:
            assert "\n" not in str(e) and path.name in str(e)
            return
        assert isinstance(df, pd.DataFrame) and all(isinstance(c, str) for c in df.columns)
