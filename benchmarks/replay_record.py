"""Record the replay table: every point of a grid over the quickstart axes, trained once at full
fidelity through the harness's own ``run_trial``, with its validation mAP07 after every epoch.

    nice -n 5 python benchmarks/bench_search.py --part record-grid   # ~15-60 min on 2 cores, load-dependent

writes ``benchmarks/replay_quickstart.csv`` (one row per trial and epoch: the grid point's
parameters, ``epoch``, ``val_mAP07``). Training is seeded (``train.seed`` 0, one thread per
trial), so a rerun reproduces the table on the same machine and library versions.

Why this grid (measured 2026-12-01 on the shared 2-core machine, two trials side by side, one
thread each: a 4-epoch quickstart trial took 94 s for FCOS and 123 s for BAFE-Net):
* ``optim.lr``: quickstart's loguniform [5e-4, 5e-3] at three log-spaced values.
* ``model.head_depth`` only for FCOS, to keep the grid small (BAFE-Net's head does use it: its
  regression and segmentation towers have that depth; BAFE-Net trains at the default 2 here).
* BAFE-Net's ``model.p`` at 0.25 / 0.5, ``model.selection`` ``dynamic``, ``model.adapter_hidden``
  64 (defaults). Planned were p x3 and selection dynamic/random (27 points, ~25 min on an idle
  machine), but with other jobs loading the machine a trial took ~10 min, so the recording was
  stopped once the nested product grid of ``_priority`` levels 0-1 (15 points) was complete.
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
  model.p: {choice: [0.25, 0.5], when: {model.name: bafenet}}
  model.selection: {choice: [dynamic], when: {model.name: bafenet}}
objective: {metric: val/mAP07, mode: max}
budget: {num_samples: 6, max_epochs: 4, grace_period: 3, reduction_factor: 2, tie_tolerance: 0.01,
         min_compared: 2, stop_within: model.name}
sampler: grid
"""


def grid_space() -> Any:
    import dataclasses

    from irstdlab.harness.space_loader import load, parse

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


def _recorded(path: Path, space: Any, epochs: int) -> dict[str, tuple[dict[str, Any], list[float]]]:
    """Complete curves already in ``path`` (a cut-short run's rows), by point key."""
    from replay import TableError, point_key, read_rows

    if not path.is_file():
        return {}
    try:
        found = read_rows(path, space, skip_outside=True)  # rows of a wider grid recorded earlier
    except TableError:
        return {}
    return {point_key(p): (p, [c[e] for e in range(1, epochs + 1)])
            for p, c in found if all(e in c for e in range(1, epochs + 1))}


def _write(f: Any, space: Any, point: dict[str, Any], values: list[float]) -> None:
    writer = csv.writer(f)
    for epoch, value in enumerate(values, 1):
        writer.writerow([point.get(p.path, "") for p in space.parameters] + [epoch, f"{value:.4f}"])


def _priority(point: dict[str, Any]) -> int:
    """Train in nested product grids, so that a run cut short on a busy machine still holds one the
    space can be narrowed to: first BAFE-Net p 0.25/0.5 (dynamic) and FCOS head depth 2 at every lr,
    then FCOS head depth 1/3, then BAFE-Net p 0.75, then BAFE-Net's `random` selection."""
    if point.get("model.selection") == "random":
        return 3
    if point.get("model.p") == 0.75:
        return 2
    return int(point.get("model.head_depth", 2) != 2)


def _echo(line: str) -> None:
    print(line, flush=True)


def record(out: Path = TABLE, workers: int = 2, echo: Any = _echo) -> Path:
    """Train every grid point (``workers`` at a time) and write the table. Rows land in a partial
    file as trials finish; a rerun after an interruption keeps its complete curves and trains only
    the rest. At the end the table is rewritten in grid order."""
    from replay import point_key

    space = grid_space()
    points = space.grid()
    partial = out.with_name(f".{out.name}.partial")
    done = _recorded(partial, space, space.budget.max_epochs)
    todo = sorted((p for p in points if point_key(p) not in done), key=_priority)
    echo(f"{len(points)} grid points, {len(done)} already recorded in {partial}")
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerow(columns(space))
        for point, values in done.values():
            _write(f, space, point, values)
    os.replace(tmp, partial)
    with open(partial, "a", newline="") as f, mp.get_context("spawn").Pool(workers) as pool:
        for point, values, secs in pool.imap_unordered(_train, todo):
            _write(f, space, point, values)
            f.flush()
            done[point_key(point)] = (point, values)
            echo(f"[{len(done)}/{len(points)}] {point} -> {[round(v, 3) for v in values]} ({secs:.0f} s)")
    with open(tmp, "w", newline="") as f:
        csv.writer(f).writerow(columns(space))
        for point in points:
            _write(f, space, point, done[point_key(point)][1])
    os.replace(tmp, out)
    partial.unlink()
    return out


if __name__ == "__main__":
    record()
    sys.exit(0)
