"""`leaderboard importance` and the Optuna plot kinds on real Parquet leaderboards with known structure.

The rows are hand-made so that the answer is known: the metric depends on one parameter only, a
conditional parameter matters only where it is active, seeds differ only by noise.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import irstdlab.leaderboards as lb
from irstdlab.harness.cli import main
from irstdlab.leaderboards import importance
from irstdlab.leaderboards.study_frame import ParamSpec, average_seeds, infer_specs
from irstdlab.harness import space_loader

SPACE = """name: known
base: quickstart
parameters:
  model.name: {choice: [bafenet, fcos]}
  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}
  model.p: {choice: [0.25, 0.5, 0.75], when: {model.name: bafenet}}
  model.head_depth: {int: [1, 3]}
objective: {metric: val/mAP07, mode: max}
budget: {num_samples: 24, max_epochs: 4}
"""


def _row(i: int, seed: int, params: dict, value: float, **extra) -> dict:
    r = {"search": "known", "trial_id": f"t{i}s{seed}", "config_hash": f"c{i}", "status": "completed",
         "model": params.get("model.name", "fcos"), "dataset": "synthetic", "protocol": "clean", "seed": seed,
         "epochs_completed": 4, "max_epochs": 4, "params": params, "metrics": {"val/mAP07": value}}
    r.update(extra)
    return r


def _known_rows(n: int = 24, seeds: int = 2) -> list[dict]:
    """bafenet beats fcos by 0.3; within bafenet, model.p decides (+0.4 per step); lr, head_depth: nothing.
    Seeds add noise that cancels in the seed mean."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        model = ["bafenet", "fcos"][i % 2]
        params = {"model.name": model, "optim.lr": float(10 ** rng.uniform(-4, -2)),
                  "model.p": [0.25, 0.5, 0.75][(i // 2) % 3] if model == "bafenet" else None,
                  "model.head_depth": int(rng.integers(1, 4))}
        value = 0.1 + (0.3 + 0.4 * params["model.p"] if model == "bafenet" else 0.0)
        for seed in range(seeds):
            rows.append(_row(i, seed, params, value + (0.02 if seed % 2 else -0.02)))
    return rows


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    root = tmp_path_factory.mktemp("imp")
    board = lb.open(root / "leaderboard")
    for r in _known_rows():
        board.append({**r, "space_hash": space_loader.parse(SPACE, "known.yaml").space_hash})
    board.append(_row(90, 0, {"model.name": "fcos", "optim.lr": 1e-3, "model.p": None, "model.head_depth": 1},
                      0.99, status="early_stopped", epochs_completed=2, trial_id="stop1"))
    board.append(_row(91, 0, {"model.name": "bafenet", "optim.lr": 2e-3, "model.p": 0.5, "model.head_depth": 2},
                      0.05, status="early_stopped", epochs_completed=2, trial_id="stop2"))
    (root / "known").mkdir()
    state = {"name": "known", "space_source": "known.yaml", "space_text": SPACE, "space_folder": None}
    (root / "known" / "irstdlab-search.json").write_text(json.dumps(state))
    return root


def test_seed_mean_per_configuration():
    import pandas as pd

    df = pd.DataFrame([lb.schema.normalize_row(r) for r in _known_rows(n=4, seeds=3)])
    configs = average_seeds(df, "metric.val/mAP07").frame
    assert len(configs) == 4 and set(configs["n_seeds"]) == {3}
    first = configs[configs["param.model.name"] == "bafenet"].iloc[0]
    assert first["value"] == pytest.approx(0.1 + 0.3 + 0.4 * first["param.model.p"] - 0.02 / 3)  # seeds -, +, -


def test_importance_from_stored_space(storage, capsys):
    assert main(["leaderboard", "importance", "--storage", str(storage), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["distributions"].startswith("the stored space of search known")
    main_sec, cond = out["sections"]
    assert main_sec["subspace"] == "all configurations" and main_sec["fidelity"].startswith("full")
    assert main_sec["configs"] == 24 and main_sec["rows"] == 48  # seeds averaged: one trial per config_hash
    assert main_sec["ranked"][0] == "model.name" and "model.p" not in main_sec["ranked"]
    assert cond["subspace"] == "where model.name in ['bafenet']" and cond["configs"] == 12
    assert cond["ranked"][0] == "model.p" and "model.name" not in cond["ranked"]
    ped = cond["importances"]["ped_anova"]
    assert ped["model.p"] > 0.5 > ped["optim.lr"]
    assert main(["leaderboard", "importance", str(storage / "leaderboard")]) == 0
    text = capsys.readouterr().out
    assert "evaluated only where the condition holds" in text and "1  model.name" in text


def test_inferred_distributions_and_partial_levels(storage, tmp_path, capsys):
    import pandas as pd

    df = lb.open(storage / "leaderboard").read(include_partial=True)
    df = df.assign(partial=False)
    specs = infer_specs(df)
    assert {s.name for s in specs} == {"model.name", "optim.lr", "model.p", "model.head_depth"}
    rep = importance.evaluate(df, None, specs, by_space=False, distributions="inferred")
    labels = [(s.subspace, s.fidelity) for s in rep.sections]
    assert ("where model.p is set", "full (completed rows)") in labels
    assert ("all configurations", "0.50 (early-stopped rows, 2/4 epochs)") in labels
    cond = next(s for s in rep.sections if s.subspace == "where model.p is set" and s.fidelity.startswith("full"))
    assert cond.ranked()[0] == "model.p"
    # partial rows never enter the full-fidelity section, and only with --include-partial at all
    assert main(["leaderboard", "importance", str(storage), "--json"]) == 0
    fids = {s["fidelity"] for s in json.loads(capsys.readouterr().out.splitlines()[-1])["sections"]}
    assert fids == {"full (completed rows)"}
    assert main(["leaderboard", "importance", str(storage), "--json", "--include-partial"]) == 0
    secs = json.loads(capsys.readouterr().out.splitlines()[-1])["sections"]
    partial = [s for s in secs if s["fidelity"].startswith("0.50")]
    assert partial and all(s["rows"] <= 2 for s in partial)
    assert pd.notna(df["fidelity"]).all()


def test_conditional_spec_uses_when_not_nulls():
    import optuna.distributions as d
    import pandas as pd

    rows = [lb.schema.normalize_row(r) for r in _known_rows(n=12, seeds=1)]
    df = pd.DataFrame(rows)
    specs = [ParamSpec("model.name", d.CategoricalDistribution(["bafenet", "fcos"])),
             ParamSpec("model.p", d.CategoricalDistribution([0.25, 0.5, 0.75]), (("model.name", ("bafenet",)),)),
             ParamSpec("optim.lr", d.FloatDistribution(1e-4, 1e-2, log=True))]
    rep = importance.evaluate(df, "val/mAP07", specs, by_space=True, distributions="given")
    assert [s.subspace for s in rep.sections] == ["all configurations", "where model.name in ['bafenet']"]
    assert rep.sections[1].configs == 6 and rep.sections[1].ranked()[0] == "model.p"


def _pixel_std(path) -> float:
    return float(np.asarray(Image.open(path).convert("L"), dtype=float).std())


@pytest.mark.parametrize("kind", ["parallel", "slice", "importance", "contour"])
def test_optuna_plots_are_non_blank_pngs(storage, tmp_path, capsys, kind):
    if kind == "contour":
        pytest.importorskip("scipy", reason="Optuna's contour interpolation needs scipy")
    out = tmp_path / "sub" / f"{kind}.png"
    assert main(["leaderboard", "plot", kind, str(storage), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:4] == b"\x89PNG" and _pixel_std(out) > 20


def test_bad_input_is_one_line(storage, tmp_path, capsys):
    import importlib.util

    cases = [(["leaderboard", "importance", str(storage), "--metric", "val/nope"], "no metric 'val/nope'"),
             (["leaderboard", "plot", "parallel", str(storage), "--filter", "trial_id == 't0s0'"],
              "needs at least 2 configurations")]
    if importlib.util.find_spec("scipy") is None:
        cases.append((["leaderboard", "plot", "contour", str(storage), "--out", str(tmp_path / "c.png")],
                      "pip install scipy"))
    for argv, msg in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("irstdlab: error: ") and msg in err and err.count("\n") == 1, err
