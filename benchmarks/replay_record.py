"""Record the replay table: every point of a grid over the quickstart axes, trained once at full
fidelity through the harness's own ``run_trial``, with its validation mAP07 after every epoch.

    nice -n 5 python benchmarks/bench_search.py --part record-grid   # ~25 min on 2 cores

writes ``benchmarks/replay_quickstart.csv`` (one row per trial and epoch: the grid point's
parameters, ``epoch``, ``val_mAP07``). Training is seeded (``train.seed`` 0, one thread per
trial), so a rerun reproduces the table on the same machine and library versions.

Why this grid (measured 2026-12-01 on the shared 2-core machine, two trials side by side, one
thread each: a 4-epoch quickstart trial took 94 s for FCOS and 123 s for BAFE-Net):
* ``optim.lr``: quickstart's loguniform [5e-4, 5e-3] at three log-spaced values.
* ``model.head_depth`` only for FCOS: BAFE-Net's head does not read it (``models/bafenet.py``),
  so its BAFE-Net values would be the same training repeated.
* BAFE-Net's ``model.p`` at all three values and ``model.selection`` at two of three
  (``dynamic``, ``random``); ``model.adapter_hidden`` stays at its default 64. The full product
  (162 BAFE-Net points) would take ~3 hours here; these 27 points take ~25 minutes.
"""

from __future__ import annotations

import csv
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TABLE = Path(__file__).with_name("replay_quickstart.csv")
METRIC_COLUMN = "val_mAP07"

# The replayed space: quickstart's axes, lr discretised (see the docstring). Its budget is replaced
# by the shipped quickstart's own at load, so the replay follows that space's ASHA settings.
GRID_SPACE = """\
name: replay_quickstart
base: quickstart
overrides:
  data.synthetic_images: [96, 32, 32]
  eval.test_at_end: false
parameters:
  model.name: {choice: [bafenet, fcos]}
  optim.lr: {choice: [6.0e-4, 1.5e-3, 4.0e-3]}
  model.head_depth: {int: [1, 3], when: {model.name: fcos}}
  model.p: {choice: [0.25, 0.5, 0.75], when: {model.name: bafenet}}
  model.selection: {choice: [dynamic, random], when: {model.name: bafenet}}
objective: {metric: val/mAP07, mode: max}
budget: {num_samples: 6, max_epochs: 4, grace_period: 3, reduction_factor: 2, tie_tolerance: 0.01,
         min_compared: 2, stop_within: model.name}
sampler: grid
"""


def grid_space() -> Any:
    import dataclasses

    from irstdlab.search_spaces.loader import load, parse

    space = parse(GRID_SPACE, label="benchmarks/replay_record.py:GRID_SPACE")
    return dataclasses.replace(space, budget=load("quickstart").budget)


def _train(point: dict[str, Any]) -> tuple[dict[str, Any], list[float], float]:
    """One grid point, trained once: (point, val mAP07 per epoch, seconds)."""
    import torch

    from irstdlab.harness.reporting import LocalReporter
    from irstdlab.harness.trial import run_trial

    torch.set_num_threads(1)  # two trials side by side on two cores, as a search would run them
    space = grid_space()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="replay-record-") as run_dir:
        reporter = LocalReporter(run_dir, resume=False)
        run_trial(space.trial_config(point, 0), reporter)
        values = [float(h[f"val/{METRIC_COLUMN[4:]}"]) for h in reporter.history]
    return point, values, time.perf_counter() - t0


def columns(space: Any) -> list[str]:
    return [p.path for p in space.parameters] + ["epoch", METRIC_COLUMN]


def record(out: Path = TABLE, workers: int = 2, echo: Any = print) -> Path:
    """Train every grid point (``workers`` at a time) and write the table; rows land in ``out``
    as trials finish, then the file is rewritten in grid order."""
    space = grid_space()
    points = space.grid()
    names = columns(space)
    partial = out.with_name(f".{out.name}.partial")
    done: dict[str, tuple[dict[str, Any], list[float]]] = {}
    with open(partial, "w", newline="") as f, mp.get_context("spawn").Pool(workers) as pool:
        writer = csv.writer(f)
        writer.writerow(names)
        for i, (point, values, secs) in enumerate(pool.imap_unordered(_train, points), 1):
            for epoch, value in enumerate(values, 1):
                writer.writerow([point.get(p.path, "") for p in space.parameters] + [epoch, f"{value:.4f}"])
            f.flush()
            done[repr(sorted(point.items()))] = (point, values)
            echo(f"[{i}/{len(points)}] {point} -> {[round(v, 3) for v in values]} ({secs:.0f} s)")
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(names)
        for point in points:
            _, values = done[repr(sorted(point.items()))]
            for epoch, value in enumerate(values, 1):
                writer.writerow([point.get(p.path, "") for p in space.parameters] + [epoch, f"{value:.4f}"])
    os.replace(tmp, out)
    partial.unlink()
    return out


if __name__ == "__main__":
    record()
    sys.exit(0)
