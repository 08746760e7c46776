"""``PersistentASHA``: Ray's ``ASHAScheduler`` with rungs that survive ``Tuner.restore`` and cuts
that are fair to a small search.

Ray drops scheduler state on restore (ray#30838), so every change to the rungs is appended to a
record file, ``asha_rungs.jsonl`` (a local path or a storage URI, through
``harness/search_storage.py``), before Tune acts on the decision, and replayed on the first call
after a restore. One JSON object per line:

* ``{"trial": id, "rungs": [[bracket, milestone, value], ...], "decision": {...}, "num_stopped": n}``:
  what one result changed. ``bracket`` is the index of Ray's bracket, or the name of a
  ``stop_within`` group; ``decision`` is the rung decision (``rows.describe_decision`` words it).
* ``{"snapshot": state}``: the whole state as ``rung_state()`` gives it. A search started before
  the record file existed kept that in ``asha_state.json``; its first resume copies it here.

An appended line costs the same at the 2,000th trial as at the first; the whole-state file it
replaced was rewritten at every rung, O(trials) each time (``benchmarks/bench_driver.py``). On an
object store, which cannot append, the whole record file is uploaded per change, as before.
A line cut off by a kill is dropped on replay: the decision it held never reached Tune.

This patches ASHA's private ``_brackets``/``_rungs``/``_trial_info`` (Ray 2.x's
``ray/tune/schedulers/async_hyperband.py``), which is why it lives alone in this module: a Ray
upgrade that renames them breaks only this file, and ``tests/test_fair_asha.py`` says so.

The trial to run next is FIFO's choice, looked up among Tune's live trials instead of every trial
of the search (``choose_trial_to_run``), so a controller step does not grow with the search.

``rung_decisions`` gives the recorded decisions of a trial to the live table and the leaderboard
row: from the scheduler itself when it runs in this process (the driver), else from the file.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import weakref
from pathlib import Path
from typing import Any

from irstdlab.harness import search_storage
from irstdlab.harness.search_state import LEGACY_ASHA_FILE, complete_lines
from irstdlab.harness.search_trainable import split_config
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler

# record file -> the scheduler writing it in this process (Tune keeps it alive while it runs)
_live: weakref.WeakValueDictionary[str, PersistentASHA] = weakref.WeakValueDictionary()


class PersistentASHA(ASHAScheduler):
    """ASHA whose rungs survive ``Tuner.restore`` (each change appended to a record file), and that
    does not stop a trial on noise.

    Early in training every trial of a small search can sit at the same value (val mAP07 is about 0
    for all of them after one epoch of quickstart), and plain ASHA then cuts at a percentile of
    noise. When all values compared at a rung, the new one included, lie within ``tie_tolerance``
    (in metric units) of each other, the trial continues. Every stop and every such continuation is
    recorded with its rung, value and cut-off, so the live table and the leaderboard row say why.
    """

    def __init__(self, state_path: str, tie_tolerance: float = 0.0, min_compared: int = 1,
                 stop_within: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state_path = state_path
        self.tie_tolerance = float(tie_tolerance)
        self.min_compared = int(min_compared)
        self.stop_within = stop_within
        self.decisions: dict[str, list[dict[str, Any]]] = {}  # trial_id -> rung decisions, in order
        self._empty_bracket = copy.deepcopy(self._brackets[0])  # the template of a group's own rungs
        self._groups: dict[str, Any] = {}  # value of `stop_within` -> that group's bracket
        self._loaded = False  # the copy pickled into tuner.pkl at start has not loaded yet
        self._logged_stopped = 0  # num_stopped as the record file last said
        self._remote_log: list[bytes] = []  # on an object store: the whole file, uploaded per change
        self._arrival: dict[str, int] = {}  # trial_id -> order in which Tune added it (its get_trials order)

    # ------------------------------------------------------------------ the record file
    def _ensure_loaded(self) -> None:
        _live[self.state_path] = self
        if self._loaded:
            return
        self._loaded = True
        try:
            data = search_storage.read_bytes(self.state_path)
        except FileNotFoundError:
            data = self._migrate_legacy_state()
        lines = complete_lines(data)
        for line in lines:
            self._replay(json.loads(line))
        self._logged_stopped = self._num_stopped
        if search_storage.is_remote(self.state_path):
            self._remote_log = lines
        elif len(b"".join(lines)) != len(data):  # the next line must not land on a cut-off one
            with open(self.state_path, "r+b") as f:
                f.truncate(len(b"".join(lines)))

    def _migrate_legacy_state(self) -> bytes:
        """A search started before the record file: its ``asha_state.json`` becomes the first line
        (the old file stays, so nothing written is lost)."""
        legacy = search_storage.join(search_storage.parent(self.state_path), LEGACY_ASHA_FILE)
        try:
            state = json.loads(search_storage.read_bytes(legacy))
        except FileNotFoundError:
            return b""
        data = json.dumps({"snapshot": state}, sort_keys=True).encode() + b"\n"
        search_storage.write_bytes(self.state_path, data)
        return data

    def _replay(self, record: dict[str, Any]) -> None:
        if "snapshot" in record:
            self._restore_snapshot(record["snapshot"])
            return
        trial_id = str(record["trial"])
        for where, milestone, value in record.get("rungs", ()):
            if isinstance(where, str):
                bracket = self._group_bracket(where)
            elif 0 <= int(where) < len(self._brackets):
                bracket = self._brackets[int(where)]
            else:
                continue  # not a bracket of this plan (resume refuses a changed plan before this)
            for m, recorded in bracket._rungs:
                if int(m) == int(milestone):
                    recorded[trial_id] = float(value)
        if "decision" in record:
            self.decisions.setdefault(trial_id, []).append(record["decision"])
        self._num_stopped = int(record.get("num_stopped", self._num_stopped))

    def _restore_snapshot(self, state: dict[str, Any]) -> None:
        def merge(bracket: Any, rungs: list[list[Any]]) -> None:
            saved = {int(m): rec for m, rec in rungs}
            bracket._rungs = [(m, {**recorded, **saved.get(int(m), {})}) for m, recorded in bracket._rungs]

        for bracket, rungs in zip(self._brackets, state["brackets"]):
            merge(bracket, rungs)
        for group, rungs in state.get("groups", {}).items():
            merge(self._group_bracket(group), rungs)
        self._num_stopped = int(state.get("num_stopped", 0))
        self.decisions.update(state.get("decisions", {}))

    def _append(self, line: bytes) -> None:
        if search_storage.is_remote(self.state_path):
            self._remote_log.append(line)
            search_storage.write_bytes(self.state_path, b"".join(self._remote_log))
            return
        path = Path(self.state_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as f:  # one write of one line: O(1) however many trials came before
            f.write(line)

    def _bracket_key(self, bracket: Any) -> int | str:
        for index, candidate in enumerate(self._brackets):
            if candidate is bracket:
                return index
        return next(group for group, candidate in self._groups.items() if candidate is bracket)

    @staticmethod
    def _milestones_of(bracket: Any, trial_id: str) -> set[int]:
        return {int(m) for m, recorded in getattr(bracket, "_rungs", ()) if trial_id in recorded}

    def _record_change(self, trial_id: str, bracket: Any, before: set[int], decision: dict[str, Any] | None) -> None:
        """Append what the last call changed (new rung values, a decision, the stop count), if anything."""
        rungs = []
        if bracket is not None:
            key = self._bracket_key(bracket)
            rungs = [[key, int(m), float(recorded[trial_id])] for m, recorded in bracket._rungs
                     if trial_id in recorded and int(m) not in before]
        if not rungs and decision is None and self._num_stopped == self._logged_stopped:
            return
        line: dict[str, Any] = {"trial": trial_id, "num_stopped": int(self._num_stopped)}
        if rungs:
            line["rungs"] = rungs
        if decision is not None:
            line["decision"] = decision
        self._append(json.dumps(line, sort_keys=True).encode() + b"\n")
        self._logged_stopped = self._num_stopped

    # ------------------------------------------------------------------ state
    @staticmethod
    def _rungs_json(bracket: Any) -> list[list[Any]]:
        return [[int(m), {t: float(v) for t, v in rec.items()}] for m, rec in bracket._rungs]

    def rung_state(self) -> dict[str, Any]:
        """The whole state, as one ``snapshot`` record holds it."""
        return {"brackets": [self._rungs_json(b) for b in self._brackets],
                "groups": {g: self._rungs_json(b) for g, b in self._groups.items()},
                "num_stopped": int(self._num_stopped), "decisions": self.decisions,
                "written_at": dt.datetime.now(dt.UTC).isoformat()}

    def _group_bracket(self, group: str) -> Any:
        if group not in self._groups:
            self._groups[group] = copy.deepcopy(self._empty_bracket)
        return self._groups[group]

    # ------------------------------------------------------------------ Tune's calls
    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._ensure_loaded()
        self._arrival.setdefault(trial.trial_id, len(self._arrival))
        super().on_trial_add(tune_controller, trial)
        if self.stop_within:
            # Detectors differ in the shape of their learning curves (BAFE-Net's segmentation head
            # starts slower than FCOS), so a rung compares a trial only with trials of its own group.
            params, _ = split_config(getattr(trial, "config", {}) or {})
            self._trial_info[trial.trial_id] = self._group_bracket(str(params.get(self.stop_within, "-")))

    def _rung_due(self, trial: Any, result: dict) -> tuple[int, float | None, int] | None:
        """The rung this result is compared at (the bracket's own rule), with its cut-off and the
        number of earlier values before the result is recorded; None when no rung is due or the
        trial is at its last epoch."""
        if self._time_attr not in result or self._metric not in result:
            return None
        if result[self._time_attr] >= self._max_t and self._stop_last_trials:
            return None
        bracket = self._trial_info.get(trial.trial_id)
        if bracket is None:
            return None
        for milestone, recorded in getattr(bracket, "_rungs", ()):
            if result[self._time_attr] >= milestone and trial.trial_id not in recorded:
                return int(milestone), bracket.cutoff(recorded), len(recorded)
        return None

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._ensure_loaded()
        bracket = self._trial_info.get(trial.trial_id)
        before = self._milestones_of(bracket, trial.trial_id)
        due = self._rung_due(trial, result)
        decision = super().on_trial_result(tune_controller, trial, result)
        record: dict[str, Any] | None = None
        if due is not None:
            milestone, cutoff, earlier = due
            assert self._metric_op is not None, "Tune sets the metric before the first result"
            recorded = next(rec for m, rec in self._trial_info[trial.trial_id]._rungs if int(m) == milestone)
            compared = [float(v) for v in recorded.values() if math.isfinite(float(v))]
            spread = max(compared) - min(compared) if compared else 0.0
            value = float(result[self._metric])
            record = {"rung": milestone, "value": value, "compared": len(compared), "spread": spread,
                      "cutoff": None if cutoff is None else float(self._metric_op * cutoff)}
            if decision == self.STOP and spread <= self.tie_tolerance:
                decision = self.CONTINUE  # every compared value is within noise of the others
                self._num_stopped -= 1
                record["decision"] = "tie_continued"
            elif decision == self.STOP and earlier < self.min_compared:
                decision = self.CONTINUE  # too few earlier trials at this rung to judge by
                self._num_stopped -= 1
                record["decision"] = "few_continued"
            else:
                record["decision"] = "stopped" if decision == self.STOP else "continued"
            self.decisions.setdefault(trial.trial_id, []).append(record)
        self._record_change(trial.trial_id, bracket, before, record)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._ensure_loaded()
        bracket = self._trial_info.get(trial.trial_id)
        before = self._milestones_of(bracket, trial.trial_id)
        super().on_trial_complete(tune_controller, trial, result)
        self._record_change(trial.trial_id, bracket, before, None)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._trial_info.pop(trial.trial_id, None)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """FIFO's choice, the first PENDING trial (else the first PAUSED one) in the order Tune
        added them, found among Tune's live trials instead of all of them. ``FIFOScheduler`` scans
        every trial of the search at every controller step: O(trials) per step, the largest part of
        Tune's own driver cost that grew with a 2,000-trial search (``benchmarks/bench_driver.py``).
        A pending trial missed here would still start: Tune starts its pending trials itself after
        asking the scheduler."""
        live_trials = getattr(tune_controller, "get_live_trials", None)
        if live_trials is None:
            return super().choose_trial_to_run(tune_controller)
        live = list(live_trials())
        for status in (Trial.PENDING, Trial.PAUSED):
            candidates = [t for t in live if t.status == status]
            if candidates:
                return min(candidates, key=lambda t: self._arrival.get(t.trial_id, math.inf))
        return None


_parsed_records: dict[str, tuple[int, dict[str, list[dict[str, Any]]]]] = {}  # file -> (bytes parsed, decisions)


def rung_decisions(state_path: str | None, trial_id: str) -> list[dict[str, Any]]:
    """The scheduler's recorded rung decisions for one trial. In the driver they come from the
    scheduler itself, which records a result before Tune's callbacks see it; elsewhere they are read
    from its record file (parsed once per version of the file)."""
    if not state_path:
        return []
    live = _live.get(state_path)
    if live is not None:
        return list(live.decisions.get(trial_id, []))
    try:
        data = search_storage.read_bytes(state_path)
        cached = _parsed_records.get(state_path)
        if cached is None or cached[0] != len(data):  # the file only grows
            decisions: dict[str, list[dict[str, Any]]] = {}
            for line in complete_lines(data):
                record = json.loads(line)
                if "snapshot" in record:
                    decisions.update(record["snapshot"].get("decisions", {}))
                elif "decision" in record:
                    decisions.setdefault(str(record["trial"]), []).append(record["decision"])
            cached = _parsed_records[state_path] = (len(data), decisions)
        return list(cached[1].get(trial_id, []))
    except (OSError, ValueError, AttributeError, KeyError):
        return []


__all__ = ["PersistentASHA", "rung_decisions"]
