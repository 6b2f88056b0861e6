"""Every command on random, broken tables (issue 7).

Tables are drawn by Hypothesis from a valid one by breaking it: columns of the wrong
type, NaN and inf, unicode and duplicate column names, huge strings, dropped columns,
no rows. Every command must then either succeed or exit 2 with one ``error:`` line --
never a traceback (an exception escaping ``main`` fails the test) -- and a failed run
must leave neither its output nor a temporary file behind.
"""

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli_helpers import invoke
from reprogram.cli import main

pytestmark = pytest.mark.slow

N_EXAMPLES = int(os.environ.get("REPROGRAM_FUZZ_EXAMPLES", 15))  # more for a longer hunt
FUZZ = settings(max_examples=N_EXAMPLES, deadline=None, derandomize="REPROGRAM_FUZZ_EXAMPLES" not in os.environ,
                database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])


def _run(args):
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    assert done.value.code in (0, None)


def _clean(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.choice(["a", "b"], n)
    x1 = rng.normal(size=n) + (g == "b")
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * x1))).astype(int)
    score = np.clip(1 / (1 + np.exp(-2 * x1)) + rng.normal(0, 0.05, n), 0, 1)
    return pd.DataFrame({"x1": x1, "c": rng.choice(["u", "v", "w"], n), "g": g, "y": y, "score": score,
                         "pred": (score > 0.5).astype(int)})


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A tiny model (features x1, c), a trigger for it and a group calibrator, made once."""
    d = tmp_path_factory.mktemp("fuzz_artifacts")
    _clean(300).to_csv(d / "train.csv", index=False)
    model = d / "m.pt"
    _run(["train", "--data", d / "train.csv", "--label", "y", "--sensitive", "g", "--features", "x1", "c",
          "--epochs", 2, "--hidden", 4, "--out", model])
    _run(["fit", "--model", model, "--data", d / "train.csv", "--label", "y", "--sensitive", "g", "--epochs", 1,
          "--out", d / "trigger"])
    _run(["calibrate", "--predictions", d / "train.csv", "--score", "score", "--label", "y", "--sensitive", "g",
          "--method", "platt", "--out", d / "calib"])
    return {"model": model, "trigger": d / "trigger", "calib": d / "calib", "root": d}


# ---------------------------------------------------------------------------- random tables

_floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
_text = st.text(max_size=12)
_junk_cell = st.one_of(_floats, st.integers(-(2**70), 2**70), _text, st.booleans(), st.none(),
                       st.sampled_from(["", "NA", "nan", "inf", "-inf", "1e999", "x" * 5000, "a\nb", '"', ",", "é",
                                        "\u202e", "\x00"]))
_column_name = st.one_of(st.sampled_from(["x1", "c", "g", "y", "score", "pred", "id", "__label__", "__group__", " ",
                                          "é", "名前", "score_0", "", "a,b", 'q"']), st.text(min_size=1, max_size=8))


@st.composite
def tables(draw):
    """A table drawn as a valid one plus a few breakages."""
    n = draw(st.sampled_from([80, 0, 2, 12, 40, 80, 80]))
    df = _clean(n, seed=draw(st.integers(0, 3)))
    for _ in range(draw(st.sampled_from([1, 0, 1, 1, 2, 3]))):
        cols = list(df.columns)
        kind = draw(st.sampled_from(["junk_column", "sprinkle", "rename", "drop", "add", "huge", "one_group",
                                     "one_class", "strings", "typed"]))
        if not cols and kind != "add":
            continue
        col = draw(st.sampled_from(cols)) if cols else None
        if kind == "junk_column":
            df[col] = pd.Series(draw(st.lists(_junk_cell, min_size=n, max_size=n)), dtype=object)
        elif kind == "sprinkle" and n:
            rows = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=3))
            value = draw(st.sampled_from([math.nan, math.inf, -math.inf, None, "oops", 1e308, -1, 7]))
            df[col] = df[col].astype(object)
            df.loc[rows, col] = value
        elif kind == "rename":
            df = df.rename(columns={col: draw(_column_name)})
        elif kind == "drop":
            df = df.drop(columns=[col])
        elif kind == "add":
            df[draw(_column_name)] = pd.Series(draw(st.lists(_junk_cell, min_size=n, max_size=n)), dtype=object)
        elif kind == "huge" and n:
            df[col] = df[col].astype(object)
            df.loc[0, col] = "z" * draw(st.sampled_from([10_000, 200_000]))
        elif kind == "one_group":
            df["g"] = "a"
        elif kind == "one_class" and "y" in df:
            df["y"] = 1
        elif kind == "strings":
            df[col] = df[col].map(str)
        elif kind == "typed":  # kept as such by Parquet: lists, dates, booleans, bytes, nested dicts
            typed = draw(st.sampled_from(["list", "date", "bool", "bytes", "dict", "int8"]))
            values = {"list": lambda i: [i, i + 1], "date": lambda i: pd.Timestamp("2020-01-01") + pd.Timedelta(days=i),
                      "bool": lambda i: bool(i % 2), "bytes": lambda i: bytes([i % 256, 255]),
                      "dict": lambda i: {"k": i}, "int8": lambda i: i % 100}[typed]
            df[col] = pd.Series([values(i) for i in range(n)], dtype="int8" if typed == "int8" else object)
    fmt = draw(st.sampled_from(["csv", "csv", "parquet"]))
    return df, fmt


def _write(drawn, folder: Path) -> Path:
    df, fmt = drawn
    if fmt == "parquet":
        path = folder / "t.parquet"
        try:
            df.to_parquet(path, index=False)
            return path
        except Exception:  # noqa: BLE001  pyarrow refuses mixed object columns: write a CSV instead
            path.unlink(missing_ok=True)
    path = folder / "t.csv"
    df.to_csv(path, index=False)
    return path


def _check(code: int, text: str, folder: Path, out: Path | None, keep: set):
    assert "Traceback" not in text, text
    assert code in (0, 2), (code, text)
    if code == 2:
        errors = [ln for ln in text.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1, text
        assert text.rstrip().endswith(errors[0]), text  # nothing after it: the error is one line
        if out is not None:
            assert not out.exists(), (out, text)
        left = {p.name for p in folder.iterdir()} - keep
        assert not left, (left, text)


def _fresh(root: Path) -> Path:
    return Path(tempfile.mkdtemp(dir=root))


# ---------------------------------------------------------------------------- the commands

COMMANDS = {
    "metrics": lambda t, o, a: (["metrics", "--predictions", t, "--label", "y", "--pred", "pred", "--score", "score",
                                 "--sensitive", "g", "--json", o / "r.json"], o / "r.json"),
    "calibrate": lambda t, o, a: (["calibrate", "--predictions", t, "--score", "score", "--label", "y", "--sensitive",
                                   "g", "--min-group-size", 2, "--out", o / "calib"], o / "calib"),
    "train": lambda t, o, a: (["train", "--data", t, "--label", "y", "--sensitive", "g", "--epochs", 1,
                               "--hidden", 2, "--out", o / "m.pt"], o / "m.pt"),
    "fit": lambda t, o, a: (["fit", "--model", a["model"], "--data", t, "--label", "y", "--sensitive", "g",
                             "--epochs", 1, "--out", o / "trig"], o / "trig"),
    "evaluate": lambda t, o, a: (["evaluate", "--model", a["model"], "--trigger", a["trigger"], "--data", t,
                                  "--label", "y", "--sensitive", "g", "--json", o / "e.json"], o / "e.json"),
    "apply": lambda t, o, a: (["apply", "--model", a["model"], "--trigger", a["trigger"], "--calibrator", a["calib"],
                               "--data", t, "--keep", "y", "--out", o / "p.csv"], o / "p.csv"),
    "export": lambda t, o, a: (["export", "--model", a["model"], "--trigger", a["trigger"], "--calibrator", a["calib"],
                                "--data", t, "--rows", 8, "--out", o / "m.onnx"], o / "m.onnx"),
    "explain": lambda t, o, a: (["explain", "--model", a["model"], "--data", t, "--label", "y", "--sensitive", "g",
                                 "--samples", 1, "--steps", 2, "--out", o / "r.html"], o / "r.html"),
    "pareto": lambda t, o, a: (["pareto", "--data", t, "--label", "y", "--sensitive", "g", "--method", "lagrangian",
                                "--values", 0.1, "--no-erm", "--epochs", 1, "--out", o / "sweep"], o / "sweep"),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_on_random_tables(command, artifacts, capsys):
    @FUZZ
    @given(df=tables())
    def check(df):
        folder = _fresh(artifacts["root"])
        table = _write(df, folder)
        args, out = COMMANDS[command](table, folder, artifacts)
        code, text = invoke(args, capsys)
        _check(code, text, folder, out, keep={table.name})

    check()


@pytest.mark.parametrize("command", ["metrics", "calibrate", "train", "apply"])
def test_command_on_files_that_are_not_tables(command, artifacts, capsys):
    """Bytes that are not a CSV: binary noise, bad UTF-8, a cut gzip, an empty file."""

    @FUZZ
    @given(data=st.one_of(st.binary(max_size=200), st.sampled_from([b"", b"\xff\xfe\x00", b"a,b\n1", b'"' * 50,
                                                                    b"y,g\n" + b"1,a\n" * 3 + b"\x80\x81,b\n"])),
           suffix=st.sampled_from([".csv", ".csv.gz", ".parquet", ".tsv"]))
    def check(data, suffix):
        folder = _fresh(artifacts["root"])
        table = folder / f"t{suffix}"
        table.write_bytes(data)
        args, out = COMMANDS[command](table, folder, artifacts)
        code, text = invoke(args, capsys)
        _check(code, text, folder, out, keep={table.name})

    check()
