"""Each detector's training recipe lives beside it and reaches the resolved trial config.

Precedence, highest first: --set / searched value > the config file's value > the detector's
registered defaults and recipe > the dataclasses' global defaults.
"""

from __future__ import annotations

import math

import pytest

from irstdlab.harness import config as harness_config
from irstdlab.harness.config import TrialConfig, load_config, load_source
from irstdlab.harness.errors import ConfigError
from irstdlab.harness.reporting import LocalReporter
from irstdlab.harness.trial import run_trial
from irstdlab.models import list_models, model_defaults, register, registry
from irstdlab.models.registry import detector_recipe

from test_registry import _Probe

SHIPPED = ("fcos", "bafenet", "oscar", "retinanet", "fcos_tv", "faster_rcnn", "ssd")
RECIPE_KEYS = ("optim.name", "optim.lr", "optim.grad_clip", "schedule.warmup", "schedule.warmup_iters",
               "schedule.warmup_factor")


def _resolved(cfg: TrialConfig, key: str):
    section, leaf = key.split(".")
    return getattr(getattr(cfg, section), leaf)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_detector_has_a_recipe_and_quickstart_resolves_it(name):
    recipe = detector_recipe(name)
    assert set(RECIPE_KEYS) <= set(recipe), name
    cfg = load_config("quickstart", [f"model.name={name}"])
    for key, value in recipe.items():
        assert _resolved(cfg, key) == value, (name, key)
    for key, value in model_defaults(name).items():
        if key not in load_source("quickstart")[0]["model"]:
            assert getattr(cfg.model, key) == value, (name, key)
    # the hash (and so a leaderboard row) sees the recipe: another recipe is another config
    other = load_config("quickstart", [f"model.name={name}", f"optim.lr={recipe['optim.lr'] * 2}"])
    assert other.config_hash != cfg.config_hash


def test_quickstart_leaves_the_recipe_keys_to_the_detector():
    raw, _ = load_source("quickstart")
    for key in RECIPE_KEYS:
        section, leaf = key.split(".")
        assert leaf not in raw.get(section, {}), key


def test_precedence_set_over_file_over_recipe_over_global_default(tmp_path):
    recipe = detector_recipe("retinanet")
    # --set beats everything
    cfg = load_config("quickstart", ["model.name=retinanet", "optim.lr=0.0123"])
    assert cfg.optim.lr == 0.0123 and cfg.optim.grad_clip == recipe["optim.grad_clip"]
    # the file's explicit value beats the recipe; what the file leaves out comes from the recipe
    path = tmp_path / "mine.yaml"
    path.write_text("model: {name: retinanet}\noptim: {name: adamw, lr: 0.0042}\nschedule: {warmup_iters: 7}\n")
    cfg = load_config(str(path))
    assert (cfg.optim.lr, cfg.schedule.warmup_iters) == (0.0042, 7)
    assert cfg.optim.grad_clip == recipe["optim.grad_clip"] and cfg.schedule.warmup == recipe["schedule.warmup"]
    # the recipe beats the global default (DAdaptAdam at lr 1.0)
    assert TrialConfig().optim.name == "dadapt_adam"
    assert load_config(None).optim.lr == detector_recipe("fcos")["optim.lr"]  # no model section: fcos's
    # a recipe's optimiser values belong to its optimiser: another optimiser gets none of them
    cfg = load_config("quickstart", ["model.name=retinanet", "optim.name=dadapt_adam"])
    assert (cfg.optim.lr, cfg.optim.grad_clip) == (1.0, None)
    assert cfg.schedule.warmup_iters == recipe["schedule.warmup_iters"]  # the schedule part still applies
    # a resolved config round-trips unchanged: every key is explicit by then
    assert TrialConfig.from_json(cfg.canonical_json()).config_hash == cfg.config_hash


def test_paper_presets_set_every_recipe_key_themselves():
    """The paper presets are the released recipes; a detector's recipe must not reach them."""
    for name in [p for p in harness_config.preset_names() if p.startswith("paper_")]:
        raw, _ = load_source(name)
        for key in detector_recipe(raw["model"]["name"]):
            section, leaf = key.split(".")
            assert leaf in raw[section], (name, key)


def test_dry_run_shows_the_recipe(capsys):
    from irstdlab.harness import cli

    assert cli.main(["train", "quickstart", "--set", "model.name=oscar", "--dry-run", "--json"]) in (0, None)
    text = capsys.readouterr().out
    assert f'"lr": {detector_recipe("oscar")["optim.lr"]}' in text


@pytest.fixture
def unregister():
    names: list[str] = []
    yield names
    for name in names:
        registry._MODELS.pop(name, None)


def test_bad_recipes_fail_at_registration_naming_the_detector(unregister):
    with pytest.raises(ValueError, match=r"register\('r1'\).*'model.lr'"):
        register("r1", recipe={"model.lr": 0.1})
    with pytest.raises(ValueError, match=r"register\('r2'\).*optim.name"):
        register("r2", recipe={"optim.lr": 0.1})
    with pytest.raises(ValueError, match=r"register\('r3'\).*optim.lr.*\[0.1\]"):
        register("r3", recipe={"optim.name": "adamw", "optim.lr": [0.1]})
    assert not {"r1", "r2", "r3"} & set(list_models())
    # the values are checked against the harness's dataclasses
    register("r4", recipe={"optim.name": "adamw", "optim.lr": -1.0})(_Probe)
    unregister.append("r4")
    with pytest.raises(ValueError, match=r"register\('r4'\): recipe optim.lr: must be > 0"):
        harness_config.check_detector_recipes()
    registry._MODELS.pop("r4")
    register("r5", recipe={"schedule.warmup_iter": 5})(_Probe)
    unregister.append("r5")
    with pytest.raises(ValueError, match=r"register\('r5'\): recipe schedule.warmup_iter: unknown key"):
        harness_config.check_detector_recipes()


def test_a_recipe_value_the_config_overrides_badly_is_still_the_configs_error():
    with pytest.raises(ConfigError, match="optim.lr"):
        load_config("quickstart", ["model.name=retinanet", "optim.lr=-1"])


# --- OSCAR did not learn at quickstart's old shared recipe (AdamW 3e-3, no clip, NoCo weight 1000):
# at its own recipe the loss falls within a few dozen iterations on a handful of images. (RetinaNet,
# the other one, learns too slowly for a test of this size: its loss is flat over 36 iterations.)
TINY = ["data.synthetic_images=[48, 4, 4]", "schedule.epochs=3", "eval.test_at_end=false", "data.eval_batch_size=4"]


@pytest.mark.usefixtures("one_torch_thread")
def test_oscar_loss_falls_at_its_recipe(tmp_path):
    cfg = load_config("quickstart", ["model.name=oscar", *TINY])
    assert (cfg.optim.lr, cfg.model.noco_loss_weight) == (detector_recipe("oscar")["optim.lr"], 10.0)
    reporter = LocalReporter(tmp_path)
    run_trial(cfg, reporter)
    losses = [m["train/loss"] for m in reporter.history]
    assert len(losses) == 3 and all(map(math.isfinite, losses)), losses
    assert losses[-1] < 0.8 * losses[0], losses
