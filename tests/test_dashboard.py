"""Issue 13 item 4: the live Optuna journal mirror and `irstdlab dashboard`.

One real tiny search (two quickstart trials of two epochs on synthetic images) writes a real
journal; the tests read it back with Optuna, serve it with the real optuna-dashboard through our
CLI and query its HTTP API. The resume cases drive :class:`JournalMirror` on real journal files.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("optuna_dashboard")

from irstdlab.harness.cli_dashboard import MISSING_EXTRA  # noqa: E402 - after importorskip
from irstdlab.harness.journal import JournalMirror, open_journal_study  # noqa: E402 - after importorskip
from irstdlab.harness.search import JOURNAL_FILE  # noqa: E402 - after importorskip
from irstdlab.harness import space_loader  # noqa: E402 - after importorskip

EPOCHS = 2


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def load(journal: Path) -> optuna.Study:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=None, storage=storage)


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Storage of a finished real search named `quickstart` (2 trials x 2 epochs)."""
    root = tmp_path_factory.mktemp("dashboard")
    done = cli("search", "--num-samples", "2", "--max-epochs", str(EPOCHS), "--set", "data.synthetic_images=[16,8,8]",
               "--num-cpus", "2", "--storage", str(root / "runs"), cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Optuna journal not updated" not in done.stderr
    return root / "runs"


def test_search_mirrors_every_epoch_and_one_final_state(searched: Path) -> None:
    journal = searched / "quickstart" / JOURNAL_FILE
    trials = load(journal).trials
    assert len(trials) == 2
    assert len({t.user_attrs["trial_id"] for t in trials}) == 2  # one Optuna trial per Tune trial
    for t in trials:
        assert t.state == optuna.trial.TrialState.COMPLETE
        assert sorted(t.intermediate_values) == list(range(1, EPOCHS + 1))
        assert t.values == [t.intermediate_values[EPOCHS]]  # the objective of the last epoch
        assert t.user_attrs["status"] == "completed" and t.user_attrs["epochs_completed"] == EPOCHS
        assert set(t.params) >= {"model.name", "optim.lr"} and "seed" in t.user_attrs

    # Live: replaying the journal line by line, each trial was RUNNING with its params before it had
    # any value, and RUNNING with its first epoch's value before it completed.
    lines = journal.read_bytes().splitlines(keepends=True)
    seen: dict[str, set[tuple[str, int]]] = {}
    prefix = journal.with_name("prefix.log")
    for n in range(1, len(lines) + 1):
        prefix.write_bytes(b"".join(lines[:n]))
        for t in load(prefix).trials:
            if t.state == optuna.trial.TrialState.RUNNING:
                assert t.params, "created RUNNING without its sampled parameters"
                seen.setdefault(t.user_attrs["trial_id"], set()).add(("running", len(t.intermediate_values)))
    assert set(seen) == {t.user_attrs["trial_id"] for t in trials}
    for states in seen.values():
        assert ("running", 0) in states and ("running", 1) in states


def test_resumed_mirror_continues_the_same_trial(searched: Path, tmp_path: Path) -> None:
    """A new driver (a resumed search) re-using trial ids finds the existing Optuna trials."""
    space = space_loader.load("quickstart")
    journal = tmp_path / JOURNAL_FILE
    journal.write_bytes((searched / "quickstart" / JOURNAL_FILE).read_bytes())
    study_name = load(journal).study_name
    finished = load(journal).trials[0]
    params = dict(finished.params)

    first = JournalMirror(str(journal), study_name, space)
    first.start("resumed1", params, 3)
    started = next(t for t in load(journal).trials if t.user_attrs["trial_id"] == "resumed1")
    assert (started.state, started.params, started.intermediate_values) == (optuna.trial.TrialState.RUNNING, params, {})
    first.report("resumed1", params, 3, {"epoch": 1, space.metric: 0.25})

    again = JournalMirror(str(journal), study_name, space)  # the driver after the interruption
    again.start("resumed1", params, 3)
    again.report("resumed1", params, 3, {"epoch": 2, space.metric: 0.5})
    again.finish("resumed1", params, 3, "early_stopped", {"epoch": 2, space.metric: 0.5}, {"epochs_completed": 2})
    again.finish("resumed1", params, 3, "completed", {"epoch": 2, space.metric: 0.5}, {"epochs_completed": 2})
    # a finished trial re-reported by a later session stays as it is
    again.start(finished.user_attrs["trial_id"], params, 0)
    again.finish(finished.user_attrs["trial_id"], params, 0, "failed", {}, {})

    trials = load(journal).trials
    assert len(trials) == 3
    resumed = [t for t in trials if t.user_attrs["trial_id"] == "resumed1"]
    assert len(resumed) == 1
    assert resumed[0].state == optuna.trial.TrialState.PRUNED  # the first final state wins
    assert resumed[0].intermediate_values == {1: 0.25, 2: 0.5}
    assert resumed[0].user_attrs["seed"] == 3
    same = next(t for t in trials if t.number == finished.number)
    assert (same.state, same.values, same.intermediate_values) == (finished.state, finished.values,
                                                                   finished.intermediate_values)
    assert open_journal_study(str(journal), study_name, space).trials == trials  # still one study


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def dashboard(searched: Path, tmp_path: Path):
    """`irstdlab dashboard` serving the search; yields (base URL, process)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "irstdlab.harness.cli", "dashboard", "--storage", str(searched),
                             "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/studies", timeout=2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"dashboard did not start: {out}\n{err}")
            time.sleep(0.2)
    try:
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_dashboard_serves_the_study_and_stops(dashboard, searched: Path) -> None:
    url, proc = dashboard
    expected = load(searched / "quickstart" / JOURNAL_FILE)
    summaries = _get(f"{url}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in summaries] == [expected.study_name]
    study = _get(f"{url}/api/studies/{summaries[0]['study_id']}")
    assert study["has_intermediate_values"] is True
    by_number = {t["number"]: t for t in study["trials"]}
    for t in expected.trials:
        got = by_number[t.number]
        assert got["state"] == "Complete"
        assert {(v["step"], v["value"]) for v in got["intermediate_values"]} == set(t.intermediate_values.items())

    start = time.monotonic()
    proc.send_signal(signal.SIGINT)  # Ctrl-C
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert time.monotonic() - start < 10
    assert out.splitlines()[0].startswith(f"optuna-dashboard for search quickstart: {url}/")
    assert "0.0.0.0" not in out + err


def test_missing_optuna_dashboard_is_one_line_hint(searched: Path, tmp_path: Path) -> None:
    # `import optuna_dashboard` fails as when the extra is not installed (a None entry in
    # sys.modules makes the import raise ImportError); our CLI runs unchanged after it.
    block = ("import sys; sys.modules['optuna_dashboard'] = None; from irstdlab.harness.cli import main; "
             f"sys.exit(main(['dashboard', '--storage', {str(searched)!r}]))")
    done = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [MISSING_EXTRA]
    assert done.stdout == ""


def test_name_is_required_when_storage_holds_several_searches(searched: Path, tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    for name in ("alpha", "beta"):
        (storage / name).mkdir(parents=True)
        (storage / name / JOURNAL_FILE).write_bytes((searched / "quickstart" / JOURNAL_FILE).read_bytes())
    done = cli("dashboard", "--storage", str(storage), cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"irstdlab: error: --storage {storage}: give NAME (searches: alpha, beta)"]
    done = cli("dashboard", "gamma", "--storage", str(storage), cwd=tmp_path, timeout=60)
    assert done.returncode == 2 and "gamma" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_taken_port_is_one_line(searched: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = cli("dashboard", "--storage", str(searched), "--port", str(port), cwd=tmp_path, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"irstdlab: error: --port {port}: 127.0.0.1:{port} is already in use; "
                                                "choose another --port"]


def test_journal_of_a_search_on_s3_is_a_local_snapshot(searched: Path, s3_bucket: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # the search's journal, uploaded where an S3 search keeps it: <storage>/<name>/optuna-journal.log
    from irstdlab.harness.cli_dashboard import journal_of
    from irstdlab.harness.errors import ConfigError
    from irstdlab.leaderboards import storage_uri

    monkeypatch.setenv("IRSTDLAB_WORK_DIR", str(tmp_path / "work"))
    journal = searched / "quickstart" / JOURNAL_FILE
    storage_uri.write_bytes(storage_uri.resolve(f"{s3_bucket}/runs/quickstart/{JOURNAL_FILE}"), journal.read_bytes())
    name, local = journal_of(f"{s3_bucket}/runs", None)  # NAME left out: the only search there
    assert name == "quickstart" and local.read_bytes() == journal.read_bytes()
    assert local.is_relative_to(tmp_path / "work")
    assert len(load(local).trials) == 2
    with pytest.raises(ConfigError, match="no Optuna journal"):
        journal_of(f"{s3_bucket}/runs", "other")
