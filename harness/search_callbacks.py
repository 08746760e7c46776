"""Driver-side pieces of a search that Ray does not provide.

* :class:`LeaderboardCallback`: a ``ray.tune.Callback`` that turns every trial that ends
  (completed, stopped by ASHA, failed, interrupted) into one leaderboard row, keyed by
  ``(search, trial_id)`` so a resumed trial replaces its row. It also mirrors the trial into an
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
                 study_name: str) -> None:
        self.search = search
        self.space = space
        self.leaderboard_dir = leaderboard_dir
        self.journal_path = journal_path
        self.study_name = study_name
        self.written: dict[str, str] = {}  # trial_id -> status written this session

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
            "note": f"selection={cfg.data.selection} backend={result.get('backend', '?')} objective={metric_name}",
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
            self.mirror_to_journal(trial, status, row)

    # ------------------------------------------------------------------ Optuna journal
    def mirror_to_journal(self, trial: Any, status: str, row: dict[str, Any]) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            study = open_journal_study(self.journal_path, self.study_name, self.space)
            if any(t.user_attrs.get("trial_id") == trial.trial_id for t in study.get_trials(deepcopy=False)):
                return  # already mirrored (a resumed search re-reporting a finished trial)
            params, _ = split_config(trial.config)
            result = trial.last_result or {}
            values = [_finite(result.get(o.metric)) for o in self.space.objectives]
            state = optuna.trial.TrialState.COMPLETE
            if status == "failed" or any(v is None for v in values):
                state, values = optuna.trial.TrialState.FAIL, None
            elif status == "early_stopped":
                state, values = optuna.trial.TrialState.PRUNED, None
            last = row["metrics"].get(self.space.metric)
            intermediate = {row["epochs_completed"]: last} if last is not None and row["epochs_completed"] else {}
            dists = {p.path: p.distribution() for p in self.space.parameters if p.path in params}
            frozen = optuna.trial.create_trial(
                state=state, values=values, params={k: params[k] for k in dists}, distributions=dists,
                user_attrs={"trial_id": trial.trial_id, "status": status, "seed": row["seed"],
                            "epochs_completed": row["epochs_completed"], "config_hash": row["config_hash"]},
                intermediate_values=intermediate,
            )
            study.add_trial(frozen)
        except Exception as exc:
            print(f"irstdlab: warning: Optuna journal not updated for trial {trial.trial_id}: {exc}",
                  file=sys.stderr, flush=True)


def open_journal_study(path: str, study_name: str, space: SearchSpace) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from irstdlab.harness.search_state import drop_cut_off_record

    drop_cut_off_record(Path(path))  # a record cut off by a kill would swallow the next one
    storage = JournalStorage(JournalFileBackend(path))
    directions = ["maximize" if o.mode == "max" else "minimize" for o in space.objectives]
    return optuna.create_study(storage=storage, study_name=study_name, directions=directions, load_if_exists=True)


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
    """ASHA whose rungs survive ``Tuner.restore`` (saved as JSON after every decision)."""

    def __init__(self, state_path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.state_path = state_path
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

    def rung_state(self) -> dict[str, Any]:
        return {"brackets": [[[int(m), {t: float(v) for t, v in rec.items()}] for m, rec in b._rungs]
                             for b in self._brackets],
                "num_stopped": int(self._num_stopped),
                "written_at": dt.datetime.now(dt.timezone.utc).isoformat()}

    def _save(self) -> None:
        _write_json_atomic(Path(self.state_path), self.rung_state())

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._ensure_loaded()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        self._ensure_loaded()
        decision = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self._ensure_loaded()
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._trial_info.pop(trial.trial_id, None)


__all__ = ["FINAL_STATUSES", "LeaderboardCallback", "PersistentASHA", "open_journal_study"]
