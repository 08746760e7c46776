"""Search-space YAML -> a validated :class:`SearchSpace`.

A space file reads like the space (see ``quickstart.yaml``)::

    base: quickstart                 # a preset name, or a config file relative to this file
    overrides: {data.size: 128}      # fixed values on top of the base (dotted keys)
    parameters:                      # sampled in this order; each has exactly one distribution
      model.name: {choice: [bafenet, fcos]}
      model.p: {choice: [0.25, 0.5], when: {model.name: bafenet}}   # conditional
      optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
      model.adapter_hidden: {int: [8, 128], step: 8}
    objective: {metric: val/mAP07, mode: max}     # or a list of two for multi-objective
    budget: {num_samples: 8, max_epochs: 3, grace_period: 1, reduction_factor: 2}
    seeds: 1                         # every sampled configuration runs with seeds 0..N-1
    sampler: optuna                  # optuna (TPE over the 25 best + 500 most recent trials: search_sampler.py) | random | grid
    searcher_seed: 0
    start_with:                      # optional: configurations proposed first (e.g. the paper's defaults)
      - {model.name: bafenet, model.p: 0.5, optim.lr: 1.0e-3}   # left-out parameters are sampled
    stages:                          # optional: tune each group, then confirm its best over seeds
      tune: {group_by: model.name, budget: {num_samples: 4, max_epochs: 2}}
      confirm: {seeds: 3}            # at budget.max_epochs (harness/stage_spaces.py)

Everything is checked against the ``TrialConfig`` tree (``configtree.field_paths``) when the
file is loaded: an unknown path, a value the config rejects, an empty choice, a bad range or a
``when`` on an unknown parameter is one :class:`ConfigError` ``<file>:<line>: <key>: <problem>``.
So are a key repeated in one mapping (``harness/yamlfile.py`` names both lines), a bound that is
not a finite number, a key both fixed under ``overrides`` and searched, and an objective no trial
reports (``harness/trial_metrics.py``; NoCo and ``best/val/X`` metrics need the eval settings).

The space turns into a picklable, top-level define-by-run object (:class:`DefineByRun`) for
Ray's ``OptunaSearch`` (notes E6: lambdas and ``__main__`` functions break checkpointing), or
into the explicit list of grid points for ``sampler: grid``.
"""

from __future__ import annotations

import copy
import difflib
import json
from importlib import resources
from pathlib import Path
from typing import Any, get_args, get_origin

import yaml

from irstdlab.harness import configtree, yamlfile
from irstdlab.harness.errors import ConfigError
from irstdlab.harness.space_sections import budget as _budget
from irstdlab.harness.space_sections import check_objectives_reported
from irstdlab.harness.space_sections import finite_number as _finite_number
from irstdlab.harness.space_sections import objectives as _objectives
from irstdlab.harness.space_sections import positive_int as _positive_int
from irstdlab.harness.space_sections import short as _short
from irstdlab.harness.space_sections import stages as _stages
from irstdlab.harness.space_sections import start_with as _start_with
from irstdlab.harness.search_space import (  # noqa: F401  (re-exported: the loader's public names)
    SEED_INDEX_KEY,
    Budget,
    DefineByRun,
    Objective,
    Parameter,
    SearchSpace,
    space_summary,
)

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")
SAMPLERS = ("optuna", "random", "grid")
TOP_KEYS = ("name", "description", "base", "preset", "config", "overrides", "parameters", "objective",
            "budget", "seeds", "sampler", "searcher_seed", "reproduce",  # reproduce: harness/reproduce.py
            "stages",  # tune -> confirm: harness/stage_spaces.py, harness/stages.py
            "start_with")  # configurations proposed first (harness/space_sections.py start_with)


# ----------------------------------------------------------------------------------------- loading
def builtin_names() -> list[str]:
    folder = resources.files("irstdlab.search_spaces")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def resolve(name_or_path: str | None) -> tuple[str, str, Path | None]:
    """A shipped space name or a YAML path -> (text, label, folder for relative paths)."""
    name_or_path = name_or_path or "quickstart"
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: search space file not found")
        return yamlfile.read_text(path, "search space file"), str(path), path.resolve().parent
    if name_or_path not in builtin_names():
        raise ConfigError(f"{name_or_path}: neither a YAML file nor a shipped search space "
                          f"(shipped: {', '.join(builtin_names())})")
    text = (resources.files("irstdlab.search_spaces") / f"{name_or_path}.yaml").read_text()
    return text, f"search_spaces/{name_or_path}.yaml", None


def load(name_or_path: str | None = None) -> SearchSpace:
    """Load and validate a search space (default: the shipped ``quickstart``)."""
    text, label, folder = resolve(name_or_path)
    default_name = Path(label).stem
    return parse(text, label, folder, default_name)


def _line_map(text: str) -> dict[str, int]:
    """Dotted key path -> 1-based line, from the YAML node tree (for error messages)."""
    lines: dict[str, int] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = f"{prefix}{key_node.value}"
                lines.setdefault(key, key_node.start_mark.line + 1)
                walk(value_node, key + "/")

    try:
        walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    except yaml.YAMLError:
        pass
    return lines


class _Errors:
    """Builds ``<file>:<line>: <key>: <problem>`` messages."""

    def __init__(self, label: str, lines: dict[str, int]) -> None:
        self.label, self.lines = label, lines

    def __call__(self, key: str, problem: str) -> ConfigError:
        line = self.lines.get(key)
        where = f"{self.label}:{line}" if line else self.label
        return ConfigError(f"{where}: {key.replace('/', ': ', 1).replace('/', '.')}: {problem}", key=key)


def parse(text: str, label: str = "<space>", folder: Path | None = None, default_name: str = "search") -> SearchSpace:
    try:
        raw = yamlfile.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{label}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{label}: expected a mapping with 'parameters', 'objective', 'budget'...")
    err = _Errors(label, _line_map(text))
    for key in raw:
        if key not in TOP_KEYS:
            raise err(str(key), f"unknown key; valid keys are {', '.join(TOP_KEYS)}")

    base = _base(raw, folder, err)
    from irstdlab.harness.config import TrialConfig

    leaves = configtree.field_paths(TrialConfig)
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise err("overrides", "expected a mapping of dotted config keys to values")
    for path in overrides:
        _check_path(str(path), leaves, err, f"overrides/{path}")
    budget = _budget(raw.get("budget") or {}, err)
    seeds = _positive_int(raw.get("seeds", 1), "seeds", err)
    sampler = raw.get("sampler", "optuna")
    if sampler not in SAMPLERS:
        raise err("sampler", f"{sampler!r} is not one of {', '.join(SAMPLERS)}")
    searcher_seed = raw.get("searcher_seed", 0)
    if isinstance(searcher_seed, bool) or not isinstance(searcher_seed, int) or not 0 <= searcher_seed < 2**32:
        raise err("searcher_seed", f"expected an integer in 0..{2**32 - 1} (Optuna seeds are 32-bit), "
                                   f"got {_short(searcher_seed)}")
    objectives = _objectives(raw.get("objective"), err)
    if len(objectives) > 1 and seeds > 1 and sampler != "grid":
        # Ray's Repeater averages one metric only
        raise err("seeds", "repeating each sampled configuration needs a single objective (or sampler: grid)")

    space = SearchSpace(
        name=str(raw.get("name") or default_name), source=label, base=base, overrides=dict(overrides),
        parameters=(), objectives=objectives, budget=budget, seeds=seeds, sampler=sampler,
        searcher_seed=searcher_seed, description=str(raw.get("description") or ""), raw=raw,
    )
    base_raw = _validated_base(space, err)
    params = _parameters(raw.get("parameters"), leaves, base_raw, err)
    _check_pinned_and_searched(space.overrides, params, err)
    check_objectives_reported(objectives, TrialConfig.from_dict(base_raw).eval, {p.path for p in params}, err)
    space = SearchSpace(**{**space.__dict__, "parameters": params})
    if budget.stop_within and budget.stop_within not in {p.path for p in params}:
        raise err("budget/stop_within", f"{budget.stop_within!r} is not a searched parameter "
                                        f"({', '.join(p.path for p in params)})")
    if "start_with" in raw:
        if "stages" in raw:
            raise err("start_with", "not with stages: each stage runs a searcher of its own")
        points = _start_with(raw["start_with"], params, budget, sampler, base_raw, err)
        space = SearchSpace(**{**space.__dict__, "start_with": points})
    if sampler == "grid":
        try:
            space.grid()
        except ConfigError as exc:
            raise err(f"parameters/{str(exc).split(':')[0]}", str(exc).split(": ", 1)[1]) from None
    if "stages" in raw:
        from irstdlab.harness import stage_spaces

        space = SearchSpace(**{**space.__dict__, "stages": _stages(raw["stages"], budget, seeds, err)})
        stage_spaces.check(space, err)
    return space


def _check_pinned_and_searched(overrides: dict[str, Any], params: tuple[Parameter, ...], err: _Errors) -> None:
    """A key both fixed in ``overrides`` and searched unconditionally: the sampled value would silently
    win. A conditional parameter (``when:``) may have a fixed value: it holds where the condition does not."""
    for p in params:
        if p.path in overrides and not p.when:
            line = err.lines.get(f"overrides/{p.path}")
            raise err(f"parameters/{p.path}", f"also fixed under overrides{f' (line {line})' if line else ''}; "
                                              f"keep it in one place")


def _base(raw: dict[str, Any], folder: Path | None, err: _Errors) -> str | None:
    given = [k for k in ("base", "preset", "config") if raw.get(k) is not None]
    if len(given) > 1:
        raise err(given[1], f"give one of base / preset / config, not {' and '.join(given)}")
    if not given:
        return None
    value = raw[given[0]]
    if not isinstance(value, str):
        raise err(given[0], f"expected a preset name or a config file path, got {value!r}")
    from irstdlab.harness.config import preset_names

    if given[0] == "preset" or (given[0] == "base" and not value.endswith((".yaml", ".yml"))):
        if value not in preset_names():
            raise err(given[0], f"unknown preset {value!r} (presets: {', '.join(preset_names())})")
        return value
    path = Path(value)
    if not path.is_absolute() and folder is not None:
        path = folder / path
    if not path.is_file():
        raise err(given[0], f"config file {path} not found")
    return str(path)


def _check_path(path: str, leaves: dict[str, Any], err: _Errors, key: str) -> Any:
    if path not in leaves:
        close = difflib.get_close_matches(path, list(leaves), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise err(key, f"not a config key{hint}")
    return leaves[path]


def _validated_base(space: SearchSpace, err: _Errors) -> dict[str, Any]:
    from irstdlab.harness.config import TrialConfig

    try:
        raw = space.base_dict()
        TrialConfig.from_dict(raw)
    except ConfigError as exc:
        key = _error_key(str(exc))
        if key in space.overrides:
            raise err(f"overrides/{key}", str(exc).split(": ", 1)[-1]) from None
        raise err("overrides" if space.overrides else ("base" if space.base else "budget"), str(exc)) from None
    return raw


def _error_key(message: str) -> str:
    """The dotted key a configtree error names (the text before the first ': ' after any source)."""
    parts = message.split(": ")
    for part in parts:
        if "." in part and " " not in part:
            return part
    return parts[0]


def _parameters(raw: Any, leaves: dict[str, Any], base_raw: dict[str, Any], err: _Errors) -> tuple[Parameter, ...]:
    if not isinstance(raw, dict) or not raw:
        raise err("parameters", "expected a non-empty mapping of dotted config keys to distributions")
    out: list[Parameter] = []
    for path, spec in raw.items():
        key = f"parameters/{path}"
        annotation = _check_path(str(path), leaves, err, key)
        if not isinstance(spec, dict):
            raise err(key, f"expected a mapping with one of {', '.join(DISTRIBUTIONS)}, got {spec!r}")
        kinds = [k for k in spec if k in DISTRIBUTIONS]
        extra = [k for k in spec if k not in DISTRIBUTIONS + ("step", "when")]
        if len(kinds) != 1 or extra:
            raise err(key, f"needs exactly one of {', '.join(DISTRIBUTIONS)} (plus optional step, when); got {', '.join(map(str, spec))}")
        kind = kinds[0]
        param = _distribution(str(path), kind, spec, annotation, err, key)
        param = Parameter(**{**param.__dict__, "when": _when(spec.get("when"), out, err, key)})
        for value in _probe_values(param):
            trial_raw = copy.deepcopy(base_raw)
            configtree.set_path(trial_raw, str(path).split("."), value)
            for cond_path, allowed in param.when:  # check the value where it is active
                configtree.set_path(trial_raw, cond_path.split("."), allowed[0])
            _check_value(trial_raw, value, err, key)
        out.append(param)
    return tuple(out)


def _distribution(path: str, kind: str, spec: dict[str, Any], annotation: Any, err: _Errors, key: str) -> Parameter:
    value = spec[kind]
    numeric = _base_type(annotation)
    step = spec.get("step")
    if kind == "choice":
        if not isinstance(value, list) or not value:
            raise err(key, "choice: needs a non-empty list of values")
        if step is not None:
            raise err(key, "step: only for uniform / int")
        if len({json.dumps(v, sort_keys=True, default=str) for v in value}) != len(value):
            raise err(key, f"choice: repeated values in {value}")
        if any(isinstance(v, (list, dict)) for v in value):  # Optuna choices must be scalars
            raise err(key, "choice: values must be scalars (numbers, strings, booleans, null)")
        return Parameter(path, "choice", values=tuple(value))
    if not isinstance(value, list) or len(value) != 2 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise err(key, f"{kind}: expected [low, high] numbers, got {value!r}")
    low, high = value
    for bound in (low, high, step):
        if bound is not None and not _finite_number(bound):  # float(10**400) would overflow later
            raise err(key, f"{kind}: {_short(bound)} is not a finite number within 64 bits")
    if not low < high:
        raise err(key, f"{kind}: low {low} must be below high {high}")
    if kind == "int":
        if numeric is not int:
            raise err(key, f"int: the config field is not an integer ({_type_name(annotation)})")
        if not all(isinstance(v, int) for v in value) or (step is not None and (not isinstance(step, int) or step < 1)):
            raise err(key, f"int: bounds and step must be integers (step >= 1), got {value} step {step}")
        return Parameter(path, "int", low=low, high=high, step=step)
    if numeric is not float:
        raise err(key, f"{kind}: the config field is not a number ({_type_name(annotation)}); use choice")
    if kind == "loguniform":
        if low <= 0:
            raise err(key, f"loguniform: low must be > 0, got {low}")
        if step is not None:
            raise err(key, "step: not allowed with loguniform")
    if step is not None and (not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0):
        raise err(key, f"step: must be a number > 0, got {step!r}")
    return Parameter(path, "loguniform" if kind == "loguniform" else "uniform", low=float(low), high=float(high),
                     step=None if step is None else float(step))


def _base_type(annotation: Any) -> Any:
    if get_origin(annotation) is not None and type(None) in get_args(annotation):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return rest[0] if len(rest) == 1 else None
    return annotation


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def _when(raw: Any, earlier: list[Parameter], err: _Errors, key: str) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise err(key, "when: expected a mapping {parameter: value or [values]}")
    known = {p.path: p for p in earlier}
    out = []
    for cond_path, allowed in raw.items():
        if cond_path not in known:
            raise err(key, f"when: {cond_path} is not a parameter listed above this one "
                           f"(conditions refer to earlier choice parameters)")
        cond = known[cond_path]
        allowed = tuple(allowed) if isinstance(allowed, list) else (allowed,)
        if cond.kind != "choice":
            raise err(key, f"when: {cond_path} must be a choice parameter")
        missing = [a for a in allowed if a not in cond.values]
        if missing or not allowed:
            raise err(key, f"when: {missing[0] if missing else '[]'!r} is not one of {cond_path}'s choices {list(cond.values)}")
        out.append((cond_path, allowed))
    return tuple(out)


def _probe_values(param: Parameter) -> list[Any]:
    """Values to test against the config: every choice, the ends of a range."""
    if param.kind == "choice":
        return list(param.values)
    if param.kind == "int":
        return [int(param.low), int(param.high)]
    return [param.low, param.high]


def _check_value(trial_raw: dict[str, Any], value: Any, err: _Errors, key: str) -> None:
    from irstdlab.harness.config import TrialConfig

    try:
        TrialConfig.from_dict(trial_raw)
    except ConfigError as exc:
        raise err(key, f"value {value!r} rejected by the config: {exc}") from None


__all__ = ["Budget", "DefineByRun", "Objective", "Parameter", "SearchSpace", "builtin_names", "load",
           "parse", "resolve", "space_summary"]
