"""ASHA does not stop a trial on noise: when every value compared at a rung is within the tie
tolerance, the trial continues; every decision is recorded with its rung, value and cut-off and
survives a restart through the state file."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

pytest.importorskip("ray")

from irstdlab.harness.asha import PersistentASHA, rung_decisions  # noqa: E402
from irstdlab.harness.rows import describe_decision  # noqa: E402


@dataclass
class _Trial:  # the scheduler reads the id, and the sampled parameters when rungs are grouped
    trial_id: str
    config: dict | None = None


def _scheduler(tmp_path, tol: float) -> PersistentASHA:
    return PersistentASHA(str(tmp_path / "asha_rungs.jsonl"), tie_tolerance=tol, time_attr="epoch",
                          metric="val/mAP07", mode="max", max_t=4, grace_period=1, reduction_factor=2)


def _run(s: PersistentASHA, values: list[float]) -> list[str]:
    trials = [_Trial(f"t{i}") for i in range(len(values))]
    for t in trials:
        s.on_trial_add(None, t)
    return [s.on_trial_result(None, t, {"epoch": 1, "val/mAP07": v}) for t, v in zip(trials, values)]


def test_values_within_tolerance_continue_and_say_why(tmp_path):
    s = _scheduler(tmp_path, 0.01)
    decisions = _run(s, [0.004, 0.006, 0.001, 0.0])  # plain ASHA stops the last two
    assert decisions == [s.CONTINUE] * 4
    last = rung_decisions(str(tmp_path / "asha_rungs.jsonl"), "t3")
    assert last[-1]["decision"] == "tie_continued" and last[-1]["rung"] == 1 and last[-1]["spread"] == 0.006
    assert "a tie" in describe_decision(last[-1], "val/mAP07")


def test_real_differences_still_stop_with_rung_value_and_cutoff(tmp_path):
    s = _scheduler(tmp_path, 0.01)
    decisions = _run(s, [0.30, 0.20, 0.05])
    assert decisions == [s.CONTINUE, s.STOP, s.STOP] and s._num_stopped == 2
    (record,) = rung_decisions(str(tmp_path / "asha_rungs.jsonl"), "t2")
    assert record["decision"] == "stopped" and record["value"] == 0.05
    assert record["cutoff"] == pytest.approx(0.25)
    assert describe_decision(record, "val/mAP07") == "stopped at rung epoch 1: val/mAP07 0.0500 vs cut-off 0.2500"


def test_zero_tolerance_is_plain_asha_and_decisions_survive_a_restart(tmp_path):
    plain = _run(_scheduler(tmp_path, 0.0), [0.004, 0.006, 0.001])
    assert plain[-1] == PersistentASHA.STOP
    restored = _scheduler(tmp_path, 0.0)
    restored.on_trial_add(None, _Trial("t9"))
    assert restored.decisions["t2"][-1]["decision"] == "stopped"


def test_rungs_compare_within_a_group_and_judge_only_after_min_compared(tmp_path):
    s = PersistentASHA(str(tmp_path / "asha_rungs.jsonl"), tie_tolerance=0.0, min_compared=2, stop_within="model.name",
                       time_attr="epoch", metric="val/mAP07", mode="max", max_t=4, grace_period=1,
                       reduction_factor=2)
    runs = [("f1", "fcos", 0.50), ("f2", "fcos", 0.48), ("b1", "bafenet", 0.30), ("b2", "bafenet", 0.25),
            ("b3", "bafenet", 0.20), ("f3", "fcos", 0.40)]
    trials = {tid: _Trial(tid, {"model.name": name, "optim.lr": 0.001}) for tid, name, _ in runs}
    for t in trials.values():
        s.on_trial_add(None, t)
    got = {tid: s.on_trial_result(None, trials[tid], {"epoch": 1, "val/mAP07": v}) for tid, _, v in runs}
    # BAFE-Net's 0.30 and 0.25 are below every FCOS value, but each is compared with BAFE-Net only,
    # and the first two of each detector run on; the third of each is judged against its own kind.
    assert got == {"f1": s.CONTINUE, "f2": s.CONTINUE, "b1": s.CONTINUE, "b2": s.CONTINUE,
                   "b3": s.STOP, "f3": s.STOP}
    state = str(tmp_path / "asha_rungs.jsonl")
    assert rung_decisions(state, "b2")[-1]["decision"] == "few_continued"
    assert rung_decisions(state, "b3")[-1]["cutoff"] == pytest.approx(0.275)
    restored = PersistentASHA(state, min_compared=2, stop_within="model.name", time_attr="epoch",
                              metric="val/mAP07", mode="max", max_t=4, grace_period=1, reduction_factor=2)
    late = _Trial("b4", {"model.name": "bafenet"})
    restored.on_trial_add(None, late)
    assert restored.on_trial_result(None, late, {"epoch": 1, "val/mAP07": 0.29}) == restored.CONTINUE  # > 0.25
