"""Growing a search on ``--resume``: ``--more K`` adds K sampled configurations, ``--retry-failed``
reruns the trials that raised.

The number of trials Tune plans lives in its searcher checkpoint (``SearchGenerator`` state:
``total_samples``), which ``Tuner.restore`` reads back as it was written, so a restored search
cannot grow by itself. Our state file (``irstdlab-search.json``) is the plan's record:
``--more`` raises its ``planned_configs`` / ``planned_trials``, and every resume of a sampled space
hands Tune a :class:`PlannedSearchGenerator` that raises the restored ``total_samples`` to
``planned_trials``. Raising to the stored plan (never adding) makes it idempotent: a driver killed
after the state file was written but before Tune's next snapshot still gets its K trials on the
next plain ``--resume``. The searcher itself (Optuna's study and seeded sampler, Ray's Repeater)
is restored by Tune untouched, so the new configurations continue the seeded sequence.

``--retry-failed`` is Tune's ``Tuner.restore(..., resume_errored=True)``: trials that raised (a crash,
a lost node, a missing file) run again under their own trial id, from their last checkpoint (from
scratch when they had none), so the row they write when they end replaces the failed one (the store
keeps the newest ``written_at`` per (search, trial)). Tune's other way, ``restart_errored``, starts a
new trial with a new id (``Trial.reset``), which would leave the failed row beside the new one. A
trial whose loss diverged ended normally with a failure report: that is its configuration's
result, and it is not rerun.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from irstdlab.harness.errors import ConfigError

if TYPE_CHECKING:
    from irstdlab.harness.search import SearchOptions
    from irstdlab.harness.space_loader import SearchSpace


def check_options(opts: SearchOptions, staged: bool) -> None:
    """``--more`` / ``--retry-failed`` act on an existing, unstaged search."""
    flag = "--more" if opts.more is not None else "--retry-failed" if opts.retry_failed else None
    if flag is None:
        return
    if not opts.resume:
        raise ConfigError(f"{flag}: needs --resume --name NAME: it changes an existing search")
    if staged:
        raise ConfigError(f"{flag}: a staged search (stages:) cannot be extended or retried; "
                          f"start a new search under another --name")


def extended_state(state: dict[str, Any], space: SearchSpace, more: int | None) -> dict[str, Any]:
    """The stored plan with ``more`` configurations (x seeds) added; unchanged when ``more`` is None."""
    if more is None:
        return state
    if space.sampler == "grid":
        raise ConfigError(f"--more {more}: search {state['name']!r} is a grid (sampler: grid), whose points "
                          f"are all planned already; --more adds sampled configurations (sampler optuna or random)")
    return {**state, "planned_configs": state["planned_configs"] + more,
            "planned_trials": state["planned_trials"] + more * space.seeds}


def describe(opts: SearchOptions, state: dict[str, Any]) -> str:
    """What this resume adds, for the line that announces it."""
    parts = []
    if opts.more is not None:
        parts.append(f"adding {opts.more} configuration(s), {state['planned_trials']} trials in all")
    if opts.retry_failed:
        parts.append("rerunning the trials that raised an error")
    return "".join(f"; {part}" for part in parts)


def continue_plan(tuner: Any, space: SearchSpace, planned_trials: int, max_concurrent: int | None,
                  more: int | None) -> None:
    """Make the restored ``tuner`` run ``planned_trials`` trials in all (sampled spaces only).

    Tune keeps its run arguments in the tuner's private ``TunerInternal``; this is the only place
    that reaches into it (tested by tests/test_search_extend.py against the installed Ray)."""
    if space.sampler == "grid":
        return
    internal = getattr(tuner, "_local_tuner", None)
    tune_config = getattr(internal, "_tune_config", None)
    if tune_config is None:
        if more is not None:  # a Ray client (ray://) driver holds the tuner remotely
            raise ConfigError(f"--more {more}: not available through a Ray client (ray://) address; "
                              f"run the driver on the cluster (--address auto)")
        return
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator

    from irstdlab.harness.planned_generator import PlannedSearchGenerator  # imports Ray: only here

    searcher = tune_config.search_alg
    while isinstance(searcher, SearchGenerator):  # a tuner.pkl written by an earlier resume
        searcher = searcher.searcher
    if isinstance(searcher, ConcurrencyLimiter):
        searcher = searcher.searcher
    if max_concurrent:  # what tune.run wraps around a plain Searcher (ignored for a SearchGenerator)
        searcher = ConcurrencyLimiter(searcher, max_concurrent=max_concurrent)
    tune_config.search_alg = PlannedSearchGenerator(searcher, planned_trials)
    tune_config.num_samples = planned_trials


__all__ = ["check_options", "continue_plan", "describe", "extended_state"]
