"""The streamed report equals the in-memory ``fairness_report`` on the same rows.

Integer counts (and every figure read off them alone) are compared exactly; the summed
confidences of the calibration histogram are added per chunk and then across chunks, in
another order than one bincount over all rows, so ``mean_score`` and the ECE figures
are compared to 1e-12.
"""

import numpy as np
import pandas as pd
import pytest

from reprogram.errors import MissingValuesError
from reprogram.metrics import fairness_report
from reprogram.metrics.streaming import (
    ReportAccumulator,
    fairness_report_from_chunks,
    streaming_report,
)

FLOAT_COLS = {"mean_score", "ece", "ece_equal_mass"}
FLOAT_OVERALL = {"ece", "ece_equal_mass", "max_group_ece", "calibration_disparity"}


def assert_same(a, b):
    assert a.classes == b.classes and a.groups == b.groups and a.positive_class == b.positive_class
    assert a.sensitive_columns == b.sensitive_columns and a.small_groups == b.small_groups
    np.testing.assert_array_equal(a.counts.confusion, b.counts.confusion)
    if a.counts.calib_count is not None:
        np.testing.assert_array_equal(a.counts.calib_count, b.counts.calib_count)
        np.testing.assert_allclose(a.counts.calib_score, b.counts.calib_score, rtol=1e-12, atol=1e-9)
    assert list(a.by_group.columns) == list(b.by_group.columns)
    for c in a.by_group.columns:
        x, y = a.by_group[c].to_numpy(), b.by_group[c].to_numpy()
        if c in FLOAT_COLS:
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
        else:
            np.testing.assert_array_equal(x, y)
    assert a.overall.keys() == b.overall.keys()
    for k in a.overall:
        if k in FLOAT_OVERALL:
            np.testing.assert_allclose(a.overall[k], b.overall[k], rtol=1e-12, atol=1e-12)
        else:
            assert a.overall[k] == b.overall[k] or (np.isnan(a.overall[k]) and np.isnan(b.overall[k])), k


def binary_frame(n=200, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "y": rng.choice(["no", "yes"], n),
        "sex": rng.choice(["F", "M"], n),
        "race": rng.choice([3, 1, 2], n),
        "score": rng.random(n),
    })
    df["pred"] = np.where(rng.random(n) < 0.7, df["y"], np.where(df["y"] == "yes", "no", "yes"))
    # groups and a value that appear only in the last rows
    df.loc[n - 20:, "sex"] = "X"
    df.loc[n - 5:, "race"] = 0
    return df


def multi_frame(n=400, seed=1):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(3), n)
    df = pd.DataFrame({"y": rng.choice(["b", "c", "a"], n), "g": rng.choice(["u", "v"], n)})
    for i, c in enumerate(["a", "b", "c"]):
        df[f"score_{c}"] = p[:, i]
    df["pred"] = np.array(["a", "b", "c"])[p.argmax(1)]
    df.loc[n - 3:, "g"] = "w"
    return df


def chunks_of(df, size):
    return [df.iloc[i:i + size] for i in range(0, len(df), size)]


@pytest.mark.parametrize("size", [1, 7, 10_000])
@pytest.mark.parametrize("cols", [{"pred": "pred", "score": "score"}, {"score": "score"}, {"pred": "pred"}])
@pytest.mark.parametrize("sens", [["sex"], ["sex", "race"], ["race"]])
def test_binary_chunks_equal_in_memory(size, cols, sens):
    df = binary_frame()
    ref = fairness_report(df["y"].to_numpy(), df[cols["pred"]].to_numpy() if "pred" in cols else None,
                          df["score"].to_numpy() if "score" in cols else None, df[sens])
    got = fairness_report_from_chunks(chunks_of(df, size), label="y", sensitive=sens, **cols)
    assert_same(got, ref)


@pytest.mark.parametrize("size", [1, 7, 10_000])
@pytest.mark.parametrize("with_pred", [True, False])
def test_multiclass_chunks_equal_in_memory(size, with_pred):
    df = multi_frame()
    sc = ["score_a", "score_b", "score_c"]
    ref = fairness_report(df["y"].to_numpy(), df["pred"].to_numpy() if with_pred else None, df[sc].to_numpy(),
                          df[["g"]])
    got = fairness_report_from_chunks(chunks_of(df, size), label="y", sensitive=["g"], score=sc,
                                      pred="pred" if with_pred else None)
    assert_same(got, ref)


def test_pos_label_and_many_groups_coarsen_the_grid():
    rng = np.random.default_rng(3)
    n = 3000
    df = pd.DataFrame({"y": rng.integers(0, 2, n), "score": rng.random(n),
                       "a": rng.integers(0, 40, n), "b": rng.integers(0, 30, n)})
    df.loc[:1000, "a"] = 0  # most groups first appear late, so the fine grid coarsens as they come
    ref = fairness_report(df["y"], None, df["score"], df[["a", "b"]], pos_label=0)
    got = fairness_report_from_chunks(chunks_of(df, 250), label="y", score="score", sensitive=["a", "b"], pos_label=0)
    assert ref.counts.calib_count.shape[-1] < 15 * 256
    assert_same(got, ref)


def test_accumulator_with_known_classes():
    df = binary_frame()
    acc = ReportAccumulator(["no", "yes"])
    for c in chunks_of(df, 64):
        acc.update(c["y"], c["pred"], c["score"], c[["sex"]])
    assert_same(acc.report(), fairness_report(df["y"], df["pred"], df["score"], df[["sex"]]))


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("size", [1, 7, 10_000])
def test_files_equal_in_memory(tmp_path, fmt, size):
    df = binary_frame(n=200)
    path = tmp_path / f"p.{fmt}"
    df.to_csv(path, index=False) if fmt == "csv" else df.to_parquet(path)
    ref = fairness_report(df["y"], df["pred"], df["score"], df[["sex", "race"]])
    got = streaming_report(path, label="y", pred="pred", score="score", sensitive=["sex", "race"], chunk_rows=size)
    assert_same(got, ref)


def test_csv_column_typed_differently_in_late_chunk(tmp_path):
    df = binary_frame(n=100)
    df["race"] = df["race"].astype(object)
    df.loc[95:, "race"] = "other"  # early chunks read as ints, the last as text
    path = tmp_path / "p.csv"
    df.to_csv(path, index=False)
    from reprogram.data import read_table

    full = read_table(path)
    ref = fairness_report(full["y"], full["pred"], full["score"], full[["race"]])
    got = streaming_report(path, label="y", pred="pred", score="score", sensitive=["race"], chunk_rows=10)
    assert_same(got, ref)


@pytest.mark.parametrize("col", ["sex", "y", "score"])
def test_nan_in_late_chunk_same_error(col):
    df = binary_frame()
    df[col] = df[col].astype(object) if col != "score" else df[col]
    df.loc[[150, 180], col] = np.nan
    with pytest.raises(MissingValuesError) as ref:
        fairness_report(df["y"].to_numpy(), None, df["score"].to_numpy(), df[["sex"]])
    with pytest.raises(MissingValuesError) as got:
        fairness_report_from_chunks(chunks_of(df, 7), label="y", score="score", sensitive=["sex"])
    assert str(got.value) == str(ref.value)
    assert "2 missing" in str(got.value) and "of 200 rows" in str(got.value)


def test_dataset_report_from_batches_equals_dataset_report():
    from types import SimpleNamespace

    from reprogram.metrics import dataset_report
    from reprogram.metrics.streaming import dataset_report_from_batches

    rng = np.random.default_rng(5)
    n = 300
    ds = SimpleNamespace(labels=rng.integers(0, 2, n), group_ids=rng.integers(0, 3, n), classes=["a", "b"],
                         group_names=["x", "y", "z"])
    ds.group_ids[:250] = rng.integers(0, 2, 250)  # group z only in the last batches
    proba = rng.dirichlet(np.ones(2), n)
    got = dataset_report_from_batches(ds, (proba[i:i + 64] for i in range(0, n, 64)))
    assert_same(got, dataset_report(ds, proba))
