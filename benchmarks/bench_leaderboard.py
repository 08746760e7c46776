"""Leaderboard speed: 100,000 rows -> `show --top 20` and `compare` each under 1 s.

Honest about the layout: a row-per-file store reads at ~1-3 ms per file, so the
100k-row store here is the *compacted* one (one file per search, what `irstdlab
leaderboard compact` leaves). The file-per-row numbers (append, read, compact) are
measured on ``--row-files`` files and extrapolated linearly to 100k, labelled so.

    python benchmarks/bench_leaderboard.py [--rows 100000] [--row-files 3000]

Prints a table and writes benchmarks/results/bench_leaderboard.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

import irstdlab.leaderboards as lb
from irstdlab.harness.cli import main as cli_main
from irstdlab.leaderboards import schema as S

RESULTS = Path(__file__).resolve().parent / "results" / "bench_leaderboard.json"


def synthetic_table(n: int, seed: int = 0) -> pa.Table:
    """n rows like a few large searches: 10 searches, 5 models, 2 protocols, 5 seeds per config."""
    rng = np.random.default_rng(seed)
    n_cfg = n // 5
    cfg = np.repeat(np.arange(n_cfg), 5)[:n]
    seeds = np.tile(np.arange(5), n_cfg + 1)[:n]
    models = np.array(["bafenet", "fcos", "retinanet", "atss", "gfl"])[cfg % 5]
    p = np.array([1 / 32, 1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8])[cfg % 9]
    hidden = np.array([8, 16, 32, 64])[cfg % 4]
    quality = 0.22 + 0.04 * (models == "bafenet") + 0.02 * np.sin(cfg)
    val = quality + rng.normal(0, 0.01, n)
    status = np.where(rng.random(n) < 0.1, "early_stopped", "completed")
    epochs = np.where(status == "completed", 20, rng.integers(1, 20, n))
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    start = np.datetime64(t0.replace(tzinfo=None), "us") + (np.arange(n) * 37_000_000).astype("timedelta64[us]")
    cols = {
        "search": np.char.add("search", (cfg % 10).astype(str)),
        "trial_id": np.char.add("t", np.arange(n).astype(str)),
        "config_hash": np.char.add("cfg", cfg.astype(str)),
        "seed": seeds.astype(np.int64), "status": status, "model": models,
        "backbone": np.where(cfg % 2 == 0, "resnet18", "resnet50"), "dataset": "densesirst",
        "protocol": np.where(cfg % 3 == 0, "clean", "reference"), "source": "run", "split": "val",
        "epochs_completed": epochs.astype(np.int64), "max_epochs": np.full(n, 20, np.int64),
        "fidelity": epochs / 20.0, "gmacs": 50.0 + 10 * (cfg % 7), "params_m": 20.0 + (cfg % 5),
        "wall_time_s": rng.uniform(100, 1000, n), "schema_version": np.full(n, S.SCHEMA_VERSION, np.int32),
        "param.p": p, "param.adapter_hidden": hidden.astype(np.int64),
        "param.exchange": np.array(["channel", "spatial", "channel+spatial"])[cfg % 3],
        "metric.val/mAP07": val, "metric.test/mAP07": val - 0.01 + rng.normal(0, 0.01, n),
        "metric.test/recall07": 0.33 + rng.normal(0, 0.02, n),
    }
    table = pa.table({k: (np.full(n, v) if isinstance(v, str) else v) for k, v in cols.items()})
    ts = pa.array(start, pa.timestamp("us")).cast(S.TS)
    table = table.append_column("started_at", ts).append_column("written_at", ts)
    return S.cast_core(table)


def timed(fn, repeat: int = 3) -> dict:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"min_s": min(times), "median_s": statistics.median(times), "runs": repeat}


def cli(argv: list[str]) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli_main(argv) == 0


def subprocess_wall(argv: list[str]) -> float:
    exe = Path(sys.executable).with_name("irstdlab")
    t = time.perf_counter()
    subprocess.run([str(exe), *argv], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--row-files", type=int, default=3000, help="file-per-row sample size")
    args = ap.parse_args()
    res: dict = {"rows": args.rows, "row_files": args.row_files, "python": platform.python_version(),
                 "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                 "load_average_at_start": os.getloadavg()[0]}  # shared machines: say how busy it was
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "big"
        t = time.perf_counter()
        table = synthetic_table(args.rows)
        files = lb.open(root).write_table(table)
        res["build_compacted_s"] = time.perf_counter() - t
        res["compacted_files"] = len(files)
        board = lb.open(root)
        res["read_compacted"] = timed(lambda: board.read(include_partial=True))
        res["show_top20"] = timed(lambda: cli(["leaderboard", "show", str(root), "--top", "20"]))
        res["show_top20_json"] = timed(lambda: cli(["leaderboard", "show", str(root), "--top", "20", "--json"]))
        res["compare_model"] = timed(lambda: cli(["leaderboard", "compare", str(root)]))
        res["compare_config_hash"] = timed(lambda: cli(["leaderboard", "compare", str(root),
                                                        "--group-by", "config_hash"]))
        res["show_top20_subprocess_wall_s"] = subprocess_wall(["leaderboard", "show", str(root), "--top", "20"])
        res["compare_subprocess_wall_s"] = subprocess_wall(["leaderboard", "compare", str(root)])

        # file-per-row: append, read, compact on a sample, extrapolated to --rows
        small = Path(tmp) / "rows"
        sample = synthetic_table(args.row_files, seed=1).to_pylist()
        board = lb.open(small)
        t = time.perf_counter()
        for r in sample:
            board.append({k: v for k, v in r.items() if v is not None})
        append_s = time.perf_counter() - t
        res["append_per_row_ms"] = 1000 * append_s / len(sample)
        read = timed(lambda: board.read(include_partial=True), repeat=2)
        res["read_file_per_row"] = read
        res["read_file_per_row_per_file_ms"] = 1000 * read["min_s"] / len(sample)
        res["read_file_per_row_extrapolated_s"] = read["min_s"] / len(sample) * args.rows
        t = time.perf_counter()
        board.compact()
        res["compact_s"] = time.perf_counter() - t
        res["read_after_compact"] = timed(lambda: board.read(include_partial=True))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1) + "\n")

    rows = [
        (f"show --top 20 ({args.rows:,} rows, compacted)", res["show_top20"]["median_s"]),
        ("show --top 20 --json", res["show_top20_json"]["median_s"]),
        ("compare --group-by model", res["compare_model"]["median_s"]),
        (f"compare --group-by config_hash ({args.rows // 5:,} groups)", res["compare_config_hash"]["median_s"]),
        ("show, whole process (python start + imports)", res["show_top20_subprocess_wall_s"]),
        ("compare, whole process", res["compare_subprocess_wall_s"]),
        (f"read {args.rows:,} compacted rows to pandas", res["read_compacted"]["median_s"]),
        (f"append one row file (ms, mean of {args.row_files})", res["append_per_row_ms"]),
        (f"read {args.row_files} row files", res["read_file_per_row"]["min_s"]),
        (f"  -> {args.rows:,} row files (extrapolated)", res["read_file_per_row_extrapolated_s"]),
        (f"compact {args.row_files} row files", res["compact_s"]),
        ("read them after compact", res["read_after_compact"]["median_s"]),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement'.ljust(width)}  seconds")
    for name, v in rows:
        print(f"{name.ljust(width)}  {v:8.3f}")
    print(f"load average at start: {res['load_average_at_start']:.1f} on {os.cpu_count()} cores")
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
