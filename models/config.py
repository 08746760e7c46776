"""`ModelConfig`: every knob of every detector in one validated dataclass.

Defaults are the reference (BAFE-Net's FCOS host as GrokCV/BAFE-Net configures it in
``configs/detection/fcos_changer_seg/fcos_changer_seg_r50-caffe_fpn_gn-head_1x_densesirst.py``) except
``num_levels=5``, which is the Table II FCOS baseline (P3-P7). A detector's own values for the
keys a config leaves out are registered with its builder (``register(..., defaults=...)``,
e.g. ``bafenet``'s 3 levels P3-P5) and applied by ``with_model_defaults``; its training recipe
(``register(..., recipe=...)``: optimiser, learning rate, warm-up, clipping) is applied to a whole
trial tree by ``with_detector_recipe``.
Annotations are the ones ``irstdlab.harness.configtree`` understands (Literal, X | None,
tuples), so the harness can type-check YAML against this class; ``validate()`` does the
range checks and raises ``ValueError("model.<field>: <problem>")``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args, get_type_hints

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "lsknet_t", "lsknet_s")
MAX_LEVELS = 5  # P3..P7
MAX_WIDTH, MAX_DEPTH, MAX_BOXES = 4096, 32, 100_000  # channels, head convs, boxes per image


_TYPE_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    """Resolved once per class, as ``harness/configtree.type_hints`` does (validate runs per trial)."""
    if cls not in _TYPE_HINTS:
        _TYPE_HINTS[cls] = get_type_hints(cls)
    return _TYPE_HINTS[cls]


def with_model_defaults(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the named detector's registered defaults under the keys it leaves out.

    Each detector registers its defaults beside its builder (``models/registry.py``); the
    registry imports this module, hence the late import.
    """
    if not isinstance(data, dict):
        return data
    from irstdlab.models.registry import model_defaults

    return {**model_defaults(str(data.get("name", "fcos"))), **data}


def with_detector_recipe(tree: dict[str, Any]) -> dict[str, Any]:
    """A trial tree with the named detector's defaults and recipe under the keys it leaves out.

    Precedence, highest first: what the tree sets (a config file's value, a ``--set`` or a
    searched value, all written into the tree before this runs) > the detector's registered
    defaults (model section) and recipe (optim / schedule sections) > the dataclasses' global
    defaults. A tree without a model section is the default detector's (``fcos``). The recipe's
    ``optim.*`` values are skipped as a whole when the tree names another optimiser: a learning
    rate tuned for AdamW is no learning rate for DAdaptAdam.
    """
    if not isinstance(tree, dict):
        return tree
    from irstdlab.models.registry import detector_recipe

    model = tree.get("model")
    out = dict(tree)
    if isinstance(model, dict):
        out["model"] = with_model_defaults(model)
        name = model.get("name", ModelConfig.name)
    elif model is None:
        name = ModelConfig.name
    else:
        return out  # not a mapping: the config's own type check names it
    recipe = detector_recipe(str(name))
    for section in {key.split(".", 1)[0] for key in recipe}:
        given = out.get(section, {})
        if not isinstance(given, dict):
            continue  # the config's type check names the section
        values = {key.split(".", 1)[1]: value for key, value in recipe.items() if key.startswith(section + ".")}
        if section == "optim" and given.get("name", values["name"]) != values["name"]:
            continue
        out[section] = {**values, **given}
    return out


@dataclass
class ModelConfig:
    name: str = "fcos"
    # --- backbone ---
    backbone: Literal["resnet18", "resnet34", "resnet50", "resnet101", "lsknet_t", "lsknet_s"] = "resnet50"
    pretrained: str | None = None  # "imagenet" (torchvision weights; ResNets) or a local state-dict path; None = random init
    frozen_bn: bool = True  # BN affine frozen in the whole backbone (convs still train)
    frozen_stages: int = -1  # -1 none, 0 stem, k = stem + layer1..layerk
    norm_eval: bool = True  # keep backbone BN in eval mode (running stats) while training
    in_channel_mode: Literal["replicate", "stem"] = "replicate"
    input_norm: Literal["caffe", "imagenet", "grey", "sirstv2"] = "caffe"
    caffe_style_stride: bool = True  # stride on the bottleneck's first 1x1 (mmdet style='caffe')
    stem_pool: bool = True  # False drops the stem max-pool: every level's stride halves
    deep_stem: bool = False  # ResNet: three 3x3 convs (32, 32, 64) instead of the 7x7 (ODI FlexResNet / ResNetV1c)
    drop_path_rate: float = 0.1  # LSKNet: stochastic depth, rising linearly to this over the blocks
    drop_rate: float = 0.1  # LSKNet: dropout inside the MLPs (the detection recipes' 0.1)
    # --- neck ---
    fpn_channels: int = 256
    num_levels: int = 5  # levels from P3 up: 3 = P3-P5 (BAFE host), 5 = P3-P7 (Table II)
    p2: bool = False  # add a level from C2 below P3
    extra_levels_from: Literal["p5_output", "c5"] = "p5_output"
    # None = derive (see below). The last upper bound may be .inf (an open top level).
    regress_ranges: tuple[tuple[float, float], ...] | None = dataclasses.field(default=None, metadata={"allow_inf": True})
    # --- FCOS head ---
    head_width: int = 256
    head_depth: int = 4
    norm_groups: int = 32
    center_sampling: bool = False
    center_sample_radius: float = 1.5
    box_loss: Literal["iou", "giou", "diou"] = "iou"
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    prior_prob: float = 0.01
    # --- inference ---
    score_thr: float = 0.05
    nms_pre: int = 1000
    nms_thr: float = 0.5
    max_per_img: int = 100
    # --- BAFE-Net ---
    seg_head: bool = True
    exchange: Literal["channel", "none", "spatial", "channel+spatial", "spatial+channel"] = "channel"
    selection: Literal["dynamic", "random", "fixed", "dynamic_st"] = "dynamic"
    p: float = 0.5
    adapter: Literal["mlp", "none", "elementwise"] = "mlp"  # elementwise: the old head's scalar 1->h->1 MLP
    adapter_hidden: int = 64
    lsk_module: bool = True
    conv_bn_blocks: bool = True  # the conv-BN-ReLU blocks before the exchange (false: Table IV's seg-head variant)
    seg_loss_weight: float = 1.0
    # --- OSCAR ---
    cls_loss_weight: float = 1.0  # OSCAR: 2.0 on both focal losses
    noco_branch: bool = True  # OSCAR: the NoCo regression branch (loss and the sigma(n) score factor)
    noco_loss_weight: float = 1000.0
    # --- torchvision baselines ---
    anchor_scale: float = 1.0  # anchor side = anchor_scale x level stride (torchvision's default is 4)

    def __post_init__(self) -> None:
        if isinstance(self.regress_ranges, list):  # YAML gives lists; keep it hashable
            self.regress_ranges = tuple(tuple(r) if isinstance(r, list) else r for r in self.regress_ranges)
        self.validate()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a plain mapping, rejecting unknown keys by name."""
        if not isinstance(data, dict):
            raise ValueError(f"model: expected a mapping of ModelConfig fields, got {type(data).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"model.{unknown[0]}: unknown key; valid keys are {', '.join(sorted(valid))}")
        return cls(**with_model_defaults(data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> ModelConfig:
        return ModelConfig.from_dict({**self.to_dict(), **changes})

    # ------------------------------------------------------------------ derived geometry
    def backbone_strides(self) -> list[int]:
        """Strides of C2..C5: 4/8/16/32, or 2/4/8/16 without the stem max-pool."""
        base = [4, 8, 16, 32]
        return base if self.stem_pool else [s // 2 for s in base]

    def level_strides(self) -> list[int]:
        """Strides of the head's levels, finest first: [P2] + P3.. (num_levels of them).

        P3-P5 come from C3-C5; P6, P7 are stride-2 convs above P5. With stem_pool=False
        every level is twice as fine (P2 = 2, P3 = 4, ..., P7 = 64).
        """
        c = self.backbone_strides()
        strides = [c[1] * 2**i for i in range(self.num_levels)]
        return ([c[0]] if self.p2 else []) + strides

    def level_regress_ranges(self) -> list[tuple[float, float]]:
        """Per-level (lower, upper] limits on max(l, t, r, b) for assignment.

        Derived: upper = 8 x stride, lower = the previous level's upper (-1 for the first);
        the top level extends to infinity only when extra levels P6/P7 exist. That gives the
        reference exactly: (-1,64),(64,128),(128,256) for the 3-level host (capped at 256)
        and (-1,64)...(512,inf) for the 5-level Table II FCOS.
        """
        if self.regress_ranges is not None:
            return [(float(lo), float(hi)) for lo, hi in self.regress_ranges]
        strides = self.level_strides()
        uppers = [8.0 * s for s in strides]
        if self.num_levels > 3:
            uppers[-1] = math.inf
        lowers = [-1.0] + uppers[:-1]
        return list(zip(lowers, uppers))

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        hints = _type_hints(type(self))
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        if not self.name:
            _fail("name", "must be a non-empty string")
        if not -1 <= self.frozen_stages <= 4:
            _fail("frozen_stages", f"must be in -1..4 (-1 none, 0 stem, k = stem + layer1..k), got {self.frozen_stages}")
        for key in ("drop_path_rate", "drop_rate"):
            if not 0.0 <= getattr(self, key) < 1.0:
                _fail(key, f"must be in [0, 1), got {getattr(self, key)}")
        for key in ("cls_loss_weight", "noco_loss_weight"):
            if getattr(self, key) < 0:
                _fail(key, f"must be >= 0, got {getattr(self, key)}")
        if self.anchor_scale <= 0:
            _fail("anchor_scale", f"must be > 0, got {self.anchor_scale}")
        # upper bounds: far above every published detector, low enough that a typo fails here and
        # not as an out-of-memory crash once the run has started
        for key, top in (("fpn_channels", MAX_WIDTH), ("head_width", MAX_WIDTH), ("norm_groups", MAX_WIDTH),
                         ("adapter_hidden", MAX_WIDTH), ("nms_pre", MAX_BOXES), ("max_per_img", MAX_BOXES)):
            if getattr(self, key) < 1:
                _fail(key, f"must be >= 1, got {getattr(self, key)}")
            if getattr(self, key) > top:
                _fail(key, f"must be <= {top}, got {getattr(self, key)}")
        if self.head_depth < 0:
            _fail("head_depth", f"must be >= 0, got {self.head_depth}")
        if self.head_depth > MAX_DEPTH:
            _fail("head_depth", f"must be <= {MAX_DEPTH}, got {self.head_depth}")
        if not 1 <= self.num_levels <= MAX_LEVELS:
            _fail("num_levels", f"must be in 1..{MAX_LEVELS} (levels from P3 up), got {self.num_levels}")
        if self.head_width % self.norm_groups:
            _fail("norm_groups", f"head_width {self.head_width} is not divisible by norm_groups {self.norm_groups}")
        if self.center_sample_radius <= 0:
            _fail("center_sample_radius", f"must be > 0, got {self.center_sample_radius}")
        if not 0.0 <= self.focal_alpha <= 1.0:
            _fail("focal_alpha", f"must be in [0, 1], got {self.focal_alpha}")
        if self.focal_gamma < 0:
            _fail("focal_gamma", f"must be >= 0, got {self.focal_gamma}")
        if not 0.0 < self.prior_prob < 1.0:
            _fail("prior_prob", f"must be in (0, 1), got {self.prior_prob}")
        if not 0.0 <= self.score_thr < 1.0:
            _fail("score_thr", f"must be in [0, 1), got {self.score_thr}")
        if not 0.0 < self.nms_thr <= 1.0:
            _fail("nms_thr", f"must be in (0, 1], got {self.nms_thr}")
        if not 0.0 < self.p <= 1.0:
            _fail("p", f"must be in (0, 1], got {self.p}")
        if self.seg_loss_weight < 0:
            _fail("seg_loss_weight", f"must be >= 0, got {self.seg_loss_weight}")
        if self.regress_ranges is not None:
            n = len(self.level_strides())
            if len(self.regress_ranges) != n:
                _fail("regress_ranges", f"needs one (lower, upper) pair per level ({n}), got {len(self.regress_ranges)}")
            for i, (lo, hi) in enumerate(self.regress_ranges):
                if not math.isfinite(lo) or math.isnan(hi):
                    _fail("regress_ranges", f"range {i} ({lo}, {hi}): the lower bound must be finite")
                if not lo < hi:
                    _fail("regress_ranges", f"range {i} ({lo}, {hi}) needs lower < upper")


def _fail(field: str, problem: str) -> None:
    raise ValueError(f"model.{field}: {problem}")


def _check_type(name: str, value: Any, tp: Any) -> None:
    """Plain-constructor type check (the harness's configtree does the same for YAML)."""
    text = str(tp)
    if value is None:
        if "None" not in text:
            _fail(name, "must not be null")
        return
    if "Literal" in text:
        choices = get_args(tp)
        if value not in choices:
            _fail(name, f"{value!r} is not one of {', '.join(repr(c) for c in choices)}")
    elif tp is bool:
        if not isinstance(value, bool):
            _fail(name, f"expected true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(name, f"expected an integer, got {value!r}")
        if not -(2**63) <= value < 2**63:
            _fail(name, f"{value} is out of range (integers must fit in 64 bits)")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            _fail(name, f"expected a number, got {value!r}")
        if isinstance(value, float) and math.isinf(value):  # an infinite weight or threshold is never meant
            _fail(name, f"must be a finite number, got {value}")
    elif tp is str or text == "str | None":
        if not isinstance(value, str):
            _fail(name, f"expected a string, got {value!r}")
    elif name == "regress_ranges":
        ok = isinstance(value, tuple) and all(
            isinstance(r, (tuple, list))
            and len(r) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r)
            for r in value
        )
        if not ok:
            _fail(name, f"expected a list of [lower, upper] number pairs, got {value!r}")


__all__ = ["BACKBONES", "ModelConfig", "with_detector_recipe", "with_model_defaults"]
