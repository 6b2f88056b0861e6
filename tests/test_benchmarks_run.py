"""The benchmark scripts still run (a smoke run each; the measured numbers are in their JSON)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_methods_quick_run_writes_every_section(tmp_path):
    out = tmp_path / "train_methods.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "train_methods.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {"erm_vs_ffb", "best", "reductions_bound", "fas_spurious_digits", "step_overhead"} <= set(result)
    methods = {b["method"] for b in result["best"]}
    assert methods == {"erm", "fas (seed)", "fas (softmax)", "regularizer", "lagrangian", "adversarial", "reweight",
                       "resample", "groupdro", "reductions"}
    assert result["step_overhead"]["erm"]["ratio"] == 1.0


@pytest.mark.slow
def test_trigger_benchmarks_quick_runs(tmp_path):
    quality, speed = tmp_path / "q.json", tmp_path / "s.json"
    for args in (["trigger_quality.py", "--quick", "--parts", "digits,tabular", "--out", str(quality)],
                 ["trigger_speed.py", "--rounds", "1", "--out", str(speed)]):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:]],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    q = json.loads(quality.read_text())
    assert {r["trigger"] for r in q["digits"]["rows"]} == {"border (overlay, 2 px)", "patch (4 px)", "additive (8/255)"}
    assert q["transfer"] and q["tabular"]["chosen"]
    s = json.loads(speed.read_text())["cases"]
    assert all(c["floor"] > 0 and c["trigger step"] > 0 for c in s.values())


@pytest.mark.slow
def test_calibration_quality_quick_run(tmp_path):
    out = tmp_path / "cq.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "calibration_quality.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    auto = result["summary"]["group auto (sex)"]
    raw = result["summary"]["raw scores"]
    assert auto["max_group_ece"]["mean"] < raw["max_group_ece"]["mean"]
    assert set(result["checks"]) and auto["ece_noise_floor"] > 0


@pytest.mark.slow
def test_calibration_speed_quick_run(tmp_path):
    out = tmp_path / "cs.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "calibration_speed.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert len(result["fit"]) == 4 and len(result["latency"]["rows"]) == 4
    assert result["apply"]["single"]["max_abs_diff_onnx_vs_interp"] < 1e-6
    assert result["apply"]["grouped"]["max_abs_diff_onnx_vs_numpy"] < 1e-6
