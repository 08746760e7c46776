"""The live progress table of ``irstdlab search``: one line per trial event, on stdout.

Ray Tune's own table is switched off (``verbose=0``); this one shows what a person watching a
search wants: trial, its key parameters, epoch, the objective, status.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from ray.tune import Callback

from irstdlab.harness.asha import rung_decisions
from irstdlab.harness.rows import describe_decision, end_status, failure_of
from irstdlab.harness.search_trainable import split_config


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _fmt_metric(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.4f}"
    return "-"


class ProgressCallback(Callback):
    def __init__(self, metric: str, max_epochs: int, width: int = 60, asha_state: str | None = None) -> None:
        self.metric = metric
        self.asha_state = asha_state
        self.explained: dict[str, int] = {}  # trial_id -> rung decisions already printed
        self.max_epochs = max_epochs
        self.width = width
        self.header_done = False

    def _line(self, trial: Any, status: str, result: dict[str, Any] | None = None) -> None:
        if not self.header_done:
            print(f"{'trial':<18}{'epoch':>7}  {self.metric:>12}  {'status':<14}params", flush=True)
            self.header_done = True
        result = result if result is not None else (trial.last_result or {})
        params, seed = split_config(trial.config)
        text = " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in params.items())
        text += f" seed={seed}" if seed else ""
        if len(text) > self.width:
            text = text[: self.width - 3] + "..."
        epoch = f"{int(result.get('epoch') or 0)}/{self.max_epochs}"
        print(f"{trial.trial_id:<18}{epoch:>7}  {_fmt_metric(result.get(self.metric)):>12}  {status:<14}{text}",
              flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "started", {})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._line(trial, "failed" if failure_of(result) else "running", result)
        self._explain(trial)

    def _explain(self, trial: Any) -> None:
        """Under a trial's line: why ASHA stopped it, or let a tie continue (new decisions only)."""
        decisions = rung_decisions(self.asha_state, trial.trial_id)
        for record in decisions[self.explained.get(trial.trial_id, 0):]:
            if record.get("decision") in ("stopped", "tie_continued", "few_continued"):
                print(f"{'':<18}  ASHA {describe_decision(record, self.metric)}", flush=True)
        self.explained[trial.trial_id] = len(decisions)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, end_status(trial.last_result or {}, self.max_epochs))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "failed")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        print(f"{trial.trial_id:<18} failed; retrying from its last checkpoint", file=sys.stdout, flush=True)


__all__ = ["ProgressCallback"]
