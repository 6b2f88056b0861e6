"""FeatureEncoder and LabelEncoder: values checked by hand, unseen values, missing values, JSON."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reprogram.data import FeatureEncoder, LabelEncoder
from reprogram.errors import ColumnNotFoundError, InputError, MissingValuesError, NotFittedError


def test_one_hot_and_standardize_by_hand(people):
    enc = FeatureEncoder()
    X = enc.fit_transform(people, ["age", "const", "job", "flag"])
    assert enc.feature_names_out_ == [
        "age",
        "const",
        "job=chef",
        "job=clerk",
        "job=pilot",
        "flag=False",
        "flag=True",
    ]
    assert X.dtype == np.float32 and X.shape == (4, 7)
    # age: mean 35, population std sqrt(125) -> (age - 35) / 11.1803...
    z = np.float32(15 / np.sqrt(125.0))
    z5 = np.float32(5 / np.sqrt(125.0))
    expected = np.array(
        [
            [-z, 0, 0, 1, 0, 0, 1],
            [-z5, 0, 1, 0, 0, 1, 0],
            [z5, 0, 0, 1, 0, 0, 1],
            [z, 0, 0, 0, 1, 0, 1],
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(X, expected, rtol=1e-6, atol=1e-7)
    assert enc.means_ == {"age": 35.0, "const": 5.0}
    assert enc.scales_["const"] == 1.0  # constant column: std 1, so it becomes zeros


def test_without_standardizing_numbers_pass_through(people):
    X = FeatureEncoder(standardize=False).fit_transform(people, ["age", "const"])
    np.testing.assert_array_equal(X, [[20, 5], [30, 5], [40, 5], [50, 5]])


def test_unseen_category_is_an_all_zero_block(people):
    enc = FeatureEncoder().fit(people, ["job", "age"])
    new = pd.DataFrame({"job": ["pilot", "astronaut"], "age": [35, 35], "other": [1, 2]})
    X = enc.transform(new)
    np.testing.assert_array_equal(X, [[0, 0, 1, 0], [0, 0, 0, 0]])


def test_integer_categories_survive_a_gap_in_a_new_csv():
    enc = FeatureEncoder(categorical=["zip"], missing="mean").fit(pd.DataFrame({"zip": [10, 20, 10]}))
    assert enc.feature_names_out_ == ["zip=10", "zip=20"]
    # A gap turns the column into floats (10.0); it must still match category "10".
    X = enc.transform(pd.DataFrame({"zip": [10.0, np.nan, 20.0]}))
    np.testing.assert_array_equal(X, [[1, 0], [0, 0], [0, 1]])


def test_missing_numbers_raise_with_count_or_are_filled(people):
    df = people.assign(age=[20, np.nan, np.inf, 50])
    with pytest.raises(MissingValuesError, match=r"'age'.* 2 missing or infinite value\(s\) of 4 rows"):
        FeatureEncoder().fit(df, ["age"])
    enc = FeatureEncoder(missing="mean")
    X = enc.fit_transform(df, ["age", "job"])
    assert enc.means_["age"] == 35.0
    assert X[1, 0] == 0.0 and X[2, 0] == 0.0  # filled with the mean: 0 once standardized


def test_missing_category_raises_or_encodes_as_zeros(people):
    df = people.assign(job=["clerk", None, "chef", "clerk"])
    with pytest.raises(MissingValuesError, match=r"'job'.* 1 missing value"):
        FeatureEncoder().fit(df, ["job"])
    X = FeatureEncoder(missing="mean").fit_transform(df, ["job"])
    np.testing.assert_array_equal(X, [[0, 1], [0, 0], [1, 0], [0, 1]])


def test_text_in_a_numeric_column_at_transform_is_refused(people):
    enc = FeatureEncoder().fit(people, ["age"])
    with pytest.raises(InputError, match=r"'age'.*should hold numbers.*'forty'"):
        enc.transform(pd.DataFrame({"age": ["30", "forty"]}))
    # numbers written as text are fine
    np.testing.assert_array_equal(enc.transform(pd.DataFrame({"age": ["35"]})), [[0.0]])


def test_errors_for_columns_types_and_state(people):
    with pytest.raises(NotFittedError):
        FeatureEncoder().transform(people)
    enc = FeatureEncoder().fit(people, ["age", "job"])
    with pytest.raises(ColumnNotFoundError, match="feature column 'job' not found"):
        enc.transform(people.drop(columns="job"))
    with pytest.raises(InputError, match="cannot be encoded"):
        FeatureEncoder().fit(pd.DataFrame({"t": pd.to_datetime(["2020-01-01", "2021-01-01"])}))
    with pytest.raises(InputError, match="max_categories=2"):
        FeatureEncoder(max_categories=2).fit(people, ["job"])
    with pytest.raises(InputError, match="no rows"):
        FeatureEncoder().fit(people.iloc[:0])


def test_json_round_trip_gives_identical_transform(people):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "x": rng.normal(3.3, 7.1, 50),
            "n": rng.integers(-5, 5, 50),
            "c": rng.choice(["a", "b", "ç", "d e"], 50),
            "b": rng.random(50) < 0.3,
        }
    )
    enc = FeatureEncoder(categorical=["n"]).fit(df)
    back = FeatureEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    assert back.feature_names_out_ == enc.feature_names_out_
    assert back.get_params() == enc.get_params()
    np.testing.assert_array_equal(back.transform(df), enc.transform(df))
    with pytest.raises(InputError, match="not a feature encoding"):
        FeatureEncoder.from_dict({"format": "something else"})


def test_label_encoder_strings_and_round_trip():
    enc = LabelEncoder()
    codes = enc.fit_transform(pd.Series(["yes", "no", "maybe", "no"]))
    assert enc.classes_ == ["maybe", "no", "yes"]
    np.testing.assert_array_equal(codes, [2, 1, 0, 1])
    assert codes.dtype == np.int64
    back = LabelEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    np.testing.assert_array_equal(back.transform(["no", "yes"]), [1, 2])
    np.testing.assert_array_equal(back.inverse_transform([0, 2]), ["maybe", "yes"])
    with pytest.raises(InputError, match="not classes of the model.*perhaps"):
        back.transform(["perhaps", "no"])
    with pytest.raises(MissingValuesError, match="1 missing"):
        back.transform(["no", None])


def test_label_classes_stored_as_text_match_numbers():
    enc = LabelEncoder.from_classes(["0", "1"])
    np.testing.assert_array_equal(enc.transform(np.array([1, 0, 1])), [1, 0, 1])
    with pytest.raises(InputError, match="not distinct"):
        LabelEncoder.from_classes([1, "1"])
