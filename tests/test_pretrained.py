"""model.pretrained: torchvision's ImageNet weights from the hub cache, the offline error, local
state-dict files, LSKNet, and a trial's refusal of frozen BN on random weights. No network: the
"cached" weights are state dicts of the right shapes written into a temporary TORCH_HOME."""

from __future__ import annotations

import time

import pytest
import torch
import torchvision

from irstdlab.harness.config import load_config
from irstdlab.harness.errors import ConfigError
from irstdlab.harness.reporting import LocalReporter
from irstdlab.harness.trial import run_trial
from irstdlab.models import ModelConfig, build
from irstdlab.models.backbones import ResNetBackbone
from irstdlab.models.weights import IMAGENET_WEIGHTS, imagenet_cache_file

FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth",
         "resnet50": "resnet50-0676ba61.pth", "resnet101": "resnet101-63fe2227.pth"}


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torch hub cache, and downloads that cannot leave the machine: every HTTPS request
    goes to a proxy on a closed local port (refused at once), whatever network this machine has."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "torch"


def fake_imagenet(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A torchvision ResNet state dict with ImageNet's keys and shapes (fc included) and random values."""
    torch.manual_seed(seed)
    net = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_every_supported_resnet_has_torchvisions_file_name(torch_home):
    assert set(IMAGENET_WEIGHTS) == set(FILES)
    for name, file in FILES.items():
        assert imagenet_cache_file(name) == torch_home / "hub" / "checkpoints" / file


@pytest.mark.parametrize("in_channel_mode", ["replicate", "stem"])
def test_imagenet_loads_exactly_the_cached_weights(torch_home, in_channel_mode):
    state = fake_imagenet("resnet18")
    file = torch_home / "hub" / "checkpoints" / FILES["resnet18"]
    file.parent.mkdir(parents=True)
    torch.save(state, file)
    model = build(ModelConfig(name="fcos", backbone="resnet18", pretrained="imagenet", in_channel_mode=in_channel_mode,
                              fpn_channels=32, head_width=32, head_depth=1, norm_groups=8, num_levels=3))
    loaded = model.backbone.state_dict()
    for key, value in loaded.items():
        if key == "conv1.weight" and in_channel_mode == "stem":  # RGB kernels summed for the grey input
            torch.testing.assert_close(value, state[key].sum(dim=1, keepdim=True), rtol=0, atol=0)
        else:
            torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)
    other = ResNetBackbone("resnet18", pretrained=None)
    assert not torch.equal(other.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_a_local_state_dict_path_still_loads(tmp_path):
    state = fake_imagenet("resnet34", seed=3)
    path = tmp_path / "r34.pth"
    torch.save({"state_dict": {k: v for k, v in state.items() if not k.startswith("fc.")}}, path)
    backbone = ResNetBackbone("resnet34", pretrained=str(path))
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("backbone", ["resnet34", "resnet50"])
def test_offline_without_a_cached_file_fails_fast_in_one_line(torch_home, backbone):
    start = time.perf_counter()
    with pytest.raises(ValueError) as info:
        ResNetBackbone(backbone, pretrained="imagenet")
    elapsed = time.perf_counter() - start
    message = str(info.value)
    cache = torch_home / "hub" / "checkpoints"
    assert message.startswith(f"model.pretrained: imagenet: {FILES[backbone]} is not in {cache} and cannot be downloaded")
    assert message.endswith("put it there or set model.pretrained=/path/to/state_dict.pth")
    assert "\n" not in message and elapsed < 30
    assert not cache.exists() or not any(cache.iterdir())  # no partial file left behind


def test_lsknet_takes_a_local_path_only(torch_home):
    with pytest.raises(ValueError, match=r"^model\.pretrained: imagenet: torchvision has no ImageNet weights for lsknet_t; "
                                         r"set model\.pretrained=/path/to/state_dict\.pth$"):
        build(ModelConfig(name="fcos", backbone="lsknet_t", pretrained="imagenet", frozen_bn=False))
    cfg = load_config("quickstart", ["model.backbone=lsknet_t", "model.pretrained=imagenet"])
    with pytest.raises(ConfigError, match="torchvision has no ImageNet weights for lsknet_t"):
        cfg.check_trainable()


def test_a_trial_refuses_frozen_bn_on_random_weights(tmp_path):
    cfg = load_config("quickstart", ["model.frozen_bn=true"])
    with pytest.raises(ConfigError) as info:
        run_trial(cfg, LocalReporter(tmp_path))
    message = str(info.value)
    assert message.startswith("model.frozen_bn: true needs pretrained weights (with random weights a frozen BatchNorm "
                              "is an identity)")
    assert "\n" not in message
    assert not any(tmp_path.iterdir()) or not any((tmp_path / "checkpoints").glob("epoch_*"))
    load_config("quickstart", ["model.frozen_bn=true", "model.pretrained=imagenet"]).check_trainable()
    load_config("quickstart").check_trainable()
    # building (what `models info` and profiling do) is not a trial: it is unaffected
    build(ModelConfig(name="fcos", backbone="resnet18", frozen_bn=True, pretrained=None))


def test_the_cli_prints_the_refusal_as_one_line(tmp_path, capsys):
    from irstdlab.harness.cli import main

    code = main(["train", "quickstart", "--no-ray", "--storage", str(tmp_path), "--name", "x",
                 "--set", "model.frozen_bn=true"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("irstdlab: error: quickstart: model.frozen_bn: true needs pretrained weights")
    assert not (tmp_path / "x").exists()  # refused before the run folder is made
