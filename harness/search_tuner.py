"""The Ray Tune side of ``irstdlab search``: starting Ray, the seeded Optuna searcher, the
fair ASHA scheduler, our callbacks and the trainable, assembled into one ``tune.Tuner``.
``harness/search.py`` plans and resumes a search; this module only builds what Tune runs."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from irstdlab.harness.search_storage import SearchStorage
from irstdlab.harness.search_trainable import SearchContext
from irstdlab.harness.space_loader import SEED_INDEX_KEY, SearchSpace

if TYPE_CHECKING:
    from irstdlab.harness.search import SearchOptions


def start_ray(address: str | None, num_cpus: int | None, dashboard: bool = True) -> bool:
    """Connect to a cluster, or start an embedded Ray on loopback. Returns True if we started it.
    Ray's own console chatter is held for the search's log file (harness/ray_logs.py).

    ``dashboard=False`` starts the embedded Ray without its dashboard: right for direct trials
    (one worker each, run inside the Tune actor), which never start a Ray Train run, the only
    user of the dashboard's State API here (see ``ray_runtime.init_local_ray``). It cuts Ray's
    start-up by 1.2-1.4 s on the 2-core CI machine."""
    from irstdlab.harness.ray_logs import quiet_reporter_env, route_ray_logs

    quiet_reporter_env()
    from irstdlab.harness.ray_runtime import init_local_ray  # sets Ray's environment defaults first

    route_ray_logs()
    address = address or os.environ.get("RAY_ADDRESS") or None
    import ray

    if ray.is_initialized():
        return False
    init_local_ray(num_cpus=num_cpus, address=address, dashboard=dashboard)
    return address is None


def make_searcher(space: SearchSpace) -> Any:
    """OptunaSearch over the space's define-by-run object; a Repeater for seeds > 1."""
    import optuna
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    from irstdlab.harness.search_sampler import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = make_sampler(space.sampler, space.searcher_seed)
    metric = [o.metric for o in space.objectives]
    mode: list[str] = [o.mode for o in space.objectives]
    searcher: Any = OptunaSearch(space.define_by_run(), metric=metric if len(metric) > 1 else metric[0],
                            mode=mode if len(mode) > 1 else mode[0], sampler=sampler,  # seeded itself
                            points_to_evaluate=[dict(p) for p in space.start_with] or None)  # enqueued first
    if space.seeds > 1:
        searcher = Repeater(searcher, repeat=space.seeds, set_index=True)
    return searcher


def trial_dirname(trial: Any) -> str:
    """Short, stable trial folder names (Tune's default embeds every parameter)."""
    return f"trial_{trial.trial_id}"


def trainable(ctx: SearchContext) -> Any:
    from ray import tune

    from irstdlab.harness.search_trainable import search_trial

    return tune.with_resources(tune.with_parameters(search_trial, ctx=ctx), ctx.resources.tune_resources())


def build_tuner(space: SearchSpace, opts: SearchOptions, where: SearchStorage, planned_configs: int,
                experiment: str | None = None, run: Any | None = None, reuse_actors: bool | None = None) -> Any:
    """A new search's ``tune.Tuner``: experiment state and checkpoints under ``where`` (any
    filesystem), our state files beside them by reference (``harness/search_storage.py``).
    ``experiment``: Tune's folder under the storage when it is not the search's own (a stage of a
    staged search, ``<name>/tune-<group>``, keeps its state files there; its rows still belong to
    search ``where.name``). ``run``: a Tune trainable in place of the real trial (the driver
    simulation ``benchmarks/bench_driver.py`` passes a no-op one, in actors it reuses). ``reuse_actors``:
    default ``opts.reuse_actors`` for direct trials (a nested trainer's driver gains nothing from it)."""
    from ray import tune

    from irstdlab.harness.search import ASHA_FILE, JOURNAL_FILE, study_name  # the search's file layout

    from irstdlab.harness.asha import PersistentASHA
    from irstdlab.harness.search_callbacks import LeaderboardCallback
    from irstdlab.harness.search_progress import ProgressCallback

    if reuse_actors is None:
        reuse_actors = opts.reuse_actors and opts.resources.resolved_backend() == "direct"
    name = where.name
    files = SearchStorage(where.root, experiment) if experiment else where  # where the state files live
    ctx = SearchContext(search=name, space=space, storage=where.root_ref, resources=opts.resources)
    if space.sampler == "grid":
        grid = space.grid()[:planned_configs]
        param_space = {"params": tune.grid_search(grid), SEED_INDEX_KEY: tune.grid_search(list(range(space.seeds)))}
        search_alg, num_samples = None, 1
    else:
        param_space, search_alg, num_samples = None, make_searcher(space), planned_configs * space.seeds
    scheduler = None
    if opts.scheduler == "asha":
        scheduler = PersistentASHA(
            files.file(ASHA_FILE), time_attr="epoch", metric=space.metric, mode=space.mode,
            max_t=space.budget.max_epochs, grace_period=space.budget.grace_period,
            reduction_factor=space.budget.reduction_factor, tie_tolerance=space.budget.tie_tolerance,
            min_compared=space.budget.min_compared, stop_within=space.budget.stop_within)
    asha_state = files.file(ASHA_FILE) if scheduler is not None else None
    callbacks = [
        LeaderboardCallback(name, space, where.leaderboard_ref, files.file(JOURNAL_FILE),
                            study_name(name, space), asha_state),
        ProgressCallback(space.metric, space.budget.max_epochs, asha_state=asha_state),
    ]
    storage_path, storage_filesystem = where.tune_storage()
    return tune.Tuner(
        trainable(ctx) if run is None else run,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                    max_concurrent_trials=opts.max_concurrent, reuse_actors=reuse_actors,
                                    trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=files.name, storage_path=storage_path, storage_filesystem=storage_filesystem, callbacks=callbacks,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )


__all__ = ["build_tuner", "make_searcher", "start_ray", "trainable", "trial_dirname"]
