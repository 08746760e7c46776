"""BAFE-Net's cross-task pieces: the LSK attention, channel selection and feature exchange.

Everything here follows the released head (GrokCV/BAFE-Net
``deepir/models/dense_heads/fcos_changer_seg_head.py``) unless a docstring says otherwise:

* ``LSKModule`` *replaces* each task's features by ``conv(a1*s0 + a2*s1)`` (no multiply
  by the input, no residual; unlike LSKNet's block). One instance serves both tasks.
* ``LSKLayer`` scores channels: ``m = sigmoid(GAP_HW(x * conv(a1*s0 + a2*s1)))``.
* ``ChannelExchange``: per sample (and per level, since it is called per level) each task
  picks K = round(C*p) channels, sorted ascending; the receiving task's k-th picked channel
  is overwritten by the adapted k-th picked channel of the other task.
* ``SpatialExchange``: the pre-Aug-2024 code's column swap (every 1/p-th column).
* ``ElementwiseAdapter`` (``adapter='elementwise'``): the pre-Aug-2024 adapter, one scalar
  1->h->1 MLP applied to every exchanged element on its own (the "v2024-old" head of the
  reference commit before 73066c8, which Tables IV-VI used; see ``OLD_HEAD`` below).

Tensors are (B, C, H, W); x1 = segmentation features, x2 = classification features.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from irstdlab.models.depthwise import dilated_by_phases, to_channels_last

SELECTIONS = ("dynamic", "dynamic_st", "random", "fixed")
EXCHANGES = ("none", "channel", "spatial", "channel+spatial", "spatial+channel")
ADAPTERS = ("mlp", "elementwise", "none")

# The head before the reference commit that introduced dynamic top-K and the LSK module
# (GrokCV/BAFE-Net 73066c8^: fcos_changer_seg_head.py): fixed c % 2 channels, a scalar
# 1->64->1 MLP on every element, no LSK module, conv-BN blocks kept. As ModelConfig values.
OLD_HEAD = {"lsk_module": False, "selection": "fixed", "adapter": "elementwise", "conv_bn_blocks": True}


def num_exchanged(channels: int, p: float) -> int:
    """K = round(C * p), at least 1 (the reference's int(256 * p) for every p of Table VIII)."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"exchange ratio p must be in (0, 1], got {p}")
    return max(1, min(channels, round(channels * p)))


def fixed_channels(channels: int, k: int) -> Tensor:
    """K evenly spaced channel indices; for C divisible by 1/p these are exactly c % (1/p) == 0."""
    return torch.arange(k) * channels // k


def _is_integer_ratio(p: float) -> bool:
    """True when 1/p is an integer, i.e. the 'w mod (1/p) == 0' rule applies verbatim."""
    return math.isclose(1.0 / p, round(1.0 / p))


def fixed_columns(width: int, p: float) -> Tensor:
    """Column indices the spatial exchange swaps: w % (1/p) == 0 as in the old code when 1/p is
    an integer, otherwise round(W * p) evenly spaced columns."""
    if _is_integer_ratio(p):
        return torch.arange(0, width, round(1.0 / p))
    k = max(1, min(width, round(width * p)))
    return torch.arange(k) * width // k


class _LSKAttention(nn.Module):
    """The LSK core shared by LSKModule and LSKLayer: two depth-wise receptive fields
    (5x5, then 7x7 dilated 3) mixed by a spatial selection map."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv0 = nn.Conv2d(channels, channels, 5, padding=2, groups=channels)
        self.conv_spatial = nn.Conv2d(channels, channels, 7, padding=9, groups=channels, dilation=3)
        self.conv1 = nn.Conv2d(channels, half, 1)
        self.conv2 = nn.Conv2d(channels, half, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(half, channels, 1)

    def attend(self, x: Tensor) -> Tensor:
        """The attended features of ``x`` (B, C, H, W), returned channels-last.

        Channels-last throughout, which on CPU is where the time goes: oneDNN's depth-wise convs
        are several times faster in it, the dilated one runs undilated over its phase grids
        (models/depthwise.py), and the 1x1 convs are plain matrix products over the contiguous
        per-pixel channel vectors (the same parameters and function as the Conv2d modules)."""
        x = to_channels_last(x)
        a1 = self.conv0(x)
        a2 = dilated_by_phases(self.conv_spatial, a1)
        p1, p2 = _pointwise(self.conv1, _nhwc(a1)), _pointwise(self.conv2, _nhwc(a2))
        both = torch.cat([p1, p2], dim=-1)
        # channel-wise mean and max summarise "how strong is each branch here"
        agg = torch.stack([both.mean(dim=-1), both.amax(dim=-1)], dim=-1)
        s = _nhwc(self.conv_squeeze(agg.permute(0, 3, 1, 2)).sigmoid())
        return _pointwise(self.conv, p1 * s[..., 0:1] + p2 * s[..., 1:2]).permute(0, 3, 1, 2)


def _nhwc(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H, W, C); a view for a channels-last tensor."""
    return x.permute(0, 2, 3, 1)


def _pointwise(conv: nn.Conv2d, x_nhwc: Tensor) -> Tensor:
    """A 1x1 ``conv`` applied to (B, H, W, C) features: one matrix product."""
    return F.linear(x_nhwc, conv.weight.flatten(1), conv.bias)


def stack_channels_last(x1: Tensor, x2: Tensor) -> Tensor:
    """``torch.cat([x1, x2])`` as a channels-last tensor, in one copy."""
    return torch.cat([_nhwc(x1), _nhwc(x2)]).permute(0, 3, 1, 2)


class LSKModule(_LSKAttention):
    """Applied to seg and cls features with the SAME weights; the output replaces each input."""

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        if x1.shape != x2.shape:
            return self.attend(x1).contiguous(), self.attend(x2).contiguous()
        # one call on both tasks stacked on the batch axis: half the kernel calls, and every
        # weight gradient is one reduction instead of two summed
        y1, y2 = self.attend(stack_channels_last(x1, x2)).contiguous().chunk(2)
        return y1, y2


class LSKLayer(_LSKAttention):
    """Channel scorer (paper Eq. 4 as coded): returns sigmoid scores of shape (B, C)."""

    def forward(self, x: Tensor) -> Tensor:
        return (x * self.attend(x)).mean(dim=(2, 3)).sigmoid()


class ChannelSelector(nn.Module):
    """Picks K channels per sample: ``forward(x) -> (indices (B, K) ascending, weights or None)``.

    * ``dynamic``: top-K of the LSKLayer score, as released. The released code discards
      the top-K values, so the scorer never gets a gradient (it keeps its random init).
      We run it under ``torch.no_grad()`` with its parameters frozen: identical outputs and
      training, no autograd graph. (That graph is freed when the exchange returns, so the
      saving is small: bench_bafenet measured no peak-memory or step-time difference at
      512^2, batch 2 on CPU, within noise.)
    * ``dynamic_st``: the same score, but the selected scores are returned as weights so the
      exchange can pass a straight-through gradient to the scorer (what Eq. 4 intends).
    * ``random``: K random channels per sample (also at inference, as the ablation describes).
    * ``fixed``: every 1/p-th channel, the same for every sample.
    """

    fixed_index: Tensor  # a buffer registered in __init__

    def __init__(self, channels: int, k: int, strategy: str = "dynamic") -> None:
        super().__init__()
        if strategy not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {strategy!r}")
        self.channels, self.k, self.strategy = channels, k, strategy
        self.scorer = LSKLayer(channels) if strategy.startswith("dynamic") else None
        if strategy == "dynamic" and self.scorer is not None:
            # it can never receive a gradient; saying so keeps DDP (find_unused_parameters=False)
            # and optimisers from waiting for one. Still counted in the parameter total.
            self.scorer.requires_grad_(False)
        # benchmarks flip this to measure what skipping the (gradient-free) graph saves
        self.score_without_graph = True
        self.register_buffer("fixed_index", fixed_channels(channels, k), persistent=False)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        b = x.shape[0]
        if self.strategy == "fixed":
            return self.fixed_index.expand(b, self.k), None
        if self.strategy == "random":
            idx = torch.rand(b, self.channels, device=x.device).topk(self.k, dim=1).indices
            return idx.sort(dim=1).values, None
        assert self.scorer is not None, "the dynamic strategies build a scorer"
        if self.strategy == "dynamic" and self.score_without_graph:
            with torch.no_grad():
                score = self.scorer(x)
        else:
            score = self.scorer(x)
        idx = score.topk(self.k, dim=1).indices.sort(dim=1).values
        weights = score.gather(1, idx) if self.strategy == "dynamic_st" else None
        return idx, weights

    def select_pair(self, x1: Tensor, x2: Tensor) -> tuple[tuple[Tensor, Tensor | None], tuple[Tensor, Tensor | None]]:
        """``(self(x1), self(x2))``; the scorer runs once on both stacked on the batch axis (the
        random strategy draws for x1, then for x2, as two calls do)."""
        if self.scorer is None or x1.shape != x2.shape:
            return self(x1), self(x2)
        idx, weights = self(stack_channels_last(x1, x2))  # the scorer works channels-last
        w1, w2 = weights.chunk(2) if weights is not None else (None, None)
        i1, i2 = idx.chunk(2)
        return (i1, w1), (i2, w2)


class Adapter(nn.Module):
    """Per-pixel MLP over the channel vector (Linear-ReLU-Linear), shared by both directions."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"adapter_hidden must be >= 1, got {hidden}")
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W) -> (B, C, H, W)
        # fc(x) over the channel axis as W @ x[b] on the (C, H*W) planes: no transposed copies in
        # or out (the nn.Linear form moved C last and back); the same products and sums
        b = x.shape[0]
        hidden = self.act(_channel_linear(self.fc1, x.flatten(2), b))
        return _channel_linear(self.fc2, hidden, b).view(x.shape)


def _channel_linear(fc: nn.Linear, planes: Tensor, batch: int) -> Tensor:
    """``fc`` applied to every column of (B, C_in, N) -> (B, C_out, N)."""
    return torch.baddbmm(fc.bias[:, None].expand(batch, -1, 1), fc.weight.expand(batch, -1, -1), planes)


class ElementwiseAdapter(nn.Module):
    """One scalar MLP (Linear(1, h)-ReLU-Linear(h, 1)) applied to every element on its own.

    The old head's adapter: an output element depends only on the same input element, so it
    mixes neither channels nor pixels. Its hidden activation is h times the exchanged tensor
    (64x for Table V's 64), which is why the released head moved to a per-pixel channel MLP."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"adapter_hidden must be >= 1, got {hidden}")
        self.fc1 = nn.Linear(1, hidden)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:  # any shape -> the same shape
        return self.fc2(self.act(self.fc1(x.unsqueeze(-1)))).squeeze(-1)


def _build_adapter(kind: str, channels: int, hidden: int) -> nn.Module:
    if kind not in ADAPTERS:
        raise ValueError(f"adapter must be one of {ADAPTERS}, got {kind!r}")
    if kind == "elementwise":
        return ElementwiseAdapter(hidden)
    return Adapter(channels, hidden) if kind == "mlp" else nn.Identity()


def straight_through(weights: Tensor) -> Tensor:
    """Exactly 1.0 in the forward pass, d/dw = 1 in the backward pass.

    ``1 + (w - w.detach())`` rather than ``w / w.detach()``: same forward values (w - w is
    exactly 0), but the gradient does not blow up for small scores. Multiplying the
    received channels by it gives the scorer the gradient ``sum(dL/dy * y)`` of scaling
    that channel, i.e. "would exchanging more of this channel have helped"."""
    return (weights - weights.detach()).add(1.0)


class ChannelExchange(nn.Module):
    """Dynamic cross-task channel hard-exchange (the released head's), vectorised over the batch.

    ``y1 = x1`` with channels ``I1`` overwritten by ``A(x2[I2])`` (k-th to k-th in ascending
    index order), and symmetrically for ``y2``. With ``dynamic_st`` the received channels
    are scaled by ``straight_through`` of the receiver's and the sender's selection scores.
    """

    def __init__(
        self,
        channels: int,
        p: float = 0.5,
        selection: str = "dynamic",
        adapter: str = "mlp",
        adapter_hidden: int = 64,
    ) -> None:
        super().__init__()
        self.k = num_exchanged(channels, p)
        self.selector = ChannelSelector(channels, self.k, selection)
        self.adapter = _build_adapter(adapter, self.k, adapter_hidden)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        (i1, w1), (i2, w2) = self.selector.select_pair(x1, x2)
        to_x2 = self.adapter(pick_channels(x1, i1))  # x1's picked channels, adapted, go to x2
        to_x1 = self.adapter(pick_channels(x2, i2))
        if w1 is not None and w2 is not None:
            st = (straight_through(w1) * straight_through(w2))[:, :, None, None]
            to_x1, to_x2 = to_x1 * st, to_x2 * st
        return put_channels(x1, i1, to_x1), put_channels(x2, i2, to_x2)


def _rows(x: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """x as (B*C, H*W) rows, and the (B, K) per-sample channel indices as row numbers."""
    b, c = x.shape[:2]
    offsets = torch.arange(b, device=index.device)[:, None] * c
    return x.reshape(b * c, -1), (index + offsets).reshape(-1)


def pick_channels(x: Tensor, index: Tensor) -> Tensor:
    """``x.gather(1, index expanded over H, W)``: the (B, K, H, W) picked channel planes, copied
    as whole rows (index_select) instead of element by element through an expanded index."""
    rows, flat = _rows(x, index)
    return rows.index_select(0, flat).view(x.shape[0], index.shape[1], *x.shape[2:])


def put_channels(x: Tensor, index: Tensor, src: Tensor) -> Tensor:
    """``x.scatter(1, index expanded over H, W, src)`` as a row copy (index_copy)."""
    rows, flat = _rows(x, index)
    return rows.index_copy(0, flat, src.reshape(flat.numel(), -1)).view(x.shape)


class SpatialExchange(nn.Module):
    """Swap every 1/p-th column (w % 2 == 0 for p = 1/2) between the tasks.

    The pre-Aug-2024 code (Table VI "Spatial") adapted each swapped *element* with a scalar
    1->64->1 MLP: ``adapter='elementwise'`` does exactly that. With ``adapter='mlp'`` the swapped
    *pixels* go through the same per-pixel channel MLP as the channel exchange (C->hidden->C):
    equal MACs for C = 256, hidden 64, but a hidden activation of C/4 instead of 64x the feature
    map.
    """

    def __init__(self, channels: int, p: float = 0.5, adapter: str = "mlp", adapter_hidden: int = 64) -> None:
        super().__init__()
        num_exchanged(channels, p)  # validates p
        self.p = p
        self.adapter = _build_adapter(adapter, channels, adapter_hidden)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        cols = fixed_columns(x1.shape[3], self.p).to(x1.device)
        to_x2 = self.adapter(x1.index_select(3, cols))
        to_x1 = self.adapter(x2.index_select(3, cols))
        return x1.index_copy(3, cols, to_x1), x2.index_copy(3, cols, to_x2)


class Exchange(nn.Module):
    """The configured exchange: ``none``, one of the two kinds, or both in the named order.

    ``selection`` applies to the channel exchange only; the spatial one always swaps fixed columns.
    """

    def __init__(
        self,
        kind: str,
        channels: int,
        p: float = 0.5,
        selection: str = "dynamic",
        adapter: str = "mlp",
        adapter_hidden: int = 64,
    ) -> None:
        super().__init__()
        if kind not in EXCHANGES:
            raise ValueError(f"exchange must be one of {EXCHANGES}, got {kind!r}")
        self.kind = kind
        steps: list[nn.Module] = []
        for part in kind.split("+") if kind != "none" else []:
            if part == "channel":
                steps.append(ChannelExchange(channels, p, selection, adapter, adapter_hidden))
            else:
                steps.append(SpatialExchange(channels, p, adapter, adapter_hidden))
        self.steps = nn.ModuleList(steps)

    def forward(self, x1: Tensor, x2: Tensor) -> tuple[Tensor, Tensor]:
        for step in self.steps:
            x1, x2 = step(x1, x2)
        return x1, x2
