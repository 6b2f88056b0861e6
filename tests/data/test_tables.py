"""read_table and require_columns: round trips through every supported format, and errors."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from reprogram.data import read_table, require_columns
from reprogram.errors import ColumnNotFoundError, InputError, ReprogramError, UnsupportedFileError


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [1, 2, 3],
            "score": [0.5, np.nan, -1.25],
            "name": ["Zoë", "Ünal", "李"],
            "ok": [True, False, True],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".tsv", ".tsv.gz"])
def test_csv_round_trip(tmp_path, frame, suffix):
    path = tmp_path / f"t{suffix}"
    frame.to_csv(path, index=False, sep="\t" if ".tsv" in suffix else ",")
    back = read_table(path)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back["id"].dtype.kind == "i" and back["score"].dtype.kind == "f" and back["ok"].dtype == bool


@pytest.mark.parametrize("suffix", [".parquet", ".pq", ".PARQUET"])
def test_parquet_round_trip(tmp_path, frame, suffix):
    path = tmp_path / f"t{suffix}"
    frame.to_parquet(path, index=False)
    pd.testing.assert_frame_equal(read_table(path), frame)


def test_unknown_suffix_lists_supported(tmp_path):
    path = tmp_path / "t.xlsx"
    path.write_bytes(b"x")
    with pytest.raises(UnsupportedFileError) as e:
        read_table(path)
    msg = str(e.value)
    assert "t.xlsx" in msg and ".csv" in msg and ".parquet" in msg and "\n" not in msg


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match="nope.csv.*not found"):
        read_table(tmp_path / "nope.csv")


def test_directory_is_refused(tmp_path):
    (tmp_path / "d.csv").mkdir()
    with pytest.raises(InputError, match="not a file"):
        read_table(tmp_path / "d.csv")


@pytest.mark.parametrize(
    "name, content",
    [
        ("bad.parquet", b"PAR1 this is not parquet at all"),
        ("bad.csv.gz", b"\x1f\x8b\x08 truncated gzip"),
        ("bad.csv", b"a,b\n\xff\xfe\xfd,1\n"),
        ("empty.csv", b""),
        ("text.pq", b"a,b\n1,2\n"),
    ],
)
def test_corrupt_files_give_one_line(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as e:
        read_table(path)
    assert name in str(e.value) and "\n" not in str(e.value)


def test_gzip_csv_read_from_real_gzip(tmp_path):
    path = tmp_path / "g.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("a,b\n1,x\n2,y\n")
    assert read_table(path).to_dict("list") == {"a": [1, 2], "b": ["x", "y"]}


def test_require_columns_names_missing_and_lists_present(frame):
    assert require_columns(frame, "id") == ["id"]
    assert require_columns(frame, ["id", "name"]) == ["id", "name"]
    with pytest.raises(ColumnNotFoundError) as e:
        require_columns(frame, ["id", "gender"], role="sensitive column", source="data.csv")
    msg = str(e.value)
    assert "sensitive column 'gender' not found in data.csv" in msg
    assert "columns present: id, score, name, ok" in msg
    # Also a KeyError and a ReprogramError, whose message is not quoted like a KeyError's.
    assert isinstance(e.value, KeyError) and isinstance(e.value, ReprogramError)
    assert not msg.startswith('"')
