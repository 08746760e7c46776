"""Reading a search's own state files back on ``--resume``, with one line per problem.

``irstdlab-search.json`` (the plan: space text, hash, budget, resources) and ``asha_rungs.jsonl``
(the ASHA rungs) are written by ``harness.search`` and ``asha.PersistentASHA``. A
disk that filled up, a copy cut short or a hand edit leaves them truncated or missing keys;
that must not surface as a ``KeyError`` from deep inside Ray. Every problem is a
``ConfigError`` naming the file and saying that this search cannot be resumed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from collections.abc import Sequence

from irstdlab.harness import search_storage
from irstdlab.harness.errors import ConfigError

_NONE = type(None)
# key -> accepted JSON types of irstdlab-search.json
SEARCH_STATE_KEYS: dict[str, tuple[type, ...]] = {
    "name": (str,), "space_source": (str,), "space_text": (str,), "space_folder": (str, _NONE),
    "space_hash": (str,), "study_name": (str,), "planned_configs": (int,), "planned_trials": (int,),
    "resources": (dict,), "scheduler": (str,), "max_concurrent": (int, _NONE),
}
SCHEDULERS = ("asha", "none")
LEGACY_ASHA_FILE = "asha_state.json"  # the ASHA state of searches started before its record file


def has_tune_snapshot(path: str, filesystem: Any = None) -> bool:
    """True when Tune can resume the experiment at ``path``: its ``tuner.pkl`` *and* an experiment
    snapshot (``experiment_state-*.json``). Tune writes ``tuner.pkl`` when ``fit`` starts and the
    first snapshot at its first step, so a driver killed in between leaves a folder that
    ``Tuner.can_restore`` accepts but whose ``fit`` fails; no trial can have run in it."""
    import pyarrow.fs as pafs
    from ray import tune

    if filesystem is None and "://" not in path:
        path = os.path.abspath(path)  # Tune reads a plain path as a URI only when it is absolute
    if not tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        return False
    fs, root = (filesystem, path) if filesystem is not None else pafs.FileSystem.from_uri(path)
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return any(i.base_name.startswith("experiment_state-") and i.base_name.endswith(".json") for i in infos)


def cannot_resume(path: Path | str, problem: str) -> ConfigError:
    return ConfigError(f"{search_storage.shown(str(path))}: {problem}; this search cannot be resumed: start it again under a new --name "
                       f"(or resume with the irstdlab version that wrote it)")


def refuse_plan_changes_on_resume(overrides: Sequence[str], max_epochs: int | None, searcher_seed: int | None,
                                  num_samples: int | None) -> None:
    """``--resume`` continues the stored plan; a flag that would change it would be silently ignored."""
    given = [flag for flag, value in (("--set", overrides), ("--max-epochs", max_epochs),
                                      ("--searcher-seed", searcher_seed), ("--num-samples", num_samples))
             if value not in (None, (), [])]
    if given:
        more = " (to add configurations: --more K)" if given[0] == "--num-samples" else ""
        raise ConfigError(f"{given[0]}: --resume continues the search exactly as it was planned and cannot change "
                          f"it; drop {given[0]}{more}, or start a new search under another --name")


def stored_space_error(path: Path | str, exc: Exception) -> ConfigError:
    """The stored space text (``space_text``) no longer parses or validates."""
    mark = getattr(exc, "problem_mark", None)
    reason = (f"not valid YAML at line {mark.line + 1}: {getattr(exc, 'problem', '')}" if mark is not None
              else str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    return cannot_resume(path, f"its stored search space (space_text) does not load ({reason})")


def _read_json(path: Path | str, what: str) -> Any:
    try:
        text = search_storage.read_bytes(str(path)).decode("utf-8")
    except OSError as exc:
        raise cannot_resume(path, f"cannot read the {what} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise cannot_resume(path, f"the {what} is not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        ended = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        cut = " (the file is truncated)" if ended else ""
        raise cannot_resume(path, f"the {what} is not valid JSON at line {exc.lineno} column {exc.colno}{cut}") from None


def _is(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # JSON true/false are not counts
        return bool in types
    return isinstance(value, types)


def read_search_state(path: Path | str, resource_fields: set[str]) -> dict[str, Any] | None:
    """The validated ``irstdlab-search.json`` at ``path`` (a path or storage URI); None when there is none."""
    if not search_storage.exists(str(path)):
        return None
    state = _read_json(path, "search state")
    if not isinstance(state, dict):
        raise cannot_resume(path, f"the search state is a JSON {type(state).__name__}, not an object")
    missing = [k for k in SEARCH_STATE_KEYS if k not in state]
    if missing:
        raise cannot_resume(path, f"the search state misses key {missing[0]!r}")
    for key, types in SEARCH_STATE_KEYS.items():
        if not _is(state[key], types):
            raise cannot_resume(path, f"{key}: expected {' or '.join(t.__name__ for t in types)}, "
                                      f"got {type(state[key]).__name__}")
    if state["scheduler"] not in SCHEDULERS:
        raise cannot_resume(path, f"scheduler: {state['scheduler']!r} is not one of {', '.join(SCHEDULERS)}")
    if set(state["resources"]) != resource_fields:
        unknown = sorted(set(state["resources"]) ^ resource_fields)
        raise cannot_resume(path, f"resources: key {unknown[0]!r} is missing or unknown")
    if state["planned_trials"] < 1 or state["planned_configs"] < 1:
        raise cannot_resume(path, "planned_trials and planned_configs must be >= 1")
    return state


def complete_lines(data: bytes) -> list[bytes]:
    """The ASHA record file's lines, without a last one cut off mid-write."""
    lines = data.splitlines(keepends=True)
    if lines and not lines[-1].endswith(b"\n"):
        lines.pop()
    return lines


def check_asha_state(path: Path | str) -> None:
    """The ASHA record file (``asha.PersistentASHA``: one JSON object per line, the last one possibly
    cut off by a kill), or, for a search started before it, the whole-state ``asha_state.json``
    beside it."""
    ref = str(path)
    if not search_storage.exists(ref):
        legacy = search_storage.join(search_storage.parent(ref), LEGACY_ASHA_FILE)
        if search_storage.exists(legacy):
            state = _read_json(legacy, "ASHA scheduler state")
            _check_asha_snapshot(legacy, state, "")
        return
    try:
        data = search_storage.read_bytes(ref)
    except OSError as exc:
        raise cannot_resume(path, f"cannot read the ASHA record file ({exc.strerror or exc})") from None
    # a last line cut off mid-write is left out: its decision never reached Tune, and the replay skips it
    for number, line in enumerate(complete_lines(data), start=1):
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            raise cannot_resume(path, f"line {number} of the ASHA record file is not valid JSON") from None
        where = f"line {number}: "
        if not isinstance(record, dict):
            raise cannot_resume(path, f"{where}expected a JSON object")
        if "snapshot" in record:
            _check_asha_snapshot(path, record["snapshot"], where + "snapshot.")
            continue
        if not isinstance(record.get("trial"), str):
            raise cannot_resume(path, f"{where}trial: expected a trial id")
        if not _is(record.get("num_stopped", 0), (int,)):
            raise cannot_resume(path, f"{where}num_stopped: expected an integer")
        if not isinstance(record.get("decision", {}), dict):
            raise cannot_resume(path, f"{where}decision: expected an object")
        rungs = record.get("rungs", [])
        for r, rung in enumerate(rungs if isinstance(rungs, list) else [None]):
            ok = (isinstance(rung, list) and len(rung) == 3 and _is(rung[0], (int, str)) and _is(rung[1], (int,))
                  and _is(rung[2], (int, float)))
            if not ok:
                raise cannot_resume(path, f"{where}rungs[{r}]: expected [bracket, milestone, value]")


def _check_asha_snapshot(path: Path | str, state: Any, where: str) -> None:
    """A whole ASHA state: {brackets: [[[milestone, {trial: value}]]], num_stopped, ...}."""
    if not isinstance(state, dict) or not isinstance(state.get("brackets"), list):
        raise cannot_resume(path, f"{where}the ASHA state misses its 'brackets' list")
    if not _is(state.get("num_stopped", 0), (int,)):
        raise cannot_resume(path, f"{where}num_stopped: expected an integer")
    for b, rungs in enumerate(state["brackets"]):
        if not isinstance(rungs, list):
            raise cannot_resume(path, f"{where}brackets[{b}]: expected a list of rungs")
        for r, rung in enumerate(rungs):
            ok = (isinstance(rung, list) and len(rung) == 2 and _is(rung[0], (int,)) and isinstance(rung[1], dict)
                  and all(_is(v, (int, float)) for v in rung[1].values()))
            if not ok:
                raise cannot_resume(path, f"{where}brackets[{b}][{r}]: expected [milestone, {{trial: value}}]")


def check_journal(path: Path | str) -> None:
    """``optuna-journal.log``: one JSON object per newline-terminated line.

    A cut-off last line (the process was killed mid-write) is fine: Optuna skips it on reading
    and ``drop_cut_off_record`` removes it before the next append. A broken line before it makes
    every read of the study fail; the journal is only the dashboard's copy (the leaderboard
    holds every trial), so the way out is to move it aside."""
    if not search_storage.exists(str(path)):
        return
    try:
        data = search_storage.read_bytes(str(path))
    except OSError as exc:
        raise cannot_resume(path, f"cannot read the Optuna journal ({exc.strerror or exc})") from None
    lines = data.splitlines(keepends=True)
    if lines and not lines[-1].endswith(b"\n"):
        lines.pop()  # cut off mid-write: tolerated (see above)
    for number, line in enumerate(lines, start=1):
        try:
            complete = isinstance(json.loads(line), dict)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            complete = False
        if not complete:
            raise ConfigError(f"{search_storage.shown(str(path))}: line {number} of the Optuna journal is not a JSON record, so Optuna "
                              f"cannot read the study; move the file aside to resume (it is the dashboard's "
                              f"copy: the leaderboard keeps every trial)")


def drop_cut_off_record(path: Path) -> None:
    """Remove a last journal line without its newline, so the next record does not land on it."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with path.open("r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)


__all__ = ["LEGACY_ASHA_FILE", "SEARCH_STATE_KEYS", "cannot_resume", "check_asha_state", "complete_lines", "check_journal", "drop_cut_off_record", "read_search_state", "refuse_plan_changes_on_resume",
           "stored_space_error"]
