"""``PersistentASHA``: Ray's ``ASHAScheduler`` with rungs that survive ``Tuner.restore`` and cuts
that are fair to a small search.

Ray drops scheduler state on restore (ray#30838), so the rung records are written to a JSON file
(a local path or a storage URI, through ``harness/search_storage.py``)
after every decision and read back on the first call after a restore. This patches ASHA's private
``_brackets``/``_rungs``/``_trial_info`` (Ray 2.x's ``ray/tune/schedulers/async_hyperband.py``), which
is why it lives alone in this module: a Ray upgrade that renames them breaks only this file, and
``tests/test_fair_asha.py`` says so.

``rung_decisions`` reads the recorded decisions back for the live table and the leaderboard row
(``rows.describe_decision`` words them).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
from typing import Any

from irstdlab.harness import search_storage
from irstdlab.harness.search_trainable import split_config
from ray.tune.schedulers import ASHAScheduler


def _write_json_atomic(ref: str, data: Any) -> None:
    """A local path or a storage URI (harness/search_storage.py): whole files only."""
    search_storage.write_bytes(ref, json.dumps(data, sort_keys=True).encode())


class PersistentASHA(ASHAScheduler):
    """ASHA whose rungs survive ``Tuner.restore`` (saved as JSON after every decision), and that
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

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        try:
            state = json.loads(search_storage.read_bytes(self.state_path))
        except FileNotFoundError:
            return
        for bracket, rungs in zip(self._brackets, state["brackets"]):
            saved = {int(m): rec for m, rec in rungs}
            bracket._rungs = [(m, {**recorded, **saved.get(int(m), {})}) for m, recorded in bracket._rungs]
        self._num_stopped = int(state.get("num_stopped", 0))
        self.decisions.update(state.get("decisions", {}))
        for group, rungs in state.get("groups", {}).items():
            saved = {int(m): rec for m, rec in rungs}
            bracket = self._group_bracket(group)
            bracket._rungs = [(m, {**recorded, **saved.get(int(m), {})}) for m, recorded in bracket._rungs]

    @staticmethod
    def _rungs_json(bracket: Any) -> list[list[Any]]:
        return [[int(m), {t: float(v) for t, v in rec.items()}] for m, rec in bracket._rungs]

    def rung_state(self) -> dict[str, Any]:
        return {"brackets": [self._rungs_json(b) for b in self._brackets],
                "groups": {g: self._rungs_json(b) for g, b in self._groups.items()},
                "num_stopped": int(self._num_stopped), "decisions": self.decisions,
                "written_at": dt.datetime.now(dt.UTC).isoformat()}

    def _group_bracket(self, group: str) -> Any:
        if group not in self._groups:
            self._groups[group] = copy.deepcopy(self._empty_bracket)
        return self._groups[group]

    def _save(self) -> None:
        _write_json_atomic(self.state_path, self.rung_state())

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._ensure_loaded()
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
        due = self._rung_due(trial, result)
        decision = super().on_trial_result(tune_controller, trial, result)
        if due is not None:
            milestone, cutoff, earlier = due
            assert self._metric_op is not None, "Tune sets the metric before the first result"
            recorded = next(rec for m, rec in self._trial_info[trial.trial_id]._rungs if int(m) == milestone)
            compared = [float(v) for v in recorded.values() if math.isfinite(float(v))]
            spread = max(compared) - min(compared) if compared else 0.0
            value = float(result[self._metric])
            record: dict[str, Any] = {"rung": milestone, "value": value, "compared": len(compared), "spread": spread,
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
        if due is not None or decision == self.STOP:  # the rungs or the stop count changed: O(trials) to write
            self._save()
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._ensure_loaded()
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._trial_info.pop(trial.trial_id, None)


_parsed_state: dict[str, tuple[bytes, Any]] = {}  # state file -> (its bytes, parsed): the driver's reads


def rung_decisions(state_path: str | None, trial_id: str) -> list[dict[str, Any]]:
    """The scheduler's recorded rung decisions for one trial (read back from its state file, which
    the scheduler writes before Tune's callbacks see the same result)."""
    if not state_path:
        return []
    try:
        data = search_storage.read_bytes(state_path)
        cached = _parsed_state.get(state_path)
        if cached is None or cached[0] != data:  # parse once per version of the file, not per call
            cached = _parsed_state[state_path] = (data, json.loads(data))
        return list(cached[1].get("decisions", {}).get(trial_id, []))
    except (OSError, ValueError, AttributeError):
        return []


__all__ = ["PersistentASHA", "rung_decisions"]
