"""`reprogram metrics` and the CLI frame, run as a user would (a real subprocess where it matters)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from reprogram.cli import app
from reprogram.cli.app import expand_multi_value_options
from reprogram.metrics import fairness_report

runner = CliRunner()


def run(*args):
    """Run the real console entry point in a subprocess: exit code, stdout, stderr."""
    proc = subprocess.run(
        [sys.executable, "-c", "from reprogram.cli import main; main()", *args],
        capture_output=True,
        text=True,
        env={"COLUMNS": "200", "PATH": "", "HOME": "/tmp"},
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def predictions(tmp_path_factory):
    rng = np.random.default_rng(0)
    n = 600
    df = pd.DataFrame(
        {
            "y": rng.integers(0, 2, n),
            "sex": rng.choice(["Female", "Male"], n),
            "race": rng.choice(["Black", "White"], n),
        }
    )
    df["score"] = np.clip(0.3 * df["y"] + 0.7 * rng.random(n), 0, 1)
    df["pred"] = (df["score"] > 0.5).astype(int)
    path = tmp_path_factory.mktemp("p") / "preds.csv"
    df.to_csv(path, index=False)
    return path, df


def test_help_lists_commands_and_version():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("metrics", "demo"):
        assert cmd in res.output
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.startswith("reprogram ")
    for cmd in ("metrics", "demo"):
        assert runner.invoke(app, [cmd, "--help"]).exit_code == 0


def test_multi_value_options_expand():
    argv = ["metrics", "--sensitive", "sex", "race", "--label", "y", "--score", "a", "b"]
    assert expand_multi_value_options(argv) == [
        "metrics", "--sensitive", "sex", "--sensitive", "race", "--label", "y", "--score", "a", "--score", "b",
    ]


def test_metrics_prints_report_and_writes_json_equal_to_library(predictions, tmp_path):
    path, df = predictions
    out = tmp_path / "r.json"
    code, stdout, stderr = run(
        "metrics", "--predictions", str(path), "--label", "y", "--pred", "pred", "--score", "score",
        "--sensitive", "sex", "race", "--json", str(out),
    )
    assert code == 0, stderr
    assert "sex=Female|race=Black" in stdout and "demographic_parity_difference" in stdout
    got = json.loads(out.read_text())
    want = fairness_report(df["y"], df["pred"], df["score"], df[["sex", "race"]]).to_dict()
    assert got == json.loads(json.dumps(want))


def test_metrics_multiclass_score_columns(tmp_path):
    rng = np.random.default_rng(1)
    n = 300
    probs = rng.dirichlet([1, 1, 1], n)
    df = pd.DataFrame({"y": rng.integers(0, 3, n), "g": rng.choice(["a", "b"], n)})
    for c in range(3):
        df[f"score_{c}"] = probs[:, c]
    path = tmp_path / "multi.parquet"
    df.to_parquet(path)
    res = runner.invoke(
        app, ["metrics", "--predictions", str(path), "--label", "y", "--score", "score_0", "--score", "score_1",
              "--score", "score_2", "--sensitive", "g"]
    )
    assert res.exit_code == 0, res.output
    assert "eo_score_F" in res.output and "By group and class" in res.output


@pytest.mark.parametrize(
    "args, words",
    [
        (["--label", "nope", "--pred", "pred", "--sensitive", "sex"], ["'nope' not found", "columns present", "sex"]),
        (["--label", "y", "--pred", "pred", "--sensitive", "zzz"], ["sensitive column 'zzz'"]),
        (["--label", "y", "--sensitive", "sex"], ["--pred"]),
        (["--label", "y", "--pred", "pred", "--sensitive", "const"], ["only one group"]),
        (["--label", "y", "--pred", "pred", "--sensitive", "sex", "--pos-label", "x"], ["pos-label"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(predictions, tmp_path, args, words):
    path, df = predictions
    df = df.assign(const="same")
    p = tmp_path / "p.csv"
    df.to_csv(p, index=False)
    code, stdout, stderr = run("metrics", "--predictions", str(p), *args)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), stderr
    for w in words:
        assert w in lines[0]
    assert "Traceback" not in stderr


def test_missing_and_unknown_files_exit_2(tmp_path):
    bad = tmp_path / "preds.xlsx"
    bad.write_text("x")
    for path, words in ((tmp_path / "none.csv", "not found"), (bad, "unsupported file type")):
        code, _, stderr = run("metrics", "--predictions", str(path), "--label", "y", "--pred", "p", "--sensitive", "s")
        assert code == 2 and words in stderr and len(stderr.strip().splitlines()) == 1


def test_nan_in_label_says_how_many_rows(predictions, tmp_path):
    _, df = predictions
    df = df.astype({"y": float})
    df.loc[[3, 7, 9], "y"] = np.nan
    p = tmp_path / "nan.csv"
    df.to_csv(p, index=False)
    code, _, stderr = run("metrics", "--predictions", str(p), "--label", "y", "--pred", "pred", "--sensitive", "sex")
    assert code == 2 and "3 missing" in stderr
