"""Checks of a search space's scalar sections: budget, seeds, objectives, numeric bounds.

Each takes the loader's error builder ``err(key, problem) -> ConfigError`` so the message
carries the file and line of the key.
"""

from __future__ import annotations

import copy
import math
from typing import Any
from collections.abc import Callable

from irstdlab.harness import configtree, trial_metrics
from irstdlab.harness.errors import ConfigError
from irstdlab.harness.search_space import Budget, ConfirmStage, Objective, Parameter, SearchSpace, Stages, TuneStage

BUDGET_KEYS = ("num_samples", "max_epochs", "grace_period", "reduction_factor", "tie_tolerance", "min_compared",
               "stop_within")
ErrorBuilder = Callable[[str, str], ConfigError]


def positive_int(value: Any, key: str, err: ErrorBuilder, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value < 2**31:
        raise err(key, f"expected an integer in {minimum}..{2**31 - 1}, got {short(value)}")
    return value


def budget(raw: Any, err: ErrorBuilder) -> Budget:
    if not isinstance(raw, dict):
        raise err("budget", f"expected a mapping ({', '.join(BUDGET_KEYS)})")
    for key in raw:
        if key not in BUDGET_KEYS:
            raise err(f"budget/{key}", f"unknown key; valid keys are {', '.join(BUDGET_KEYS)}")
    values: dict[str, Any] = {k: positive_int(v, f"budget/{k}", err, 2 if k == "reduction_factor" else 1)
                              for k, v in raw.items() if k not in ("tie_tolerance", "stop_within")}
    if "stop_within" in raw:
        if not isinstance(raw["stop_within"], str) or not raw["stop_within"]:
            raise err("budget/stop_within", f"expected a parameter path such as model.name, got {short(raw['stop_within'])}")
        values["stop_within"] = raw["stop_within"]
    if "tie_tolerance" in raw:
        tol = raw["tie_tolerance"]
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < math.inf:
            raise err("budget/tie_tolerance", f"expected a finite number >= 0, got {short(tol)}")
        values["tie_tolerance"] = float(tol)
    budget = Budget(**values)
    if budget.grace_period > budget.max_epochs:
        raise err("budget/grace_period", f"{budget.grace_period} is more than max_epochs {budget.max_epochs}")
    return budget


def objectives(raw: Any, err: ErrorBuilder) -> tuple[Objective, ...]:
    if raw is None:
        return (Objective("val/mAP07", "max"),)
    items = raw if isinstance(raw, list) else [raw]
    if not 1 <= len(items) <= 2:
        raise err("objective", f"expected one or two objectives, got {len(items)}")
    out = []
    for item in items:
        if not isinstance(item, dict) or set(item) != {"metric", "mode"}:
            raise err("objective", f"each objective is {{metric: NAME, mode: max|min}}, got {item!r}")
        if not isinstance(item["metric"], str) or not item["metric"]:
            raise err("objective", f"metric must be a non-empty name, got {item['metric']!r}")
        if item["mode"] not in ("max", "min"):
            raise err("objective", f"mode must be max or min, got {item['mode']!r}")
        if not trial_metrics.is_reported(item["metric"]):
            raise err("objective", f"{item['metric']!r} is not a metric a trial reports, so no trial could be "
                                   f"ranked; use e.g. {', '.join(trial_metrics.EXAMPLES)}")
        out.append(Objective(item["metric"], item["mode"]))
    if len(out) == 2 and out[0].metric == out[1].metric:
        raise err("objective", f"the two objectives are the same metric {out[0].metric!r}")
    return tuple(out)


def check_objectives_reported(objs: tuple[Objective, ...], base_eval: Any, searched: set[str],
                              err: ErrorBuilder) -> None:
    """Metrics that depend on the eval section must be switched on by the base config (or searched):
    NoCo metrics need NoCo scoring, ``best/val/X`` needs ``eval.select_metric: X``."""
    if "eval.select_metric" in searched:
        return
    for o in objs:
        if trial_metrics.needs_noco(o.metric) and not base_eval.needs_noco and "eval.mnocoap" not in searched:
            raise err("objective", f"{o.metric!r} is reported only with NoCo scoring; set overrides "
                                   f"eval.mnocoap: true (or eval.select_metric: mNoCoAP)")
        if o.metric.startswith("best/val/") and o.metric != f"best/val/{base_eval.select_metric}":
            raise err("objective", f"{o.metric!r} is reported only with eval.select_metric "
                                   f"{o.metric.rsplit('/', 1)[-1]} (this space selects on {base_eval.select_metric})")


TUNE_KEYS = ("group_by", "budget", "seeds", "overrides", "per_group")
CONFIRM_KEYS = ("seeds", "max_epochs")


def stages(raw: Any, top_budget: Budget, top_seeds: int, err: ErrorBuilder) -> Stages:
    """``stages: {tune: {group_by, budget, seeds, overrides, per_group}, confirm: {seeds, max_epochs}}``.

    The shape and numbers are checked here; that ``group_by`` names a choice parameter, and that every
    ``per_group`` entry and stage-1 override is a valid config value, is checked by the loader, which
    derives each group's space (``harness/stage_spaces.py``)."""
    if not isinstance(raw, dict) or set(raw) != {"tune", "confirm"}:
        raise err("stages", "expected a mapping with exactly the stages tune and confirm")
    tune, confirm = raw["tune"], raw["confirm"] if raw["confirm"] is not None else {}
    if not isinstance(tune, dict):
        raise err("stages/tune", f"expected a mapping ({', '.join(TUNE_KEYS)})")
    if not isinstance(confirm, dict):
        raise err("stages/confirm", f"expected a mapping ({', '.join(CONFIRM_KEYS)})")
    for section, keys, given in (("tune", TUNE_KEYS, tune), ("confirm", CONFIRM_KEYS, confirm)):
        for key in given:
            if key not in keys:
                raise err(f"stages/{section}/{key}", f"unknown key; valid keys are {', '.join(keys)}")
    group_by = tune.get("group_by")
    if not isinstance(group_by, str) or not group_by:
        raise err("stages/tune/group_by", f"expected the path of a choice parameter such as model.name, "
                                          f"got {short(group_by)}")
    if "budget" not in tune:
        raise err("stages/tune/budget", "missing: stage 1 needs its own (reduced) budget")
    stage_budget = budget(tune["budget"], lambda k, p: err(f"stages/tune/{k}", p))
    per_group = tune.get("per_group") or {}
    if not isinstance(per_group, dict):
        raise err("stages/tune/per_group", "expected a mapping {group value: {parameter: distribution}}")
    for group, entries in per_group.items():
        if not isinstance(entries, dict) or not entries:
            raise err(f"stages/tune/per_group/{group}", "expected a non-empty mapping {parameter: distribution}")
    overrides = tune.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise err("stages/tune/overrides", "expected a mapping of dotted config keys to values")
    seeds = positive_int(tune.get("seeds", 1), "stages/tune/seeds", err)
    max_epochs = positive_int(confirm.get("max_epochs", top_budget.max_epochs), "stages/confirm/max_epochs", err)
    if stage_budget.max_epochs > max_epochs:
        raise err("stages/tune/budget", f"max_epochs {stage_budget.max_epochs} is more than the confirm stage's "
                                        f"{max_epochs}: stage 1 is the reduced budget")
    return Stages(TuneStage(group_by, stage_budget, seeds, {str(g): dict(v) for g, v in per_group.items()},
                            {str(k): v for k, v in overrides.items()}),
                  ConfirmStage(positive_int(confirm.get("seeds", top_seeds), "stages/confirm/seeds", err), max_epochs))


def start_with(raw: Any, params: tuple[Parameter, ...], budget: Budget, sampler: str,
               base_raw: dict[str, Any], err: ErrorBuilder) -> tuple[dict[str, Any], ...]:
    """``start_with: [{parameter: value, ...}, ...]``: configurations the searcher proposes first (Optuna's
    enqueued trials, through Ray's ``points_to_evaluate``), e.g. the paper's defaults.

    Every key is a searched parameter and every value lies in its distribution; a conditional parameter
    appears only together with the parameters of its ``when``, holding. Parameters a point leaves out are
    sampled as usual; the point's values on the base config must make a valid ``TrialConfig``."""
    if sampler == "grid":
        raise err("start_with", "not for sampler: grid, which runs every grid point anyway")
    if not isinstance(raw, list) or not raw:
        raise err("start_with", "expected a non-empty list of mappings {parameter: value}")
    if len(raw) > budget.num_samples:
        raise err("start_with", f"{len(raw)} points but budget.num_samples is {budget.num_samples}: "
                                f"the points are the first of the sampled configurations")
    by_path = {p.path: p for p in params}
    points: list[dict[str, Any]] = []
    for number, point in enumerate(raw, start=1):
        where = f"point {number}"
        if not isinstance(point, dict) or not point:
            raise err("start_with", f"{where}: expected a non-empty mapping {{parameter: value}}, got {short(point)}")
        for path, value in point.items():
            if path not in by_path:
                raise err("start_with", f"{where}: {path} is not a searched parameter "
                                        f"(searched: {', '.join(by_path)})")
            param = by_path[path]
            problem = _outside(param, value)
            if problem:
                raise err("start_with", f"{where}: {path}: {short(value)} {problem}")
            for cond_path, allowed in param.when:
                if cond_path not in point:
                    raise err("start_with", f"{where}: {path} is searched only when {cond_path} is in "
                                            f"{list(allowed)}; give {cond_path} too")
                if point[cond_path] not in allowed:
                    raise err("start_with", f"{where}: {path} is searched only when {cond_path} is in "
                                            f"{list(allowed)}, and this point has {cond_path} "
                                            f"{short(point[cond_path])}: leave {path} out")
        if point in points:
            raise err("start_with", f"{where} repeats point {points.index(point) + 1}")
        objection = _config_objection(base_raw, point)
        if objection:
            raise err("start_with", f"{where}: rejected by the config: {objection}")
        points.append(dict(point))
    return tuple(points)


def _config_objection(base_raw: dict[str, Any], point: dict[str, Any]) -> str | None:
    from irstdlab.harness.config import TrialConfig

    trial_raw = copy.deepcopy(base_raw)
    for path, value in point.items():
        configtree.set_path(trial_raw, path.split("."), value)
    try:
        TrialConfig.from_dict(trial_raw)
    except ConfigError as exc:
        return str(exc)
    return None


def _outside(param: Parameter, value: Any) -> str | None:
    """Why ``value`` is not a value ``param`` can take, or None."""
    if param.kind == "choice":
        same = [v for v in param.values if v == value and isinstance(v, bool) == isinstance(value, bool)]
        return None if same else f"is not one of its choices {list(param.values)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not finite_number(value):
        return f"is not a number ({param.kind} [{param.low:g}, {param.high:g}])"
    if param.kind == "int" and not isinstance(value, int):
        return f"is not an integer (int [{param.low:g}, {param.high:g}])"
    if not param.low <= value <= param.high:
        return f"is outside {param.kind} [{param.low:g}, {param.high:g}]"
    if param.step:
        steps = (value - param.low) / param.step
        if abs(steps - round(steps)) > 1e-9:
            return f"is not on the step {param.step:g} from {param.low:g}"
    return None


def refuse_fixed_and_searched(set_keys: list[str], space: SearchSpace) -> None:
    """``--set`` on a searched key would be replaced by every sampled value: refuse it, naming both."""
    searched = {p.path for p in space.parameters}
    for key in set_keys:
        if key in searched:
            raise ConfigError(f"--set {key}: {space.source} also searches {key}, so the sampled values would "
                              f"replace it; drop the --set or remove {key} from the space's parameters")


def finite_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True  # not a number at all: the type checks below name it
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return math.isfinite(value)


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


__all__ = ["BUDGET_KEYS", "CONFIRM_KEYS", "TUNE_KEYS", "budget", "stages", "start_with", "check_objectives_reported", "finite_number", "objectives", "positive_int", "refuse_fixed_and_searched", "short"]
