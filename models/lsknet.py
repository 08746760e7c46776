"""LSKNet-T / LSKNet-S backbones (Large Selective Kernel Network) returning C2..C5.

Architecture as in the reference (zcablii/LSKNet ``mmrotate/models/backbones/lsknet.py``):
four stages, each an overlapping patch embed (conv + BN), ``depths[i]`` blocks and a LayerNorm
over channels whose output is the stage's feature map. A block is

    x = x + DropPath(γ1 ⊙ Attention(BN(x)));  x = x + DropPath(γ2 ⊙ MLP(BN(x)))

where Attention = 1x1 -> GELU -> LSK module -> 1x1, plus its own residual on the normalised
input, and the LSK module selects between a 5x5 and a dilated 7x7 (stacked 23x23) depth-wise
receptive field with a spatial sigmoid mask. Parameter names mirror the reference so the
released ImageNet backbones load (``patch_embed{i}``, ``block{i}.{j}``, ``norm{i}``).

Harness options, shared with ``ResNetBackbone`` so the same flags mean the same thing:
``stem_pool=False`` makes the first patch embed stride 2 instead of 4 (strides 2/4/8/16);
``frozen_bn`` freezes every BatchNorm affine (the stage LayerNorms keep training); ``norm_eval``
keeps every BatchNorm in eval mode while training. ``frozen_stages`` is a ResNet option and is
ignored here. ``in_channels=1`` builds a one-channel first conv; pretrained RGB kernels are
summed into it (same response to a grey image).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from irstdlab.models.config import ModelConfig
from irstdlab.models.weights import load_matching, read_state_dict

# name -> (embed_dims, depths); mlp_ratios are (8, 8, 4, 4) for both
LSKNET_VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "lsknet_t": ((32, 64, 160, 256), (3, 3, 5, 2)),
    "lsknet_s": ((64, 128, 320, 512), (2, 2, 4, 2)),
}
MLP_RATIOS = (8, 8, 4, 4)


class DropPath(nn.Module):
    """Stochastic depth per sample ("row" mode): zero a whole residual branch, rescale the rest."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LSKblock(nn.Module):
    """The large selective kernel module (the reference's "spatial gating unit")."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.conv_spatial = nn.Conv2d(dim, dim, 7, padding=9, groups=dim, dilation=3)
        self.conv1 = nn.Conv2d(dim, dim // 2, 1)
        self.conv2 = nn.Conv2d(dim, dim // 2, 1)
        self.conv_squeeze = nn.Conv2d(2, 2, 7, padding=3)
        self.conv = nn.Conv2d(dim // 2, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        small = self.conv0(x)
        large = self.conv_spatial(small)
        small, large = self.conv1(small), self.conv2(large)
        both = torch.cat([small, large], dim=1)
        pooled = torch.cat([both.mean(dim=1, keepdim=True), both.amax(dim=1, keepdim=True)], dim=1)
        mask = self.conv_squeeze(pooled).sigmoid()
        selected = small * mask[:, 0:1] + large * mask[:, 1:2]
        return x * self.conv(selected)


class Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj_1 = nn.Conv2d(dim, dim, 1)
        self.activation = nn.GELU()
        self.spatial_gating_unit = LSKblock(dim)
        self.proj_2 = nn.Conv2d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj_2(self.spatial_gating_unit(self.activation(self.proj_1(x)))) + x


class DWConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.dwconv(x)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.dwconv(self.fc1(x))))
        return self.drop(self.fc2(x))


class Block(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, drop: float = 0.0, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(dim)
        self.attn = Attention(dim)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.BatchNorm2d(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale_1 = nn.Parameter(torch.full((dim,), 1e-2))
        self.layer_scale_2 = nn.Parameter(torch.full((dim,), 1e-2))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.layer_scale_1[:, None, None] * self.attn(self.norm1(x)))
        return x + self.drop_path(self.layer_scale_2[:, None, None] * self.mlp(self.norm2(x)))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, kernel: int, stride: int, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel, stride, padding=kernel // 2)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x))


class LSKNetBackbone(nn.Module):
    """LSKNet trunk without classifier; ``forward`` returns the four LayerNorm-ed stage maps."""

    def __init__(
        self,
        name: str = "lsknet_t",
        *,
        in_channels: int = 3,
        pretrained: str | None = None,
        drop_path_rate: float = 0.1,
        drop_rate: float = 0.1,
        frozen_bn: bool = False,
        norm_eval: bool = False,
        stem_pool: bool = True,
    ) -> None:
        super().__init__()
        if name not in LSKNET_VARIANTS:
            raise ValueError(f"model.backbone: unknown {name!r}; choose from {', '.join(LSKNET_VARIANTS)}")
        if in_channels not in (1, 3):
            raise ValueError(f"backbone in_channels must be 1 or 3, got {in_channels}")
        dims, depths = LSKNET_VARIANTS[name]
        self.in_channels = in_channels
        self.out_channels = list(dims)
        self.strides = [4, 8, 16, 32] if stem_pool else [2, 4, 8, 16]
        self.norm_eval = norm_eval
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        first = 0
        for i, (dim, depth) in enumerate(zip(dims, depths), start=1):
            if i == 1:
                embed = OverlapPatchEmbed(7, 4 if stem_pool else 2, in_channels, dim)
            else:
                embed = OverlapPatchEmbed(3, 2, dims[i - 2], dim)
            blocks = nn.ModuleList(Block(dim, MLP_RATIOS[i - 1], drop_rate, rates[first + j]) for j in range(depth))
            first += depth
            setattr(self, f"patch_embed{i}", embed)
            setattr(self, f"block{i}", blocks)
            setattr(self, f"norm{i}", nn.LayerNorm(dim, eps=1e-6))
        self.apply(_init_weights)
        if pretrained is not None:
            _load_lsknet_state_dict(self, pretrained)
        if frozen_bn:
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> LSKNetBackbone:
        super().train(mode)
        if mode and self.norm_eval:  # every BN keeps its running statistics
            for m in self.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = []
        for i in range(1, 5):
            x = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                x = block(x)
            # LayerNorm over channels (the reference's flatten -> LN -> reshape)
            x = getattr(self, f"norm{i}")(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()
            outs.append(x)
        return outs


def _init_weights(m: nn.Module) -> None:
    """The reference ``_init_weights``: fan-out normal convs, truncated-normal linears, unit norms."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def _load_lsknet_state_dict(net: LSKNetBackbone, path: str) -> None:
    """Load a local LSKNet backbone state dict (``torch.load(weights_only=True)``).

    Accepts a top-level ``state_dict`` key and ignores classifier ``head.*`` keys; a detector
    checkpoint whose backbone keys carry a ``backbone.`` prefix is reduced to those keys. RGB
    kernels of ``patch_embed1.proj`` are summed when the backbone has one input channel.
    """
    file, state = read_state_dict(path)
    if "patch_embed1.proj.weight" not in state and "backbone.patch_embed1.proj.weight" in state:
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    state = {k: v for k, v in state.items() if not str(k).startswith("head.")}
    stem = state.get("patch_embed1.proj.weight")
    if net.in_channels == 1 and isinstance(stem, Tensor) and stem.ndim == 4 and stem.shape[1] == 3:
        state["patch_embed1.proj.weight"] = stem.sum(dim=1, keepdim=True)
    load_matching(net, state, file, "LSKNetBackbone", may_miss=lambda k: k.endswith("num_batches_tracked"))


def build_lsknet(cfg: ModelConfig, in_channels: int) -> LSKNetBackbone:
    """The backbone ``cfg.backbone`` names (``frozen_stages``, ``deep_stem``, ``caffe_style_stride`` are ResNet-only)."""
    return LSKNetBackbone(
        cfg.backbone,
        in_channels=in_channels,
        pretrained=cfg.pretrained,
        drop_path_rate=cfg.drop_path_rate,
        drop_rate=cfg.drop_rate,
        frozen_bn=cfg.frozen_bn,
        norm_eval=cfg.norm_eval,
        stem_pool=cfg.stem_pool,
    )


__all__ = ["LSKNET_VARIANTS", "DropPath", "LSKNetBackbone", "LSKblock", "build_lsknet"]
