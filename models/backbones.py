"""ResNet backbones (torchvision) returning C2..C5 with known channels and strides.

Reference behaviour (GrokCV/BAFE-Net ``configs/detection/fcos_changer_seg/``): mmdet ResNet style='caffe' (the
down-sampling stride on a bottleneck's first 1x1 conv), torchvision weights, every BN frozen
(affine without gradient, running statistics in eval mode) while every conv, stem included,
trains. BN stays ``nn.BatchNorm2d`` with ``requires_grad=False`` rather than
``FrozenBatchNorm2d`` because the papers' parameter counts include the frozen BN affines.

``pretrained``: ``"imagenet"`` (torchvision's ImageNet-1k V1 weights through its weights API,
cached in torch's hub folder; ResNets only) or a local state-dict path (``models/weights.py``).
"""

from __future__ import annotations


from typing import TYPE_CHECKING

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from irstdlab.models.config import ModelConfig
from irstdlab.models.weights import (
    IMAGENET,
    imagenet_weights,
    load_matching,
    read_imagenet_state_dict,
    read_state_dict,
)

if TYPE_CHECKING:  # imported lazily below, only for an LSKNet
    from irstdlab.models.lsknet import LSKNetBackbone

_RESNETS = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
}


class ResNetBackbone(nn.Module):
    """torchvision ResNet trunk without avgpool/fc; ``forward`` returns [C2, C3, C4, C5].

    ``strides`` are 4/8/16/32, or 2/4/8/16 with ``stem_pool=False`` (the max-pool after
    the stem is removed, so C2 is at stride 2 and every later stage is twice as fine).
    """

    def __init__(
        self,
        name: str = "resnet50",
        *,
        in_channels: int = 3,
        pretrained: str | None = None,
        frozen_bn: bool = True,
        norm_eval: bool = True,
        frozen_stages: int = -1,
        caffe_style_stride: bool = True,
        stem_pool: bool = True,
        deep_stem: bool = False,
    ) -> None:
        super().__init__()
        if name not in _RESNETS:
            raise ValueError(f"model.backbone: unknown {name!r}; choose from {', '.join(_RESNETS)}")
        net = _RESNETS[name](weights=None)
        if pretrained is not None:
            _load_state_dict(net, pretrained, name)
        if deep_stem:
            if pretrained is not None:
                raise ValueError("model.deep_stem: torchvision weights have no 3x3 deep stem; use deep_stem: false "
                                 "with pretrained weights")
            net.conv1, net.bn1 = _deep_stem(in_channels), nn.Identity()
        elif in_channels == 1:
            net.conv1 = _single_channel_stem(net.conv1, summed=pretrained is not None)
        if in_channels not in (1, 3):
            raise ValueError(f"backbone in_channels must be 1 or 3, got {in_channels}")
        if caffe_style_stride:
            for layer in (net.layer2, net.layer3, net.layer4):
                block = layer[0]
                if isinstance(block, Bottleneck):  # BasicBlock (R18/R34) has no 1x1 to move it to
                    block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)
        self.conv1, self.bn1, self.relu = net.conv1, net.bn1, net.relu
        self.maxpool = net.maxpool if stem_pool else nn.Identity()
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = 4 if isinstance(net.layer1[0], Bottleneck) else 1
        self.out_channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.strides = [4, 8, 16, 32] if stem_pool else [2, 4, 8, 16]
        self.norm_eval = norm_eval
        self.frozen_stages = frozen_stages
        if frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.requires_grad_(False)
        for module in self._frozen_modules():
            module.requires_grad_(False)
        self.train()

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        stages = [self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4]
        return stages[: self.frozen_stages + 2] if self.frozen_stages > 0 else stages[:2]

    def train(self, mode: bool = True) -> ResNetBackbone:
        super().train(mode)
        if mode:  # frozen stages and (with norm_eval) every BN keep their running statistics
            for module in self._frozen_modules():
                module.eval()
            if self.norm_eval:
                for m in self.modules():
                    if isinstance(m, nn.BatchNorm2d):
                        m.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c2, c3, c4, c5]


def _load_state_dict(net: nn.Module, pretrained: str, name: str) -> None:
    """Load torchvision's ImageNet weights (``"imagenet"``) or a local torchvision ResNet state
    dict (its ``fc.*`` classifier may be absent) into the 3-channel ``net``."""
    file, state = read_imagenet_state_dict(name) if pretrained == IMAGENET else read_state_dict(pretrained)
    load_matching(net, state, file, f"torchvision {type(net).__name__}", may_miss=lambda k: k.startswith("fc."))


def _deep_stem(in_channels: int) -> nn.Sequential:
    """ODI FlexResNet / mmdet ResNetV1c stem: three 3x3 conv-BN-ReLU (stride 2 on the first).

    Its final ReLU is the trunk's ``relu``, so the stem module ends at the third BN.
    """
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(((in_channels, 32), (32, 32), (32, 64))):
        layers += [nn.Conv2d(cin, cout, 3, stride=2 if i == 0 else 1, padding=1, bias=False), nn.BatchNorm2d(cout)]
        if i < 2:
            layers.append(nn.ReLU(inplace=True))
    stem = nn.Sequential(*layers)
    for m in stem.modules():  # torchvision's ResNet init for the new convs
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return stem


def _single_channel_stem(conv: nn.Conv2d, summed: bool) -> nn.Conv2d:
    """The stem conv for one input channel.

    Pretrained RGB kernels are summed (timm's adapt_input_conv: same response to a grey
    image); a random init keeps one channel, i.e. torchvision's fan-out init unchanged.
    """
    # torch stores the sizes as tuple[int, ...] but types its constructor's arguments as pairs
    new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)  # type: ignore[arg-type]
    with torch.no_grad():
        new.weight.copy_(conv.weight.sum(dim=1, keepdim=True) if summed else conv.weight[:, :1])
    return new


def build_backbone(cfg: ModelConfig, in_channels: int) -> ResNetBackbone | LSKNetBackbone:
    """The backbone ``cfg.backbone`` names: a ResNet here, or an LSKNet (models/lsknet.py)."""
    if cfg.backbone.startswith("lsknet"):
        from irstdlab.models.lsknet import build_lsknet

        if cfg.pretrained == IMAGENET:
            imagenet_weights(cfg.backbone)  # raises: LSKNet weights come from a local file only
        return build_lsknet(cfg, in_channels)
    return ResNetBackbone(
        cfg.backbone,
        in_channels=in_channels,
        pretrained=cfg.pretrained,
        frozen_bn=cfg.frozen_bn,
        norm_eval=cfg.norm_eval,
        frozen_stages=cfg.frozen_stages,
        caffe_style_stride=cfg.caffe_style_stride,
        stem_pool=cfg.stem_pool,
        deep_stem=cfg.deep_stem,
    )


__all__ = ["ResNetBackbone", "build_backbone"]
