"""One ended search trial -> one leaderboard row, as a pure function of data.

What a trial reports, and where the row takes it from:

* every epoch's metrics (``harness/trial_metrics.py`` lists them); the row keeps the last report's
  ``val/*``, ``test/*``, ``train/*`` and ``best/*`` numbers, ``epoch``, ``best_epoch`` and Tune's
  ``time_total_s``/``timestamp``;
* :data:`FACTS_FIELD`: the trial's :class:`TrialFacts` (model cost, hardware, backend, seed,
  versions) as JSON, in the first report of every trainable session and in a failure report; the
  driver keeps them beside the trial, so a metrics dict does not carry them every epoch;
* :data:`SPEC_FIELD`: the trial's ``trial_spec.TrialSpec`` (sampled point, seed, resolved config) as
  JSON, sent with the facts: the driver builds the row from the config the trial ran;
* :data:`FAILURE_FIELD`: present only in a failed trial's last report, with the one-line reason.
  A trial ends this way when retrying cannot help (its loss diverged); Tune then sees a normal end
  and the row records ``failed`` with the reason.

Nothing here imports Ray: ``tests/test_rows.py`` builds rows from plain dicts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from irstdlab.harness.trial_spec import TrialSpec
from irstdlab.harness.search_space import SearchSpace

FACTS_FIELD = "trial_facts"  # JSON of TrialFacts; see the module docstring
SPEC_FIELD = "trial_spec"  # JSON of TrialSpec, beside the facts
FAILURE_FIELD = "trial_failure"  # a failed trial's one-line reason, in its last report only
FINAL_STATUSES = ("completed", "early_stopped", "failed")
COST_METRICS = ("gmacs", "params_m")  # facts that an objective may name (e.g. minimise gmacs)


@dataclass(frozen=True)
class TrialFacts:
    """What is true of a trial for its whole life: recorded once, not per epoch."""

    backend: str
    hardware: str
    seed: int
    gmacs: float | None = None
    params_m: float | None = None
    irstdlab_version: str | None = None
    torch_version: str | None = None
    ray_version: str | None = None
    python_version: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrialFacts:
        data = json.loads(text)
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})

    def cost(self, name: str) -> float | None:
        return {"gmacs": self.gmacs, "params_m": self.params_m}.get(name)


def finite(value: Any) -> float | None:
    """A finite real number as float; None for NaN, inf, bools, strings, missing."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def failure_of(result: Mapping[str, Any]) -> str | None:
    """The failure reason a trial reported, or None."""
    reason = result.get(FAILURE_FIELD)
    return str(reason) if reason else None


def end_status(result: Mapping[str, Any], max_epochs: int) -> str:
    """How a trial that Tune saw end normally ended: failed, completed or early_stopped (by ASHA)."""
    if failure_of(result):
        return "failed"
    return "completed" if int(result.get("epoch") or 0) >= max_epochs else "early_stopped"


def describe_decision(record: Mapping[str, Any], metric: str) -> str:
    """One line: why ASHA stopped a trial at a rung, or why it let a trial continue."""
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


def build_row(*, search: str, trial_id: str, space: SearchSpace, spec: TrialSpec, facts: TrialFacts | None,
              result: Mapping[str, Any], status: str, reason: str | None = None,
              decisions: Sequence[Mapping[str, Any]] = (), checkpoint: str | None = None) -> dict[str, Any]:
    """The leaderboard row of one trial that ended with ``status``.

    ``spec`` is the trial as resolved (sampled point, seed, config), ``facts`` what was measured
    once, ``result`` its last report, ``decisions`` the scheduler's rung records for this trial
    (``asha.rung_decisions``)."""
    cfg, params, seed = spec.config, spec.params, spec.seed
    done = int(result.get("epoch") or 0)
    metrics = {k: finite(v) for k, v in result.items()
               if k.startswith(("val/", "test/", "train/")) and finite(v) is not None}
    best = {k[len("best/"):]: finite(v) for k, v in result.items()
            if k.startswith("best/") and finite(v) is not None}
    total = finite(result.get("time_total_s")) or 0.0
    ended = finite(result.get("timestamp"))
    stopped = [d for d in decisions if d.get("decision") == "stopped"]
    continued = [describe_decision(d, space.metric) for d in decisions
                 if d.get("decision") in ("tie_continued", "few_continued")]
    backend = facts.backend if facts is not None else "?"
    note = f"selection={cfg.data.selection} backend={backend} objective=val/{cfg.eval.select_metric}"
    versions = {k: getattr(facts, k) if facts is not None else None
                for k in ("irstdlab_version", "torch_version", "ray_version", "python_version")}
    return {
        "search": search, "trial_id": trial_id, "config_hash": cfg.recipe_hash,
        "space_hash": space.space_hash, "stage": space.stage, "seed": seed, "status": status, "failure_reason": reason,
        "epochs_completed": done, "max_epochs": space.budget.max_epochs,
        "best_epoch": int(result["best_epoch"]) if result.get("best_epoch") else None,
        "params": {p.path: params.get(p.path) for p in space.parameters},  # null when inactive
        "params_json": json.dumps({**params, "train.seed": seed}, sort_keys=True, default=str),
        "metrics": metrics, "best": best,
        "model": cfg.model.name, "backbone": cfg.model.backbone, "dataset": cfg.data.dataset,
        "split": "val", "protocol": cfg.data.protocol, "source": "run",
        "note": "; ".join([note, *continued]),
        "stop_reason": describe_decision(stopped[-1], space.metric) if stopped and status == "early_stopped" else None,
        "gmacs": None if facts is None else finite(facts.gmacs),
        "params_m": None if facts is None else finite(facts.params_m),
        "wall_time_s": total, "hardware": None if facts is None else facts.hardware,
        "started_at": None if ended is None else ended - total, "ended_at": ended,
        "checkpoint": checkpoint,
        **versions,
    }


__all__ = ["COST_METRICS", "FACTS_FIELD", "FAILURE_FIELD", "FINAL_STATUSES", "SPEC_FIELD", "TrialFacts", "build_row",
           "describe_decision", "end_status", "failure_of", "finite"]
