"""A search trial's resolved config, built once and carried as JSON instead of rebuilt.

``resolve_trial(space, params, seed)`` is the one place a sampled point becomes a validated
``TrialConfig``. The trainable calls it once per trial session, runs the trial from it, and sends
it back to the driver in the first report (``rows.SPEC_FIELD``); the driver keeps it beside the
trial and builds the row from it, so it never re-resolves a trial that reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from irstdlab.harness.config import TrialConfig
from irstdlab.harness.search_space import SearchSpace


@dataclass(frozen=True)
class TrialSpec:
    """One trial as planned: the sampled point, its seed and the config they resolve to."""

    params: dict[str, Any] = field(hash=False)
    seed: int
    config: TrialConfig = field(hash=False)

    @property
    def config_hash(self) -> str:
        return self.config.config_hash

    def to_json(self) -> str:
        return json.dumps({"params": self.params, "seed": self.seed, "config_json": self.config.canonical_json(),
                           "config_hash": self.config_hash}, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> TrialSpec:
        data = json.loads(text)
        return cls(dict(data["params"]), int(data["seed"]), TrialConfig.from_json(data["config_json"]))


def resolve_trial(space: SearchSpace, params: dict[str, Any], seed: int) -> TrialSpec:
    """(space, sampled params, seed) -> the frozen spec of that trial (the space's base is data:
    nothing is read from disk here)."""
    return TrialSpec(dict(params), int(seed), space.trial_config(params, seed))


__all__ = ["TrialSpec", "resolve_trial"]
