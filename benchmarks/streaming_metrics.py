"""Streaming metrics: peak memory and time of ``streaming_report`` on a predictions file
far larger than what the in-memory path would hold, against ``fairness_report`` on a
table that fits.

1. A binary predictions table (label, pred, score, two sensitive columns: 8 groups) is
   written to a temporary folder in chunks (never whole in memory): Parquet at
   ``--rows`` (50M), CSV at ``--csv-rows`` (5M: CSV parsing runs at ~1-2M rows/s, so
   50M rows of CSV would take minutes per pass).
2. Each contender runs in a fresh subprocess, which reports its wall time and its peak
   RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``; the RSS after the imports, before
   any data, is reported beside it; wall time excludes the imports): the streamed report of each file
   (1M-row chunks) and ``read_table`` + ``fairness_report`` on ``--mem-rows`` (5M) rows.
   The streamed and in-memory reports of the 5M-row file are checked to agree.

Prints a table, writes JSON; the temporary files are deleted.

    python benchmarks/streaming_metrics.py [--rows 50000000] [--csv-rows 5000000] [--mem-rows 5000000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

GEN_CHUNK = 1_000_000
CHILD = r"""
import json, resource, sys, time
mode, path, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
from reprogram.data import read_table
from reprogram.metrics import fairness_report
from reprogram.metrics.streaming import streaming_report
import pyarrow.parquet
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
if mode == "stream":
    r = streaming_report(path, label="y", pred="pred", score="score", sensitive=["sex", "race"], chunk_rows=chunk)
else:
    t = read_table(path)
    r = fairness_report(t["y"].to_numpy(), t["pred"].to_numpy(), t["score"].to_numpy(), t[["sex", "race"]])
wall = time.perf_counter() - t0
print(json.dumps({"wall_s": wall, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "rss_after_imports_mib": base, "n": int(r.by_group["count"].sum()),
                  "accuracy": r.overall["accuracy"], "ece": r.overall["ece"],
                  "dp": r.overall["demographic_parity_difference"]}))
"""


def write_table(path: Path, rows: int, seed: int = 0) -> None:
    """A synthetic binary predictions table, written GEN_CHUNK rows at a time."""
    rng = np.random.default_rng(seed)
    writer = None
    first = True
    for start in range(0, rows, GEN_CHUNK):
        n = min(GEN_CHUNK, rows - start)
        race = rng.integers(0, 4, n)
        sex = rng.integers(0, 2, n)
        y = (rng.random(n) < 0.3 + 0.1 * sex).astype(np.int64)
        score = np.clip(0.35 * y + 0.4 * rng.random(n) + 0.05 * race, 0, 1)
        df = pd.DataFrame({"y": y, "pred": (score >= 0.5).astype(np.int64), "score": score,
                           "sex": np.array(["F", "M"], dtype=object)[sex], "race": race})
        if path.suffix == ".csv":
            df.to_csv(path, mode="w" if first else "a", header=first, index=False)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            tbl = pa.Table.from_pandas(df, preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, tbl.schema)
            writer.write_table(tbl, row_group_size=GEN_CHUNK)
        first = False
    if writer is not None:
        writer.close()


def run_child(mode: str, path: Path, chunk: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), str(chunk)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000_000, help="rows of the big Parquet file")
    ap.add_argument("--csv-rows", type=int, default=5_000_000, help="rows of the CSV file")
    ap.add_argument("--mem-rows", type=int, default=5_000_000, help="rows for the in-memory comparison")
    ap.add_argument("--chunk-rows", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="smoke run: small files")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "streaming_metrics.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.csv_rows, args.mem_rows, args.chunk_rows = 400_000, 200_000, 200_000, 50_000
    tmp = Path(tempfile.mkdtemp(prefix="reprogram-streaming-"))
    rows = []
    try:
        files = {
            "parquet_big": (tmp / "big.parquet", args.rows),
            "parquet_mem": (tmp / "mem.parquet", args.mem_rows),
            "csv": (tmp / "preds.csv", args.csv_rows),
        }
        for path, n in files.values():
            write_table(path, n)
        runs = [
            ("in-memory", "parquet_mem", "memory"),
            ("streaming", "parquet_mem", "stream"),
            ("streaming", "parquet_big", "stream"),
            ("in-memory", "csv", "memory"),
            ("streaming", "csv", "stream"),
        ]
        for what, key, mode in runs:
            path, n = files[key]
            r = run_child(mode, path, args.chunk_rows)
            assert r["n"] == n
            rows.append({"path": what, "format": path.suffix[1:], "rows": n, "file_mib": path.stat().st_size / 2**20,
                         "chunk_rows": args.chunk_rows if mode == "stream" else None, **r,
                         "rows_per_s": n / r["wall_s"]})
        same = rows[0], rows[1]
        agree = abs(same[0]["accuracy"] - same[1]["accuracy"]) == 0 and abs(same[0]["ece"] - same[1]["ece"]) < 1e-12
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    table = Table(title="streaming_report vs read_table + fairness_report (fresh process each)")
    for c in ("path", "format", "rows", "file MiB", "wall s", "peak RSS MiB", "RSS after imports", "rows/s"):
        table.add_column(c, justify="left" if c in ("path", "format") else "right")
    for r in rows:
        table.add_row(r["path"], r["format"], f"{r['rows']:,}", f"{r['file_mib']:.0f}", f"{r['wall_s']:.2f}",
                      f"{r['peak_rss_mib']:.0f}", f"{r['rss_after_imports_mib']:.0f}",
                      f"{r['rows_per_s'] / 1e6:.2f}M")
    console = Console(width=120)
    console.print(table)
    console.print(f"streamed == in-memory on {args.mem_rows:,} rows: {agree}")
    result = {"benchmark": "streaming_metrics", "quick": args.quick, "python": platform.python_version(),
              "machine": platform.machine(), "chunk_rows": args.chunk_rows, "streamed_equals_in_memory": agree,
              "runs": rows}
    from reprogram.io import atomic_write_text

    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
