"""The search's TPE over a bounded history (harness/search_sampler.py): Optuna's own suggestions
while the study is small, a view of the best and the most recent trials once it is large, and a
search that still finds the optimum."""

from __future__ import annotations

import pickle

import optuna
import pytest
from optuna.trial import TrialState

from irstdlab.harness.search import SearchOptions, build_space
from irstdlab.harness.search_sampler import RecentAndBestTPE, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _run(sampler, n: int, direction: str = "maximize") -> optuna.Study:
    """The quickstart space's define-by-run object, told a deterministic value per point."""
    space = build_space(SearchOptions(space="quickstart"))
    study = optuna.create_study(sampler=sampler, direction=direction)
    for _ in range(n):
        trial = study.ask()
        space.define_by_run()(trial)
        lr = trial.params["optim.lr"]
        study.tell(trial, -abs(lr - 1.5e-3) * 1000 + 0.1 * trial.params["model.head_depth"])
    return study


def test_a_study_within_the_history_gets_optunas_own_suggestions():
    ours, plain = _run(make_sampler("optuna", 7), 40), _run(optuna.samplers.TPESampler(seed=7), 40)
    assert [t.params for t in ours.trials] == [t.params for t in plain.trials]
    assert isinstance(make_sampler("optuna", 7), RecentAndBestTPE)
    assert isinstance(make_sampler("random", 7), optuna.samplers.RandomSampler)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_a_large_study_is_seen_as_its_best_and_its_most_recent_trials(direction):
    sampler = RecentAndBestTPE(best=3, recent=5, seed=0)
    study = optuna.create_study(sampler=sampler, direction=direction)
    values = [0.5, 0.9, 0.1, 0.95, 0.3, 0.2, 0.91, 0.4, 0.6, 0.05, 0.7, 0.33, 0.8, 0.1, 0.2]
    for number, value in enumerate(values):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        if number == 13:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, value)
    finished = study._get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED), use_cache=True)
    view = sampler.bounded(finished, study.direction, (TrialState.COMPLETE, TrialState.PRUNED))
    ranked = sorted((n for n in range(len(values)) if n != 13), key=lambda n: values[n],
                    reverse=direction == "maximize")
    assert [t.number for t in view] == sorted(set(ranked[:3]) | {10, 11, 12, 13, 14})
    assert sampler.bounded(finished, study.direction, (TrialState.COMPLETE, TrialState.PRUNED)) is view  # once per new trial
    # TPE samples from the view, and the sampler survives Ray's pickling of the searcher
    restored = pickle.loads(pickle.dumps(sampler))
    assert restored._view == [] and restored.best == 3
    study.sampler = restored
    trial = study.ask()
    assert 0 <= trial.suggest_float("x", 0, 1) <= 1


def test_a_bounded_history_still_finds_the_optimum():
    study = optuna.create_study(sampler=RecentAndBestTPE(best=5, recent=20, seed=3))
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.3) ** 2, n_trials=120)
    assert study.best_value < 2e-3
    assert abs(study.best_params["x"] - 0.3) < 0.05
    late = [t.value for t in study.trials[-40:]]
    early_random = [t.value for t in study.trials[:10]]  # the random start-up phase
    assert sorted(late)[len(late) // 2] < sorted(early_random)[len(early_random) // 2]  # it still exploits


def _expected_view(listed, best: int, recent: int, maximize: bool):
    """The view by its definition: the ``best`` best completed trials and the ``recent`` last ones."""
    if len(listed) <= best + recent:
        return [t.number for t in listed]
    tail = listed[-recent:]
    complete = [t for t in listed if t.state == TrialState.COMPLETE]
    ranked = sorted(complete, key=lambda t: ((-t.value if maximize else t.value), t.number))[:best]
    return sorted({t.number for t in ranked if t.number < tail[0].number} | {t.number for t in tail})


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_view_follows_trials_that_finish_out_of_order(direction):
    """Trials end in another order than they started (several run at once, one runs long, some
    fail): after every ending, the view the sampler keeps up incrementally is the one defined by the
    whole study, whichever state filter TPE asks with."""
    import random

    rng = random.Random(5)
    sampler = RecentAndBestTPE(best=3, recent=5, seed=0)
    study = optuna.create_study(sampler=sampler, direction=direction)
    running = []
    for _ in range(60):
        while len(running) < 6:
            trial = study.ask()
            trial.suggest_float("x", 0, 1)
            running.append(trial)
        # trial 2 runs until the end; the others end in a random order
        trial = rng.choice([t for t in running if t.number != 2] or running)
        running.remove(trial)
        if rng.random() < 0.1:
            study.tell(trial, state=TrialState.FAIL)
        elif rng.random() < 0.2:
            study.tell(trial, state=TrialState.PRUNED)
        else:
            study.tell(trial, rng.random())
        for states in ((TrialState.COMPLETE, TrialState.PRUNED), None):
            listed = study._get_trials(deepcopy=False, states=states)  # None: running and failed ones too
            view = sampler.bounded(listed, study.direction, states)
            assert [t.number for t in view] == _expected_view(listed, 3, 5, direction == "maximize")
    assert any(t.number == 2 for t in running), "a long trial stayed open through the study"
