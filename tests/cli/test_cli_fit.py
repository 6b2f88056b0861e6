"""`reprogram fit`, `evaluate` and `apply` on a model made by `reprogram train`, as a user would run them."""

import json

import pandas as pd
import pytest

from cli_helpers import invoke
from reprogram.cli import main
from reprogram.triggers import load_trigger
from toy_tables import group_leaning_table


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A model trained on one table, and disjoint tuning and test tables."""
    d = tmp_path_factory.mktemp("fit")
    df, _ = group_leaning_table(1500, 1)
    paths = {}
    for name, part in zip(("train", "tune", "test"), (df.iloc[:600], df.iloc[600:1100], df.iloc[1100:])):
        paths[name] = d / f"{name}.csv"
        part.to_csv(paths[name], index=False)
    ckpt = d / "model.pt"
    with pytest.raises(SystemExit) as done:
        main(["train", "--data", str(paths["train"]), "--label", "y", "--sensitive", "group", "--epochs", "10",
              "--lr", "0.01", "--hidden", "16", "--out", str(ckpt)])
    assert done.value.code in (0, None)
    return d, paths, ckpt


def test_fit_evaluate_apply(setup, capsys):
    d, paths, ckpt = setup
    out = d / "trigger"
    code, text = invoke(["fit", "--model", ckpt, "--data", paths["tune"], "--label", "y", "--sensitive", "group",
                         "--criterion", "dp", "--lambda", "5", "--epochs", "10", "--out", out], capsys)
    assert code == 0, text
    assert "by group" in text and "demographic_parity_difference" in text and f"wrote {out}" in text
    trigger, meta = load_trigger(out)
    assert meta["trigger"] == "FeatureTrigger" and meta["criterion"] == "dp" and meta["lambda"] == 5.0
    assert meta["columns"]["sensitive"] == ["group"] and meta["groups"] == ["a", "b"]
    report = d / "eval.json"
    code, text = invoke(["evaluate", "--model", ckpt, "--trigger", out, "--data", paths["test"], "--label", "y",
                         "--sensitive", "group", "--json", report], capsys)
    assert code == 0, text
    both = json.loads(report.read_text())
    base, trig = both["base"]["overall"], both["triggered"]["overall"]
    assert trig["demographic_parity_difference"] < base["demographic_parity_difference"]
    preds = d / "preds.csv"
    code, text = invoke(["apply", "--model", ckpt, "--trigger", out, "--data", paths["test"], "--out", preds], capsys)
    assert code == 0, text
    table = pd.read_csv(preds)
    assert list(table.columns) == ["id", "score", "pred"] and len(table) == 400
    test = pd.read_csv(paths["test"])
    acc = (table["pred"].to_numpy() == test["y"].to_numpy()).mean()
    assert acc == pytest.approx(trig["accuracy"], abs=1e-9)  # apply and evaluate agree


@pytest.mark.parametrize("extra, words", [
    (["--trigger", "border"], ["border", "image models", "tabular", "feature"]),
    (["--criterion", "parity"], ["criterion"]),
    (["--resume"], ["--resume", "--checkpoint"]),
    (["--text", "x1"], ["tabular"]),
])
def test_bad_fit_options_are_one_line_and_exit_2(setup, capsys, extra, words):
    d, paths, ckpt = setup
    out = d / "bad"
    code, text = invoke(["fit", "--model", ckpt, "--data", paths["tune"], "--label", "y", "--sensitive", "group",
                         "--epochs", "1", *extra, "--out", out], capsys)
    err = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(err) == 1 and all(w in err[0] for w in words), text
    assert not out.exists()


def test_missing_columns_and_single_group(setup, capsys, tmp_path):
    d, paths, ckpt = setup
    code, text = invoke(["fit", "--model", ckpt, "--data", paths["tune"], "--label", "nope", "--sensitive", "group",
                         "--out", tmp_path / "t"], capsys)
    assert code == 2 and "'nope' not found" in text
    one = pd.read_csv(paths["tune"]).assign(group="a")
    one.to_csv(tmp_path / "one.csv", index=False)
    code, text = invoke(["fit", "--model", ckpt, "--data", tmp_path / "one.csv", "--label", "y", "--sensitive", "group",
                         "--out", tmp_path / "t"], capsys)
    assert code == 2 and "one group" in text


def test_pareto_trigger_sweep_joins_a_method_sweep_on_one_plot(setup, capsys):
    d, paths, ckpt = setup
    out = d / "sweep"
    common = ["--label", "y", "--sensitive", "group", "--epochs", "4", "--out", out]
    code, text = invoke(["pareto", "--data", paths["train"], "--method", "regularizer", "--values", "4", "--hidden", "16",
                         "--val", paths["test"], *common], capsys)
    assert code == 0, text
    code, text = invoke(["pareto", "--data", paths["tune"], "--val", paths["test"], "--model", ckpt, "--trigger",
                         "feature", "--lambdas", "1", "10", "--append", *common], capsys)
    assert code == 0, text
    rows = json.loads((out / "points.json").read_text())
    assert [(r["method"], r["value"]) for r in rows] == [
        ("erm", None), ("regularizer", 4.0), ("model (no trigger)", None),
        ("feature trigger (dp)", 1.0), ("feature trigger (dp)", 10.0)]
    assert any(r["pareto"] for r in rows)
    code, text = invoke(["pareto", "--data", paths["tune"], "--model", ckpt, "--trigger", "feature", *common], capsys)
    assert code == 2 and "--lambdas" in text
    code, text = invoke(["pareto", "--data", paths["tune"], *common], capsys)
    assert code == 2 and "--method" in text and "--trigger" in text
