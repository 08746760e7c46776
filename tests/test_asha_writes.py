"""The fair ASHA's state file is written when its rungs change, not on every result (a driver of
thousands of trials rewrote the whole file per result), and what it holds still restores."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

pytest.importorskip("ray")

from irstdlab.harness.asha import PersistentASHA, rung_decisions  # noqa: E402


@dataclass
class _Trial:
    trial_id: str
    config: dict | None = None


def _scheduler(path) -> PersistentASHA:
    return PersistentASHA(str(path), time_attr="epoch", metric="val/mAP07", mode="max", max_t=8,
                          grace_period=4, reduction_factor=2)


def test_state_is_written_at_rungs_only_and_restores(tmp_path):
    path = tmp_path / "asha.json"
    s = _scheduler(path)
    trial = _Trial("t0")
    s.on_trial_add(None, trial)
    for epoch in (1, 2, 3):  # before the first rung (epoch 4): nothing to record
        s.on_trial_result(None, trial, {"epoch": epoch, "val/mAP07": 0.1 * epoch})
    assert not path.exists()
    s.on_trial_result(None, trial, {"epoch": 4, "val/mAP07": 0.4})
    written = path.stat().st_mtime_ns, path.read_bytes()
    s.on_trial_result(None, trial, {"epoch": 5, "val/mAP07": 0.5})
    assert (path.stat().st_mtime_ns, path.read_bytes()) == written
    other = _Trial("t1")
    s.on_trial_add(None, other)
    assert s.on_trial_result(None, other, {"epoch": 4, "val/mAP07": 0.1}) == s.STOP
    assert rung_decisions(str(path), "t1")[-1]["decision"] == "stopped"
    restored = _scheduler(path)
    restored.on_trial_add(None, _Trial("t2"))
    assert restored.decisions == s.decisions and restored._num_stopped == 1
    assert restored.on_trial_result(None, _Trial("t2"), {"epoch": 4, "val/mAP07": 0.05}) == restored.STOP
