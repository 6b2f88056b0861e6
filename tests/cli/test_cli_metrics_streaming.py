"""`reprogram metrics` reads the table in chunks: its output does not depend on --chunk-rows."""

import json

import numpy as np
import pandas as pd
import pytest
from cli_helpers import invoke

from reprogram.metrics import fairness_report


@pytest.fixture()
def table(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"y": rng.integers(0, 2, n), "sex": rng.choice(["F", "M"], n), "score": rng.random(n)})
    df["pred"] = (df["score"] > 0.5).astype(int)
    df.loc[n - 10:, "sex"] = "X"  # a group only in the last chunk
    return df


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_output_same_for_any_chunk_size(tmp_path, table, fmt, capsys):
    path = tmp_path / f"p.{fmt}"
    table.to_csv(path, index=False) if fmt == "csv" else table.to_parquet(path)
    outs = []
    for chunk in (7, 1_000_000):
        js = tmp_path / f"r{chunk}.json"
        code, out = invoke(["metrics", "-p", path, "--label", "y", "--sensitive", "sex", "--pred", "pred",
                            "--score", "score", "--pos-label", "1", "--chunk-rows", chunk, "--json", js], capsys)
        assert code == 0, out
        outs.append((out.replace(str(js), "J"), json.loads(js.read_text())))
    assert outs[0][0] == outs[1][0]
    ref = fairness_report(table["y"], table["pred"], table["score"], table[["sex"]], pos_label=1).to_dict()
    for _, d in outs:
        assert d["by_group"].keys() == ref["by_group"].keys()
        assert d["overall"]["accuracy"] == ref["overall"]["accuracy"]
        assert d["overall"]["ece"] == pytest.approx(ref["overall"]["ece"], abs=1e-12)


def test_nan_late_one_line_error(tmp_path, table, capsys):
    table = table.astype({"sex": object})
    table.loc[[290, 295], "sex"] = None
    path = tmp_path / "p.csv"
    table.to_csv(path, index=False)
    code, out = invoke(["metrics", "-p", path, "--label", "y", "--sensitive", "sex", "--pred", "pred",
                        "--chunk-rows", 50], capsys)
    assert code == 2
    assert "sensitive feature 'sex' has 2 missing value(s) (NaN/None) of 300 rows" in out
    assert "Traceback" not in out


@pytest.mark.parametrize("labels", ["int", "text_late"])
def test_multiclass_csv_same_as_whole_table(tmp_path, labels, capsys):
    from reprogram.data import read_table

    rng = np.random.default_rng(2)
    n = 120
    p = rng.dirichlet(np.ones(3), n)
    df = pd.DataFrame({"y": rng.integers(0, 3, n).astype(object), "g": rng.choice(["u", "v"], n)})
    if labels == "text_late":  # early chunks read as ints, the last one as text: the whole column is text
        df.loc[n - 2:, "y"] = "2"
        df["y"] = df["y"].astype(str)
        df.loc[n - 1, "y"] = "x"
    for i in range(3):
        df[f"score_{i}"] = p[:, i]
    path = tmp_path / "m.csv"
    df.to_csv(path, index=False)
    full = read_table(path)
    sc = ["score_0", "score_1", "score_2"]
    args = ["metrics", "-p", path, "--label", "y", "--sensitive", "g", "--score", *sc, "--chunk-rows", 9,
            "--json", tmp_path / "r.json"]
    code, out = invoke(args, capsys)
    if labels == "text_late":  # the labels are text and "x" is no score column's class: the in-memory error
        assert code == 2 and "labels x are not among classes ['0', '1', '2']" in out, out
        return
    assert code == 0, out
    ref = fairness_report(full["y"].to_numpy(), None, full[sc].to_numpy(), full[["g"]], classes=[0, 1, 2])
    got = json.loads((tmp_path / "r.json").read_text())
    assert got["classes"] == [0, 1, 2] and got["by_group"]["u"]["count"] == ref.to_dict()["by_group"]["u"]["count"]
    assert got["overall"]["accuracy"] == ref.overall["accuracy"]
