"""The benchmark scripts still run (a smoke run each; the measured numbers are in their JSON)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, out: Path, *args: str, env: dict | None = None) -> dict:
    """``python benchmarks/<script> *args --out out`` as a user runs it; its JSON."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, "--out", str(out)],
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_train_methods_quick_run_writes_every_section(tmp_path):
    result = run_benchmark("train_methods.py", tmp_path / "train_methods.json", "--quick")
    assert {"erm_vs_ffb", "best", "reductions_bound", "fas_spurious_digits", "step_overhead"} <= set(result)
    methods = {b["method"] for b in result["best"]}
    assert methods == {"erm", "fas (seed)", "fas (softmax)", "fas (softmax, β ascent)", "regularizer", "lagrangian",
                       "adversarial", "reweight", "resample", "groupdro", "reductions"}
    assert result["step_overhead"]["erm"]["ratio"] == 1.0


@pytest.mark.slow
def test_trigger_benchmarks_quick_runs(tmp_path):
    q = run_benchmark("trigger_quality.py", tmp_path / "q.json", "--quick", "--parts", "digits,tabular")
    assert {r["trigger"] for r in q["digits"]["rows"]} == {"border (overlay, 2 px)", "patch (4 px)", "additive (8/255)"}
    assert q["transfer"] and q["tabular"]["chosen"]
    s = run_benchmark("trigger_speed.py", tmp_path / "s.json", "--rounds", "1")["cases"]
    assert all(c["floor"] > 0 and c["trigger step"] > 0 for c in s.values())


@pytest.mark.slow
def test_calibration_quality_quick_run(tmp_path):
    result = run_benchmark("calibration_quality.py", tmp_path / "cq.json", "--quick")
    auto = result["summary"]["group auto (sex)"]
    raw = result["summary"]["raw scores"]
    assert auto["max_group_ece"]["mean"] < raw["max_group_ece"]["mean"]
    assert set(result["checks"]) and auto["ece_noise_floor"] > 0


@pytest.mark.slow
def test_calibration_speed_quick_run(tmp_path):
    result = run_benchmark("calibration_speed.py", tmp_path / "cs.json", "--quick")
    assert len(result["fit"]) == 4 and len(result["latency"]["rows"]) == 4
    assert result["apply"]["single"]["max_abs_diff_onnx_vs_interp"] < 1e-6
    assert result["apply"]["grouped"]["max_abs_diff_onnx_vs_numpy"] < 1e-6


@pytest.mark.slow
def test_streaming_metrics_quick_run(tmp_path):
    result = run_benchmark("streaming_metrics.py", tmp_path / "sm.json", "--quick")
    assert result["streamed_equals_in_memory"]
    assert {(r["path"], r["format"]) for r in result["runs"]} == {
        ("in-memory", "parquet"), ("streaming", "parquet"), ("in-memory", "csv"), ("streaming", "csv")}
    assert all(r["peak_rss_mib"] > 0 and r["wall_s"] > 0 for r in result["runs"])


@pytest.mark.slow
def test_scaling_benchmark_quick_run(tmp_path):
    result = run_benchmark("distributed_scaling.py", tmp_path / "scaling.json", "--quick",
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
    cases = result["cases"]
    assert {(c["run"], c["processes"]) for c in cases} == {(r, p) for r in ("trigger fit", "train") for p in (1, 2)}
    assert all(c["rows_per_s"] > 0 for c in cases)


@pytest.mark.slow
def test_runner_runs_a_subset_and_writes_the_report(tmp_path):
    """``python -m benchmarks --only ...``: each script as its own process, its JSON read,
    the headline table and a section per benchmark in the report; README left alone."""
    report, readme_before = tmp_path / "RESULTS.md", (ROOT / "README.md").read_text()
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--only", "metrics_speed,calibration_quality",
                           "--out-dir", str(tmp_path / "out"), "--report", str(report), "--no-reference"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "metrics_speed.json").read_text())["vs_metricframe"]
    assert json.loads((tmp_path / "out" / "calibration_quality.json").read_text())["checks"]
    text = report.read_text()
    assert "Smoke scale" in text and "## Headline" in text and "## Machine" in text and "## Commands" in text
    assert "## metrics_speed" in text and "## calibration_quality" in text and "## train_methods" not in text
    headline = text.split("## Headline", 1)[1].split("##", 1)[0]
    rows = [ln for ln in headline.splitlines()
            if ln.startswith("| ") and ("`metrics_speed`" in ln or "`calibration_quality`" in ln)]
    assert len(rows) == 4 and all(r.rstrip(" |").endswith(("met", "**missed**")) for r in rows), headline
    assert "could not read its JSON" not in text and "failed" not in headline
    assert (ROOT / "README.md").read_text() == readme_before


def test_runner_knows_every_script():
    """Every benchmark script is run by ``python -m benchmarks``: named in its list, or
    discovered (a new script taking ``--quick`` and ``--out``); README markers come in pairs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmarks_runner", ROOT / "benchmarks" / "__main__.py")
    runner = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = runner  # its dataclasses look their module up
    try:
        spec.loader.exec_module(runner)
    finally:
        del sys.modules[spec.name]
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"bench_data", "__main__", "__init__"}
    missing = scripts - set(runner.BY_NAME)
    assert not missing, f"give these scripts --quick and --out, or list them in benchmarks/__main__.py: {missing}"
    readme = (ROOT / "README.md").read_text()
    assert (runner.START in readme) == (runner.END in readme)
