"""The model registry: a detector's defaults live in its entry, and a broken module is an error."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from torch import nn

from irstdlab.harness import cli
from irstdlab.harness.config import TrialConfig
from irstdlab.models import DETECTOR_MODULES, ModelConfig, build, list_models, model_defaults, register, registry
from irstdlab.models.bafenet import BAFEHead
from irstdlab.models.fcos import FCOSHead
from irstdlab.models.oscar import OSCAR_DEFAULTS, OSCAR_LOSS_DEFAULTS, OSCARHead

PROBE = "probe_detector"


class _Probe(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.conv = nn.Conv2d(1, cfg.head_width, 1)


@pytest.fixture
def probe():
    """A throwaway detector registered with defaults of its own; removed afterwards."""
    register(PROBE, "a probe", defaults={"num_levels": 2, "head_width": 16, "norm_groups": 4})(_Probe)
    yield PROBE
    registry._MODELS.pop(PROBE)


def test_registered_defaults_fill_only_the_keys_a_config_leaves_out(probe):
    cfg = ModelConfig.from_dict({"name": probe, "head_width": 32})
    assert (cfg.num_levels, cfg.head_width, cfg.norm_groups) == (2, 32, 4)
    assert cfg.backbone == "resnet50"  # not in the entry: ModelConfig's own default
    model = build({"name": probe})
    assert model.cfg.num_levels == 2 and model.conv.out_channels == 16
    # the harness's trial config reads the same entry (and so hashes the same values)
    trial = TrialConfig.from_dict({"model": {"name": probe}})
    assert (trial.model.num_levels, trial.model.head_width) == (2, 16)


def test_the_shipped_detectors_defaults_come_from_their_entries():
    assert model_defaults("bafenet") == {"num_levels": 3}
    assert model_defaults("faster_rcnn") == {"p2": True, "num_levels": 4}
    assert model_defaults("retinanet") == {"extra_levels_from": "c5"}
    # ODI's head values, and a NoCo weight for dense small images (its paper preset sets ODI's 1000)
    assert model_defaults("oscar") == {**OSCAR_DEFAULTS, **OSCAR_LOSS_DEFAULTS} == {**OSCAR_DEFAULTS, "noco_loss_weight": 10.0}
    assert model_defaults("fcos") == {} and model_defaults("no_such_model") == {}
    assert ModelConfig.from_dict({"name": "bafenet"}).num_levels == 3
    assert ModelConfig.from_dict({"name": "bafenet", "num_levels": 5}).num_levels == 5
    assert ModelConfig.from_dict({"name": "oscar"}).backbone == "resnet18"
    assert set(list_models()) >= {"fcos", "bafenet", "oscar", "retinanet", "fcos_tv", "ssd", "faster_rcnn"}


def test_defaults_naming_an_unknown_field_or_an_invalid_value_fail_at_registration():
    with pytest.raises(ValueError, match=r"register\('typo_model'\).*num_level"):
        register("typo_model", defaults={"num_level": 3})
    with pytest.raises(ValueError, match="model.num_levels"):
        register("bad_value_model", defaults={"num_levels": 9})
    assert "typo_model" not in list_models() and "bad_value_model" not in list_models()


def test_a_detector_module_that_fails_to_import_is_reported(tmp_path, monkeypatch):
    (tmp_path / "broken_detector_mod.py").write_text("raise RuntimeError('half-written detector')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(registry.DetectorImportError, match="broken_detector_mod.*half-written detector"):
        registry.load_detectors(["broken_detector_mod"])
    with pytest.raises(registry.DetectorImportError, match="irstdlab.models.fcoss"):  # a typo in the list
        registry.load_detectors(["irstdlab.models.fcoss"])
    registry.load_detectors(DETECTOR_MODULES)  # the shipped list imports cleanly


def test_a_missing_command_group_is_an_error_not_a_silent_skip(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, "irstdlab.harness.cli_nosuchgroup"))
    with pytest.raises(ModuleNotFoundError, match="cli_nosuchgroup"):
        cli.build_parser()


def _signature_defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}


# head keyword -> ModelConfig field, where the names differ
_FIELD = {"width": "head_width", "depth": "head_depth"}


@pytest.mark.parametrize("head, defaults", [(FCOSHead, {}), (BAFEHead, {}), (OSCARHead, OSCAR_DEFAULTS)])
def test_head_signature_defaults_are_the_detectors_config_defaults(head, defaults):
    """A head built from its signature alone is the detector a bare config builds."""
    config = {f.name: f.default for f in dataclasses.fields(ModelConfig)} | defaults
    args = _signature_defaults(head.__init__)
    assert args, head
    assert {k: config[_FIELD.get(k, k)] for k in args} == args


def test_fcos_head_from_signature_defaults_equals_the_built_one():
    cfg = ModelConfig.from_dict({"name": "fcos", "num_levels": 3})
    built = build(cfg).head
    from_args = FCOSHead(256, built.strides, cfg.level_regress_ranges())
    assert built.regress_ranges == from_args.regress_ranges
    assert sum(p.numel() for p in built.parameters()) == sum(p.numel() for p in from_args.parameters())
