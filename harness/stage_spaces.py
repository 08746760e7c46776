"""The spaces of a staged search, derived from the space that declares ``stages:``.

A staged space (see ``detectors.yaml``) searches in two stages under one search name:

* **tune**: for every value ``g`` of the ``group_by`` choice parameter, an ordinary search of its own
  (the space's sampler, ``stages.tune.budget``, ``stages.tune.seeds``) in which ``group_by`` is the one
  choice ``[g]``, parameters conditioned on another group are left out, ``per_group[g]`` replaces the
  distributions it names, and ``stages.tune.overrides`` is added to the fixed values;
* **confirm**: a grid of exactly the configurations chosen from stage 1 (one per group), each with
  ``stages.confirm.seeds`` seeds at ``stages.confirm.max_epochs`` (default: the space's own
  ``budget.max_epochs``), never cut early.

Each derived space is parsed by ``loader.parse`` like a file, so every check of a space applies to it.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import yaml

from irstdlab.harness.errors import ConfigError
from irstdlab.harness.search_space import SearchSpace

BASE_KEYS = ("base", "preset", "config")


def group_values(space: SearchSpace) -> list[Any]:
    """The groups of stage 1: the values of the ``group_by`` choice parameter, in the file's order."""
    assert space.stages is not None
    (param,) = [p for p in space.parameters if p.path == space.stages.tune.group_by]
    return list(param.values)


def _common_raw(space: SearchSpace) -> dict[str, Any]:
    """The space's text without ``stages``, its base resolved (a derived space has no folder)."""
    raw = copy.deepcopy({k: v for k, v in space.raw.items() if k not in ("stages", *BASE_KEYS)})
    if space.base is not None:
        raw["base"] = space.base
    return raw


def _allowed(when: Any) -> list[Any]:
    return list(when) if isinstance(when, list) else [when]


def tune_raw(space: SearchSpace, group: Any) -> dict[str, Any]:
    """The stage-1 space of one group, as the mapping a space file would hold."""
    assert space.stages is not None
    tune = space.stages.tune
    raw = _common_raw(space)
    params: dict[str, Any] = {}
    for path, spec in dict(space.raw.get("parameters") or {}).items():
        spec = dict(spec)
        when = dict(spec.get("when") or {})
        if tune.group_by in when:
            if group not in _allowed(when[tune.group_by]):
                continue  # a knob of another group
            when[tune.group_by] = group
        spec.pop("when", None)
        params[path] = {**spec, **({"when": when} if when else {})}
        if path == tune.group_by:
            params[path] = {"choice": [group]}
    for path, spec in tune.per_group.get(str(group), {}).items():
        if path not in params:
            raise ConfigError(f"{path}: not a parameter of the space for group {group} "
                              f"(per_group replaces the distribution of a listed parameter)")
        if not isinstance(spec, dict):
            raise ConfigError(f"{path}: expected a distribution mapping, got {spec!r}")
        when = params[path].get("when")
        params[path] = {**spec, **({"when": when} if when and "when" not in spec else {})}
    raw["parameters"] = params
    raw["overrides"] = {**dict(raw.get("overrides") or {}), **tune.overrides}
    raw["budget"] = dict(space.raw["stages"]["tune"]["budget"])
    raw["seeds"] = tune.seeds
    return raw


def tune_space(space: SearchSpace, group: Any) -> SearchSpace:
    """The validated stage-1 space of one group; its rows record ``stage = tune``."""
    from irstdlab.harness.space_loader import parse

    raw = tune_raw(space, group)
    label = f"{space.source} [stage tune, {space.stages.tune.group_by}={group}]"  # type: ignore[union-attr]
    parsed = parse(yaml.safe_dump(raw, sort_keys=False), label, None, space.name)
    return replace(parsed, stage="tune", base_config=space.base_config)


def confirm_space(space: SearchSpace, points: list[dict[str, Any]]) -> SearchSpace:
    """The stage-2 space: exactly ``points`` x the confirm seeds at the full budget."""
    from irstdlab.harness.space_loader import parse

    assert space.stages is not None
    confirm = space.stages.confirm
    if not points:
        raise ConfigError(f"{space.source}: stages: no configuration to confirm (stage 1 has no completed trial)")
    raw = _common_raw(space)
    raw["budget"] = {**dict(raw.get("budget") or {}), "num_samples": len(points), "max_epochs": confirm.max_epochs,
                     "grace_period": confirm.max_epochs}
    raw["seeds"] = confirm.seeds
    raw["sampler"] = "optuna"  # parsed as a sampled space; the grid is the explicit points below
    parsed = parse(yaml.safe_dump(raw, sort_keys=False), f"{space.source} [stage confirm]", None, space.name)
    for point in points:
        parsed.trial_config(point)  # a chosen point that does not resolve is an error now, not in a worker
    return replace(parsed, stage="confirm", sampler="grid", points=tuple(dict(p) for p in points),
                   base_config=space.base_config,
                   raw={**parsed.raw, "sampler": "grid", "points": [dict(p) for p in points]})


def check(space: SearchSpace, err: Any) -> None:
    """The loader's checks of a ``stages:`` section against the parsed space (one line each)."""
    assert space.stages is not None
    tune = space.stages.tune
    by_path = {p.path: p for p in space.parameters}
    param = by_path.get(tune.group_by)
    if param is None or param.kind != "choice" or param.when:
        raise err("stages/tune/group_by", f"{tune.group_by!r} is not an unconditional choice parameter of the "
                                          f"space ({', '.join(by_path)})")
    names = [str(v) for v in param.values]
    for group in tune.per_group:
        if group not in names:
            raise err(f"stages/tune/per_group/{group}", f"not one of {tune.group_by}'s choices {names}")
    for group in param.values:
        try:
            tune_space(space, group)
        except ConfigError as exc:
            key = f"stages/tune/per_group/{group}" if str(group) in tune.per_group else "stages/tune"
            raise err(key, f"stage 1 of {tune.group_by}={group}: {exc}") from None


__all__ = ["check", "confirm_space", "group_values", "tune_raw", "tune_space"]
