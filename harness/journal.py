"""The live Optuna journal mirror of a search (``<search dir>/optuna-journal.log``).

Every Tune trial becomes one Optuna trial, keyed by the user attribute ``trial_id``:

* when the trial starts it is created as RUNNING with its sampled parameters, their
  distributions and its seed, so optuna-dashboard shows it while it trains;
* every epoch's result adds the objective (the space's primary metric) as the intermediate
  value of step ``epoch``;
* when it ends it gets its final state once: COMPLETE with its objective values, PRUNED (stopped
  early by ASHA) or FAIL.

A resumed search re-uses Tune trial ids, so the mirror first looks the id up in the journal and
continues that Optuna trial (a finished one is left as it is) instead of adding a second one.

The mirror is ours, not the searcher's storage: Ray restores the searcher's in-memory study
from its own pickle, which keeps seeded suggestions identical across interruptions; a journal
shared with that study would diverge from it. Only the driver writes the journal (one writer per
search), and a journal we cannot write never stops the search: it is the dashboard's copy, the
leaderboard keeps every trial.

On storage without POSIX files (``--storage s3://...``) Optuna's file journal is kept in a
driver-local working copy (``search_storage.local_copy_path``) and the whole file is uploaded to
the storage after each update; the first event of a driver session restores it from there, so a
resume on another machine (or after the work folder was deleted) continues the same study.
"""

from __future__ import annotations

import datetime as dt
import math
import sys
from pathlib import Path
from typing import Any, Literal

from irstdlab.harness.space_loader import SearchSpace

# Leaderboard statuses (search_callbacks.FINAL_STATUSES) -> Optuna's final states.
_STATE_OF_STATUS = {"completed": "COMPLETE", "early_stopped": "PRUNED", "failed": "FAIL"}


def open_journal_study(path: str, study_name: str, space: SearchSpace) -> Any:
    """The search's Optuna study in its journal file (created on first use)."""
    return _study_in(_journal_storage(path), study_name, space)


def _journal_storage(path: str) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from irstdlab.harness.search_state import drop_cut_off_record

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    drop_cut_off_record(Path(path))  # a record cut off by a kill would swallow the next one
    return JournalStorage(JournalFileBackend(path))


def _study_in(storage: Any, study_name: str, space: SearchSpace) -> Any:
    import optuna

    directions: list[Literal["maximize", "minimize"]] = ["maximize" if o.mode == "max" else "minimize" for o in space.objectives]
    return optuna.create_study(storage=storage, study_name=study_name, directions=directions, load_if_exists=True)


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


class JournalMirror:
    """Writes one search's trials into its Optuna journal as they start, report and end."""

    def __init__(self, path: str, study_name: str, space: SearchSpace) -> None:
        self.ref = path  # where the journal lives: a local path, or a storage URI
        self.study_name = study_name
        self.space = space
        self._storage: Any = None  # opened on the first event
        self._study_id = -1
        self._optuna_ids: dict[str, int] = {}  # Tune trial_id -> Optuna's storage trial id
        self._restored = False  # the working copy of a remote journal was fetched this session

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into tuner.pkl; an open storage holds locks and file handles.
        return {**self.__dict__, "_storage": None, "_optuna_ids": {}, "_restored": False}

    @property
    def remote(self) -> bool:
        from irstdlab.harness import search_storage

        return search_storage.is_remote(self.ref)

    @property
    def path(self) -> str:
        """The POSIX file Optuna writes: the journal itself, or its driver-local working copy."""
        from irstdlab.harness import search_storage

        return str(search_storage.local_copy_path(self.ref)) if self.remote else self.ref

    def _restore_copy(self) -> None:
        """Once per driver session: the working copy starts as the storage's copy (or empty)."""
        from irstdlab.harness import search_storage

        if getattr(self, "_restored", False) or not self.remote:
            return
        local = Path(self.path)
        if not search_storage.download_file(self.ref, local):
            local.unlink(missing_ok=True)  # a stale copy of an earlier search of the same name
        self._restored = True

    def _upload(self) -> None:
        from irstdlab.harness import search_storage

        if self.remote:
            search_storage.upload_file(Path(self.path), self.ref)

    # ------------------------------------------------------------------ events
    def start(self, trial_id: str, params: dict[str, Any], seed: int | None) -> None:
        self._guarded(trial_id, lambda: self._trial(trial_id, params, seed))

    def report(self, trial_id: str, params: dict[str, Any], seed: int | None, result: dict[str, Any]) -> None:
        value = _finite(result.get(self.space.metric))
        epoch = result.get("epoch")
        if value is None or not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
            return  # a failure report or a result without the objective has nothing to plot

        def record() -> None:
            number, running = self._trial(trial_id, params, seed)
            if running:
                self._storage.set_trial_intermediate_value(number, epoch, value)

        self._guarded(trial_id, record)

    def finish(self, trial_id: str, params: dict[str, Any], seed: int | None, status: str,
               result: dict[str, Any], attrs: dict[str, Any]) -> None:
        """Set the final state of a trial that ended with ``status`` (a final leaderboard status),
        exactly once: a trial the journal already holds as finished is left unchanged."""
        import optuna

        def record() -> None:
            number, running = self._trial(trial_id, params, seed)
            if not running:
                return  # already finished (a resumed search re-reporting an ended trial)
            storage = self._storage
            for key, value in {"status": status, **attrs}.items():
                storage.set_trial_user_attr(number, key, value)
            values = [_finite(result.get(o.metric)) for o in self.space.objectives]
            state = optuna.trial.TrialState[_STATE_OF_STATUS[status]]
            if state == optuna.trial.TrialState.COMPLETE and any(v is None for v in values):
                state = optuna.trial.TrialState.FAIL  # Optuna cannot rank a trial without values
            storage.set_trial_state_values(
                number, state, values if state == optuna.trial.TrialState.COMPLETE else None)

        self._guarded(trial_id, record)

    # ------------------------------------------------------------------ internals
    def _trial(self, trial_id: str, params: dict[str, Any], seed: int | None) -> tuple[int, bool]:
        """Optuna's id of the Tune trial (found in the journal, else created RUNNING) and whether
        it is still running."""
        import optuna

        if self._storage is None:
            self._restore_copy()
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            storage = _journal_storage(self.path)
            _study_in(storage, self.study_name, self.space)
            self._storage, self._study_id = storage, storage.get_study_id_from_name(self.study_name)
            # One pass over what the journal holds (a resumed search's trials); from then on this
            # driver is the journal's only writer, so a Tune trial it has not seen is new. Looking
            # each new trial up in the whole journal cost O(trials) per trial.
            self._optuna_ids = {}
            for frozen in storage.get_all_trials(self._study_id, deepcopy=False):
                if "trial_id" in frozen.user_attrs:  # the first trial of an id is its trial
                    self._optuna_ids.setdefault(str(frozen.user_attrs["trial_id"]),
                                                storage.get_trial_id_from_study_id_trial_number(
                                                    self._study_id, frozen.number))
        storage = self._storage
        number = self._optuna_ids.get(trial_id)
        if number is None:
            dists = {p.path: p.distribution() for p in self.space.parameters if p.path in params}
            template = optuna.trial.FrozenTrial(
                number=-1, state=optuna.trial.TrialState.RUNNING, value=None, values=None,
                datetime_start=dt.datetime.now(), datetime_complete=None,
                params={k: params[k] for k in dists}, distributions=dists,
                user_attrs={"trial_id": trial_id, "seed": seed}, system_attrs={},
                intermediate_values={}, trial_id=-1)
            number = storage.create_new_trial(self._study_id, template_trial=template)
        self._optuna_ids[trial_id] = number
        return number, storage.get_trial(number).state == optuna.trial.TrialState.RUNNING

    def _guarded(self, trial_id: str, action: Any) -> None:
        try:
            action()
            self._upload()
        except Exception as exc:  # noqa: BLE001 - the journal is the dashboard's copy: never stop the search for it
            self._storage = None  # reopen (and re-read the file) on the next event
            print(f"irstdlab: warning: Optuna journal not updated for trial {trial_id}: {exc}",
                  file=sys.stderr, flush=True)


__all__ = ["JournalMirror", "open_journal_study"]
