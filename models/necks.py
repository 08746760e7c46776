"""FPN neck: torchvision's FeaturePyramidNetwork with mmdet's extra-level rules.

Reference (GrokCV/BAFE-Net ``configs/detection/fcos_changer_seg/``, mmdet's ``FPN``): P3-P5 from C3-C5 with 1x1 laterals (bias), nearest
top-down, 3x3 output convs, Xavier-uniform init. Extra levels P6, P7 follow mmdet
``add_extra_convs='on_output', relu_before_extra_convs=True``: P6 = conv3x3/2(P5 output),
P7 = conv3x3/2(relu(P6)) -- torchvision's LastLevelP6P7 computes the same, but only for
exactly two levels, hence the small ExtraLevels block. ``p2=True`` adds a level from C2.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, FeaturePyramidNetwork

from irstdlab.models.config import ModelConfig


class ExtraLevels(ExtraFPNBlock):
    """``num_extra`` stride-2 3x3 convs above the top level (on its output, or on C5)."""

    def __init__(self, in_channels: int, out_channels: int, num_extra: int, from_c5: bool) -> None:
        super().__init__()
        self.from_c5 = from_c5
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, stride=2, padding=1)
            for i in range(num_extra)
        )

    def forward(self, results: list[Tensor], x: list[Tensor], names: list[str]) -> tuple[list[Tensor], list[str]]:
        feature = x[-1] if self.from_c5 else results[-1]
        for i, conv in enumerate(self.convs):
            feature = conv(feature if i == 0 else F.relu(feature))
            results.append(feature)
            names.append(f"extra{i}")
        return results, names


class FPN(nn.Module):
    """Selects backbone levels by index, runs the FPN, returns a list finest-first.

    ``out_channels`` (int) and ``strides`` (list) describe the returned levels.
    """

    def __init__(
        self,
        in_channels: list[int],
        in_strides: list[int],
        out_channels: int,
        use_levels: list[int],
        num_extra: int = 0,
        extra_from_c5: bool = False,
    ) -> None:
        super().__init__()
        self.use_levels = list(use_levels)
        chosen = [in_channels[i] for i in self.use_levels]
        extra = ExtraLevels(chosen[-1] if extra_from_c5 else out_channels, out_channels, num_extra, extra_from_c5) if num_extra else None
        self.fpn = FeaturePyramidNetwork(chosen, out_channels, extra_blocks=extra)
        self.out_channels = out_channels
        top = in_strides[self.use_levels[-1]]
        self.strides = [in_strides[i] for i in self.use_levels] + [top * 2 ** (i + 1) for i in range(num_extra)]
        for m in self.modules():  # mmdet FPN init: Xavier uniform, zero bias
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: list[Tensor]) -> list[Tensor]:
        inputs = OrderedDict((str(i), feats[i]) for i in self.use_levels)
        return list(self.fpn(inputs).values())


def build_neck(cfg: ModelConfig, in_channels: list[int], in_strides: list[int]) -> FPN:
    """Backbone levels C2..C5 are indices 0..3: P2 (optional) from C2, then C3 upward."""
    main = min(cfg.num_levels, 3)
    use = ([0] if cfg.p2 else []) + list(range(1, 1 + main))
    neck = FPN(
        in_channels,
        in_strides,
        cfg.fpn_channels,
        use,
        num_extra=cfg.num_levels - main,
        extra_from_c5=cfg.extra_levels_from == "c5",
    )
    assert neck.strides == cfg.level_strides(), (neck.strides, cfg.level_strides())
    return neck


__all__ = ["ExtraLevels", "FPN", "build_neck"]
