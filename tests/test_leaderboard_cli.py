"""`irstdlab leaderboard ...` end to end on a small store (in-process, through cli.main)."""

from __future__ import annotations

import json

import pytest

import irstdlab.leaderboards as lb
from irstdlab.harness.cli import main


def _row(trial: str, model: str, seed: int, value: float, **extra) -> dict:
    r = {"search": "demo", "trial_id": trial, "status": "completed", "model": model, "backbone": "resnet18",
         "dataset": "densesirst", "protocol": "reference", "seed": seed, "gmacs": 50.0 + seed,
         "params_m": 20.0, "started_at": f"2026-01-01T00:0{seed}:00+00:00",
         "params": {"p": 0.25 * (1 + seed % 2)}, "metrics": {"val/mAP07": value, "test/mAP07": value - 0.01}}
    r.update(extra)
    return r


@pytest.fixture()
def storage(tmp_path):
    board = lb.open(tmp_path / "leaderboard")
    for s in range(4):
        board.append(_row(f"a{s}", "bafenet", s, 0.30 + 0.01 * s))
        board.append(_row(f"b{s}", "fcos", s, 0.20 + 0.01 * s))
    board.append(_row("stopped", "bafenet", 9, 0.9, status="early_stopped", epochs_completed=2, max_epochs=20))
    board.append(_row("c0", "bafenet", 0, 0.99, protocol="clean"))
    return tmp_path


def test_show_text_json_and_filter(storage, capsys):
    assert main(["leaderboard", "show", "--storage", str(storage), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "protocol=clean" in out and "protocol=reference" in out and " stopped " not in out
    ref = out.split("protocol=reference", 1)[1]
    assert ref.index("a3") < ref.index("a2") < ref.index("a1") and "b0" not in ref
    assert main(["leaderboard", "show", str(storage / "leaderboard"), "--json", "--by", "val/mAP07",
                 "--filter", "model == 'fcos' and param.p > 0.3", "--include-partial"]) == 0
    blocks = json.loads(capsys.readouterr().out)
    assert [b["protocol"] for b in blocks] == ["reference"]
    assert [r["trial_id"] for r in blocks[0]["rows"]] == ["b3", "b1"]
    assert main(["leaderboard", "show", str(storage), "--with-paper", "--protocol", "reference", "--top", "50"]) == 0
    out = capsys.readouterr().out
    assert "paper:Table II" in out and "a3" in out


def test_compare_groups_and_flags(storage, capsys):
    assert main(["leaderboard", "compare", "--storage", str(storage), "--metric", "val/mAP07",
                 "--group-by", "model", "--protocol", "reference", "--json"]) == 0
    (block,) = json.loads(capsys.readouterr().out)
    assert [g["group"] for g in block["groups"]] == ["bafenet", "fcos"]
    assert block["groups"][0]["mean"] == pytest.approx(0.315) and block["groups"][0]["seeds"] == 4
    assert block["paired"]["n_pairs"] == 4 and block["paired"]["mean_diff"] == pytest.approx(0.1)
    assert main(["leaderboard", "compare", str(storage), "--group-by", "param.p", "model"]) == 0
    out = capsys.readouterr().out
    assert "p=0.5, model=bafenet" in out and "95% CI" in out


@pytest.mark.parametrize("kind, extra", [("bars", []), ("pareto", ["--with-paper"]),
                                         ("ablation", ["--param", "p", "--metric", "test/mAP07"]),
                                         ("history", [])])
def test_plot_writes_png(storage, tmp_path, capsys, kind, extra):
    out = tmp_path / f"{kind}.png"
    assert main(["leaderboard", "plot", kind, str(storage), "--out", str(out), *extra]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG" and out.stat().st_size > 10_000


def test_export_merge_validate_compact(storage, tmp_path, capsys):
    assert main(["leaderboard", "export", str(storage), "--format", "md", "--protocol", "reference",
                 "--metric", "val/mAP07"]) == 0
    md = capsys.readouterr().out
    assert "| bafenet / resnet18 | 51.500 ± 1.291 | 20.000 ± 0.000 | **0.315 ± 0.013** | 4 |" in md
    other = lb.open(tmp_path / "other")
    other.append(_row("z0", "fcos", 0, 0.1, search="other"))
    bad = other.append(_row("z1", "fcos", 1, 0.1, search="other"))
    bad.write_bytes(bad.read_bytes()[:50])
    dst = tmp_path / "merged"
    assert main(["leaderboard", "merge", str(storage), str(tmp_path / "other"), "--into", str(dst)]) == 0
    out = capsys.readouterr()
    assert "wrote 11 rows" in out.out and str(bad) in out.err
    assert main(["leaderboard", "validate", str(dst)]) == 0
    assert "11 rows" in capsys.readouterr().out
    assert main(["leaderboard", "validate", str(tmp_path / "other")]) == 1
    assert f"corrupt, skipped: {bad}" in capsys.readouterr().out
    assert main(["leaderboard", "compact", "--storage", str(storage)]) == 0
    assert "10 files compacted" in capsys.readouterr().out
    assert len(lb.open(storage).files()) == 1 and len(lb.open(storage).read(include_partial=True)) == 10


def test_errors_are_one_line_exit_2(storage, tmp_path, capsys):
    cases = [
        (["leaderboard", "show", str(storage), "--filter", "param.nope > 1"], "--filter: unknown column"),
        (["leaderboard", "show", str(storage), "--by", "val/nope"], "no metric 'val/nope'"),
        (["leaderboard", "show", str(tmp_path / "empty")], "no leaderboard here"),
        (["leaderboard", "plot", "ablation", str(storage)], "--param: required"),
        (["leaderboard", "plot", "pr", str(storage)], "curve.precision: no stored PR curves"),
        (["leaderboard", "compare", str(storage), "--group-by", "nothing"], "nothing: no such column"),
    ]
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("irstdlab: error: ") and msg in err and err.count("\n") == 1, err
