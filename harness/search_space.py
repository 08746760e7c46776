"""The search-space model: parameters, objectives, budget, and what a search needs from them.

:class:`SearchSpace` is what ``loader.parse`` returns once a YAML file is validated. It gives the
picklable define-by-run object for Ray's ``OptunaSearch`` (:class:`DefineByRun`, a top-level
class: lambdas and ``__main__`` functions break Tune's searcher checkpoints, notes E6), the exact
grid for ``sampler: grid``, and the ``TrialConfig`` of one sampled point and seed.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from irstdlab.harness import configtree
from irstdlab.harness.errors import ConfigError

SEED_INDEX_KEY = "__trial_index__"  # ray.tune.search.Repeater's name for the repeat index


@dataclass(frozen=True)
class Parameter:
    """One searched config leaf: a dotted ``path`` and its distribution."""

    path: str
    kind: Literal["choice", "uniform", "loguniform", "int"]
    values: tuple[Any, ...] = ()  # choice
    low: float = 0.0
    high: float = 0.0
    step: float | None = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (parameter path, allowed values), all must hold

    def active(self, sampled: dict[str, Any]) -> bool:
        return all(path in sampled and sampled[path] in allowed for path, allowed in self.when)

    def grid_values(self) -> list[Any]:
        if self.kind == "choice":
            return list(self.values)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        raise ConfigError(f"{self.path}: a grid needs 'choice' or 'int' values, not '{self.kind}'", key=self.path)

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter from an ``optuna.Trial``."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.path, list(self.values))
        if self.kind == "int":
            return trial.suggest_int(self.path, int(self.low), int(self.high), step=int(self.step or 1))
        if self.kind == "loguniform":
            return trial.suggest_float(self.path, self.low, self.high, log=True)
        return trial.suggest_float(self.path, self.low, self.high, step=self.step)

    def distribution(self) -> Any:
        """The matching ``optuna.distributions`` object (for the journal mirror)."""
        from optuna import distributions as d

        if self.kind == "choice":
            return d.CategoricalDistribution(list(self.values))
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), step=int(self.step or 1))
        return d.FloatDistribution(self.low, self.high, log=self.kind == "loguniform", step=self.step)


@dataclass(frozen=True)
class Objective:
    metric: str
    mode: Literal["max", "min"]


@dataclass(frozen=True)
class Budget:
    num_samples: int = 8  # sampled configurations (each runs `seeds` times)
    max_epochs: int = 3  # full fidelity; sets schedule.epochs
    grace_period: int = 1  # ASHA: epochs before the first cut
    reduction_factor: int = 2
    # ASHA does not stop a trial when every value compared at its rung lies within this distance
    # of the others: such a cut would be decided by noise. In the objective's own units, so it is
    # off unless a space sets it (0.01 suits mAP; it would swallow every difference of, say, a lr).
    tie_tolerance: float = 0.0
    # ASHA judges a trial at a rung only once this many earlier trials (of its group) reached it
    # (Optuna's pruners call it n_startup_trials): a cut against one or two values is a coin toss.
    min_compared: int = 1
    # Compare a trial at a rung only with trials that share this parameter's value (e.g. model.name:
    # detectors learn at different speeds, so early values rank families, not configurations).
    stop_within: str | None = None


@dataclass(frozen=True)
class TuneStage:
    """Stage 1 of a staged space: a search per group (e.g. per detector) at a reduced budget."""

    group_by: str  # a choice parameter of the space; each of its values is searched on its own
    budget: Budget
    seeds: int = 1
    # group value -> {parameter path: its distribution for that group} (raw YAML mappings, validated
    # when the group's space is derived)
    per_group: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)  # extra fixed values in stage 1


@dataclass(frozen=True)
class ConfirmStage:
    """Stage 2: each group's best stage-1 configuration x ``seeds`` at the full budget."""

    seeds: int
    max_epochs: int


@dataclass(frozen=True)
class Stages:
    tune: TuneStage
    confirm: ConfirmStage


class DefineByRun:
    """Optuna define-by-run space: a top-level class so that Ray can pickle the searcher."""

    def __init__(self, parameters: tuple[Parameter, ...]) -> None:
        self.parameters = parameters

    def __call__(self, trial: Any) -> None:
        sampled: dict[str, Any] = {}
        for param in self.parameters:
            if param.active(sampled):
                sampled[param.path] = param.suggest(trial)
        return None  # no constants: the seed index comes from the Repeater / the grid


@dataclass(frozen=True)
class SearchSpace:
    name: str
    source: str  # file the space came from (error messages, provenance)
    base: str | None  # preset name or resolved config path
    overrides: dict[str, Any]
    parameters: tuple[Parameter, ...]
    objectives: tuple[Objective, ...]
    budget: Budget
    seeds: int = 1
    sampler: Literal["optuna", "random", "grid"] = "optuna"
    searcher_seed: int = 0
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    # The base preset/file as read once, at planning (validation calls base_dict): the space
    # travels to Ray's workers with it, so no node needs the base file at the same path.
    base_config: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    stages: Stages | None = None  # a `stages:` section: tune -> confirm (harness/stages.py runs it)
    stage: str | None = None  # set on the space of one stage ("tune" / "confirm"); the rows record it
    # explicit configurations (the confirm stage's chosen points): the grid is exactly these
    points: tuple[dict[str, Any], ...] | None = field(default=None, compare=False, repr=False)
    # `start_with:` configurations the searcher proposes before sampling (Optuna's enqueued trials)
    start_with: tuple[dict[str, Any], ...] = field(default=(), compare=False, repr=False)

    @property
    def metric(self) -> str:
        return self.objectives[0].metric

    @property
    def mode(self) -> str:
        return self.objectives[0].mode

    @property
    def space_hash(self) -> str:
        """Hash of what was searched (not of the budget's sample count, which flags may change)."""
        spec = {k: v for k, v in self.raw.items() if k not in ("name", "description", "budget")}
        spec["budget"] = {k: v for k, v in dict(self.raw.get("budget") or {}).items() if k != "num_samples"}
        text = json.dumps(spec, sort_keys=True, default=str, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def define_by_run(self) -> DefineByRun:
        return DefineByRun(self.parameters)

    def grid(self) -> list[dict[str, Any]]:
        """Every combination of the parameters' values, inactive conditionals left out, deduplicated
        (or the explicit ``points`` of a confirm stage)."""
        if self.points is not None:
            return [dict(p) for p in self.points]
        points: list[dict[str, Any]] = [{}]
        for param in self.parameters:
            values = param.grid_values()
            nxt: list[dict[str, Any]] = []
            for point in points:
                nxt.extend({**point, param.path: v} for v in values) if param.active(point) else nxt.append(point)
            points = nxt
        seen, out = set(), []
        for point in points:
            key = json.dumps(point, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(point)
        return out

    def num_trials(self, num_samples: int | None = None) -> int:
        configs = len(self.grid()) if self.sampler == "grid" else self.budget.num_samples
        if num_samples is not None:
            configs = min(configs, num_samples) if self.sampler == "grid" else num_samples
        return configs * self.seeds

    def base_dict(self) -> dict[str, Any]:
        """Base config + fixed overrides + the budget's epochs, as a plain nested dict."""
        if self.base_config is None:
            from irstdlab.harness.config import load_source

            object.__setattr__(self, "base_config", load_source(self.base)[0])  # read once, kept as data
        raw = copy.deepcopy(self.base_config or {})
        for path, value in self.overrides.items():
            configtree.set_path(raw, path.split("."), value)
        configtree.set_path(raw, ["schedule", "epochs"], self.budget.max_epochs)
        return raw

    def config_dict(self, params: dict[str, Any], seed: int = 0) -> dict[str, Any]:
        raw = self.base_dict()
        for path, value in params.items():
            configtree.set_path(raw, path.split("."), value)
        configtree.set_path(raw, ["train", "seed"], int(seed))
        return raw

    def trial_config(self, params: dict[str, Any], seed: int = 0) -> Any:
        """The validated ``TrialConfig`` of one sampled point and seed."""
        from irstdlab.harness.config import TrialConfig

        return TrialConfig.from_dict(self.config_dict(params, seed), f"{self.source} at {params}")


def space_summary(space: SearchSpace) -> str:
    """A short human description: the axes and their ranges."""
    lines = []
    for p in space.parameters:
        rng = (f"{list(p.values)}" if p.kind == "choice" else f"{p.kind}[{p.low:g}, {p.high:g}]"
               + (f" step {p.step:g}" if p.step else ""))
        cond = " when " + ", ".join(f"{k} in {list(v)}" for k, v in p.when) if p.when else ""
        lines.append(f"  {p.path}: {rng}{cond}")
    for number, point in enumerate(space.start_with, start=1):
        lines.append(f"  start with {number}: " + ", ".join(f"{k}={v}" for k, v in point.items()))
    return "\n".join(lines)



__all__ = ["Budget", "ConfirmStage", "DefineByRun", "Stages", "TuneStage", "Objective", "Parameter", "SEED_INDEX_KEY", "SearchSpace", "space_summary"]
