"""`--filter` is data, never code: whitelisted expressions work, every code-execution route is
refused by name through the real CLI, and a probe command never runs."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

import irstdlab.leaderboards as lb
from irstdlab.leaderboards import query
from irstdlab.leaderboards.errors import LeaderboardError


@pytest.fixture()
def frame() -> pd.DataFrame:
    return pd.DataFrame({
        "model": ["bafenet", "fcos", "bafenet", "oscar"],
        "seed": [0, 1, 2, 3],
        "param.model.name": ["bafenet", "fcos", "bafenet", "oscar"],
        "param.p": [0.25, 0.5, 0.75, None],
        "metric.val/mAP07": [0.30, 0.20, 0.35, 0.10],
        "gmacs": [50.0, 40.0, 55.0, 30.0],
    })


def _ids(df: pd.DataFrame) -> list[int]:
    return df["seed"].tolist()


@pytest.mark.parametrize("expr, expected", [
    ("model == 'bafenet'", [0, 2]),
    ("model != 'bafenet' and seed >= 1", [1, 3]),
    ("not model == 'bafenet'", [1, 3]),
    ("model in ['fcos', 'oscar']", [1, 3]),
    ("model not in ('fcos',)", [0, 2, 3]),
    ("param.model.name == 'fcos' or metric.val/mAP07 > 0.32", [1, 2]),
    ("`metric.val/mAP07` < 0.21", [1, 3]),
    ("0.2 < metric.val/mAP07 <= 0.35", [0, 2]),
    ("metric.val/mAP07 * 100 - gmacs / 10 >= 24", [0, 2]),
    ("-seed > -2", [0, 1]),
    ("param.p > 0.3", [1, 2]),  # a missing value never matches
    ("(model == 'bafenet') & ~(seed == 0)", [2]),
    ("(seed % 2 == 0) | (seed // 3 == 1)", [0, 2, 3]),
])
def test_whitelisted_expressions_select_the_right_rows(frame, expr, expected):
    assert _ids(query.apply_filter(frame, expr)) == expected


@pytest.mark.parametrize("expr, token", [
    ("model.__init__.__globals__['sys'].modules['os'].system('id') == 0", "attribute access"),
    ("().__class__.__bases__[0].__subclasses__()", "attribute access"),
    ("getattr(model, 'upper')() == 'X'", "function call"),
    ("__import__('os').system('id') == 0", "dunder"),
    ("[c for c in ()] == []", "comprehension"),
    ("(lambda: 1)() == 1", "function call"),
    ("(x := 1) == 1", "walrus"),
    ("model[0] == 'b'", "subscript"),
    ("seed ** 99999999 > 0", "Pow"),
    ("__builtins__ == 1", "dunder"),
    ("seed is None", "'is'"),
    ("{'a': 1} == seed", "dict literal"),
    ("f'{seed}' == '1'", "f-string"),
])
def test_code_is_refused_by_name(frame, expr, token):
    with pytest.raises(LeaderboardError, match=r"^--filter: ") as err:
        query.apply_filter(frame, expr)
    assert token in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("expr, message", [
    ("model ==", "not a valid expression"),
    ("param.nope > 1", "unknown column 'param.nope'"),
    ("`no such` > 1", "unknown column 'no such'"),
    ("model == fcos", "unknown name 'fcos'"),
    ("seed + 1", "is not a condition"),
    ("True", "does not depend on any column"),
    ("model > 3", "TypeError"),
])
def test_bad_filters_are_one_line_errors(frame, expr, message):
    with pytest.raises(LeaderboardError, match=r"^--filter: ") as err:
        query.apply_filter(frame, expr)
    assert message in str(err.value)


@pytest.fixture()
def board_dir(tmp_path):
    board = lb.open(tmp_path / "leaderboard")
    for seed, model in enumerate(["bafenet", "fcos"]):
        board.append({"search": "demo", "trial_id": f"t{seed}", "status": "completed", "model": model,
                      "backbone": "resnet18", "dataset": "synthetic", "protocol": "clean", "seed": seed,
                      "started_at": f"2026-01-01T00:0{seed}:00+00:00", "params": {"p": 0.5},
                      "metrics": {"val/mAP07": 0.3 + seed / 10}})
    return tmp_path / "leaderboard"


ATTACKS = [
    "model.__init__.__globals__['sys'].modules['os'].system('touch {probe}') == 0",
    "model.__class__.__mro__[1].__subclasses__() == 0",
    "().__class__.__base__.__subclasses__()[0] == 0",
    "getattr(model, 'system')('touch {probe}') == 0",
    "__import__('os').system('touch {probe}') == 0",
    "@model.__class__ == 1",
]


@pytest.mark.parametrize("command", [["show"], ["compare", "{board}", "--group-by", "model"],
                                     ["export", "--format", "csv"], ["plot", "pareto"]])
@pytest.mark.parametrize("attack", ATTACKS)
def test_cli_refuses_attacks_and_runs_nothing(board_dir, tmp_path, command, attack):
    probe = tmp_path / "PWNED"
    out = ["--out", str(tmp_path / "out")] if command[0] in ("export", "plot") else []
    args = [a.format(board=board_dir) for a in command] if "{board}" in command else [*command, str(board_dir)]
    proc = subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", "leaderboard", *args, *out, "--filter", attack.format(probe=probe)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--filter: " in lines[0] and "Traceback" not in proc.stderr
    assert not probe.exists()
