"""Search benchmarks (issue #6), on the built-in synthetic data set, CPU.

1. Harness overhead: the same N small trials through ``irstdlab search`` (direct trials, one at a
   time, no early stopping) and through a plain Python loop calling ``run_trial``; prints the
   wall-time ratio with and without Ray's start-up (goal <= 1.10 with direct trials).
2. Search efficiency: ASHA + Optuna against the exact grid over the same axes; prints the
   fraction of the grid's trial-epochs the search needed to come within 0.01 mAP07 of the grid's
   best, for 3 searcher seeds (goal <= 25%). Training is seeded, so a configuration the search
   picks reproduces the grid's value for it.

    python benchmarks/bench_search.py [--part overhead|efficiency|both] [--images 96] [--epochs 3]

Measured on the shared 2-core CPU machine (other jobs running; 2026-11-21):
* overhead, 4 grid trials x 3 epochs, 96 images: plain loop 644 s, search 750 s + Ray start 12 s
  -> ratio 1.18 (1.16 without Ray's start-up); goal 1.10 not met on this loaded machine.
* efficiency (``--images 64 --epochs 2 --samples 6``): grid 12 trials / 24 trial-epochs, best
  mAP07 0.1286 (FCOS lr 0.002, one grid point). Every search found it; within 0.01 after
  3 / 9 / 7 trial-epochs = 12% / 38% / 29% of the grid for searcher seeds 0 / 1 / 2 (mean 26%).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

AXES = """\
base: quickstart
overrides:
  data.synthetic_images: [{images}, 32, 32]
parameters:
  model.name: {{choice: [bafenet, fcos]}}
  optim.lr: {{choice: [0.002, 0.004, 0.008]}}
  model.p: {{choice: [0.25, 0.5, 0.75], when: {{model.name: bafenet}}}}
objective: {{metric: val/mAP07, mode: max}}
budget: {{num_samples: {samples}, max_epochs: {epochs}, grace_period: 1, reduction_factor: 3}}
sampler: {sampler}
searcher_seed: {seed}
"""


def write_space(folder: Path, name: str, **kw) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(AXES.format(**kw))
    return path


def rows(storage: Path, search: str):
    from irstdlab.leaderboards import open as open_leaderboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return open_leaderboard(storage / "leaderboard").read_table(search=search).table.to_pandas()


def run(space: Path, storage: Path, name: str, scheduler: str = "asha", **kw):
    from irstdlab.harness.search import SearchOptions, run_search

    opts = SearchOptions(space=str(space), name=name, storage=str(storage), scheduler=scheduler, **kw)
    with open(os.devnull, "w") as quiet:
        t0 = time.perf_counter()
        outcome = run_search(opts, out=quiet)
        return outcome, time.perf_counter() - t0


def overhead(folder: Path, images: int, epochs: int, n: int) -> dict:
    import ray
    import torch

    from irstdlab.harness.reporting import LocalReporter
    from irstdlab.harness.search import start_ray
    from irstdlab.harness.trial import run_trial
    from irstdlab.search_spaces.loader import load

    space_path = write_space(folder, "overhead", images=images, samples=n, epochs=epochs, sampler="grid", seed=0)
    space = load(str(space_path))
    points = space.grid()[:n]
    torch.set_num_threads(1)  # a Tune trial gets one CPU: give the plain loop the same
    t0 = time.perf_counter()
    for i, point in enumerate(points):
        run_trial(space.trial_config(point, 0), LocalReporter(folder / f"plain{i}", resume=False))
    plain = time.perf_counter() - t0
    t0 = time.perf_counter()
    start_ray(None, 2)
    ray_start = time.perf_counter() - t0
    _, searched = run(space_path, folder / "runs", "overhead", scheduler="none", num_samples=n, max_concurrent=1)
    ray.shutdown()
    return {"trials": n, "epochs": epochs, "plain_s": plain, "search_s": searched, "ray_start_s": ray_start,
            "ratio": (searched + ray_start) / plain, "ratio_without_ray_start": searched / plain}


def efficiency(folder: Path, images: int, epochs: int, seeds: list[int], samples: int) -> dict:
    import ray

    from irstdlab.harness.search import start_ray

    start_ray(None, 2)
    grid_space = write_space(folder, "grid", images=images, samples=99, epochs=epochs, sampler="grid", seed=0)
    _, grid_s = run(grid_space, folder / "runs", "grid", scheduler="none", max_concurrent=2)
    grid = rows(folder / "runs", "grid")
    grid_epochs = int(grid["epochs_completed"].sum())
    best = float(grid["metric.val/mAP07"].max())
    out = {"grid_trials": len(grid), "grid_epochs": grid_epochs, "grid_best": best, "grid_s": grid_s, "searches": []}
    for seed in seeds:
        path = write_space(folder, f"search{seed}", images=images, samples=samples, epochs=epochs,
                           sampler="optuna", seed=seed)
        _, secs = run(path, folder / "runs", f"search{seed}", max_concurrent=2)
        df = rows(folder / "runs", f"search{seed}").sort_values("ended_at")
        used, reached_at = 0, None
        for _, r in df.iterrows():
            used += int(r["epochs_completed"])
            value = r.get("metric.val/mAP07")
            if reached_at is None and r["status"] == "completed" and value is not None and value >= best - 0.01:
                reached_at = used
        out["searches"].append({
            "seed": seed, "trials": len(df), "epochs": int(df["epochs_completed"].sum()), "seconds": secs,
            "best": float(df.loc[df["status"] == "completed", "metric.val/mAP07"].max()),
            "epochs_to_within_0.01": reached_at,
            "fraction_of_grid": None if reached_at is None else reached_at / grid_epochs,
            "statuses": df["status"].value_counts().to_dict()})
    ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("overhead", "efficiency", "both"), default="both")
    ap.add_argument("--images", type=int, default=96, help="synthetic training images per trial")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--trials", type=int, default=4, help="trials of the overhead benchmark")
    ap.add_argument("--samples", type=int, default=6, help="configurations each search may sample")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        if args.part in ("overhead", "both"):
            r = overhead(Path(tmp), args.images, args.epochs, args.trials)
            results["overhead"] = r
            print(f"overhead: {r['trials']} trials x {r['epochs']} epochs: plain loop {r['plain_s']:.1f} s, "
                  f"irstdlab search {r['search_s']:.1f} s + Ray start {r['ray_start_s']:.1f} s -> ratio "
                  f"{r['ratio']:.2f} ({r['ratio_without_ray_start']:.2f} without Ray's start-up; goal <= 1.10)",
                  flush=True)
        if args.part in ("efficiency", "both"):
            r = efficiency(Path(tmp), args.images, args.epochs, args.seeds, args.samples)
            results["efficiency"] = r
            print(f"grid: {r['grid_trials']} trials, {r['grid_epochs']} trial-epochs, best mAP07 {r['grid_best']:.4f} "
                  f"({r['grid_s']:.0f} s)")
            for s in r["searches"]:
                frac = "not reached" if s["fraction_of_grid"] is None else f"{100 * s['fraction_of_grid']:.0f}%"
                print(f"  search seed {s['seed']}: {s['trials']} trials, {s['epochs']} trial-epochs, best "
                      f"{s['best']:.4f}; within 0.01 of the grid's best after {s['epochs_to_within_0.01']} "
                      f"trial-epochs = {frac} of the grid (goal <= 25%); {s['statuses']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
