"""The searched parameters' Optuna distributions for `leaderboard importance` and the Optuna plots.

A search writes its space's text to ``<storage>/<search>/irstdlab-search.json`` beside
``<storage>/leaderboard/``, on whatever filesystem the storage is on (a folder, ``s3://…``). When
the selected rows come from one search whose stored space is there, still loads, and holds every row's values, its distributions and ``when:`` conditions are
used; otherwise they are inferred from the column values (``study_frame.infer_specs``), and the
returned description says which, and why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from irstdlab.harness.errors import ConfigError
from irstdlab.leaderboards import storage_uri
from irstdlab.leaderboards.storage_uri import Location
from irstdlab.leaderboards.study_frame import ParamSpec, fits, infer_specs

STATE_FILE = "irstdlab-search.json"  # harness.search.STATE_FILE (not imported: that pulls in Ray)


def param_specs(leaderboard_root: Path | str | Location, df: Any) -> tuple[list[ParamSpec], bool, str]:
    """(specs, whether they come from the stored space, where they came from in words)."""
    searches = sorted({str(s) for s in df["search"].dropna()}) if "search" in df.columns else []
    stored, why = _stored_specs(leaderboard_root, df, searches)
    if stored is not None:
        return stored, True, why
    return infer_specs(df), False, f"inferred from the column values ({why})"


def _stored_specs(root: Path | str | Location, df: Any, searches: list[str]) -> tuple[list[ParamSpec] | None, str]:
    from irstdlab.harness import space_loader

    if len(searches) != 1:
        return None, f"the rows come from {len(searches)} searches; --search S uses one search's stored space"
    state_path = storage_uri.resolve(root).parent.join(searches[0], STATE_FILE)
    try:
        if not storage_uri.is_file(state_path):
            return None, f"no stored space at {state_path}"
        state = json.loads(storage_uri.read_bytes(state_path).decode("utf-8"))
        text = state["space_text"]
        folder = Path(state["space_folder"]) if state.get("space_folder") else None
        space = space_loader.parse(text, str(state_path), folder)
    except (OSError, ValueError, KeyError, TypeError, ConfigError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"the stored space in {state_path} does not load: {reason[:200]}"
    hashes = {str(h) for h in df["space_hash"].dropna()} if "space_hash" in df.columns else set()
    if hashes and hashes != {space.space_hash}:
        return None, f"the rows' space_hash differs from the stored space's ({space.space_hash})"
    specs = [ParamSpec(p.path, p.distribution(), p.when) for p in space.parameters]
    problem = fits(df, specs)
    if problem:
        return None, problem
    return specs, f"the stored space of search {searches[0]} ({state_path})"
