"""Driver-side pieces of a search that Ray does not provide.

* :class:`LeaderboardCallback`: a ``ray.tune.Callback`` that turns every trial that ends
  (completed, stopped by ASHA, failed, interrupted) into one leaderboard row, keyed by
  ``(search, trial_id)`` so a resumed trial replaces its row. It also mirrors the trial, live
  (start, every epoch, end; harness/journal.py), into an
  Optuna journal file (``<search dir>/optuna-journal.log``) that ``optuna.load_study`` and
  optuna-dashboard open. The mirror is ours, not the searcher's storage: Ray restores the
  searcher's in-memory study from its own pickle, which keeps seeded suggestions identical
  across interruptions (notes E3); a journal shared with that study would diverge from it.
* :class:`PersistentASHA`: ``ASHAScheduler`` whose rung records are written to a JSON file
  after every decision and read back after ``Tuner.restore`` (Ray drops scheduler state on
  restore: ray#30838).

Only the driver runs these: there is one leaderboard writer per search.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler

from irstdlab.harness.journal import JournalMirror, open_journal_study
from irstdlab.harness.search_trainable import FAILURE_KEY, split_config
from irstdlab.search_spaces.loader import SearchSpace

FINAL_STATUSES = ("completed", "early_stopped", "failed")


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, sort_keys=True))
    os.replace(tmp, path)


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _versions() -> dict[str, str]:
    import ray
    import torch

    from irstdlab.harness.cli import package_version

    return {"irstdlab_version": package_version(), "torch_version": torch.__version__,
            "ray_version": ray.__version__, "python_version": platform.python_version()}


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

    # ------------------------------------------------------------------ Tune hooks
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        result = trial.last_result or {}
        if result.get(FAILURE_KEY):
            self.write(trial, "failed", str(result[FAILURE_KEY]))
            return
        done = int(result.get("epoch") or 0)
        self.write(trial, "completed" if done >= self.space.budget.max_epochs else "early_stopped")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.write(trial, "failed", _error_reason(trial))

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
    def row(self, trial: Any, status: str, reason: str | None = None) -> dict[str, Any]:
        result = dict(trial.last_result or {})
        params, seed = split_config(trial.config)
        cfg = self.space.trial_config(params, seed)
        done = int(result.get("epoch") or 0)
        metric_name = f"val/{cfg.eval.select_metric}"
        metrics = {k: _finite(v) for k, v in result.items()
                   if k.startswith(("val/", "test/", "train/")) and _finite(v) is not None}
        best = {k[len("best/"):]: _finite(v) for k, v in result.items()
                if k.startswith("best/") and _finite(v) is not None}
        total = _finite(result.get("time_total_s")) or 0.0
        ended = _finite(result.get("timestamp"))
        all_params = {p.path: params.get(p.path) for p in self.space.parameters}  # null when inactive
        decisions = rung_decisions(self.asha_state_path, trial.trial_id)
        stopped = [d for d in decisions if d.get("decision") == "stopped"]
        ties = [describe_decision(d, self.space.metric) for d in decisions
                if d.get("decision") in ("tie_continued", "few_continued")]
        checkpoint = result.get("checkpoint_path")
        if checkpoint is None and getattr(trial, "checkpoint", None) is not None:
            checkpoint = trial.checkpoint.path
        row = {
            "search": self.search, "trial_id": trial.trial_id, "config_hash": cfg.config_hash,
            "space_hash": self.space.space_hash, "seed": seed, "status": status, "failure_reason": reason,
            "epochs_completed": done, "max_epochs": self.space.budget.max_epochs,
            "best_epoch": int(result["best_epoch"]) if result.get("best_epoch") else None,
            "params": all_params,
            "params_json": json.dumps({**params, "train.seed": seed}, sort_keys=True, default=str),
            "metrics": metrics, "best": best,
            "model": cfg.model.name, "backbone": cfg.model.backbone, "dataset": cfg.data.dataset,
            "split": "val", "protocol": cfg.data.protocol, "source": "run",
            "note": "; ".join([f"selection={cfg.data.selection} backend={result.get('backend', '?')} "
                               f"objective={metric_name}", *ties]),
            "stop_reason": describe_decision(stopped[-1], self.space.metric)
            if stopped and status == "early_stopped" else None,
            "gmacs": _finite(result.get("gmacs")), "params_m": _finite(result.get("params_m")),
            "wall_time_s": total, "hardware": result.get("hardware"),
            "started_at": None if ended is None else ended - total, "ended_at": ended,
            "checkpoint": None if checkpoint is None else str(checkpoint),
            **_versions(),
        }
        return row

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
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.journal.start(trial.trial_id, *split_config(trial.config))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.journal.report(trial.trial_id, *split_config(trial.config), result)


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
        path = Path(self.state_path)
        if not path.is_file():
            return
        state = json.loads(path.read_text())
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
                "written_at": dt.datetime.now(dt.timezone.utc).isoformat()}

    def _group_bracket(self, group: str) -> Any:
        if group not in self._groups:
            self._groups[group] = copy.deepcopy(self._empty_bracket)
        return self._groups[group]

    def _save(self) -> None:
        _write_json_atomic(Path(self.state_path), self.rung_state())

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
        self._save()
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._ensure_loaded()
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._trial_info.pop(trial.trial_id, None)


def rung_decisions(state_path: str | None, trial_id: str) -> list[dict[str, Any]]:
    """The scheduler's recorded rung decisions for one trial (read back from its state file, which
    the scheduler writes before Tune's callbacks see the same result)."""
    if not state_path:
        return []
    try:
        return list(json.loads(Path(state_path).read_text()).get("decisions", {}).get(trial_id, []))
    except (OSError, ValueError, AttributeError):
        return []


def describe_decision(record: dict[str, Any], metric: str) -> str:
    """One line: why ASHA stopped a trial at a rung, or why it let a tie continue."""
    cutoff = record.get("cutoff")
    cut = "no cut-off yet" if cutoff is None else f"cut-off {cutoff:.4f}"
    if record.get("decision") == "few_continued":
        return (f"rung epoch {record['rung']}: {metric} {record['value']:.4f}, {cut}; only "
                f"{record['compared'] - 1} earlier trial(s) of its group here, too few to judge by, so it continued")
    if record.get("decision") == "tie_continued":
        return (f"rung epoch {record['rung']}: {metric} {record['value']:.4f}, {cut}; all {record['compared']} "
                f"compared values within {record['spread']:.4f} of each other (a tie), so it continued")
    verb = "stopped" if record.get("decision") == "stopped" else "passed"
    return f"{verb} at rung epoch {record['rung']}: {metric} {record['value']:.4f} vs {cut}"


__all__ = ["FINAL_STATUSES", "LeaderboardCallback", "PersistentASHA", "describe_decision", "open_journal_study",
           "rung_decisions"]
