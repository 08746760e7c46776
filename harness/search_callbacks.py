"""The search's leaderboard writer: a ``ray.tune.Callback`` that turns every trial that ends
(completed, stopped by ASHA, failed, interrupted) into one leaderboard row, keyed by
``(search, trial_id)`` so a resumed trial replaces its row. It also mirrors the trial into an
Optuna journal file (``<search dir>/optuna-journal.log``) that ``optuna.load_study`` and
optuna-dashboard open. The mirror is ours, not the searcher's storage: Ray restores the
searcher's in-memory study from its own pickle, which keeps seeded suggestions identical
across interruptions (notes E3); a journal shared with that study would diverge from it.

The row itself is data (``harness/rows.py``); this module only gathers its inputs from Tune's
``Trial`` and writes it. A trial's spec (its resolved config) and facts (cost, hardware, backend,
versions) arrive once, in its first report; the callback keeps them in
``<search dir>/trial_records/<trial_id>.json`` (through ``search_storage``: a
local folder or an object store) so a resumed search still has them for trials that
do not report again. The fair ASHA scheduler is in
``harness/asha.py``; the live Optuna journal (every trial from its start, every epoch, its end) in
``harness/journal.py``.

Only the driver runs this: there is one leaderboard writer per search.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from ray.tune import Callback

from irstdlab.harness import search_storage
from irstdlab.harness.journal import JournalMirror, open_journal_study  # noqa: F401 - re-exported
from irstdlab.harness.asha import rung_decisions
from irstdlab.harness.rows import (FACTS_FIELD, FINAL_STATUSES, SPEC_FIELD, TrialFacts, build_row, end_status,
                                   failure_of)
from irstdlab.harness.trial_spec import TrialSpec, resolve_trial
from irstdlab.harness.search_trainable import split_config
from irstdlab.harness.space_loader import SearchSpace


# Seconds this driver process spent in the writer's hooks, per hook (benchmarks/bench_search.py
# --part overhead reads it): every trial's row, record and journal entries are written here, while
# Tune waits, so this is the search's per-trial cost on the driver.
DRIVER_SECONDS: dict[str, float] = {}


def _timed(hook):
    import functools
    import time

    @functools.wraps(hook)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return hook(*args, **kwargs)
        finally:
            DRIVER_SECONDS[hook.__name__] = DRIVER_SECONDS.get(hook.__name__, 0.0) + time.perf_counter() - started
    return wrapper


class LeaderboardCallback(Callback):
    """One row per ended trial; also the Optuna journal mirror."""

    def __init__(self, search: str, space: SearchSpace, leaderboard_dir: str, journal_path: str,
                 study_name: str, asha_state_path: str | None = None) -> None:
        self.search = search
        self.asha_state_path = asha_state_path
        self.space = space
        self.leaderboard_dir = leaderboard_dir
        self.journal_path = journal_path
        self.study_name = study_name
        self.written: dict[str, str] = {}  # trial_id -> status written this session
        self.journal = JournalMirror(journal_path, study_name, space)
        self.records_dir = search_storage.join(search_storage.parent(journal_path), "trial_records")

    # ------------------------------------------------------------------ Tune hooks
    @_timed
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.journal.report(trial.trial_id, *split_config(trial.config), result)
        if result.get(FACTS_FIELD) and result.get(SPEC_FIELD):  # a session's first report (or a failure)
            record = json.dumps({"facts": result[FACTS_FIELD], "spec": result[SPEC_FIELD]}).encode()
            search_storage.write_bytes(self._record_ref(trial.trial_id), record)  # whole, atomic

    @_timed
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        self.write(trial, end_status(result, self.space.budget.max_epochs), failure_of(result))

    @_timed
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.write(trial, "failed", _error_reason(trial))

    @_timed
    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Trials still unfinished here were interrupted (Ctrl-C, or a stop): record them too."""
        final = self.final_trial_ids()  # rows from earlier sessions of a resumed search count too
        for trial in trials:
            if trial.trial_id not in final and self.written.get(trial.trial_id) not in FINAL_STATUSES \
                    and trial.last_result:
                self.write(trial, "interrupted")

    def final_trial_ids(self) -> set[str]:
        import warnings

        from irstdlab.leaderboards import open as open_leaderboard

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            table = open_leaderboard(self.leaderboard_dir).read_table(search=self.search).table
        if not table.num_rows:
            return set()
        return {t for t, s in zip(table.column("trial_id").to_pylist(), table.column("status").to_pylist())
                if s in FINAL_STATUSES}

    # ------------------------------------------------------------------ rows
    def _record_ref(self, trial_id: str) -> str:
        return search_storage.join(self.records_dir, f"{trial_id}.json")

    def record(self, trial: Any) -> tuple[TrialSpec, TrialFacts | None]:
        """The trial's spec and facts as it reported them; a trial that never reported (it failed
        while starting) is resolved here, from the space's base data, and has no facts."""
        try:
            saved = json.loads(search_storage.read_bytes(self._record_ref(trial.trial_id)))
            return TrialSpec.from_json(saved["spec"]), TrialFacts.from_json(saved["facts"])
        except (OSError, ValueError, TypeError, KeyError):
            params, seed = split_config(trial.config)
            return resolve_trial(self.space, params, seed), None

    def row(self, trial: Any, status: str, reason: str | None = None) -> dict[str, Any]:
        result = dict(trial.last_result or {})
        spec, facts = self.record(trial)
        checkpoint = result.get("checkpoint_path")
        if checkpoint is None and getattr(trial, "checkpoint", None) is not None:
            checkpoint = trial.checkpoint.path
        return build_row(search=self.search, trial_id=trial.trial_id, space=self.space, spec=spec, facts=facts,
                         result=result, status=status, reason=reason,
                         decisions=rung_decisions(self.asha_state_path, trial.trial_id),
                         checkpoint=None if checkpoint is None else str(checkpoint))

    def write(self, trial: Any, status: str, reason: str | None = None) -> None:
        from irstdlab.leaderboards import open as open_leaderboard

        try:
            row = self.row(trial, status, reason)
            open_leaderboard(self.leaderboard_dir).append(row)
        except Exception as exc:  # a row we cannot write must not stop the search
            print(f"irstdlab: warning: leaderboard row of trial {trial.trial_id} not written: {exc}",
                  file=sys.stderr, flush=True)
            return
        self.written[trial.trial_id] = status
        if status in FINAL_STATUSES:
            self.journal.finish(trial.trial_id, *split_config(trial.config), status, trial.last_result or {},
                                {k: row[k] for k in ("epochs_completed", "config_hash")})

    # ------------------------------------------------------------------ Optuna journal (harness/journal.py)
    @_timed
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.journal.start(trial.trial_id, *split_config(trial.config))



def _error_reason(trial: Any) -> str:
    text = ""
    path = getattr(trial, "error_file", None) or ""
    try:
        if path and os.path.exists(path):
            text = Path(path).read_text()
    except OSError:
        pass
    text = text or str(getattr(trial, "error_msg", "") or "error")
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    # The last line of a Python traceback is "Type: message": the useful part.
    return (lines[-1] if lines else "error")[:500]


__all__ = ["DRIVER_SECONDS", "LeaderboardCallback", "open_journal_study"]
