"""Shared helpers for the data tests."""

from __future__ import annotations

import pandas as pd
import pytest


@pytest.fixture
def people() -> pd.DataFrame:
    """A tiny table with numeric, string and bool features, a string label and two sensitive columns."""
    return pd.DataFrame(
        {
            "age": [20, 30, 40, 50],
            "const": [5.0, 5.0, 5.0, 5.0],
            "job": ["clerk", "chef", "clerk", "pilot"],
            "flag": [True, False, True, True],
            "sex": ["F", "M", "F", "M"],
            "race": ["A", "A", "B", "B"],
            "y": ["no", "yes", "yes", "no"],
        }
    )
