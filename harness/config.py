"""`TrialConfig`: everything one trial needs, as one validated tree of dataclasses.

Sections: ``data`` and ``augment`` (``irstdlab.datasets.build``), ``model``
(``irstdlab.models.config.ModelConfig``), ``optim`` and ``schedule`` (``harness.optim``),
``train`` and ``eval`` (below). A config comes from a YAML file or a named preset
(``harness/presets/<name>.yaml``) plus ``--set key.path=value`` overrides; every problem is
one ``ConfigError`` naming the dotted key. ``config_hash`` is the hash of the canonical JSON,
so two runs with equal configs share it (run-only things such as paths are not in the tree).
"""

from __future__ import annotations

import dataclasses

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from collections.abc import Sequence

import yaml

from irstdlab.datasets.build import AugmentConfig, DataConfig
from irstdlab.harness import configtree, yamlfile
from irstdlab.harness.errors import ConfigError
from irstdlab.harness.optim import OptimConfig, ScheduleConfig
from irstdlab.models.config import ModelConfig, with_detector_recipe
from irstdlab.models.registry import detector_recipe, list_models
from irstdlab.models.weights import IMAGENET, IMAGENET_WEIGHTS

MAX_SEED = 2**32 - 1  # numpy's and Optuna's seeds are 32-bit; a larger one fails mid-run


@dataclass
class TrainConfig:
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = CUDA when the worker has a GPU
    # autocast for training and evaluation: auto = bf16 on a CUDA device that supports it, else off
    # (CPU too); bf16 / fp16 force it (bf16 autocast also runs on CPU); off = float32 throughout.
    # Post-processing (sigmoid, scores, box decoding, NMS) is float32 in every mode (models/precision.py).
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    channels_last: bool = True  # applied on CUDA only (no gain on CPU)
    max_iters_per_epoch: int | None = None  # budget cap (quick runs, benchmarks); None = the whole loader
    log_every: int = 50  # iterations between loss lines in the worker log (0 = never)
    # Test hook: make the loss non-finite at this global iteration (0-based) to exercise the
    # divergence check. Never set it in a real run.
    debug_nan_at_iter: int | None = None

    def validate(self) -> None:
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed: must be in 0..{MAX_SEED} (2**32 - 1), got {self.seed}")
        if self.max_iters_per_epoch is not None and self.max_iters_per_epoch < 1:
            raise ValueError(f"max_iters_per_epoch: must be >= 1 or null, got {self.max_iters_per_epoch}")
        if self.log_every < 0:
            raise ValueError(f"log_every: must be >= 0, got {self.log_every}")
        if self.debug_nan_at_iter is not None and self.debug_nan_at_iter < 0:
            raise ValueError(f"debug_nan_at_iter: must be >= 0 or null, got {self.debug_nan_at_iter}")


@dataclass
class EvalConfig:
    select_metric: Literal["mAP07", "mAP12", "mAP75", "recall", "mNoCoAP"] = "mAP07"  # on the validation split, higher is better
    mnocoap: bool = False  # also score mNoCoAP (NoCo maps at original resolution); implied by select_metric mNoCoAP
    test_at_end: bool = True  # evaluate the selected checkpoint on the test split after the last epoch
    every: int = 1  # validate every N epochs (the last epoch always)

    @property
    def needs_noco(self) -> bool:
        return self.mnocoap or self.select_metric == "mNoCoAP"

    def validate(self) -> None:
        if self.every < 1:
            raise ValueError(f"every: must be >= 1, got {self.every}")


@dataclass
class TrialConfig:
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> TrialConfig:
        # the detector's defaults and recipe fill only what the tree leaves out (models/config.py)
        data = with_detector_recipe(data)
        try:
            return configtree.from_dict(cls, data)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}" if source else str(exc)) from None

    @classmethod
    def from_json(cls, text: str) -> TrialConfig:
        return cls.from_dict(json.loads(text))

    def to_dict(self) -> dict[str, Any]:
        return configtree.to_dict(self)

    def canonical_json(self) -> str:
        return configtree.canonical_json(self)

    @property
    def config_hash(self) -> str:
        return configtree.config_hash(self)

    @property
    def recipe_hash(self) -> str:
        """``config_hash`` of the same recipe at ``train.seed`` 0: the seeds of one configuration share
        it, so the leaderboard's ``config_hash`` column groups them (a checkpoint keeps the seeded hash)."""
        return configtree.config_hash(dataclasses.replace(self, train=dataclasses.replace(self.train, seed=0)))

    def check_trainable(self, source: str = "") -> None:
        """Refuse what a training run must not start with (``models info`` and profiling may build it).

        Frozen BatchNorm keeps each BN's affine and running statistics as they were loaded; from
        random weights those are weight 1, bias 0, mean 0, variance 1, i.e. an identity, so the
        trunk would train as an unnormalised ResNet.
        """
        model, where = self.model, f"{source}: " if source else ""
        if model.frozen_bn and model.pretrained is None:
            raise ConfigError(f"{where}model.frozen_bn: true needs pretrained weights (with random weights a frozen "
                              f"BatchNorm is an identity); set model.pretrained=imagenet (or a state-dict path), "
                              f"or model.frozen_bn=false to train from scratch")
        if model.pretrained == IMAGENET and model.backbone not in IMAGENET_WEIGHTS:
            raise ConfigError(f"{where}model.pretrained: imagenet: torchvision has no ImageNet weights for "
                              f"{model.backbone}; set model.pretrained=/path/to/state_dict.pth")


def check_detector_recipes() -> None:
    """Every registered recipe's values against the optim/schedule dataclasses (the registry checked
    only their shape, since models cannot import the harness); a bad one names its detector."""
    for name in list_models():
        sections: dict[str, dict[str, Any]] = {}
        for key, value in detector_recipe(name).items():
            section, leaf = key.split(".", 1)
            sections.setdefault(section, {})[leaf] = value
        try:
            configtree.from_dict(TrialConfig, {**sections, "model": {"name": name}})
        except ConfigError as exc:
            raise ValueError(f"register({name!r}): recipe {exc}") from None


check_detector_recipes()  # at import, like the registry's own check of model defaults


def preset_names() -> list[str]:
    folder = resources.files("irstdlab.harness") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yamlfile.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{source}:{where} not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections (data, model, ...), got {type(data).__name__}")
    return data


def load_source(name_or_path: str | None) -> tuple[dict[str, Any], str]:
    """A preset name or a YAML path -> (raw mapping, label used in error messages)."""
    if name_or_path is None:
        return {}, "defaults"
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        return _read_yaml(yamlfile.read_text(path, "config file"), str(path)), str(path)
    names = preset_names()
    if name_or_path not in names:
        raise ConfigError(f"{name_or_path}: neither a YAML file nor a preset (presets: {', '.join(names)})")
    text = (resources.files("irstdlab.harness") / "presets" / f"{name_or_path}.yaml").read_text()
    return _read_yaml(text, f"preset {name_or_path}"), f"preset {name_or_path}"


def load_config(name_or_path: str | None = None, overrides: Sequence[str] = ()) -> TrialConfig:
    """Preset or YAML file, then ``key.path=value`` overrides (YAML-parsed values), validated."""
    raw, source = load_source(name_or_path)
    for text in overrides:
        keys, value = configtree.parse_override(text)
        configtree.set_path(raw, keys, value)
    if overrides:
        source = f"{source} with --set"
    return TrialConfig.from_dict(raw, source)


__all__ = ["EvalConfig", "TrainConfig", "TrialConfig", "load_config", "load_source", "preset_names"]
