"""``irstdlab search``: a search space -> Ray Tune (Optuna + ASHA) -> leaderboard rows.

Layout under ``<storage>`` (a local path shared by every node on a cluster, or any pyarrow
filesystem URI such as ``s3://bucket/prefix``: harness/search_storage.py):

* ``<storage>/<name>/``: Tune's experiment (trials, checkpoints, searcher state) plus ours:
  ``irstdlab-search.json`` (the space's text and hash, the budget actually used),
  ``asha_rungs.jsonl`` (ASHA rung records, replayed on resume), ``optuna-journal.log`` (the Optuna study
  for ``optuna.load_study`` / optuna-dashboard), ``train/`` (runs of nested Train trials).
* ``<storage>/leaderboard/``: the Parquet leaderboard (``search=<name>`` partition), compacted to one
  file per search when the search ends.

On an object store the journal and Ray's log are written in a driver-local work folder and the
journal is copied up after each update: a resume reads everything from the storage.

A new search refuses an existing ``<storage>/<name>``; ``--resume`` continues it through
``Tuner.restore`` (finished trials are kept, unfinished ones continue from their checkpoints,
the seeded Optuna searcher continues its sequence). Tune swallows the first Ctrl-C and returns
from ``fit()`` normally (notes E2): we detect the interruption by counting the trials that
reached a final row against the plan.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from collections.abc import Sequence

from irstdlab.harness import configtree, search_extend, yamlfile
from irstdlab.harness.errors import ConfigError
from irstdlab.harness import search_storage
from irstdlab.harness.paths import ensure_writable_dir, validate_name
from irstdlab.harness.search_storage import SearchStorage, open_storage
from irstdlab.harness.search_state import (cannot_resume, check_asha_state, check_journal, has_tune_snapshot,
                                           read_search_state, refuse_plan_changes_on_resume, stored_space_error)
from irstdlab.harness.search_trainable import SearchContext, TrialResources
from irstdlab.harness.search_tuner import build_tuner, start_ray, trainable
from irstdlab.leaderboards import storage_uri
from irstdlab.harness import space_loader
from irstdlab.harness.space_loader import SearchSpace
from irstdlab.harness.space_sections import refuse_fixed_and_searched

STATE_FILE = "irstdlab-search.json"
ASHA_FILE = "asha_rungs.jsonl"
RAY_LOG = "ray.log"  # Ray's own log lines of the search's driver
JOURNAL_FILE = "optuna-journal.log"
DEFAULT_STORAGE = "./irstdlab-runs"


@dataclass
class SearchOptions:
    space: str | None = None  # shipped name or YAML path; None = quickstart (or the stored one on resume)
    name: str | None = None  # default: the space's name
    storage: str = DEFAULT_STORAGE
    address: str | None = None  # None = embedded local Ray; "auto" or ray://... = an existing cluster
    num_samples: int | None = None
    max_epochs: int | None = None
    max_concurrent: int | None = None
    resources: TrialResources = field(default_factory=TrialResources)
    scheduler: Literal["asha", "none"] = "asha"
    overrides: Sequence[str] = ()  # --set key.path=value on top of the space's overrides
    searcher_seed: int | None = None
    resume: bool = False
    more: int | None = None  # --resume --more K: K more sampled configurations (harness/search_extend.py)
    retry_failed: bool = False  # --resume --retry-failed: rerun the trials that raised
    dry_run: bool = False
    num_cpus: int | None = None  # embedded Ray only
    top_k: int = 5
    # direct trials run in Tune actors kept between trials (no process start, imports already done:
    # ~3-5 s per trial); safe because every trial seeds itself from (seed, epoch, rank)
    reuse_actors: bool = True


@dataclass
class SearchOutcome:
    name: str
    planned: int
    rows: dict[str, int]  # status -> rows of this search
    interrupted: bool
    search_dir: str
    leaderboard_dir: str
    journal: str
    study_name: str
    top: Any = None  # pandas DataFrame of the best full-fidelity rows
    work_dir: str = ""  # driver-local files (Ray's log); the search folder itself on a local disk

    @property
    def final_rows(self) -> int:
        return sum(n for s, n in self.rows.items() if s != "interrupted")


# ----------------------------------------------------------------------------------- the space
def build_space(opts: SearchOptions, stored: dict[str, Any] | None = None) -> SearchSpace:
    """Load the space (the stored text on resume), apply --set, --max-epochs and the seed."""
    import yaml

    if stored is not None:
        raw = yamlfile.load(stored["space_text"])
        label, folder = stored["space_source"], Path(stored["space_folder"]) if stored["space_folder"] else None
    else:
        text, label, folder = space_loader.resolve(opts.space)
        parsed = space_loader.parse(text, label, folder, Path(label).stem)  # errors with the file's own line numbers
        refuse_fixed_and_searched([".".join(configtree.parse_override(item)[0]) for item in opts.overrides], parsed)
        raw = yamlfile.load(text)
        if not (opts.overrides or opts.max_epochs is not None or opts.searcher_seed is not None):
            raw.setdefault("name", Path(label).stem)
            return space_loader.parse(yaml.safe_dump(raw, sort_keys=False), label, folder)
        raw.setdefault("name", Path(label).stem)
        if opts.overrides:
            raw["overrides"] = dict(raw.get("overrides") or {})
            for item in opts.overrides:
                keys, value = configtree.parse_override(item)
                raw["overrides"][".".join(keys)] = value
        if opts.max_epochs is not None:
            budget = dict(raw.get("budget") or {})
            budget["max_epochs"] = opts.max_epochs
            budget["grace_period"] = min(int(budget.get("grace_period", 1)), opts.max_epochs)
            raw["budget"] = budget
        if opts.searcher_seed is not None:
            raw["searcher_seed"] = opts.searcher_seed
    try:
        return space_loader.parse(yaml.safe_dump(raw, sort_keys=False), label, folder)
    except ConfigError as exc:
        if stored is not None or not opts.overrides:
            raise
        from irstdlab.harness.preflight import blame_set  # the file alone parsed: --set broke it

        raise blame_set(str(exc), opts.overrides) from None


def check_models(space: SearchSpace) -> None:
    """Model names the space can produce must be registered, and its base must be trainable (frozen
    BatchNorm needs pretrained weights): both caught before Ray starts."""
    from irstdlab.harness.config import TrialConfig
    from irstdlab.models import list_models

    base = space.base_dict()
    known = list_models()
    names = {base.get("model", {}).get("name", "fcos")}
    for p in space.parameters:
        if p.path == "model.name":
            names |= set(p.values)
    unknown = sorted(str(n) for n in names - set(known))
    if unknown:
        raise ConfigError(f"{space.source}: model.name: {unknown[0]!r} is not a registered detector "
                          f"(registered: {', '.join(known)})")
    TrialConfig.from_dict(base).check_trainable(space.source)  # after the names: an unknown detector is named first


def study_name(search: str, space: SearchSpace) -> str:
    return f"{search}-{space.space_hash}"


# ----------------------------------------------------------------------------------- run
def _stored_state(where: SearchStorage) -> dict[str, Any] | None:
    state = read_search_state(where.file(STATE_FILE), {f.name for f in fields(TrialResources)})
    if state is not None:  # the other files a resume reads
        check_asha_state(where.file(ASHA_FILE))
        check_journal(where.file(JOURNAL_FILE))
    return state


def prepare(opts: SearchOptions) -> tuple[SearchSpace, str, str, dict[str, Any]]:
    """Validate everything that can be validated without Ray; returns (space, name, storage, state),
    ``storage`` being the storage root's reference (an absolute path, or the URI)."""
    space, where, state = _prepare(opts)
    return space, where.name, where.root_ref, state


def _prepare(opts: SearchOptions) -> tuple[SearchSpace, SearchStorage, dict[str, Any]]:
    if opts.name is not None:
        validate_name(opts.name, "--name")
    if opts.resume:
        if not opts.name:
            raise ConfigError("--resume needs --name NAME (and the same --storage) of the search to continue")
        where = open_storage(opts.storage, opts.name)
        stored = _stored_state(where)
        if stored is None:
            raise ConfigError(f"{where.shown()}: no search to resume here (start it without --resume)")
        refuse_plan_changes_on_resume(opts.overrides, opts.max_epochs, opts.searcher_seed, opts.num_samples)
        try:
            space = build_space(opts, stored)
        except (ConfigError, yamlfile.YAMLError) as exc:
            raise stored_space_error(where.file(STATE_FILE), exc) from None
        if opts.space is not None:
            given = build_space(SearchOptions(**{**asdict(opts), "resume": False, "resources": opts.resources}))
            if given.space_hash != stored["space_hash"]:
                raise ConfigError(f"{where.shown()}: search {opts.name!r} was started with a different space "
                                  f"({stored['space_hash']} != {given.space_hash}); use another --name")
        return space, where, search_extend.extended_state(stored, space, opts.more)
    space = build_space(opts)
    name = opts.name or validate_name(space.name, f"{space.source}: name")
    where = open_storage(opts.storage, name)
    if not where.remote:
        ensure_writable_dir(where.work_dir, "--name")
    if _search_exists(where) and not opts.dry_run:
        raise ConfigError(f"{where.shown()}: a search named {name!r} already exists here; "
                          f"use --resume to continue it or --name to start another")
    try:
        check_models(space)
    except ConfigError as exc:  # a --set model.name is blamed as such
        from irstdlab.harness.preflight import blame_set
        raise blame_set(str(exc), opts.overrides, only_named=True) from None
    configs = len(space.grid()) if space.sampler == "grid" else space.budget.num_samples
    if opts.num_samples is not None:
        configs = min(configs, opts.num_samples) if space.sampler == "grid" else opts.num_samples
    text, label, folder = space_loader.resolve(opts.space)
    state = {
        "name": name, "space_source": space.source, "space_text": build_space_text(opts),
        "space_folder": str(folder) if folder else None, "space_hash": space.space_hash,
        "study_name": study_name(name, space), "planned_configs": configs,
        "planned_trials": configs * space.seeds, "resources": asdict(opts.resources),
        "scheduler": opts.scheduler, "max_concurrent": opts.max_concurrent,
    }
    return space, where, state


def _search_exists(where: SearchStorage) -> bool:
    """A folder locally; on an object store (no folders) any object under the search's prefix."""
    if not where.remote:
        return where.work_dir.exists()
    return search_storage.exists(where.file(STATE_FILE)) or bool(storage_uri.listdir(where.root.join(where.name)))


def build_space_text(opts: SearchOptions) -> str:
    """The space as run (after --set / --max-epochs / seed), so that --resume needs no flags."""
    import yaml

    return yaml.safe_dump(build_space(opts).raw, sort_keys=False)


def summarize(space: SearchSpace, state: dict[str, Any], opts: SearchOptions) -> str:
    res = opts.resources
    lines = [f"search {state['name']}: {space.source} (space {space.space_hash}, sampler {space.sampler}, "
             f"seed {space.searcher_seed})",
             "  objective: " + ", ".join(f"{o.metric} ({o.mode})" for o in space.objectives),
             f"  trials: {state['planned_trials']} = {state['planned_configs']} configurations x {space.seeds} seed(s); "
             f"{space.budget.max_epochs} epochs; scheduler {opts.scheduler} (grace {space.budget.grace_period}, "
             f"factor {space.budget.reduction_factor}, ties within {space.budget.tie_tolerance:g}, "
             f"judged after {space.budget.min_compared} trial(s)"
             + (f" of the same {space.budget.stop_within}" if space.budget.stop_within else "") + ")",
             f"  per trial: {res.workers_per_trial} worker(s) x {res.cpus_per_worker:g} CPU, "
             f"{res.gpus_per_worker:g} GPU; backend {res.resolved_backend()}",
             "  parameters:", space_loader.space_summary(space)]
    return "\n".join(lines)


def run_search(opts: SearchOptions, out: Any = sys.stdout) -> SearchOutcome | None:
    """Run (or resume) a search; returns None for a dry run."""
    from irstdlab.harness import stages

    search_extend.check_options(opts, staged=stages.is_staged(opts))
    if stages.is_staged(opts):  # a space with `stages:` (tune -> confirm): harness/stages.py
        return stages.run_staged(opts, out)
    space, where, state = _prepare(opts)
    name = where.name
    if opts.resume:  # the stored resources/scheduler win: a restore cannot change them
        opts.resources = TrialResources(**state["resources"])
        opts.scheduler = state["scheduler"]
        opts.max_concurrent = state["max_concurrent"]
    print(summarize(space, state, opts), file=out, flush=True)
    if opts.dry_run:
        shown = min(5, int(state["planned_configs"]))  # never more than the plan will run
        preview = space.grid()[:shown] if space.sampler == "grid" else _preview(space, shown)
        print(f"  first configurations ({shown} of {state['planned_configs']}):", file=out)
        for point in preview:
            print(f"    {point}", file=out)
        return None
    started = start_ray(opts.address, opts.num_cpus, dashboard=opts.resources.resolved_backend() == "train")
    try:
        from irstdlab.harness.ray_logs import attach_log_file

        where.work_dir.mkdir(parents=True, exist_ok=opts.resume or where.remote)
        if opts.resume:
            tuner = _restore_tuner(where, space, opts)
            search_extend.continue_plan(tuner, space, state["planned_trials"], opts.max_concurrent, opts.more)
            if opts.more is not None:  # the plan grows once Tune could restore the search
                search_storage.write_bytes(where.file(STATE_FILE), json.dumps(state, indent=1, sort_keys=True).encode())
            attach_log_file(where.work_dir / RAY_LOG)
            print(f"resuming search {name} from {where.shown()}{search_extend.describe(opts, state)}", file=out,
                  flush=True)
        else:
            attach_log_file(where.work_dir / RAY_LOG)
            search_storage.write_bytes(where.file(STATE_FILE), json.dumps(state, indent=1, sort_keys=True).encode())
            tuner = build_tuner(space, opts, where, state["planned_configs"])
        tuner.fit()
    finally:
        if started:
            import ray

            ray.shutdown()
    _compact(where)
    return _outcome(where, space, state, opts.top_k)


def _restore_tuner(where: SearchStorage, space: SearchSpace, opts: SearchOptions) -> Any:
    """``Tuner.restore`` from the storage itself (nothing local is needed)."""
    from ray import tune

    path, filesystem = where.tune_search_path()
    if not has_tune_snapshot(path, filesystem):
        raise ConfigError(f"{where.shown()}: Tune has no saved state for this search yet "
                          f"(it was stopped before its first snapshot); start it again under a new --name")
    ctx = SearchContext(search=where.name, space=space, storage=where.root_ref, resources=opts.resources)
    try:
        return tune.Tuner.restore(path, trainable=trainable(ctx), resume_unfinished=True,
                                  resume_errored=opts.retry_failed, storage_filesystem=filesystem)
    except Exception as exc:  # noqa: BLE001 - a truncated tuner.pkl / experiment state, any type
        raise cannot_resume(where.search_ref, f"Tune cannot read its saved state ({type(exc).__name__})") from None


def _compact(where: SearchStorage) -> None:
    """One file for the search's partition (plus later appends): many small objects are slow on S3."""
    from irstdlab.leaderboards import open as open_leaderboard

    try:
        open_leaderboard(where.leaderboard_ref).compact(search=where.name)
    except Exception as exc:  # noqa: BLE001 - every row is already written; compaction only speeds reading
        print(f"irstdlab: warning: leaderboard partition of {where.name} not compacted: {exc}",
              file=sys.stderr, flush=True)


def _preview(space: SearchSpace, n: int) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from irstdlab.harness.search_sampler import make_sampler

    study = optuna.create_study(sampler=make_sampler(space.sampler, space.searcher_seed))
    for start in space.start_with:  # as make_searcher enqueues them
        study.enqueue_trial(dict(start))
    points = []
    for _ in range(n):
        trial = study.ask()
        space.define_by_run()(trial)
        points.append(trial.params)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return points


def _outcome(where: SearchStorage, space: SearchSpace, state: dict[str, Any], top_k: int) -> SearchOutcome:
    import warnings

    from irstdlab.leaderboards import open as open_leaderboard

    name = where.name
    board = open_leaderboard(where.leaderboard_ref)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = board.read_table(search=name).table
    statuses = table.column("status").to_pylist() if table.num_rows else []
    rows: dict[str, int] = {}
    for s in statuses:
        rows[s] = rows.get(s, 0) + 1
    outcome = SearchOutcome(
        name=name, planned=int(state["planned_trials"]), rows=rows,
        interrupted=sum(n for s, n in rows.items() if s != "interrupted") < int(state["planned_trials"]),
        search_dir=where.shown(), leaderboard_dir=where.root.join("leaderboard").uri,
        journal=where.shown(JOURNAL_FILE), study_name=state["study_name"], work_dir=str(where.work_dir))
    if table.num_rows:
        df = table.to_pandas()
        col = f"metric.{space.metric}"
        full = df[(df["status"] == "completed") & (df["fidelity"] >= 1.0)]
        if col in full.columns:
            full = full.sort_values(col, ascending=space.mode == "min")
        keep = ["trial_id", "model", col, "epochs_completed", "gmacs"] + [
            c for c in df.columns if c.startswith("param.")]
        outcome.top = full[[c for c in keep if c in full.columns]].head(top_k)
    return outcome


def resume_command(name: str, storage: str) -> str:
    return f"irstdlab search --resume --name {name} --storage {storage}"


__all__ = ["SearchOptions", "SearchOutcome", "build_space", "check_models", "prepare", "resume_command",
           "run_search", "start_ray", "study_name", "summarize"]
