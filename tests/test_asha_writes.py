"""The fair ASHA's record file: one line appended per change of the rungs (a driver of thousands of
trials once rewrote the whole state per result), nothing written when nothing changed, and what it
holds restores, including a search whose state predates the record file."""

from __future__ import annotations

import gc
import json
import os
from dataclasses import dataclass

import pytest

pytest.importorskip("ray")

from irstdlab.harness.asha import PersistentASHA, rung_decisions  # noqa: E402
from irstdlab.harness.search_state import LEGACY_ASHA_FILE  # noqa: E402


@dataclass
class _Trial:
    trial_id: str
    config: dict | None = None


def _scheduler(path) -> PersistentASHA:
    return PersistentASHA(str(path), time_attr="epoch", metric="val/mAP07", mode="max", max_t=8,
                          grace_period=4, reduction_factor=2)


def _records(path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_one_line_is_appended_per_rung_change_and_the_records_restore(tmp_path):
    path = tmp_path / "asha_rungs.jsonl"
    s = _scheduler(path)
    trial = _Trial("t0")
    s.on_trial_add(None, trial)
    for epoch in (1, 2, 3):  # before the first rung (epoch 4): nothing to record
        s.on_trial_result(None, trial, {"epoch": epoch, "val/mAP07": 0.1 * epoch})
    assert not path.exists()
    s.on_trial_result(None, trial, {"epoch": 4, "val/mAP07": 0.4})
    first = path.read_bytes()
    assert _records(path) == [{"trial": "t0", "num_stopped": 0, "rungs": [[0, 4, 0.4]],
                               "decision": s.decisions["t0"][0]}]
    s.on_trial_result(None, trial, {"epoch": 5, "val/mAP07": 0.5})
    assert path.read_bytes() == first  # no rung due: nothing written
    other = _Trial("t1")
    s.on_trial_add(None, other)
    assert s.on_trial_result(None, other, {"epoch": 4, "val/mAP07": 0.1}) == s.STOP
    grown = path.read_bytes()
    assert grown.startswith(first) and grown.count(b"\n") == 2  # appended, not rewritten
    assert _records(path)[-1]["num_stopped"] == 1 and _records(path)[-1]["decision"]["decision"] == "stopped"
    s.on_trial_complete(None, other, {"epoch": 4, "val/mAP07": 0.1})  # no new rung: nothing written
    assert path.read_bytes() == grown
    assert rung_decisions(str(path), "t1")[-1]["decision"] == "stopped"

    restored = _scheduler(path)
    restored.on_trial_add(None, _Trial("t2"))
    assert restored.decisions == s.decisions and restored._num_stopped == 1
    assert restored.rung_state()["brackets"] == s.rung_state()["brackets"]
    assert restored.on_trial_result(None, _Trial("t2"), {"epoch": 4, "val/mAP07": 0.05}) == restored.STOP

    del s, restored  # no scheduler in this process any more: the decisions are read from the file
    gc.collect()
    assert [d["decision"] for d in rung_decisions(str(path), "t1")] == ["stopped"]
    assert [d["decision"] for d in rung_decisions(str(path), "t2")] == ["stopped"]


def test_a_line_cut_off_by_a_kill_is_dropped_before_the_next_append(tmp_path):
    path = tmp_path / "asha_rungs.jsonl"
    s = _scheduler(path)
    for i, value in enumerate([0.5, 0.6]):
        s.on_trial_add(None, _Trial(f"t{i}"))
        s.on_trial_result(None, _Trial(f"t{i}"), {"epoch": 4, "val/mAP07": value})
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])  # the second line lost its end
    restored = _scheduler(path)
    restored.on_trial_add(None, _Trial("t2"))
    assert set(restored.decisions) == {"t0"}  # t1's decision never reached Tune
    assert path.read_bytes() == whole[: whole.index(b"\n") + 1]
    restored.on_trial_result(None, _Trial("t2"), {"epoch": 4, "val/mAP07": 0.7})
    assert [r["trial"] for r in _records(path)] == ["t0", "t2"]


def test_a_search_started_before_the_record_file_resumes_from_its_whole_state(tmp_path):
    old = _scheduler(tmp_path / "unused.jsonl")
    for i, value in enumerate([0.9, 0.8]):
        old.on_trial_add(None, _Trial(f"t{i}"))
        old.on_trial_result(None, _Trial(f"t{i}"), {"epoch": 4, "val/mAP07": value})
    legacy = tmp_path / LEGACY_ASHA_FILE
    legacy.write_text(json.dumps(old.rung_state()))  # what the whole-state writer left
    before = legacy.read_bytes()
    path = tmp_path / "asha_rungs.jsonl"
    resumed = _scheduler(path)
    resumed.on_trial_add(None, _Trial("late"))
    assert resumed.on_trial_result(None, _Trial("late"), {"epoch": 4, "val/mAP07": 0.1}) == resumed.STOP
    assert legacy.read_bytes() == before  # kept as it was
    records = _records(path)
    assert "snapshot" in records[0] and records[1]["trial"] == "late"
    again = _scheduler(path)
    again.on_trial_add(None, _Trial("x"))
    assert set(again.rung_state()["brackets"][0][-1][1]) == {"t0", "t1", "late"}


def test_on_an_object_store_the_record_file_is_uploaded_whole_and_replays(s3_bucket):
    """S3 cannot append: each change uploads the whole file (one PUT), and a driver on another
    machine (nothing remembered in this process) replays it, dropping a cut-off last line."""
    import pyarrow.fs as pafs

    from irstdlab.harness import search_storage

    ref = f"{s3_bucket}/search/asha_rungs.jsonl"
    s = _scheduler(ref)
    for i, value in enumerate([0.9, 0.8, 0.1]):
        s.on_trial_add(None, _Trial(f"t{i}"))
        s.on_trial_result(None, _Trial(f"t{i}"), {"epoch": 4, "val/mAP07": value})
    search_storage.forget(ref)
    fs = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"], region="us-east-1")
    key = ref.removeprefix("s3://")
    with fs.open_input_stream(key) as f:
        stored = f.read()
    assert [json.loads(line)["trial"] for line in stored.splitlines()] == ["t0", "t1", "t2"]
    with fs.open_output_stream(key) as f:
        f.write(stored[:-4])  # the last PUT of another writer cut short
    del s
    gc.collect()
    restored = _scheduler(ref)
    restored.on_trial_add(None, _Trial("t3"))
    assert set(restored.decisions) == {"t0", "t1"}
    restored.on_trial_result(None, _Trial("t3"), {"epoch": 4, "val/mAP07": 0.95})
    search_storage.forget(ref)
    with fs.open_input_stream(key) as f:
        assert [json.loads(line)["trial"] for line in f.read().splitlines()] == ["t0", "t1", "t3"]


@dataclass(eq=False)
class _StatusTrial:
    trial_id: str
    status: str
    config: dict | None = None


class _Controller:
    """What Tune's controller shows a scheduler: every trial in the order added, and the live ones."""

    def __init__(self, trials: list[_StatusTrial]) -> None:
        self.trials = trials

    def get_trials(self) -> list[_StatusTrial]:
        return self.trials

    def get_live_trials(self) -> set[_StatusTrial]:
        return {t for t in self.trials if t.status != "TERMINATED"}


def test_the_trial_to_run_is_fifos_choice_found_among_the_live_trials(tmp_path):
    import random

    from ray.tune.experiment import Trial
    from ray.tune.schedulers import FIFOScheduler

    statuses = [Trial.PENDING, Trial.PAUSED, Trial.RUNNING, Trial.TERMINATED, Trial.ERROR]
    rng = random.Random(0)
    chosen = set()
    for case in range(200):
        scheduler = _scheduler(tmp_path / f"asha_rungs_{case}.jsonl")
        trials = [_StatusTrial(f"t{i}", rng.choice(statuses)) for i in range(rng.randint(0, 30))]
        for trial in trials:
            scheduler.on_trial_add(None, trial)
        controller = _Controller(trials)
        expected = FIFOScheduler().choose_trial_to_run(controller)
        assert scheduler.choose_trial_to_run(controller) is expected
        chosen.add(None if expected is None else expected.status)
    assert chosen == {Trial.PENDING, Trial.PAUSED, None}  # every branch was exercised
