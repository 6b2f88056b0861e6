"""Reading the tables everything enters as (CSV or Parquet), and checking their columns.

Every failure here is an :class:`~reprogram.errors.InputError` with one line that names
the file, so the CLI can print it instead of a pandas or pyarrow traceback.
"""

from __future__ import annotations

import csv
import os
import zlib
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from reprogram.errors import ColumnNotFoundError, InputError, UnsupportedFileError, first_line

__all__ = ["SUPPORTED_SUFFIXES", "read_table", "require_columns", "table_kind"]

# Longest first, so that ".csv.gz" wins over a bare ".gz".
_KINDS = {
    ".csv.gz": ("csv", ","),
    ".tsv.gz": ("csv", "\t"),
    ".csv": ("csv", ","),
    ".tsv": ("csv", "\t"),
    ".parquet": ("parquet", None),
    ".pq": ("parquet", None),
}
SUPPORTED_SUFFIXES: tuple[str, ...] = tuple(_KINDS)


def table_kind(path: str | os.PathLike) -> tuple[str, str | None]:
    """Return ``("csv", separator)`` or ``("parquet", None)`` for a table's file name.

    Raises :class:`UnsupportedFileError` listing the supported suffixes otherwise.
    """
    name = Path(path).name.lower()
    for suffix, kind in _KINDS.items():
        if name.endswith(suffix):
            return kind
    raise UnsupportedFileError(
        f"cannot read {os.fspath(path)!r}: unsupported file type; supported: {', '.join(SUPPORTED_SUFFIXES)}"
    )


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``, ``.tsv``, ``.tsv.gz``) or Parquet (``.parquet``, ``.pq``) table.

    Column names are returned as strings. A missing, unreadable or corrupt file raises
    an :class:`InputError` naming it; an unknown suffix raises :class:`UnsupportedFileError`.
    CSV cells that pandas treats as missing by default (empty, ``NA``, ``NaN``, ``null``...)
    are read as missing values.
    """
    kind, sep = table_kind(path)
    p = Path(path)
    if not p.exists():
        raise InputError(f"table {os.fspath(path)!r} not found")
    if not p.is_file():
        raise InputError(f"table {os.fspath(path)!r} is not a file")
    try:
        if kind == "csv":
            # low_memory=False: type each column from all of it, not chunk by chunk
            # (chunked typing gives mixed int/str columns and a DtypeWarning).
            df = pd.read_csv(p, sep=sep, low_memory=False, encoding="utf-8")
        else:
            df = pd.read_parquet(p)
    except pd.errors.EmptyDataError:
        raise InputError(f"cannot read table {os.fspath(path)!r}: the file is empty") from None
    # pyarrow's errors derive from ValueError/OSError/etc.; the C parser's from ValueError;
    # corrupt gzip gives OSError, EOFError or zlib.error; csv.Error for broken quoting.
    except (ValueError, OSError, EOFError, LookupError, TypeError, zlib.error, csv.Error, MemoryError) as e:
        raise InputError(f"cannot read table {os.fspath(path)!r}: {first_line(e)}") from None
    if not all(isinstance(c, str) for c in df.columns):
        df.columns = [str(c) for c in df.columns]
    if kind == "parquet":
        df = _nested_as_text(df)
    return df


def _nested_as_text(df: pd.DataFrame) -> pd.DataFrame:
    """Parquet list, struct and map columns as their JSON text, binary columns as text.

    Their cells (arrays, dicts) cannot be labels, groups or features, and being
    unhashable they break every group-by; as text they are at least plain categories.
    """
    import json

    import numpy as np

    def text(v):
        if isinstance(v, np.ndarray):
            v = v.tolist()
        return json.dumps(v, default=str, ensure_ascii=False)

    for i, col in enumerate(df.columns):
        s = df.iloc[:, i]
        if s.dtype != object:
            continue
        first = s.dropna().head(1)
        if len(first) and isinstance(first.iloc[0], (list, tuple, dict, np.ndarray)):
            df.iloc[:, i] = s.map(lambda v: text(v) if isinstance(v, (list, tuple, dict, np.ndarray)) else v)
        elif len(first) and isinstance(first.iloc[0], bytes):  # binary columns: text, bad bytes escaped
            df.iloc[:, i] = s.map(lambda v: v.decode("utf-8", errors="backslashreplace") if isinstance(v, bytes) else v)
    return df


def require_columns(
    df: pd.DataFrame,
    columns: str | Iterable[str],
    *,
    role: str = "column",
    source: str | None = None,
) -> list[str]:
    """Check that ``columns`` (one name or several) are in ``df``; return them as a list.

    The first missing one raises :class:`ColumnNotFoundError`, whose message names it,
    its ``role`` (``"label column"``...), the ``source`` and the columns that are present.
    """
    names = [columns] if isinstance(columns, str) else list(columns)
    present = set(df.columns)
    for name in names:
        if name not in present:
            raise ColumnNotFoundError(name, df.columns, role=role, source=source)
    return names
