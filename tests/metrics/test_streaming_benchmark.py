"""benchmarks/streaming_metrics.py still runs (smoke run; the measured numbers are in its JSON)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_streaming_metrics_quick_run(tmp_path):
    out = tmp_path / "sm.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "streaming_metrics.py"), "--quick",
                           "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["streamed_equals_in_memory"]
    assert {(r["path"], r["format"]) for r in result["runs"]} == {
        ("in-memory", "parquet"), ("streaming", "parquet"), ("in-memory", "csv"), ("streaming", "csv")}
    assert all(r["peak_rss_mib"] > 0 and r["wall_s"] > 0 for r in result["runs"])
