"""A staged search: tune every group at a reduced budget, then confirm each group's best over seeds.

A space with ``stages:`` (``harness/stage_spaces.py`` derives the stage spaces) runs as several
Tune experiments under one search name, so every row lands in ``search=<name>`` with its ``stage``:

```
<storage>/<name>/irstdlab-stages.json   the plan and the progress: stage-1 groups done, chosen points
<storage>/<name>/tune-<group>/          stage 1 of one group: an ordinary search (Optuna TPE + ASHA)
<storage>/<name>/confirm/               stage 2: the chosen configurations x seeds, full budget, no cuts
<storage>/<name>/report/                report.md with the ranking, plots and tuned recipes
```

``--resume`` skips every group whose stage 1 finished (it is recorded in the state file once all its
trials have a final row), restores an unfinished experiment from Tune's own snapshot, and chooses the
stage-2 points once: they are stored, so a resumed stage 2 confirms exactly what was chosen.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pandas as pd

from irstdlab.harness import yamlfile
from irstdlab.harness.errors import ConfigError
from irstdlab.harness.paths import ensure_writable_dir, validate_name
from irstdlab.harness.rows import FINAL_STATUSES
from irstdlab.harness import space_loader
from irstdlab.harness.search_space import SearchSpace
from irstdlab.harness.stage_spaces import confirm_space, group_values, tune_space

STAGES_FILE = "irstdlab-stages.json"


def is_staged(opts: Any) -> bool:
    """Whether ``opts`` names a staged search: a stored staged plan on --resume, else a space with stages."""
    if "://" in str(opts.storage):
        return False
    if opts.resume:
        return bool(opts.name) and (Path(opts.storage) / opts.name / STAGES_FILE).is_file()
    text, _, _ = space_loader.resolve(opts.space)
    try:
        raw = yamlfile.load(text)
    except Exception:  # noqa: BLE001 - the ordinary path reports a broken file with its line
        return False
    return isinstance(raw, dict) and "stages" in raw


def experiment_name(group: Any) -> str:
    """The stage-1 folder of a group: ``tune-<value>`` with anything but [A-Za-z0-9._-] replaced."""
    return "tune-" + re.sub(r"[^A-Za-z0-9._-]", "_", str(group))


# ----------------------------------------------------------------------------------- plan
def prepare(opts: Any) -> tuple[SearchSpace, str, str, dict[str, Any]]:
    """Validate the staged search before Ray starts; returns (space, name, storage, state)."""
    from irstdlab.harness import search
    from irstdlab.harness.search_state import read_search_state, refuse_plan_changes_on_resume, stored_space_error
    from irstdlab.harness.search_trainable import TrialResources

    storage = os.path.abspath(ensure_writable_dir(opts.storage, "--storage"))
    ensure_writable_dir(Path(storage) / "leaderboard", "--storage")
    if opts.resume:
        path = Path(storage) / opts.name / STAGES_FILE
        refuse_plan_changes_on_resume(opts.overrides, opts.max_epochs, opts.searcher_seed, opts.num_samples)
        state = read_search_state(path, set(TrialResources.__dataclass_fields__))
        assert state is not None
        if not isinstance(state.get("stages"), dict) or not isinstance(state["stages"].get("tuned"), list):
            from irstdlab.harness.search_state import cannot_resume

            raise cannot_resume(path, "the staged plan misses its 'stages' progress")
        try:
            space = search.build_space(opts, state)
        except (ConfigError, yamlfile.YAMLError) as exc:
            raise stored_space_error(path, exc) from None
        return space, opts.name, storage, state
    space = search.build_space(opts)
    name = opts.name or validate_name(space.name, f"{space.source}: name")
    search_dir = ensure_writable_dir(Path(storage) / name, "--name")
    if search_dir.exists() and not opts.dry_run:
        raise ConfigError(f"{search_dir}: a search named {name!r} already exists here; "
                          f"use --resume to continue it or --name to start another")
    search.check_models(space)
    assert space.stages is not None
    groups = group_values(space)
    tune_configs = opts.num_samples or space.stages.tune.budget.num_samples
    planned_configs = len(groups) * (tune_configs + 1)
    planned_trials = len(groups) * (tune_configs * space.stages.tune.seeds + space.stages.confirm.seeds)
    _, _, folder = space_loader.resolve(opts.space)
    state = {
        "name": name, "space_source": space.source, "space_text": search.build_space_text(opts),
        "space_folder": str(folder) if folder else None, "space_hash": space.space_hash,
        "study_name": search.study_name(name, space), "planned_configs": planned_configs,
        "planned_trials": planned_trials, "resources": asdict(opts.resources), "scheduler": opts.scheduler,
        "max_concurrent": opts.max_concurrent,
        "stages": {"tune_configs": tune_configs, "tuned": [], "points": None},
    }
    return space, name, storage, state


def summarize(space: SearchSpace, state: dict[str, Any]) -> str:
    assert space.stages is not None
    tune, confirm = space.stages.tune, space.stages.confirm
    groups = group_values(space)
    n = state["stages"]["tune_configs"]
    return "\n".join([
        f"staged search {state['name']}: {space.source} (space {space.space_hash}); objective {space.metric} "
        f"({space.mode})",
        f"  stage 1 (tune), per {tune.group_by} ({len(groups)}: {', '.join(map(str, groups))}): {n} configuration(s) "
        f"x {tune.seeds} seed(s), up to {tune.budget.max_epochs} epochs, sampler {space.sampler}, scheduler "
        f"{state['scheduler']} (grace {tune.budget.grace_period}, ties within {tune.budget.tie_tolerance:g})"
        + ("; own distributions:" if tune.per_group else ""),
        *(f"    {g}: " + ", ".join(f"{k} {v}" for k, v in spec.items()) for g, spec in tune.per_group.items()),
        *([f"    stage-1 overrides: {tune.overrides}"] if tune.overrides else []),
        f"  stage 2 (confirm): each group's best stage-1 configuration x {confirm.seeds} seed(s), "
        f"{confirm.max_epochs} epochs, no early stopping",
        f"  trials: {state['planned_trials']} in all",
        "  parameters:", space_loader.space_summary(space)])


# ----------------------------------------------------------------------------------- stage 2 choice
def select_best(rows: pd.DataFrame, space: SearchSpace) -> tuple[list[dict[str, Any]], list[str]]:
    """Per group, the stage-1 configuration with the best mean objective over its seeds.

    Only completed stage-1 rows count (a trial ASHA stopped never reached the stage's budget); ties
    go to the configuration whose JSON sorts first, so the choice is a function of the rows. Returns the chosen
    points (with the group's own value, without the seed) and one note per group left without one."""
    assert space.stages is not None
    group_col = f"param.{space.stages.tune.group_by}"
    metric = f"metric.{space.metric}"
    points, notes = [], []
    tune_rows = rows[(rows["stage"] == "tune") & (rows["status"] == "completed")] if len(rows) else rows
    for group in group_values(space):
        sub = tune_rows[tune_rows[group_col] == group] if group_col in tune_rows else tune_rows.iloc[0:0]
        sub = sub[pd.to_numeric(sub[metric], errors="coerce").notna()] if metric in sub else sub.iloc[0:0]
        if not len(sub):
            notes.append(f"{group}: no completed stage-1 trial with {space.metric}; not confirmed")
            continue
        # a configuration is its sampled point without the seed
        keys = [json.dumps({k: v for k, v in json.loads(p).items() if k != "train.seed"}, sort_keys=True)
                for p in sub["params_json"]]
        means = pd.to_numeric(sub[metric]).groupby(pd.Series(keys, index=sub.index)).mean()
        ranked = sorted(means.items(), key=lambda kv: (-kv[1] if space.mode == "max" else kv[1], kv[0]))
        points.append(json.loads(ranked[0][0]))
    return points, notes


def stage_rows(storage: str, name: str) -> pd.DataFrame:
    import warnings

    from irstdlab.leaderboards import open as open_leaderboard

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = open_leaderboard(Path(storage) / "leaderboard").read_table(search=name).table.to_pandas()
    return df if "stage" in df.columns else df.assign(stage=None)


def finished_trials(df: pd.DataFrame, stage: str, column: str | None = None, value: Any = None) -> int:
    if not len(df):
        return 0
    sub = df[(df["stage"] == stage) & df["status"].isin(FINAL_STATUSES)]
    if column is not None:
        sub = sub[sub[column] == value] if column in sub else sub.iloc[0:0]
    return len(sub)


# ----------------------------------------------------------------------------------- run
def _fit(space: SearchSpace, opts: Any, name: str, storage: str, experiment: str, configs: int, out: Any) -> None:
    """One stage experiment: restored from Tune's snapshot when it has one, else started."""
    from ray import tune

    from irstdlab.harness.search_state import cannot_resume, has_tune_snapshot
    from irstdlab.harness.search_trainable import SearchContext
    from irstdlab.harness.search_tuner import build_tuner, trainable

    path = Path(storage) / name / experiment
    # a stage killed before Tune's first snapshot ran no trial: it starts again
    if path.is_dir() and has_tune_snapshot(str(path)):
        ctx = SearchContext(search=name, space=space, storage=storage, resources=opts.resources)
        try:
            tuner = tune.Tuner.restore(str(path), trainable=trainable(ctx), resume_unfinished=True,
                                       resume_errored=False)
        except Exception as exc:  # noqa: BLE001 - a truncated tuner.pkl / experiment state, any type
            raise cannot_resume(path, f"Tune cannot read its saved state ({type(exc).__name__})") from None
        print(f"resuming {experiment} of search {name} from {path}", file=out, flush=True)
    else:
        print(f"starting {experiment} of search {name}", file=out, flush=True)
        from irstdlab.harness.search_storage import SearchStorage
        from irstdlab.leaderboards import storage_uri

        where = SearchStorage(storage_uri.resolve(storage), name)
        tuner = build_tuner(space, opts, where, configs, experiment=f"{name}/{experiment}")
    tuner.fit()


def _save(state: dict[str, Any], search_dir: Path) -> None:
    tmp = search_dir / f".{STAGES_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=1, sort_keys=True))
    os.replace(tmp, search_dir / STAGES_FILE)


def run_staged(opts: Any, out: Any = sys.stdout) -> Any:
    """Run (or resume) a staged search; returns a ``search.SearchOutcome`` (None for a dry run)."""
    from irstdlab.harness.search import RAY_LOG, start_ray
    from irstdlab.harness.search_trainable import TrialResources

    space, name, storage, state = prepare(opts)
    if opts.resume:  # the stored resources/scheduler win, as for an ordinary search
        opts.resources = TrialResources(**state["resources"])
        opts.scheduler, opts.max_concurrent = state["scheduler"], state["max_concurrent"]
    print(summarize(space, state), file=out, flush=True)
    if opts.dry_run:
        return None
    assert space.stages is not None
    search_dir = Path(storage) / name
    if not opts.resume:
        search_dir.mkdir(parents=True, exist_ok=False)
        _save(state, search_dir)
    progress = state["stages"]
    group_by = space.stages.tune.group_by
    started = start_ray(opts.address, opts.num_cpus, dashboard=opts.resources.resolved_backend() == "train")
    interrupted = False
    try:
        from irstdlab.harness.ray_logs import attach_log_file

        attach_log_file(search_dir / RAY_LOG)
        for group in group_values(space):
            if str(group) in progress["tuned"]:
                continue  # finished stage 1 of this group: never rerun
            sub = tune_space(space, group)
            _fit(sub, opts, name, storage, experiment_name(group), progress["tune_configs"], out)
            want = progress["tune_configs"] * sub.seeds
            if finished_trials(stage_rows(storage, name), "tune", f"param.{group_by}", group) < want:
                interrupted = True
                break
            progress["tuned"].append(str(group))
            _save(state, search_dir)
        if not interrupted:
            if progress["points"] is None:
                points, notes = select_best(stage_rows(storage, name), space)
                for note in notes:
                    print(f"irstdlab: warning: stage 2: {note}", file=sys.stderr)
                progress["points"] = points
                progress["dropped"] = notes
                _save(state, search_dir)
                print("stage 2 confirms:\n" + "\n".join(f"  {p}" for p in points), file=out, flush=True)
            confirm = confirm_space(space, progress["points"])
            _fit(confirm, replace(opts, scheduler="none"), name, storage, "confirm", len(progress["points"]), out)
            want = len(progress["points"]) * confirm.seeds
            interrupted = finished_trials(stage_rows(storage, name), "confirm") < want
    finally:
        if started:
            import ray

            ray.shutdown()
    outcome = _outcome(space, name, storage, state, interrupted)
    if not interrupted:
        from irstdlab.harness.report import write_report

        ranking, report = write_report(stage_rows(storage, name), space, progress, search_dir / "report")
        print("\n" + ranking, file=out)
        print(f"\nreport:        {report}", file=out, flush=True)
    return outcome


def _outcome(space: SearchSpace, name: str, storage: str, state: dict[str, Any], interrupted: bool) -> Any:
    from irstdlab.harness.search import JOURNAL_FILE, SearchOutcome

    df = stage_rows(storage, name)
    counts: dict[str, int] = {}
    for status in df["status"] if len(df) else []:
        counts[status] = counts.get(status, 0) + 1
    outcome = SearchOutcome(
        name=name, planned=int(state["planned_trials"]), rows=counts, interrupted=interrupted,
        search_dir=str(Path(storage) / name), leaderboard_dir=str(Path(storage) / "leaderboard"),
        journal=str(Path(storage) / name / "confirm" / JOURNAL_FILE), study_name=f"{name} (stage confirm)")
    confirmed = df[(df["stage"] == "confirm") & (df["status"] == "completed")] if len(df) else df
    if len(confirmed):
        col = f"metric.{space.metric}"
        keep = ["trial_id", "model", "seed", col, "gmacs"] + [c for c in df.columns if c.startswith("param.")]
        top = confirmed.sort_values(col, ascending=space.mode == "min") if col in confirmed else confirmed
        outcome.top = top[[c for c in keep if c in top.columns]].head(10)
    return outcome


__all__ = ["STAGES_FILE", "experiment_name", "finished_trials", "is_staged", "prepare", "run_staged",
           "select_best", "stage_rows", "summarize"]
