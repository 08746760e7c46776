"""Faster CPU paths for the LSK attention's depth-wise convolutions (same weights, same function).

oneDNN runs a depth-wise convolution several times faster on channels-last (NHWC) tensors than on
NCHW ones, and a *dilated* one slowly in either layout. A stride-1 convolution with dilation d and
"same" padding d * (k - 1) / 2 only ever combines pixels whose coordinates agree modulo d, so it
equals an undilated k x k convolution (padding (k - 1) / 2) run on each of the d x d phase grids
``x[..., i::d, j::d]`` (the space-to-batch identity of dilated convolutions), which oneDNN runs at
the speed of any small depth-wise kernel. Zero-padding the map to a multiple of d adds exactly the
zeros the dilated convolution's own padding would read. The results equal ``conv(x)`` up to the
order in which each output's k*k products are added.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CHANNELS_LAST = torch.channels_last


def to_channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=CHANNELS_LAST)


def _is_same_padded_dilated(conv: nn.Conv2d) -> bool:
    if isinstance(conv.padding, str):  # "same"/"valid": left to the plain convolution
        return False
    (kh, kw), (dh, dw), (ph, pw) = conv.kernel_size, conv.dilation, conv.padding
    return (conv.stride == (1, 1) and dh == dw > 1 and kh == kw and kh % 2 == 1
            and ph == pw == dh * (kh - 1) // 2 and conv.padding_mode == "zeros")


def dilated_by_phases(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """``conv(x)`` for a stride-1, same-padded, dilated ``conv``, as one undilated convolution over
    the d*d phase grids stacked on the batch axis. Works in channels-last memory, where moving a
    pixel between grids copies its whole channel vector at once; returns a channels-last tensor of
    ``x``'s size. Any other convolution is simply applied."""
    if not _is_same_padded_dilated(conv):
        return conv(x)
    d, k = conv.dilation[0], conv.kernel_size[0]
    b, c, h, w = x.shape
    hp, wp = -(-h // d) * d, -(-w // d) * d
    nhwc = x.permute(0, 2, 3, 1)  # a view when x is channels-last
    if (hp, wp) != (h, w):
        nhwc = F.pad(nhwc, (0, 0, 0, wp - w, 0, hp - h))
    gh, gw = hp // d, wp // d
    # (b, h', d, w', d, c) -> (b, d, d, h', w', c): grid (i, j) holds pixels (d*y + i, d*x + j)
    phases = nhwc.reshape(b, gh, d, gw, d, c).permute(0, 2, 4, 1, 3, 5).reshape(b * d * d, gh, gw, c)
    y = F.conv2d(phases.permute(0, 3, 1, 2), conv.weight, conv.bias, 1, (k - 1) // 2, 1, conv.groups)
    y = y.permute(0, 2, 3, 1).reshape(b, d, d, gh, gw, c).permute(0, 3, 1, 4, 2, 5).reshape(b, hp, wp, c)
    if (hp, wp) != (h, w):
        y = y[:, :h, :w].contiguous()
    return y.permute(0, 3, 1, 2)


__all__ = ["dilated_by_phases", "to_channels_last"]
