"""Replay searches against a recorded table of learning curves (a tabular benchmark).

The method of HPOBench's tabular benchmarks and Syne Tune's simulated back end: every
configuration of a grid was trained once at full fidelity and its validation value recorded after
every epoch (``replay_record.py``). A replayed search asks its searcher for a configuration, looks
its learning curve up instead of training it, feeds the values epoch by epoch to its scheduler, and
pays one trial-epoch per value read. Hundreds of searches then cost seconds, so a method can be
judged over many searcher seeds rather than three.

What is replayed is what ``irstdlab search`` runs:
* the searcher is the harness's own ``search_tuner.make_searcher`` (Ray's ``OptunaSearch`` over
  the space's define-by-run object, with Optuna's ``TPESampler`` or ``RandomSampler`` seeded by the
  searcher seed), told each trial's last value when it ends, as Tune tells it;
* ASHA is the harness's ``asha.PersistentASHA`` with the space's budget (grace period, reduction
  factor, tie tolerance, ``min_compared``, ``stop_within``), driven with the same calls Tune makes.
  Optuna's ``SuccessiveHalvingPruner`` was not used: it has no tie tolerance, no per-detector rungs
  and no ``min_compared``, so it would measure a scheduler the harness does not run;
* ``grid`` trains every point at full fidelity, in a random order per seed.

Trials run one after another (one worker), so the trial-epochs a method has consumed when it first
holds a good configuration are well defined. Accounting rules:
* target: a trial that ran to ``max_epochs`` whose last value is within ``tolerance`` of the
  grid's best last value. An early-stopped trial never counts, whatever its value at the cut;
* a searcher proposing a configuration again pays for it again (the harness would train it again);
* budget: a search stops once it has consumed ``budget`` x the grid's trial-epochs (the trial under
  way finishes). One that has not reached the target by then counts as the whole budget and is
  reported as not reached.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("asha+tpe", "asha+random", "tpe", "random", "grid")


class TableError(ValueError):
    """The recorded table does not match the space (one line, naming the file and the field)."""


def point_key(point: dict[str, Any]) -> str:
    return json.dumps(point, sort_keys=True, default=str)


@dataclass(frozen=True)
class Table:
    """Learning curves of every grid point: ``curves[i][e - 1]`` is point ``i``'s value after epoch ``e``."""

    points: tuple[dict[str, Any], ...]
    curves: tuple[tuple[float, ...], ...]

    @property
    def max_epochs(self) -> int:
        return len(self.curves[0])

    @property
    def total_epochs(self) -> int:
        return sum(len(c) for c in self.curves)

    @property
    def best(self) -> float:
        return max(c[-1] for c in self.curves)

    def curve(self, point: dict[str, Any]) -> tuple[float, ...]:
        index = {point_key(p): i for i, p in enumerate(self.points)}
        try:
            return self.curves[index[point_key(point)]]
        except KeyError:
            raise TableError(f"no recorded curve for {point}") from None


def read_rows(path: Path | str, space: Any, metric_column: str = "val_mAP07", skip_outside: bool = False
              ) -> list[tuple[dict[str, Any], dict[int, float]]]:
    """The CSV's points (typed as the space's values) with their value per epoch, in file order.
    ``skip_outside``: leave out rows with a value the space does not have, instead of failing."""
    path = Path(path)
    typed = {p.path: {str(v): v for v in p.grid_values()} for p in space.parameters}
    found: dict[str, tuple[dict[str, Any], dict[int, float]]] = {}
    with open(path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), 2):
            point, outside = {}, False
            for name, values in typed.items():
                text = (row.get(name) or "").strip()
                if text:
                    if text not in values and not skip_outside:
                        raise TableError(f"{path}:{line}: {name}: {text!r} is not one of the space's values")
                    outside = outside or text not in values
                    point[name] = values.get(text)
            if outside:
                continue
            try:
                epoch, value = int(row["epoch"]), float(row[metric_column])
            except (KeyError, TypeError, ValueError):
                raise TableError(f"{path}:{line}: epoch / {metric_column}: missing or not a number") from None
            if not math.isfinite(value):
                raise TableError(f"{path}:{line}: {metric_column}: {value} is not finite")
            found.setdefault(point_key(point), (point, {}))[1][epoch] = value
    return list(found.values())


def read_table(path: Path | str, space: Any, metric_column: str = "val_mAP07") -> Table:
    """The CSV written by ``replay_record.record`` as a :class:`Table` in the space's grid order;
    every grid point must have a value for every epoch 1..max_epochs."""
    found = {point_key(p): curve for p, curve in read_rows(path, space, metric_column)}
    epochs = space.budget.max_epochs
    curves = []
    for point in space.grid():
        by_epoch = found.get(point_key(point), {})
        missing = [e for e in range(1, epochs + 1) if e not in by_epoch]
        if missing:
            raise TableError(f"{path}: {metric_column}: no value for {point} at epoch(s) {missing}")
        curves.append(tuple(by_epoch[e] for e in range(1, epochs + 1)))
    return Table(tuple(space.grid()), tuple(curves))


@dataclass(frozen=True)
class Outcome:
    method: str
    seed: int
    trials: int  # trials started before the replay stopped
    epochs: int  # trial-epochs consumed before the replay stopped
    to_target: int | None  # trial-epochs consumed when the target was first held; None: not reached
    budget_epochs: int
    grid_epochs: int

    @property
    def fraction(self) -> float:
        """Trial-epochs to the target over the grid's; the whole budget when not reached."""
        return (self.budget_epochs if self.to_target is None else self.to_target) / self.grid_epochs


@dataclass
class _ReplayTrial:
    """What Tune's scheduler reads of a trial: its id and its config."""

    trial_id: str
    config: dict[str, Any]


class _Proposer:
    """The next configuration of one method and seed, and what the searcher is told afterwards."""

    def __init__(self, space: Any, table: Table, method: str, seed: int) -> None:
        self.order: list[dict[str, Any]] | None = None
        self.searcher = None
        if method == "grid":
            self.order = [table.points[i] for i in np.random.default_rng(seed).permutation(len(table.points))]
            return
        from irstdlab.harness.search_tuner import make_searcher

        sampler = "random" if method.endswith("random") else "optuna"
        self.searcher = make_searcher(dataclasses.replace(space, sampler=sampler, searcher_seed=seed, seeds=1))

    def next(self, trial_id: str) -> dict[str, Any] | None:
        if self.order is not None:
            return self.order.pop(0) if self.order else None
        return dict(self.searcher.suggest(trial_id))

    def result(self, trial_id: str, result: dict[str, Any], final: bool) -> None:
        if self.searcher is None:
            return
        if final:
            self.searcher.on_trial_complete(trial_id, result=result)
        else:
            self.searcher.on_trial_result(trial_id, result)


def _scheduler(space: Any, state_dir: str) -> Any:
    from irstdlab.harness.asha import PersistentASHA

    b = space.budget
    return PersistentASHA(str(Path(state_dir) / "asha.json"), time_attr="epoch", metric=space.metric,
                          mode=space.mode, max_t=b.max_epochs, grace_period=b.grace_period,
                          reduction_factor=b.reduction_factor, tie_tolerance=b.tie_tolerance,
                          min_compared=b.min_compared, stop_within=b.stop_within)


def replay(space: Any, table: Table, method: str, seed: int, tolerance: float = 0.01,
           budget: float = 1.0) -> Outcome:
    """One search of ``method`` with searcher seed ``seed``, replayed against ``table``."""
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    if space.mode != "max":
        raise ValueError("replay: only objectives to maximise are supported")
    budget_epochs = math.ceil(budget * table.total_epochs)
    target = table.best - tolerance
    proposer = _Proposer(space, table, method, seed)
    used, trials, reached = 0, 0, None
    with tempfile.TemporaryDirectory(prefix="replay-asha-") as state_dir:
        scheduler = _scheduler(space, state_dir) if method.startswith("asha+") else None
        while used < budget_epochs and reached is None:
            trial_id = f"replay_{trials:05d}"
            point = proposer.next(trial_id)
            if point is None:
                break
            trials += 1
            trial = _ReplayTrial(trial_id, point)
            if scheduler is not None:
                scheduler.on_trial_add(None, trial)
            for epoch, value in enumerate(table.curve(point), 1):
                used += 1
                result = {"epoch": epoch, "training_iteration": epoch, space.metric: value}  # as Tune adds it
                stop = scheduler is not None and scheduler.on_trial_result(None, trial, result) == scheduler.STOP
                last = stop or epoch == table.max_epochs
                proposer.result(trial_id, result, final=last)
                if last:
                    if scheduler is not None:
                        scheduler.on_trial_complete(None, trial, result)
                    if epoch == table.max_epochs and value >= target:
                        reached = used
                    break
    return Outcome(method, seed, trials, used, reached, budget_epochs, table.total_epochs)


def summarise(outcomes: list[Outcome]) -> dict[str, dict[str, Any]]:
    """Per method: median and interquartile range of the fraction of the grid's trial-epochs
    needed to reach the target, how many seeds reached it, and the mean trials started."""
    out: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(o.method for o in outcomes):
        mine = [o for o in outcomes if o.method == method]
        fractions = np.array([o.fraction for o in mine])
        q1, median, q3 = (float(v) for v in np.percentile(fractions, [25, 50, 75]))
        out[method] = {"seeds": len(mine), "median": median, "q1": q1, "q3": q3,
                       "reached": sum(o.to_target is not None for o in mine),
                       "mean_trials": float(np.mean([o.trials for o in mine])),
                       "fractions": [round(float(f), 4) for f in fractions]}
    return out


def run_all(space: Any, table: Table, seeds: list[int], methods: tuple[str, ...] = METHODS,
            tolerance: float = 0.01, budget: float = 1.0) -> list[Outcome]:
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # make_searcher hands OptunaSearch both a seeded RandomSampler and the seed; Ray warns each time
    logging.getLogger("ray.tune.search.optuna.optuna_search").setLevel(logging.ERROR)
    return [replay(space, table, m, s, tolerance, budget) for m in methods for s in seeds]


def format_summary(summary: dict[str, dict[str, Any]], table: Table, tolerance: float, space: Any) -> str:
    b = space.budget
    lines = [f"grid: {len(table.points)} configurations, {table.total_epochs} trial-epochs, best final "
             f"value {table.best:.4f}; target: a full-fidelity trial within {tolerance} of it",
             f"ASHA: grace {b.grace_period}, max {b.max_epochs}, rf {b.reduction_factor}, tie_tolerance "
             f"{b.tie_tolerance}, min_compared {b.min_compared}, stop_within {b.stop_within}; "
             "fraction = trial-epochs to the target / the grid's (not reached = the whole budget)",
             f"{'method':<12} {'seeds':>5} {'median':>7} {'IQR':>15} {'reached':>8} {'trials':>7}"]
    for method, s in summary.items():
        iqr = f"{100 * s['q1']:.1f}%-{100 * s['q3']:.1f}%"
        lines.append(f"{method:<12} {s['seeds']:>5} {100 * s['median']:>6.1f}% {iqr:>15} "
                     f"{s['reached']:>4}/{s['seeds']:<3} {s['mean_trials']:>7.1f}")
    return "\n".join(lines)


__all__ = ["METHODS", "Outcome", "Table", "TableError", "format_summary", "point_key", "read_rows", "read_table",
           "replay", "run_all", "summarise"]
