"""The Optuna sampler of a search: TPE over a bounded history, so that a suggestion costs the same
at the 2,000th trial as at the 500th.

Optuna's ``TPESampler`` visits every finished trial in Python loops on each suggestion (splitting
them at the ``gamma`` quantile, reading their parameters, building the "above" Parzen estimator),
so the driver's cost per trial grows with the search: 3.8 ms a trial over the first 250 trials of
the quickstart space and 25.7 ms over trials 1751-2000 on the shared 2-core CPU machine, the one
part of the driver that still grew (``benchmarks/bench_driver.py``).

``RecentAndBestTPE`` is Optuna's TPE, unchanged, shown a view of the study: its ``BEST`` best
completed trials and its ``RECENT`` most recent finished trials. Nothing else changes:

* up to ``BEST + RECENT`` finished trials the view is the whole study, so a search of that size
  gets exactly Optuna's suggestions (the seeded previews and tests rely on it);
* the "below" group that TPE samples from is at most 25 trials (Optuna's default ``gamma``), and
  the view always holds the 25 best, so it is the same group as with the whole history;
* only the "above" density is estimated from the recent trials instead of all of them; Optuna's
  default ``weights`` already give the oldest trials the least weight there.

Multi-objective searches (whose "below" group is chosen by non-domination rank) keep the whole
history. The view reads ``Study._get_trials``, the call every Optuna sampler uses to see the
trials; ``tests/test_search_sampler.py`` checks that the view and its suggestions hold.
"""

from __future__ import annotations

import bisect
import heapq
from typing import Any

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

BEST = 25  # Optuna's default gamma caps the "below" group at 25 trials
RECENT = 500


def _number(trial: FrozenTrial) -> int:
    return trial.number


class _StudyView:
    """The study as TPE sees it: the best completed trials and the most recent finished ones."""

    def __init__(self, study: Any, sampler: RecentAndBestTPE) -> None:
        self._study = study
        self._sampler = sampler

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states: Any = None, use_cache: bool = False) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return self._sampler.bounded(trials, self._study.direction, states)


class RecentAndBestTPE(optuna.samplers.TPESampler):
    """``TPESampler`` over the best ``best`` completed and the ``recent`` most recent finished trials."""

    def __init__(self, *, best: int = BEST, recent: int = RECENT, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.best, self.recent = int(best), int(recent)
        self._reset_view()

    def _reset_view(self) -> None:
        self._best_heap: list[tuple[float, int, FrozenTrial]] = []  # (score, -number, trial): worst kept on top
        # Per ``states`` filter: the highest trial number scanned and the numbers at or below it
        # that were absent or unfinished then (running trials; failed ones under a state filter).
        # A scan visits only those and the trials above the highest, so it costs O(new trials +
        # open gaps), not O(study): a visit of every finished trial per new trial was the part of
        # the sampler that still grew with the search.
        self._scanned: dict[Any, tuple[int, set[int]]] = {}
        self._settled: set[int] = set()  # numbers of finished trials already offered to the heap
        self._view_key: tuple[Any, int, int] | None = None
        self._view: list[FrozenTrial] = []

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles the searcher: the view is rebuilt, not saved
        state = dict(self.__dict__)
        for key in ("_best_heap", "_scanned", "_settled", "_view_key", "_view"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._reset_view()

    def bounded(self, trials: list[FrozenTrial], direction: StudyDirection, states: Any = None) -> list[FrozenTrial]:
        """``trials`` (in trial-number order, of ``states``) cut to the best and the most recent ones."""
        if len(trials) <= self.best + self.recent:
            return trials
        states_key = None if states is None else tuple(sorted(s.value for s in states))
        key = (states_key, len(trials), trials[-1].number)
        if key != self._view_key:  # TPE asks several times per suggestion: work once per new trial
            sign = 1.0 if direction == StudyDirection.MAXIMIZE else -1.0
            for trial in self._newly_finished(trials, states_key):
                if trial.state != TrialState.COMPLETE or trial.value is None:
                    continue
                # On equal values the earlier trial ranks first, as in TPE's stable sort.
                item = (sign * trial.value, -trial.number, trial)
                if len(self._best_heap) < self.best:
                    heapq.heappush(self._best_heap, item)
                elif item[:2] > self._best_heap[0][:2]:
                    heapq.heapreplace(self._best_heap, item)
            recent = trials[-self.recent:]
            first_recent = recent[0].number
            best = [t for _, _, t in self._best_heap if t.number < first_recent]
            self._view = sorted(best, key=lambda t: t.number) + recent
            self._view_key = key
        return self._view

    def _newly_finished(self, trials: list[FrozenTrial], states_key: Any) -> list[FrozenTrial]:
        """The finished trials of ``trials`` not offered to the heap yet: those filling a gap left
        by an earlier scan of this filter (a trial that finished out of order) and those above it."""
        highest, gaps = self._scanned.get(states_key, (-1, set()))
        found: list[FrozenTrial] = []

        def visit(trial: FrozenTrial) -> None:
            if not trial.state.is_finished():
                gaps.add(trial.number)
            elif trial.number not in self._settled:
                self._settled.add(trial.number)
                found.append(trial)

        for number in sorted(gaps):
            at = bisect.bisect_left(trials, number, key=_number)
            if at < len(trials) and trials[at].number == number and trials[at].state.is_finished():
                gaps.discard(number)
                visit(trials[at])
        start = bisect.bisect_right(trials, highest, key=_number)
        expected = highest + 1
        for trial in trials[start:]:
            gaps.update(range(expected, trial.number))  # absent from this list: not finished yet
            visit(trial)
            expected = trial.number + 1
        self._scanned[states_key] = (max(highest, expected - 1), gaps)
        return found

    def _study_view(self, study: Any) -> Any:
        return study if study._is_multi_objective() else _StudyView(study, self)

    def sample_relative(self, study: Any, trial: FrozenTrial, search_space: dict[str, Any]) -> dict[str, Any]:
        return super().sample_relative(self._study_view(study), trial, search_space)

    def sample_independent(self, study: Any, trial: FrozenTrial, param_name: str, param_distribution: Any) -> Any:
        return super().sample_independent(self._study_view(study), trial, param_name, param_distribution)


def make_sampler(kind: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler of ``sampler: optuna`` (bounded-history TPE) or ``sampler: random``."""
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return RecentAndBestTPE(seed=seed)


__all__ = ["BEST", "RECENT", "RecentAndBestTPE", "make_sampler"]
