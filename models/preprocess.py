"""Input normalisation inside the model: raw grey 0..255 in, what the backbone expects out.

Doing it in the model (as torchvision's GeneralizedRCNNTransform does) keeps datasets
model-agnostic and makes the FLOP count see the same input the reference counted.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Caffe/Detectron BGR mean, std 1 on 0..255 (the reference's DetDataPreprocessor).
CAFFE_MEAN = (102.9801, 115.9465, 122.7717)
CAFFE_STD = (1.0, 1.0, 1.0)
IMAGENET_MEAN = tuple(255.0 * m for m in (0.485, 0.456, 0.406))
IMAGENET_STD = tuple(255.0 * s for s in (0.229, 0.224, 0.225))
# SIRST-V2 grey statistics (open-sirst-v2 scripts/cal_mean_std.py), ODI's OSCAR config on every channel.
SIRSTV2_MEAN, SIRSTV2_STD = (111.89,) * 3, (27.62,) * 3


class InputNormalizer(nn.Module):
    """[B,1,H,W] raw grey -> [B,C,H,W] normalised, C = 3 ("replicate") or 1 ("stem").

    "caffe": replicate grey to 3 channels, subtract the BGR mean (std 1, the reference).
    "imagenet": /255 then ImageNet mean/std per channel. "grey": (x - 128) / 64.
    "sirstv2": (x - 111.89) / 27.62 (ODI's OSCAR recipe).
    With in_channel_mode "stem" the single channel uses the mean of the three means/stds,
    so a stem adapted by summing pretrained RGB kernels sees the same statistics.
    """

    mean: Tensor  # buffers registered in __init__
    std: Tensor

    def __init__(self, input_norm: str = "caffe", in_channel_mode: str = "replicate") -> None:
        super().__init__()
        mean: tuple[float, ...]
        std: tuple[float, ...]
        if input_norm == "caffe":
            mean, std = CAFFE_MEAN, CAFFE_STD
        elif input_norm == "imagenet":
            mean, std = IMAGENET_MEAN, IMAGENET_STD
        elif input_norm == "sirstv2":
            mean, std = SIRSTV2_MEAN, SIRSTV2_STD
        elif input_norm == "grey":
            mean, std = (128.0,) * 3, (64.0,) * 3
        else:
            raise ValueError(f"model.input_norm: unknown {input_norm!r}")
        if in_channel_mode not in ("replicate", "stem"):
            raise ValueError(f"model.in_channel_mode: unknown {in_channel_mode!r}")
        self.input_norm = input_norm
        self.out_channels = 3 if in_channel_mode == "replicate" else 1
        m, s = torch.tensor(mean), torch.tensor(std)
        if self.out_channels == 1:
            m, s = m.mean(0, keepdim=True), s.mean(0, keepdim=True)
        # buffers, not parameters: they must not count in the parameter total
        self.register_buffer("mean", m.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", s.view(1, -1, 1, 1), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"images: expected a float Tensor[B,1,H,W] of raw grey values, got shape {tuple(images.shape)}")
        x = images.float()
        if self.out_channels == 3:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"input_norm={self.input_norm!r}, out_channels={self.out_channels}"
