"""Leaderboard rows -> an in-memory Optuna study, for importances and Optuna's plots.

One Optuna trial per *configuration*: the rows of one ``config_hash`` (its seeds) are averaged
first, so seed noise is not read as a parameter's effect. Parameters come with their Optuna
distributions, either from the search's stored space (the caller passes them in as
:class:`ParamSpec`: this layer does not read search folders) or inferred from the column values.

A conditional parameter (``when:`` in a space, or a column that is null in some rows) only has a
value where it is active; :func:`subspaces` splits the configurations so that each parameter is
judged only among the configurations where it was set.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from irstdlab.leaderboards import query
from irstdlab.leaderboards.errors import LeaderboardError

SEED_KEYS = ("train.seed",)  # never a configuration's identity: seeds are averaged over


@dataclass(frozen=True)
class ParamSpec:
    """A searched parameter: its name (without ``param.``), Optuna distribution and condition."""

    name: str
    distribution: Any  # optuna.distributions.BaseDistribution
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (parameter, allowed values), all must hold

    @property
    def column(self) -> str:
        return f"param.{self.name}"

    def condition_text(self) -> str:
        return " and ".join(f"{k} in {list(v)}" for k, v in self.when)


def _python(value: Any) -> Any:
    """numpy/pandas scalars -> plain Python values (Optuna's distributions compare with ==)."""
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def infer_specs(df: pd.DataFrame) -> list[ParamSpec]:
    """Distributions read off the values: numbers -> Int/Float over their range, the rest categorical.

    No ``when`` is known here: a column that is null in some rows is conditional on being set,
    which :func:`subspaces` handles through the null pattern.
    """
    from optuna import distributions as d

    specs = []
    for col in sorted(c for c in df.columns if str(c).startswith("param.") and not str(c).startswith("param.paper_")):
        values = [v for v in (_python(x) for x in df[col]) if v is not None]
        if not values:
            continue
        name = col[len("param."):]
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            specs.append(ParamSpec(name, d.IntDistribution(min(values), max(values))))
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            specs.append(ParamSpec(name, d.FloatDistribution(float(min(values)), float(max(values)))))
        else:
            specs.append(ParamSpec(name, d.CategoricalDistribution(sorted(set(values), key=str))))
    return specs


def fits(df: pd.DataFrame, specs: Sequence[ParamSpec]) -> str | None:
    """None when every row's parameter values lie in the specs' distributions, else why not."""
    for spec in specs:
        if spec.column not in df.columns:
            return f"no column {spec.column}"
        for v in df[spec.column]:
            v = _python(v)
            if v is None:
                continue
            try:
                ok = spec.distribution._contains(spec.distribution.to_internal_repr(v))
            except (ValueError, TypeError):
                ok = False
            if not ok:
                return f"{spec.name}={v!r} lies outside the stored space"
    return None


Direction = Literal["maximize", "minimize"]


@dataclass
class Configs:
    """One row per configuration: mean metric over its seeds, the seed count, its parameters."""

    frame: pd.DataFrame  # param.* columns, "value", "n_seeds", "n_rows", "fidelity"
    metric: str
    direction: Direction


def average_seeds(df: pd.DataFrame, metric: str) -> Configs:
    """Group rows by configuration (``config_hash``; the parameters when it is missing) and average
    the metric over the seeds. Rows without a finite metric value are left out."""
    value = pd.to_numeric(df[metric], errors="coerce")
    df = df[np.isfinite(value.to_numpy(dtype=float))].assign(value=value)
    params = [c for c in df.columns if str(c).startswith("param.")]
    if "config_hash" in df.columns:
        key = df["config_hash"].astype(object).where(df["config_hash"].notna(), None)
    else:
        key = pd.Series([None] * len(df), index=df.index, dtype=object)
    fallback = df[params].apply(lambda r: json.dumps({k: _python(v) for k, v in r.items()}, default=str), axis=1) \
        if len(df) else key
    key = key.where(key.notna(), fallback)
    rows = []
    for _, group in df.groupby(key, sort=True):
        first = group.iloc[0]
        rows.append({**{c: _python(first[c]) for c in params}, "value": float(group["value"].mean()),
                     "n_seeds": int(group["seed"].nunique()) if "seed" in group else len(group),
                     "n_rows": len(group),
                     "fidelity": float(pd.to_numeric(group.get("fidelity"), errors="coerce").min())
                     if "fidelity" in group else float("nan")})
    frame = pd.DataFrame(rows, columns=[*params, "value", "n_seeds", "n_rows", "fidelity"])
    direction: Direction = "maximize" if query.higher_is_better(metric) else "minimize"
    return Configs(frame, metric, direction)


@dataclass
class Subspace:
    """Configurations where a set of parameters is active, and those parameters."""

    label: str  # "all configurations" or "where model.name in ['bafenet']"
    condition: str | None
    specs: list[ParamSpec]
    frame: pd.DataFrame


def _active(frame: pd.DataFrame, spec: ParamSpec, by_space: bool) -> np.ndarray:
    if by_space and spec.when:
        mask = np.ones(len(frame), bool)
        for path, allowed in spec.when:
            col = f"param.{path}"
            vals = frame[col] if col in frame.columns else pd.Series([None] * len(frame))
            mask &= np.array([_python(v) in allowed for v in vals], bool)
        return mask & frame[spec.column].notna().to_numpy()
    return frame[spec.column].notna().to_numpy()


def subspaces(configs: Configs, specs: Sequence[ParamSpec], by_space: bool) -> list[Subspace]:
    """The unconditional parameters over every configuration, then each condition's parameters
    (with the unconditional ones) over the configurations where that condition holds."""
    frame = configs.frame
    specs = [s for s in specs if s.column in frame.columns]
    everywhere = [s for s in specs if _active(frame, s, by_space).all() and not (by_space and s.when)]
    out = [Subspace("all configurations", None, everywhere, frame)]
    groups: dict[tuple, list[ParamSpec]] = {}
    for spec in specs:
        if spec in everywhere:
            continue
        mask = _active(frame, spec, by_space)
        key = (spec.when,) if by_space and spec.when else ("set", tuple(mask))
        groups.setdefault(key, []).append(spec)
    for members in groups.values():
        mask = _active(frame, members[0], by_space)
        if by_space and members[0].when:
            condition = members[0].condition_text()
        else:
            condition = " and ".join(f"{s.name} is set" for s in members)
        fixed = {path for path, allowed in members[0].when if len(allowed) == 1} if by_space else set()
        others = [s for s in everywhere if s.name not in fixed]
        out.append(Subspace(f"where {condition}", condition, others + members, frame[mask]))
    return out


def varying(sub: Subspace) -> tuple[list[ParamSpec], list[ParamSpec]]:
    """(parameters with more than one value here, those with one value only)."""
    moving: list[ParamSpec] = []
    constant: list[ParamSpec] = []
    for spec in sub.specs:
        n = sub.frame[spec.column].dropna().astype(str).nunique()
        (moving if n > 1 else constant).append(spec)
    return moving, constant


def build_study(frame: pd.DataFrame, specs: Sequence[ParamSpec], direction: Direction, study_name: str = "leaderboard") -> Any:
    """An in-memory Optuna study with one COMPLETE trial per configuration (params where set)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=direction, study_name=study_name)
    trials = []
    for rec in frame.to_dict("records"):
        params = {s.name: _python(rec.get(s.column)) for s in specs}
        params = {k: v for k, v in params.items() if v is not None}
        dists = {s.name: s.distribution for s in specs if s.name in params}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trials.append(optuna.trial.create_trial(params=params, distributions=dists, values=[rec["value"]],
                                                        user_attrs={"n_seeds": rec["n_seeds"]}))
        except ValueError as exc:
            raise LeaderboardError("param", f"a configuration does not fit its distributions: {exc}") from None
    study.add_trials(trials)
    return study
