"""Driver simulation: how far one ``irstdlab search`` driver goes before it needs sharding.

A search of N trials runs through the real machinery (the space from its YAML, Ray Tune with the
seeded OptunaSearch, our fair ASHA ``harness/asha.py``, the leaderboard callback
``harness/search_callbacks.py``, the Optuna journal ``harness/journal.py``, the Parquet store)
with a no-op trainable in place of training (``build_tuner(run=...)``): each trial resolves its
config like a real one, sends its spec and facts with the first report, and reports a few epochs
of a synthetic objective that is a deterministic function of its parameters, so TPE and ASHA see
a landscape with structure.

Measured per trial count: the driver's CPU time (``time.process_time`` of this process, all its
threads) and wall time of ``Tuner.fit`` divided by the trials, the CPU per trial of the first and
last quarter of the trials (flat means the driver scales), and where the CPU goes. The components
are timed by thread-CPU timers installed around the methods of the objects the driver builds
(instrumentation only, exclusive of nested timed calls): TPE suggestions and updates
(``OptunaSearch``), ASHA bookkeeping (``PersistentASHA``), row writes (``LeaderboardCallback.write``
without the journal), trial records (the first report's spec/facts file), the journal
(``JournalMirror``) and the live table (``ProgressCallback``); "tune" is the rest (Ray Tune's
controller, result processing, experiment snapshots).
Trials reuse their Ray actors, as a search of direct trials does (``--fresh-actors``: one per trial,
as a search with ``reuse_actors=False`` or nested trainers does): a fresh actor imports torch
(~6 s of CPU here), which would make 2,000 trials take hours on two cores while telling nothing
about the driver.
At the end: the leaderboard's size and the time of ``irstdlab leaderboard show`` / ``compare``.

    python benchmarks/bench_driver.py --trials 100,500,2000

The last stdout line is one JSON object.

Measured on the shared 2-core CPU machine (quickstart space, 8 trials at once, 2026-12-01), driver
CPU ms per trial (mean; first / last quarter of the trials) and the components' means:
* before the ASHA write fix: 100 -> 42.3 (53.8 / 32.5); 500 -> 48.8 (37.9 / 54.4);
  2000 -> 96.2 (45.3 / 139.9): TPE 14.8, ASHA 26.3, row write 9.2, journal 4.6, live table 10.0,
  Tune 30.9; wall 195 ms per trial. Leaderboard at 2000: 2000 files, 26.1 MB, show 4.0 s,
  compare 5.4 s; compacted (4.8 s) to 1 file of 0.16 MB, show 0.9 s, compare 0.9 s.
* after (state written at rungs only, parsed once per version): 500 -> 35.6 (28.2 / 39.2):
  ASHA 3.9, live table 1.4; 1000 -> 53.5 (35.5 / 77.4): TPE 8.6, ASHA 8.8, row write 7.9, live
  table 3.6, Tune 20.6. Still growing: TPE's suggestion is O(trials), and the ASHA state file
  holds every decision, so each rung rewrite is O(trials).

2026-12-03, a slower day of the same machine (1000 trials took 74.4 ms a trial before the change):
* the ASHA state became an append-only record file (one line per rung change), the live table and
  the row read rung decisions from the scheduler in process, and config type hints are resolved
  once per class: 1000 -> 45.3 ms (36.4 / 43.4): ASHA 11.4 -> 0.7, live table 5.5 -> 0.3, row
  write 10.8 -> 5.0. 100 -> 37.5; 500 -> 44.1 (34.9 / 43.0); 2000 -> 65.0 (39.1 / 85.9): TPE
  23.3, Tune 29.6, row write 5.4, journal 5.0, ASHA 0.9, live table 0.3; wall 75.5 ms a trial.
* TPE alone (Optuna's ``TPESampler`` on this space, no Ray) costs 3.8 ms a trial over trials
  1-250 and 25.7 over trials 1751-2000: its Python loops visit every finished trial per
  suggestion. ``--sampler random`` leaves it out: 100 -> 37.3; 500 -> 35.2 (31.4 / 29.4);
  2000 -> 39.9 (30.4 / 40.0): Tune 27.0, row write 5.3, journal 5.0, ASHA 0.9, live table 0.3;
  wall 51.4 ms a trial. What still grows is Ray Tune's own (23.5 -> 27.0 from 500 to 2000 trials:
  its experiment snapshots and scheduling pass over every trial). Leaderboard at 2000: 2000
  files, 26.1 MB, show 3.1 s, compare 3.5 s; compacted (3.3 s) to one file of 0.16 MB, show
  0.5 s, compare 0.6 s.
* ``RecentAndBestTPE`` (``harness/search_sampler.py``: Optuna's TPE shown the 25 best and the 500
  most recent finished trials), ASHA choosing the next trial among Tune's live trials instead of
  all of them, and the journal's trial ids indexed once: 100 -> 52.3 (61.9 / 37.1); 500 -> 51.5
  (39.5 / 52.2); 2000 -> 60.8 (44.5 / 64.7): TPE 14.5, Tune 33.0, row write 6.5, journal 4.7,
  ASHA 1.2, live table 0.4 (garbage collection 1.4 inside these); wall 75.4 ms a trial. The last
  quarter of the 2000 trials: TPE 18.7, Tune 32.0, row write 6.7, journal 4.9, ASHA 1.4 (the 500
  trials' last quarter: TPE 12.7, Tune 26.5). Leaderboard at 2000: 2000 files, 25.9 MB, show
  3.8 s, compare 4.1 s; compacted (3.8 s) to 0.16 MB, show 0.7 s, compare 0.6 s. Not yet flat:
  Tune's own cost (per-result loggers, its experiment snapshot of every trial, capped by Ray at
  5% of wall time) and Optuna's per-suggestion filtering of the whole study (list passes before
  the bounded view) still grow; a search far beyond 2,000 trials is better split into searches.
* Later on 2026-12-03, a slower day again (the code above, 2000 trials: 79.1 ms (50.7 / 90.1), TPE
  21.5 with 28.7 in the last quarter, Tune 41.3): the sampler's view is kept up incrementally (a
  scan visits the new trials and the gaps running trials left, not every finished trial per new
  trial): 2000 -> 74.9 ms (58.7 / 81.5): TPE 17.0 (last quarter 20.9), Tune 41.7, row write 7.7,
  journal 5.8, ASHA 1.5, live table 0.5; wall 95.1 ms a trial. Leaderboard at 2000: 26.0 MB, show
  4.1 s, compare 3.3 s; compacted (2.9 s) to 0.16 MB, show 0.6 s, compare 0.6 s. On this day Ray
  Tune's own cost alone (41-43 ms a trial: per-result loggers, actor calls, registry lookups,
  experiment snapshots) is most of the 50 ms goal.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

COMPONENTS = ("tpe", "asha", "row_write", "trial_record", "journal", "progress")


class Timers:
    """Exclusive thread-CPU seconds per component: a timed call inside another timed call is
    charged to itself only, so the components add up to at most the driver's CPU."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[Any]] = []  # [component, start, nested seconds]
        # (process CPU, wall, component seconds so far, garbage-collection seconds so far) at each trial's end
        self.completed: list[tuple[float, float, dict[str, float], float]] = []
        self.gc_seconds = 0.0  # the cyclic garbage collector's thread CPU (inside the components or not)
        self._gc_start = 0.0

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.thread_time()
        else:
            self.gc_seconds += time.thread_time() - self._gc_start

    def mark_trial_end(self) -> None:
        self.completed.append((time.process_time(), time.perf_counter(), dict(self.seconds), self.gc_seconds))

    def wrap(self, component: str, method: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(method)
        def timed(*args: Any, **kwargs: Any) -> Any:
            frame: list[Any] = [component, time.thread_time(), 0.0]
            self._stack.append(frame)
            try:
                return method(*args, **kwargs)
            finally:
                self._stack.pop()
                spent = time.thread_time() - frame[1]
                self.seconds[component] += spent - frame[2]
                self.calls[component] += 1
                if self._stack:
                    self._stack[-1][2] += spent
        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.completed.clear()
        self.gc_seconds = 0.0


@contextlib.contextmanager
def instrumented(timers: Timers) -> Iterator[None]:
    """Timers around the methods the driver calls on the objects ``build_tuner`` makes; removed on exit."""
    from ray.tune.search.optuna import OptunaSearch

    from irstdlab.harness.asha import PersistentASHA
    from irstdlab.harness.journal import JournalMirror
    from irstdlab.harness.search_callbacks import LeaderboardCallback
    from irstdlab.harness.search_progress import ProgressCallback

    targets = {
        OptunaSearch: {"suggest": "tpe", "on_trial_result": "tpe", "on_trial_complete": "tpe"},
        PersistentASHA: {"on_trial_add": "asha", "on_trial_result": "asha", "on_trial_complete": "asha",
                         "on_trial_remove": "asha"},
        LeaderboardCallback: {"write": "row_write", "on_trial_result": "trial_record"},
        JournalMirror: {"start": "journal", "report": "journal", "finish": "journal"},
        ProgressCallback: {"on_trial_start": "progress", "on_trial_result": "progress",
                           "on_trial_complete": "progress"},
    }
    saved: list[tuple[type, str, Any]] = []
    for cls, methods in targets.items():
        for name, component in methods.items():
            saved.append((cls, name, cls.__dict__.get(name)))
            setattr(cls, name, timers.wrap(component, getattr(cls, name)))
    original_complete = LeaderboardCallback.on_trial_complete

    def on_trial_complete(self: Any, *args: Any, **kwargs: Any) -> None:
        original_complete(self, *args, **kwargs)
        timers.mark_trial_end()

    saved.append((LeaderboardCallback, "on_trial_complete", LeaderboardCallback.__dict__.get("on_trial_complete")))
    LeaderboardCallback.on_trial_complete = on_trial_complete
    gc.callbacks.append(timers.on_gc)
    try:
        yield
    finally:
        gc.callbacks.remove(timers.on_gc)
        for cls, name, original in reversed(saved):
            if original is None:
                delattr(cls, name)
            else:
                setattr(cls, name, original)


def synthetic_curve(params: dict[str, Any], seed: int, epochs: int) -> list[float]:
    """A deterministic learning curve from the parameters: a per-configuration quality in [0.2, 0.9]
    (hash of the point, pulled towards a best learning rate near 1.5e-3), approached epoch by epoch."""
    import math

    digest = hashlib.sha256(json.dumps([params, seed], sort_keys=True, default=str).encode()).digest()
    quality = 0.2 + 0.4 * digest[0] / 255
    lr = params.get("optim.lr")
    if isinstance(lr, (int, float)) and lr > 0:
        quality += 0.3 * math.exp(-(math.log10(lr) - math.log10(1.5e-3)) ** 2 / 0.1)
    return [quality * (1 - 0.5 ** (e + 1)) for e in range(epochs)]


def noop_trial(config: dict[str, Any], space: Any) -> None:
    """The no-op Tune trainable: the real trial's reports without training."""
    import ray.tune

    from irstdlab.harness.rows import FACTS_FIELD, SPEC_FIELD, TrialFacts
    from irstdlab.harness.search_trainable import split_config
    from irstdlab.harness.trial_spec import resolve_trial

    params, seed = split_config(config)
    spec = resolve_trial(space, params, seed)
    facts = TrialFacts(backend="noop", hardware="driver simulation", seed=seed, gmacs=1.0, params_m=1.0)
    record = {FACTS_FIELD: facts.to_json(), SPEC_FIELD: spec.to_json()}
    for epoch, value in enumerate(synthetic_curve(params, seed, space.budget.max_epochs), start=1):
        ray.tune.report({"epoch": epoch, space.metric: value, "train/loss": 1.0 - value,
                         "best_epoch": epoch, **(record if epoch == 1 else {})})


def simulate(trials: int, storage: Path, args: argparse.Namespace, timers: Timers) -> dict[str, Any]:
    """One search of ``trials`` no-op trials; the driver's cost, per trial and per component."""
    from ray import tune

    from irstdlab.harness.search import STATE_FILE, SearchOptions, _prepare
    from irstdlab.harness.search_storage import write_bytes
    from irstdlab.harness.search_tuner import build_tuner

    opts = SearchOptions(space=args.space, name=f"driver{trials}", storage=str(storage), num_samples=trials,
                         max_concurrent=args.concurrent, searcher_seed=0)
    space, where, state = _prepare(opts)
    if args.sampler:  # the same space with another sampler: separates TPE's own cost from the rest
        space = dataclasses.replace(space, sampler=args.sampler)
    where.work_dir.mkdir(parents=True, exist_ok=False)
    write_bytes(where.file(STATE_FILE), json.dumps(state, indent=1, sort_keys=True).encode())
    run = tune.with_resources(tune.with_parameters(noop_trial, space=space), {"cpu": args.cpu_per_trial})
    tuner = build_tuner(space, opts, where, trials, run=run, reuse_actors=not args.fresh_actors)
    timers.reset()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with open(storage / "progress.log", "w") as table, contextlib.redirect_stdout(table):
        tuner.fit()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ends = timers.completed
    quarter = max(1, len(ends) // 4)

    def window(points: list[Any], start: tuple[float, ...]) -> float:
        return 1000 * (points[-1][0] - start[0]) / len(points) if points else float("nan")

    first = window(ends[:quarter], (cpu0, wall0))
    last = window(ends[-quarter:], ends[-quarter - 1]) if len(ends) > quarter else float("nan")
    parts = {c: 1000 * timers.seconds.get(c, 0.0) / trials for c in COMPONENTS}
    parts["tune"] = 1000 * cpu / trials - sum(parts.values())
    out = {"trials": trials, "rows": len(ends), "cpu_ms_per_trial": 1000 * cpu / trials,
           "wall_ms_per_trial": 1000 * wall / trials, "cpu_ms_first_quarter": first, "cpu_ms_last_quarter": last,
           "components_ms_per_trial": parts, "gc_ms_per_trial": 1000 * timers.gc_seconds / trials,
           "leaderboard": str(storage / "leaderboard"), "search": where.name}
    if len(ends) > quarter:  # where the last quarter's CPU went: what grows with the search shows here
        (cpu_a, _, seen_a, gc_a), (cpu_b, _, seen_b, gc_b) = ends[-quarter - 1], ends[-1]
        late = {c: 1000 * (seen_b.get(c, 0.0) - seen_a.get(c, 0.0)) / quarter for c in COMPONENTS}
        late["tune"] = 1000 * (cpu_b - cpu_a) / quarter - sum(late.values())
        out["components_ms_last_quarter"] = late
        out["gc_ms_last_quarter"] = 1000 * (gc_b - gc_a) / quarter
    return out


def leaderboard_costs(board: str, search: str) -> dict[str, Any]:
    """Files and bytes of the leaderboard, and how long a user waits for ``show`` and ``compare``:
    as the search leaves it while running (one file per row), then after the compaction that
    ``irstdlab search`` does when it ends (``compacted_*``, with the time it took)."""
    from irstdlab.leaderboards import open as open_leaderboard

    out = _board_costs(board, search)
    start = time.perf_counter()
    open_leaderboard(board).compact(search=search)
    out["compact_s"] = round(time.perf_counter() - start, 2)
    out.update({f"compacted_{k}": v for k, v in _board_costs(board, search).items()})
    return out


def _board_costs(board: str, search: str) -> dict[str, Any]:
    files = [p for p in Path(board).rglob("*.parquet")]
    out: dict[str, Any] = {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    for command in (["show", "--search", search], ["compare", "--search", search]):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", "leaderboard", *command, board],
                              capture_output=True, text=True)
        out[f"{command[0]}_s"] = round(time.perf_counter() - start, 2)
        if done.returncode != 0:
            out[f"{command[0]}_error"] = (done.stderr.strip().splitlines() or ["?"])[-1]
    return out


def table(results: list[dict[str, Any]]) -> str:
    """One line per trial count (components: mean per trial), then one with the last quarter's means."""
    head = (f"{'trials':>7} {'rows':>6} {'cpu ms/t':>9} {'wall ms/t':>10} {'1st 1/4':>8} {'last 1/4':>9}  "
            + " ".join(f"{c:>12}" for c in (*COMPONENTS, "tune", "(gc)")))
    lines = [head]
    for r in results:
        parts = {**r["components_ms_per_trial"], "(gc)": r["gc_ms_per_trial"]}
        lines.append(f"{r['trials']:>7} {r['rows']:>6} {r['cpu_ms_per_trial']:>9.1f} {r['wall_ms_per_trial']:>10.1f} "
                     f"{r['cpu_ms_first_quarter']:>8.1f} {r['cpu_ms_last_quarter']:>9.1f}  "
                     + " ".join(f"{parts[c]:>12.2f}" for c in (*COMPONENTS, "tune", "(gc)")))
        if "components_ms_last_quarter" in r:
            late = {**r["components_ms_last_quarter"], "(gc)": r["gc_ms_last_quarter"]}
            lines.append(f"{'  last quarter of the trials':<55}"
                         + " ".join(f"{late[c]:>12.2f}" for c in (*COMPONENTS, "tune", "(gc)")))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", default="100,500", help="comma-separated trial counts, e.g. 100,500,2000")
    parser.add_argument("--space", default="quickstart", help="search space (shipped name or YAML path)")
    parser.add_argument("--concurrent", type=int, default=8, help="trials running at once")
    parser.add_argument("--cpu-per-trial", type=float, default=0.25, help="Ray CPUs a no-op trial reserves")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the embedded Ray")
    parser.add_argument("--fresh-actors", action="store_true",
                        help="a new Ray actor per trial (slow: each imports torch); default: reuse actors, "
                             "as a search of direct trials does")
    parser.add_argument("--sampler", choices=("optuna", "random"), default=None,
                        help="override the space's sampler (random: no TPE, to see the rest of the driver alone)")
    parser.add_argument("--storage", default=None, help="where the searches go (default: a temporary folder)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.trials.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        parser.error("--trials: positive integers, comma-separated")

    from irstdlab.harness.search_tuner import start_ray

    root = Path(args.storage or tempfile.mkdtemp(prefix="irstdlab-driver-"))
    os.environ.setdefault("IRSTDLAB_WORK_DIR", str(root / "work"))
    start = time.perf_counter()
    started = start_ray(None, args.num_cpus)
    ray_start_s = time.perf_counter() - start
    timers, results = Timers(), []
    try:
        with instrumented(timers):
            for n in counts:
                result = simulate(n, root / f"n{n}", args, timers)
                result.update(leaderboard_costs(result.pop("leaderboard"), result.pop("search")))
                results.append(result)
                print(table([result]), json.dumps(result), sep="\n", file=sys.stderr, flush=True)
    finally:
        if started:
            import ray

            ray.shutdown()
    print(table(results))
    print("leaderboard at the end: " + "; ".join(
        f"{r['trials']} trials: {r['files']} files, {r['bytes'] / 1e6:.2f} MB, show {r['show_s']} s, "
        f"compare {r['compare_s']} s; compacted in {r['compact_s']} s to {r['compacted_files']} file(s), "
        f"{r['compacted_bytes'] / 1e6:.2f} MB, show {r['compacted_show_s']} s, compare {r['compacted_compare_s']} s"
        for r in results))
    biggest = results[-1]
    print(json.dumps({"ray_start_s": round(ray_start_s, 2), "storage": str(root),
                      "cpu_ms_per_trial_at_max": round(biggest["cpu_ms_per_trial"], 2),
                      "results": results}, default=lambda v: round(v, 3) if isinstance(v, float) else str(v)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
