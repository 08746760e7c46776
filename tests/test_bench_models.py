"""benchmarks/bench_models.py on the quickstart geometry: the BAFE-Net / FCOS step and MAC ratios,
the parts-off rows (--components) and torch.profiler's operators (--profile), as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_models.py"


@pytest.mark.timeout(300)
def test_components_and_profile_on_the_quickstart_geometry(tmp_path):
    out = tmp_path / "bench_models.json"
    done = subprocess.run([sys.executable, str(BENCH), "--geometry", "quickstart", "--steps", "1", "--rounds", "1",
                           "--components", "--profile", "3", "--out", str(out)],
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    result = json.loads(out.read_text())["results"][0]
    rows = result["rows"]
    assert set(rows) == {"bafenet", "fcos", "bafenet-no-lsk", "bafenet-no-exchange", "bafenet-neither"}
    # the MAC ratio is the two models' counted MACs; the exchange is in BAFE-Net's count, not in "neither"'s
    assert summary["mac_ratio"] == pytest.approx(rows["bafenet"]["macs"] / rows["fcos"]["macs"], abs=1e-4)
    assert rows["bafenet-neither"]["macs"] < rows["bafenet"]["macs"]
    assert summary["step_ratio"] > 0 and all(r["train_step_ms"] > 0 for r in rows.values())
    assert "BAFE-Net with parts of its head off" in done.stdout and "bafenet-no-exchange" in done.stdout
    for name in ("bafenet", "fcos"):
        ops = result["profile"][name]
        assert len(ops) == 3 and all(op["self_ms"] > 0 and op["calls"] >= 1 for op in ops)
        assert [op["self_ms"] for op in ops] == sorted((op["self_ms"] for op in ops), reverse=True)
    assert "aten::" in done.stdout.split("operators with the most self time")[1]


def test_bad_profile_count_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([sys.executable, str(BENCH), "--profile", "-1", "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--profile" in done.stderr and "Traceback" not in done.stderr
