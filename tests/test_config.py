"""TrialConfig: presets, overrides, one-line errors naming the key, canonical JSON and hash."""

from __future__ import annotations

import json

import numpy as np
import pytest

from irstdlab.harness.config import TrialConfig, load_config, preset_names
from irstdlab.harness.errors import ConfigError

PRESETS = ("quickstart", "paper_fcos_r50", "paper_bafenet_r18", "paper_bafenet_r50")


def test_every_documented_preset_ships_and_validates():
    assert set(PRESETS) <= set(preset_names())
    for name in PRESETS:
        cfg = load_config(name)
        assert isinstance(cfg, TrialConfig)
        assert TrialConfig.from_json(cfg.canonical_json()).config_hash == cfg.config_hash


def test_paper_presets_follow_the_reference_recipe():
    for name, model, backbone, levels in (("paper_bafenet_r50", "bafenet", "resnet50", 3),
                                          ("paper_bafenet_r18", "bafenet", "resnet18", 3),
                                          ("paper_fcos_r50", "fcos", "resnet50", 5)):
        cfg = load_config(name)
        assert (cfg.model.name, cfg.model.backbone, cfg.model.num_levels) == (model, backbone, levels)
        assert (cfg.data.dataset, cfg.data.protocol, cfg.data.size) == ("densesirst", "reference", 512)
        assert (cfg.data.repeat, cfg.data.batch_size) == (3, 2)
        assert cfg.data.selection == "held_out"  # the reference habit is an explicit opt-in
        assert (cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.decouple) == ("dadapt_adam", 1.0, 0.05, True)
        assert not cfg.optim.norm_decay and not cfg.optim.bias_decay
        s = cfg.schedule
        assert (s.epochs, s.warmup, s.warmup_iters, s.policy, s.milestones, s.gamma) == (20, "constant", 500, "step", (8, 16), 0.1)
        assert s.warmup_factor == pytest.approx(1 / 3)
        assert cfg.model.center_sampling is False and cfg.model.input_norm == "caffe"


def test_run_settings_stay_out_of_the_hash():
    # loader processes and the data cache change how fast a run goes, not what it computes: a row or a
    # checkpoint of the same recipe must match whatever a machine's loader settings were
    base = load_config("quickstart")
    tuned = load_config("quickstart", ["data.num_workers=3", "data.cache=false", "data.cache_dir=/tmp/x"])
    assert tuned.canonical_json() != base.canonical_json()
    assert tuned.config_hash == base.config_hash
    assert load_config("quickstart", ["data.size=256"]).config_hash != base.config_hash


def test_overrides_are_yaml_typed_and_change_the_hash():
    base = load_config("quickstart")
    same = load_config("quickstart", [f"train.seed={base.train.seed}"])
    assert same.config_hash == base.config_hash and same.canonical_json() == base.canonical_json()
    cfg = load_config("quickstart", ["train.seed=7", "model.p=0.25", "data.synthetic_images=[8, 4, 4]",
                                     "train.debug_nan_at_iter=null"])
    assert (cfg.train.seed, cfg.model.p, cfg.data.synthetic_images) == (7, 0.25, (8, 4, 4))
    assert cfg.config_hash != base.config_hash
    assert len(cfg.config_hash) == 12
    parsed = json.loads(cfg.canonical_json())
    assert list(parsed) == sorted(parsed) and parsed["train"]["seed"] == 7


@pytest.mark.parametrize("override, message", [
    ("model.foo=1", "model.foo: unknown key; valid keys are adapter, adapter_hidden,"),
    ("trainer.epochs=3", "trainer: unknown key; valid keys are augment, data, eval, model, optim, schedule, train"),
    ("schedule.epochs=abc", "schedule.epochs: expected an integer, got 'abc'"),
    ("model.p=1.5", "model.p: must be in (0, 1], got 1.5"),
    ("model.adapter_hidden=0", "model.adapter_hidden: must be >= 1, got 0"),
    ("augment.hflip=1.5", "augment.hflip: must be in [0, 1], got 1.5"),
    ("optim.name=adam", "optim.name: 'adam' is not one of 'dadapt_adam', 'adamw', 'sgd'"),
    ("data.size=100", "data.size: must be a multiple of 32"),
    ("data.dataset=densesirst", "data.root: required for dataset 'densesirst'"),
    ("train.max_iters_per_epoch=0", "train.max_iters_per_epoch: must be >= 1 or null"),
    ("schedule.milestones=[16, 8]", "schedule.milestones: must be increasing"),
])
def test_bad_values_give_one_line_errors_naming_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config("quickstart", [override])
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith("preset quickstart with --set: ")
    assert message in text


def test_yaml_files_and_unknown_sources(tmp_path):
    good = tmp_path / "mine.yaml"
    good.write_text("model:\n  name: bafenet\n  backbone: resnet18\nschedule:\n  epochs: 2\n")
    cfg = load_config(str(good))
    assert (cfg.model.name, cfg.schedule.epochs, cfg.data.dataset) == ("bafenet", 2, "synthetic")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  backbone: resnet9\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: model.backbone: 'resnet9' is not one of"):
        load_config(str(bad))
    broken = tmp_path / "broken.yaml"
    broken.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+ not valid YAML"):
        load_config(str(broken))
    with pytest.raises(ConfigError, match=r"missing.yaml: config file not found"):
        load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match=r"no_such_preset: neither a YAML file nor a preset \(presets: .*quickstart"):
        load_config("no_such_preset")
    with pytest.raises(ConfigError, match=r"--set 'epochs': expected key.path=value"):
        load_config("quickstart", ["epochs"])


def test_split_roles_follow_the_selection_mode():
    held_out = load_config("paper_bafenet_r18").data.split_names()
    assert held_out == {"train": "train_v2", "val": "val_v2", "test": "test_v2"}
    reference = load_config("paper_bafenet_r18", ["data.selection=reference"]).data.split_names()
    assert reference == {"train": "trainval_v2", "val": "test_v2", "test": "test_v2"}
    explicit = load_config("paper_bafenet_r18", ["data.val_split=mini_test"]).data.split_names()
    assert explicit["val"] == "mini_test" and explicit["train"] == "train_v2"


# ------------------------------------------------------------------ data section -> datasets
def test_build_datasets_on_densesirst_mini_follows_the_selection(densesirst_root):
    from irstdlab.datasets.build import build_datasets

    base = ["data.root=" + str(densesirst_root), "data.size=128", "augment.bagcp=none"]
    held = build_datasets(load_config("paper_bafenet_r18", base).data, load_config("paper_bafenet_r18", base).augment)
    assert (len(held["train"]) // 3, len(held["val"]), len(held["test"])) == (48, 16, 24)  # repeat 3
    assert not set(held["train"].base.ids) & set(held["test"].base.ids)
    cfg = load_config("paper_bafenet_r18", base + ["data.selection=reference"])
    ref = build_datasets(cfg.data, cfg.augment)
    assert (len(ref["train"]) // 3, len(ref["val"]), len(ref["test"])) == (64, 24, 24)
    assert ref["val"].base.ids == ref["test"].base.ids  # the reference selects on the test split
    sample = ref["val"][0]
    assert sample.size == (128, 128) and sample.meta["protocol"] == "reference"
    # ground truth for evaluation stays in original coordinates, with the reference -1 shift
    raw = ref["val"].base[0]
    np.testing.assert_array_equal(sample.meta["orig_boxes"], raw.boxes)


@pytest.mark.parametrize("recipe", ["paper", "reference"])
def test_bagcp_is_wired_into_training_samples_only(recipe):
    from irstdlab.datasets.build import build_datasets

    cfg = load_config("quickstart", ["data.synthetic_images=[6, 2, 2]", f"augment.bagcp={recipe}", "augment.hflip=0"])
    data = build_datasets(cfg.data, cfg.augment, seed=3)
    pasted = [data["train"][i].num_targets - data["train"].base[i].num_targets for i in range(6)]
    assert sum(pasted) > 0 and min(pasted) >= 0
    again = build_datasets(cfg.data, cfg.augment, seed=3)
    np.testing.assert_array_equal(again["train"][2].image, data["train"][2].image)  # (seed, epoch, index)
    data["train"].set_epoch(1)
    assert not np.array_equal(again["train"][2].image, data["train"][2].image)
    assert data["val"][0].num_targets == data["val"].base[0].num_targets  # evaluation is never augmented


def test_bare_off_in_yaml_means_the_word_for_a_choice_field():
    from irstdlab.harness.config import load_config

    assert load_config("quickstart", ["train.amp=off"]).train.amp == "off"
    with pytest.raises(ConfigError, match=r"train\.amp: True is not one of"):
        load_config("quickstart", ["train.amp=yes"])
