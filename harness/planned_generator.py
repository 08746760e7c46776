"""Ray's ``SearchGenerator`` whose restored trial count is raised to the search's stored plan
(``harness/search_extend.py`` explains why). Its own module because defining it imports Ray, and
``harness/search_extend.py`` is read before Ray starts; top-level so that Tune can pickle it."""

from __future__ import annotations

from typing import Any

from ray.tune.search import SearchGenerator


class PlannedSearchGenerator(SearchGenerator):
    """After Tune restores the generator's state, ``total_samples`` is at least ``planned_trials``."""

    def __init__(self, searcher: Any, planned_trials: int) -> None:
        super().__init__(searcher)
        self.planned_trials = planned_trials

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        if self._total_samples < self.planned_trials:
            self._total_samples = self.planned_trials
            self._finished = False


__all__ = ["PlannedSearchGenerator"]
