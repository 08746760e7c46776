"""Search benchmarks (issues #6, #13), CPU.

1. Harness overhead, on the built-in synthetic set: the same N small trials through
   ``irstdlab search`` (direct trials, one at a time, no early stopping) and through a plain Python
   loop calling ``run_trial``, each side in a fresh interpreter (the plain one with
   ``OMP_NUM_THREADS=1``, as Ray gives a 1-CPU trial), ``--rounds`` times with the order flipped
   every round (median round reported); prints a table of where each trial's time goes (Ray's worker start and
   scheduling, imports, set-up, data and model build, first iteration, training, evaluation,
   checkpoint writes, report hand-over, the driver's callbacks) and the wall-time ratio with and
   without Ray's one-off start-up (goal <= 1.05 for 4 trials x 2 epochs on 64 images), and end to
   end (each process's wall time from its interpreter's start: imports, Ray's start and stop);
   ``--fresh-actors`` adds a search with a new Ray actor per trial beside it.
2. Search efficiency, replayed (``replay.py``): ASHA+TPE, ASHA+random, TPE, random and the grid
   (random order), each over 25 searcher seeds, against ``replay_quickstart.csv``, a grid over the
   quickstart axes trained once at full fidelity with every epoch's val mAP07. Prints, per method,
   the median and interquartile range of the fraction of the grid's trial-epochs needed to hold a
   full-fidelity trial within 0.01 of the grid's best (goal: ASHA+TPE <= 25% and below random).
3. ``record-grid`` retrains that table (``replay_record.py``; ~25 min on 2 cores, run it niced).

    python benchmarks/bench_search.py --part overhead [--trials 4 --epochs 2 --images 64] [--rounds 3] [--fresh-actors]
    python benchmarks/bench_search.py [--part overhead|efficiency|both] [--seeds 25] [--json F]
    nice -n 5 python benchmarks/bench_search.py --part record-grid   # rewrites replay_quickstart.csv

The last stdout line is one JSON object with the results.

Measured on the shared 2-core CPU machine:
* overhead (2026-12-03, ``--rounds 3``; Ray started without its dashboard for direct trials, the
  plain loop with OMP_NUM_THREADS=1), 4 BAFE-Net grid trials x 2 epochs, 64 images: per round
  1.031, 1.078 (search first), 1.000 -> median 1.031 (1.004 without Ray's 8.6 s start; end to end
  1.043, rounds 1.043 / 1.088 / 1.011). Median round: plain loop 314.3 s (78.6 s a trial), search
  315.4 s; per trial the harness adds Ray's worker start and scheduling 3.07 s (the first trial's
  fresh actor imports torch, torchvision and Ray Tune: ~6 s here), set-up 0.22 s, hand-over 0.19 s,
  driver callbacks 0.09 s. Training alone varied 53.9-57.5 s a trial between the sides of one
  round, more than the whole overhead: compare medians of several rounds. Without ``OMP_NUM_THREADS=1``
  the plain loop's evaluation ran ~5% faster (numpy and OpenCV on two threads), which made the
  earlier single-round ratios read high (1.056 and 1.127 today in the old set-up).
* overhead (2026-12-02, nothing else running, --fresh-actors), 4 BAFE-Net grid trials x 2 epochs,
  64 images, mean seconds per trial: plain loop 51.2, search 52.8 (Ray worker start and scheduling
  1.37, trial set-up with the FLOP count 0.33, report hand-over 0.19, driver callbacks 0.05; 3 of 4
  trials in a reused actor), fresh actors 53.7 (Ray 5.81). Ratio 1.067 with Ray's 7.1 s start-up,
  1.032 without it (goal 1.05); 1.083 with a fresh actor per trial. Training itself varied by
  +-3% between the three runs (34.7-37.0 s per trial), as large as the whole overhead.
  Earlier (2026-11-21, other jobs running, 4 x 3 epochs, 96 images, fresh actors): ratio 1.18.
  Again on 2026-12-02 on a faster machine (plain loop 30.7-32.1 s per trial, so each fixed second
  weighs 1.6x more): before the meta-device FLOP count, ratio 1.190 (1.137 without Ray's 6.4 s
  start), trial set-up 0.36 s; after it, 1.339 (1.279) and 1.126 (1.072), set-up 0.12 and 0.09 s.
  Between these runs the search trials' training varied 22.1-25.2 s and evaluation 8.4-10.3 s for
  the same work while the plain loop's stayed within 5%: Ray's own processes (raylet, GCS, dashboard,
  agents: ~7% of a core when idle, more while trials report) share the 2 cores, and Ray runs trial
  actors at nice 15. What the harness adds per trial: Ray's worker start and scheduling 1.85 s
  (a fresh actor for the first trial, then Tune's start and stop), set-up 0.09 s, report
  hand-over 0.2 s, driver callbacks 0.03 s.
* efficiency (2026-12-01, 25 seeds, quickstart ASHA: grace 3, max 4, rf 2, tie 0.01, min_compared 2,
  stop_within model.name), grid 15 configs / 60 trial-epochs, best 0.5628 (BAFE-Net lr 6e-4 p 0.25,
  the only config within 0.01): median (IQR) of the fraction of the grid's trial-epochs
  asha+tpe 71.7% (20-100%, 17/25 reached), asha+random 95.0% (20-100%, 15/25), tpe 53.3% (20-80%,
  21/25), random 53.3% (20-100%, 19/25), grid 46.7% (33-73%). Goal (asha+tpe <= 25%) not met.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
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


def run(space: Path, storage: Path, name: str, scheduler: str = "asha", **kw):
    from irstdlab.harness.search import SearchOptions, run_search

    opts = SearchOptions(space=str(space), name=name, storage=str(storage), scheduler=scheduler, **kw)
    with open(os.devnull, "w") as quiet:
        t0 = time.perf_counter()
        outcome = run_search(opts, out=quiet)
        return outcome, time.perf_counter() - t0


PHASES = [  # (label, the time/* key of the trial's reports; None = computed below)
    ("worker start, scheduling (Ray)", None),
    ("imports in the trial", "time/imports_s"),
    ("trial set-up (resolve, FLOPs, facts)", "time/trial_setup_s"),
    ("data build", "time/data_build_s"),
    ("model build", "time/model_build_s"),
    ("first iteration", "time/first_iter_s"),
    ("training (other iterations)", None),
    ("evaluation", "time/eval_s"),
    ("checkpoint writes", "time/checkpoint_s"),
    ("report hand-over", "time/report_s"),
]
TIMED = [key for _, key in PHASES if key]


def plain_loop(space, points, folder: Path) -> dict:
    """``run_trial`` with a ``LocalReporter`` per point, one after another, in this process."""
    from irstdlab.harness.reporting import LocalReporter
    from irstdlab.harness.trial import run_trial

    per_trial = []
    t0 = time.perf_counter()
    for i, point in enumerate(points):
        started = time.perf_counter()
        final = run_trial(space.trial_config(point, 0), LocalReporter(folder / f"plain{i}", resume=False))
        per_trial.append({**{k: final.get(k, 0.0) for k in TIMED}, "trial_s": time.perf_counter() - started})
    return {"wall_s": time.perf_counter() - t0, "trials": per_trial}


def searched(space_path: Path, folder: Path, name: str, n: int, reuse_actors: bool) -> dict:
    """The same points through ``irstdlab search`` (direct trials, one at a time, no early stopping);
    each trial's phases from its last Tune result, the driver's hook time from the callback's counter."""
    from irstdlab.harness import search_callbacks

    search_callbacks.DRIVER_SECONDS.clear()
    _, wall = run(space_path, folder, name, scheduler="none", num_samples=n, max_concurrent=1,
                  reuse_actors=reuse_actors)
    per_trial = []
    for result_file in sorted((folder / name).glob("trial_*/result.json")):
        last = json.loads(result_file.read_text().strip().splitlines()[-1])
        per_trial.append({**{k: last.get(k, 0.0) for k in TIMED}, "trial_s": last["time_total_s"],
                          "warm_actor": last.get("time/warm_actor", 0.0)})
    assert len(per_trial) == n, f"{len(per_trial)} trial results for {n} trials under {folder / name}"
    return {"wall_s": wall, "trials": per_trial, "driver_hooks_s": dict(search_callbacks.DRIVER_SECONDS)}


def breakdown(run_: dict, n: int) -> dict[str, float]:
    """Mean seconds per trial of every phase; what Ray adds is the wall time no trial accounts for."""
    mean = {k: sum(t[k] for t in run_["trials"]) / n for k in [*TIMED, "trial_s"]}
    rows = {label: mean[key] for label, key in PHASES if key}
    rows["training (other iterations)"] = mean["trial_s"] - sum(mean[k] for k in TIMED)
    rows["worker start, scheduling (Ray)"] = run_["wall_s"] / n - mean["trial_s"]
    return rows


def overhead_child(kind: str, folder: Path, images: int, epochs: int, n: int, fresh_actors: bool) -> dict:
    """One side of the overhead benchmark, in a Python of its own (``--child``): the plain loop, or
    Ray's start, the search (and optionally the fresh-actor search) and Ray's shutdown."""
    from irstdlab.harness.space_loader import load

    space_path = write_space(folder, "overhead", images=images, samples=n, epochs=epochs, sampler="grid", seed=0)
    if kind == "plain":
        import torch

        torch.set_num_threads(1)  # a Tune trial gets one CPU: give the plain loop the same
        space = load(str(space_path))
        return plain_loop(space, space.grid()[:n], folder)
    import ray

    from irstdlab.harness.search import start_ray

    t0 = time.perf_counter()
    start_ray(None, 2, dashboard=False)  # what ``irstdlab search`` starts for direct trials
    out: dict = {"ray_start_s": time.perf_counter() - t0}
    out["search"] = searched(space_path, folder / "runs", "reused", n, reuse_actors=True)
    if fresh_actors:
        out["fresh"] = searched(space_path, folder / "runs", "fresh", n, reuse_actors=False)
    t0 = time.perf_counter()
    ray.shutdown()
    out["ray_stop_s"] = time.perf_counter() - t0
    return out


def in_fresh_python(kind: str, folder: Path, images: int, epochs: int, n: int, fresh_actors: bool) -> dict:
    """Run ``overhead_child`` in a new interpreter; its result plus ``process_s``, the wall time a user
    waits for it from the interpreter's start (imports, and Ray's start and stop for the search)."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--child-folder", str(folder),
           "--images", str(images), "--epochs", str(epochs), "--trials", str(n)] + (["--fresh-actors"] * fresh_actors)
    # Ray gives a 1-CPU trial OMP_NUM_THREADS=1 (which also holds numpy's BLAS and the evaluation's
    # other native code to one thread); the plain loop gets the same, so both do the same work alike
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if kind == "plain" else None
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the {kind} side failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": wall}


def overhead_round(folder: Path, images: int, epochs: int, n: int, fresh_actors: bool, search_first: bool) -> dict:
    """One round: both sides in fresh interpreters, one after the other. ``ratio``: the search's wall
    time plus Ray's start against the plain loop's, neither counting its imports; ``ratio_end_to_end``:
    the two processes' wall times, each from its interpreter's start (what a user waits for)."""
    sides = ["search", "plain"] if search_first else ["plain", "search"]
    done = {kind: in_fresh_python(kind, folder / kind, images, epochs, n, fresh_actors and kind == "search")
            for kind in sides}
    plain, child = done["plain"], done["search"]
    runs = {"plain loop": plain, "search": child["search"]}
    if fresh_actors:
        runs["search, fresh actors"] = child["fresh"]
    ray_start = child["ray_start_s"]
    out = {"order": " then ".join(sides), "plain_s": plain["wall_s"], "search_s": child["search"]["wall_s"],
           "ray_start_s": ray_start, "ray_stop_s": child["ray_stop_s"],
           "ratio": (child["search"]["wall_s"] + ray_start) / plain["wall_s"],
           "ratio_without_ray_start": child["search"]["wall_s"] / plain["wall_s"],
           "plain_process_s": plain["process_s"], "search_process_s": child["process_s"],
           "per_trial_s": {label: breakdown(r, n) for label, r in runs.items()},
           "driver_hooks_s": child["search"]["driver_hooks_s"],
           "reused_actor_trials": int(sum(t["warm_actor"] for t in child["search"]["trials"]))}
    if not fresh_actors:  # the end-to-end wall holds only the reused-actor search
        out["ratio_end_to_end"] = child["process_s"] / plain["process_s"]
    else:
        fresh = child["fresh"]["wall_s"]
        out.update(fresh_s=fresh, ratio_fresh_actors=(fresh + ray_start) / plain["wall_s"])
    return out


def overhead(folder: Path, images: int, epochs: int, n: int, fresh_actors: bool, rounds: int = 1) -> dict:
    """``rounds`` rounds, the order of the two sides flipped every round (this VM's speed drifts by
    up to 10% over minutes, as much as the overhead itself); the median round is reported, every
    round's ratios beside it."""
    results = [overhead_round(folder / f"round{i}", images, epochs, n, fresh_actors, search_first=i % 2 == 1)
               for i in range(rounds)]
    median = sorted(results, key=lambda r: r["ratio"])[(rounds - 1) // 2]
    keys = ("ratio", "ratio_without_ray_start", "ratio_end_to_end", "ratio_fresh_actors")
    return {"trials": n, "epochs": epochs, "images": images, "rounds": rounds, **median,
            "per_round": [{"order": r["order"], **{k: r[k] for k in keys if k in r}} for r in results]}


def format_overhead(r: dict) -> str:
    labels = list(r["per_trial_s"])
    lines = [f"per trial, mean seconds ({r['trials']} trials x {r['epochs']} epochs, {r['images']} images):",
             f"  {'phase':<38}" + "".join(f"{label:>22}" for label in labels)]
    for phase, _ in PHASES:
        lines.append(f"  {phase:<38}" + "".join(f"{r['per_trial_s'][label][phase]:>22.2f}" for label in labels))
    lines.append(f"  {'total (wall / trials)':<38}"
                 + "".join(f"{sum(r['per_trial_s'][label].values()):>22.2f}" for label in labels))
    hooks = ", ".join(f"{k} {v / r['trials']:.3f}" for k, v in sorted(r["driver_hooks_s"].items()))
    lines.append(f"  driver callbacks per trial (inside the wall time above): {hooks}")
    lines.append(f"  trials that ran in a reused actor: {r['reused_actor_trials']} of {r['trials']}")
    lines.append(f"overhead: plain loop {r['plain_s']:.1f} s, irstdlab search {r['search_s']:.1f} s + Ray start "
                 f"{r['ray_start_s']:.1f} s -> ratio {r['ratio']:.3f} ({r['ratio_without_ray_start']:.3f} without "
                 f"Ray's start-up; goal <= 1.05)"
                 + (f"; with a fresh actor per trial {r['ratio_fresh_actors']:.3f}" if "fresh_s" in r else ""))
    if "ratio_end_to_end" in r:
        lines.append(f"end to end, each from a fresh interpreter: plain loop {r['plain_process_s']:.1f} s, irstdlab "
                     f"search {r['search_process_s']:.1f} s (imports, Ray's start and {r['ray_stop_s']:.1f} s stop "
                     f"included) -> ratio {r['ratio_end_to_end']:.3f}")
    if r["rounds"] > 1:
        lines.append(f"the median of {r['rounds']} rounds (the order flips every round) is shown above; every round: "
                     + "; ".join(f"{p['order']}: {p['ratio']:.3f}" + (f" (end to end {p['ratio_end_to_end']:.3f})"
                                 if "ratio_end_to_end" in p else "") for p in r["per_round"]))
    return "\n".join(lines)


def efficiency(table_path: Path, seeds: list[int], tolerance: float, budget: float,
               grace_period: int | None = None) -> dict:
    """Replay every method over ``seeds`` against the recorded table (``replay.py``)."""
    import dataclasses

    import replay
    import replay_record

    space = replay_record.grid_space()
    if grace_period is not None:  # what-if: the same table under another first rung
        space = dataclasses.replace(space, budget=dataclasses.replace(space.budget, grace_period=grace_period))
    table = replay.read_table(table_path, space)
    t0 = time.perf_counter()
    outcomes = replay.run_all(space, table, seeds, tolerance=tolerance, budget=budget)
    summary = replay.summarise(outcomes)
    return {"table": str(table_path), "grid_configs": len(table.points), "grid_epochs": table.total_epochs,
            "grid_best": table.best, "tolerance": tolerance, "budget": budget, "seeds": seeds,
            "asha": dataclasses.asdict(space.budget),
            "replay_s": time.perf_counter() - t0, "methods": summary,
            "text": replay.format_summary(summary, table, tolerance, space)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=("overhead", "efficiency", "both", "record-grid"), default="both",
                    help="both = overhead + efficiency; record-grid retrains the replay table (~25 min)")
    ap.add_argument("--images", type=int, default=64, help="synthetic training images per overhead trial")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per overhead trial")
    ap.add_argument("--fresh-actors", action="store_true", help="overhead: also search with a new Ray actor per "
                    "trial (reuse_actors=False), side by side")
    ap.add_argument("--trials", type=int, default=4, help="trials of the overhead benchmark")
    ap.add_argument("--rounds", type=int, default=1, help="overhead: rounds of both sides, the order flipped "
                    "every round; the median round is reported")
    ap.add_argument("--seeds", type=int, default=25, help="searcher seeds 0..N-1 replayed per method")
    ap.add_argument("--tolerance", type=float, default=0.01, help="target: within this of the grid's best")
    ap.add_argument("--budget", type=float, default=1.0, help="a replay's budget, in grid trial-epochs")
    ap.add_argument("--grace-period", type=int, default=None, help="replay ASHA with this first rung instead of "
                    "the quickstart's (what-if)")
    ap.add_argument("--workers", type=int, default=2, help="record-grid: trials trained side by side")
    ap.add_argument("--table", type=Path, default=None, help="the recorded table (default: replay_quickstart.csv)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--child", choices=("plain", "search"), help=argparse.SUPPRESS)  # one overhead side
    ap.add_argument("--child-folder", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for flag in ("trials", "epochs", "images", "rounds"):
        if getattr(args, flag) < 1:
            print(f"error: --{flag} must be at least 1, got {getattr(args, flag)}", file=sys.stderr)
            return 2
    if args.child:
        child = overhead_child(args.child, args.child_folder, args.images, args.epochs, args.trials, args.fresh_actors)
        print(json.dumps(child, default=str))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # replay.py / replay_record.py beside this file
    import replay
    import replay_record

    results = {}
    if args.part == "record-grid":
        path = replay_record.record(args.table or replay_record.TABLE, workers=args.workers)
        results["record_grid"] = {"table": str(path)}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        if args.part in ("overhead", "both"):
            r = overhead(Path(tmp), args.images, args.epochs, args.trials, args.fresh_actors, args.rounds)
            results["overhead"] = r
            print(format_overhead(r), flush=True)
    if args.part in ("efficiency", "both"):
        try:
            r = efficiency(args.table or replay_record.TABLE, list(range(args.seeds)), args.tolerance, args.budget,
                           args.grace_period)
        except (OSError, replay.TableError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        results["efficiency"] = {k: v for k, v in r.items() if k != "text"}
        print(r["text"])
        print(f"goal: asha+tpe median <= 25% and below random's ({r['replay_s']:.0f} s of replay)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
