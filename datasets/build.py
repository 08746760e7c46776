"""`build_datasets`: the data section of a trial config -> train / val / test datasets.

This is the one place that knows which split plays which role:

* ``selection="held_out"`` (default): train on ``train``, select checkpoints on ``val``,
  report ``test`` once at the end. Model selection never sees the test images.
* ``selection="reference"``: the released BAFE-Net habit: train on ``trainval`` and select on
  ``test`` (the validation set *is* the test set). Only for comparing with the paper; results
  must carry the label (the trainer reports ``selection`` with every run).

Datasets yield transformed :class:`Sample` objects; ``collate_detection`` (transforms.py) or
:func:`collate_eval` turns them into batches. Random transforms draw from a generator keyed by
``(seed, epoch, index)`` so a trial is reproducible whatever the number of loader workers, and a
resumed trial sees exactly the augmentations of an uninterrupted one.

No networks and no ``irstdlab.harness`` imports here (dependency direction of DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from collections.abc import Sequence

import numpy as np

from irstdlab.datasets.errors import DatasetError
from irstdlab.datasets.sample import Sample
from irstdlab.datasets.transforms import (Compose, HorizontalFlip, Resize, TransformConfig, build_transforms,
                                          collate_detection)

# role -> split name, per data set and selection mode
SPLITS: dict[str, dict[str, dict[str, str]]] = {
    "densesirst": {
        "held_out": {"train": "train_v2", "val": "val_v2", "test": "test_v2"},
        "reference": {"train": "trainval_v2", "val": "test_v2", "test": "test_v2"},
    },
    "sirstv2": {
        "held_out": {"train": "train_full", "val": "val_full", "test": "test_full"},
        "reference": {"train": "trainval_full", "val": "test_full", "test": "test_full"},
    },
    # a synthetic set on disk (`irstdlab data synth`) has the DenseSIRST split names
    "synthetic": {
        "held_out": {"train": "train_v2", "val": "val_v2", "test": "test_v2"},
        "reference": {"train": "trainval_v2", "val": "test_v2", "test": "test_v2"},
    },
}
ROLES = ("train", "val", "test")
# Field metadata for settings that change how fast a run goes, never what it computes (loader
# processes, the decoded-data cache): they stay out of config_hash, so rows and checkpoints of the
# same recipe match whatever the machine's loader settings were.
RUN_SETTING = {"hash": False}
MAX_SIDE = 8192  # pixels; an input side beyond this is a typo that would only fail as out-of-memory
MAX_COUNT = 4096  # batch sizes and repeats, for the same reason
# the in-memory synthetic set answers to the on-disk synthetic names: split name -> generated roles
IN_MEMORY_SPLITS: dict[str, tuple[str, ...]] = {
    "train_v2": ("train",), "val_v2": ("val",), "test_v2": ("test",), "trainval_v2": ("train", "val")}


@dataclass
class DataConfig:
    """Which images, which splits, which geometry, which batches."""

    dataset: Literal["synthetic", "densesirst", "sirstv2"] = "synthetic"
    root: str | None = None  # on-disk root; None with "synthetic" = generated in memory
    protocol: Literal["clean", "reference"] = "clean"  # box geometry, resize and AP arithmetic
    selection: Literal["held_out", "reference"] = "held_out"
    train_split: str | None = None  # explicit split names override `selection`
    val_split: str | None = None
    test_split: str | None = None
    size: int = 512  # model input side (squash under "reference", long edge + pad under "clean")
    # keep-ratio rescale into (long, short), e.g. [1000, 600] (ODI's OSCAR recipe), padded to a
    # multiple of 32 per image and to the batch's largest; replaces `size` (clean protocol only)
    scale: tuple[int, int] | None = None
    repeat: int = 1  # the reference's RepeatDataset(times=3): one epoch = repeat passes
    batch_size: int = 2  # global: each of N DDP workers loads batch_size / N
    eval_batch_size: int = 4
    # DataLoader processes per trainer worker; "auto": 0 for a CPU trial (its cores train), else
    # min(4, CPUs of the trial - 1) (harness.trial.resolve_num_workers, once the device is known)
    num_workers: int | Literal["auto"] = field(default="auto", metadata=RUN_SETTING)
    # decode + resize each on-disk split once per node and share it (datasets/cache.py); the random
    # flip and BAG-CP still run per sample, so results are bitwise the same with it on or off
    cache: bool = field(default=True, metadata=RUN_SETTING)
    cache_dir: str | None = field(default=None, metadata=RUN_SETTING)  # default: $IRSTDLAB_DATA_CACHE_DIR, else /dev/shm, else ~/.cache
    # in-memory synthetic set (dataset="synthetic", root=None): images per role, side, difficulty
    synthetic_images: tuple[int, int, int] = (192, 64, 64)
    synthetic_size: int = 128
    synthetic_difficulty: Literal["easy", "medium", "hard"] = "medium"
    synthetic_seed: int = 0

    def validate(self) -> None:
        if not 32 <= self.size <= MAX_SIDE or self.size % 32:
            raise ValueError(f"size: must be a multiple of 32 in 32..{MAX_SIDE}, got {self.size}")
        if self.scale is not None:
            if min(self.scale) < 32 or max(self.scale) > MAX_SIDE:
                raise ValueError(f"scale: both sides must be in 32..{MAX_SIDE}, got {list(self.scale)}")
            if self.protocol != "clean":
                raise ValueError("scale: keep-ratio rescaling needs protocol 'clean' (the reference protocol squashes)")
        for key in ("repeat", "batch_size", "eval_batch_size"):  # upper bound: a typo, not a run
            if getattr(self, key) < 1:
                raise ValueError(f"{key}: must be >= 1, got {getattr(self, key)}")
            if getattr(self, key) > MAX_COUNT:
                raise ValueError(f"{key}: must be <= {MAX_COUNT}, got {getattr(self, key)}")
        if self.num_workers != "auto" and not 0 <= self.num_workers <= 256:
            raise ValueError(f"num_workers: must be 'auto' or in 0..256, got {self.num_workers}")
        if self.cache_dir is not None and not self.cache_dir.strip():
            raise ValueError("cache_dir: must be a folder path or null (the default location), got ''")
        if any(n < 1 for n in self.synthetic_images):
            raise ValueError(f"synthetic_images: each of (train, val, test) must be >= 1, got {list(self.synthetic_images)}")
        if not 128 <= self.synthetic_size <= MAX_SIDE:
            raise ValueError(f"synthetic_size: must be in 128..{MAX_SIDE}, got {self.synthetic_size}")
        if not 0 <= self.synthetic_seed < 2**32:  # numpy's SeedSequence refuses negative seeds mid-run
            raise ValueError(f"synthetic_seed: must be in 0..{2**32 - 1}, got {self.synthetic_seed}")
        if self.dataset != "synthetic" and not self.root:
            raise ValueError(f"root: required for dataset {self.dataset!r} (the folder of its published layout)")
        if self.dataset == "synthetic" and self.root is None:  # generated in memory: only its own names
            for role in ROLES:
                name = getattr(self, f"{role}_split")
                if name and name not in IN_MEMORY_SPLITS:
                    raise ValueError(f"{role}_split: {name!r} is not a split of the in-memory synthetic set "
                                     f"(splits: {', '.join(IN_MEMORY_SPLITS)})")

    def split_names(self) -> dict[str, str]:
        """role -> split name after explicit overrides."""
        names = dict(SPLITS[self.dataset][self.selection])
        for role in ROLES:
            override = getattr(self, f"{role}_split")
            if override:
                names[role] = override
        return names


@dataclass
class AugmentConfig:
    """Training-time augmentation (evaluation never augments).

    BAG-CP (``datasets/bagcp.py``): ``bagcp`` picks the recipe (``none`` = off); the three
    toggles give the rows of the paper's Table III ((b) all off ... (f) all on).
    """

    hflip: float = 0.5  # probability of a horizontal flip
    bagcp: Literal["none", "paper", "reference"] = "none"
    bagcp_cluster: bool = True
    bagcp_gaussian: bool = True
    bagcp_background_aware: bool = True
    bagcp_prob: float = 1.0  # chance per sample (the released code: always)
    # after a BAG-CP paste, floor every existing GT box to integers and drop the ones that become
    # empty, as the released SkyCopyPaste does by re-deriving boxes from integer masks
    snap_gt: bool = False

    def validate(self) -> None:
        if not 0.0 <= self.hflip <= 1.0:
            raise ValueError(f"hflip: must be in [0, 1], got {self.hflip}")
        if not 0.0 <= self.bagcp_prob <= 1.0:
            raise ValueError(f"bagcp_prob: must be in [0, 1], got {self.bagcp_prob}")


class TransformedDataset:
    """A base dataset seen through a transform pipeline, ``repeat`` times per epoch.

    Item ``i`` of epoch ``e`` is transformed with ``default_rng([seed, e, i])``: the same
    whatever the worker that loads it. ``orig_boxes`` in ``meta`` keeps the ground truth in
    original image coordinates for evaluation.
    """

    def __init__(self, base: Any, transform: Any, seed: int = 0, repeat: int = 1, keep_original: bool = False,
                 cached: Any = None, cached_transform: Any = None) -> None:
        self.base = base  # the untransformed samples
        self.transform = transform
        # the same samples already resized by `transform`'s first step (datasets/cache.py), and the
        # steps after it: what __getitem__ reads when given
        self.cached, self.cached_transform = cached, cached_transform
        self.seed = int(seed)
        self.repeat = int(repeat)
        self.keep_original = keep_original  # meta["orig_image"]: the untransformed grey image (mNoCoAP)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.base) * self.repeat

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        source, transform = (self.base, self.transform) if self.cached is None else (self.cached, self.cached_transform)
        sample = source[index % len(self.base)]
        # a cached base is already resized and carries its original boxes (and image) in meta
        orig_boxes = np.array(sample.meta.get("orig_boxes", sample.boxes), np.float32)
        sample = sample.copy(meta=dict(sample.meta, orig_boxes=orig_boxes))
        if self.keep_original and "orig_image" not in sample.meta:
            sample.meta["orig_image"] = sample.image
        rng = np.random.default_rng([self.seed, self.epoch, index])
        return transform(sample, rng)


def collate_eval(samples: Sequence[Sample]):
    """``collate_detection`` plus each sample's ground truth in original coordinates."""
    images, targets, metas = collate_detection(samples)
    for meta, sample in zip(metas, samples):
        meta["orig_boxes"] = np.asarray(sample.meta.get("orig_boxes", np.zeros((0, 4))), np.float32)
        if "orig_image" in sample.meta:
            meta["orig_image"] = sample.meta["orig_image"]
    return images, targets, metas


def _base_datasets(cfg: DataConfig) -> dict[str, Any]:
    """role -> untransformed dataset of Samples."""
    if cfg.dataset == "synthetic" and cfg.root is None:
        from irstdlab.datasets.synthetic import SyntheticDataset

        from torch.utils.data import ConcatDataset

        generated = {
            role: SyntheticDataset(n, size=cfg.synthetic_size, seed=cfg.synthetic_seed, split=role,
                                   difficulty=cfg.synthetic_difficulty)
            for role, n in zip(ROLES, cfg.synthetic_images)
        }
        sets: dict[str, Any] = {}
        for role, name in cfg.split_names().items():  # reference: train on train+val, select on test
            parts: list[Any] = [generated[r] for r in IN_MEMORY_SPLITS[name]]
            sets[role] = parts[0] if len(parts) == 1 else ConcatDataset(parts)
        return sets
    from irstdlab.datasets.readers import open_dataset

    assert cfg.root is not None, "DataConfig.validate requires a root here"
    names = cfg.split_names()
    opened: dict[str, Any] = {}
    out = {}
    for role in ROLES:  # val and test may be the same split: open it once
        name = names[role]
        if name not in opened:
            opened[name] = open_dataset(cfg.dataset, cfg.root, split=name, protocol=cfg.protocol,
                                        load_masks=False)
        out[role] = opened[name]
    return out


def _bagcp(cfg: AugmentConfig, originals: Any, source: Any, source_transform: Any) -> list[Any]:
    """[] or [BagCP]: the paper recipe's target library comes from the original training images,
    the reference recipe's source is another training sample through the same resize and flip."""
    if cfg.bagcp == "none":
        return []
    from irstdlab.datasets.bagcp import BagCPConfig, build_bagcp, make_source

    config = BagCPConfig(copy_paste=True, cluster=cfg.bagcp_cluster, gaussian=cfg.bagcp_gaussian,
                         background_aware=cfg.bagcp_background_aware, recipe=cfg.bagcp, prob=cfg.bagcp_prob,
                         snap_gt=cfg.snap_gt)
    if cfg.bagcp == "paper":
        return [build_bagcp(config, train_samples=[originals[i] for i in range(len(originals))])]
    return [build_bagcp(config, source=make_source(source, source_transform))]


class WithOriginals:
    """A cached resized split whose samples carry their decoded original image (mNoCoAP's NoCo maps)."""

    def __init__(self, resized: Any, originals: Any) -> None:
        self.resized, self.originals = resized, originals

    def __len__(self) -> int:
        return len(self.resized)

    def __getitem__(self, index: int) -> Sample:
        sample = self.resized[index]
        sample.meta["orig_image"] = np.array(self.originals[index].image)  # a private, writable copy
        return sample


def _cached_bases(cfg: DataConfig, readers: dict[str, Any], originals_for: set[str]) -> dict[str, Any] | None:
    """role -> the role's split from the node's cache, resized (``"<role>"``) and, for the roles in
    ``originals_for``, decoded only (``"<role>/original"``); None when the cache cannot be used."""
    from pathlib import Path

    from irstdlab.datasets.cache import CacheKey, open_cached, source_files

    resize = Resize(cfg.protocol, cfg.size, cfg.scale)
    entries: dict[tuple[int, bool], Any] = {}  # val and test may be one split: one entry

    def entry(reader: Any, resized: bool) -> Any:
        if (id(reader), resized) not in entries:
            def samples():
                for sample in reader:
                    out = resize(sample) if resized else sample.copy()
                    out.meta["orig_boxes"] = sample.boxes
                    yield out

            side = (max(cfg.scale), min(cfg.scale)) if cfg.scale else (cfg.size, cfg.size)
            if not resized:
                side = reader[0].size
            key = CacheKey(cfg.dataset, str(Path(str(cfg.root)).resolve()), reader.split, cfg.protocol,
                           cfg.size if resized and cfg.scale is None else None, cfg.scale if resized else None)
            entries[(id(reader), resized)] = open_cached(
                key, source_files(reader), samples, cache_dir=cfg.cache_dir,
                meta={"dataset": reader.name, "split": reader.split, "protocol": reader.protocol},
                estimate_bytes=len(reader) * side[0] * side[1] * (2 if reader.has_sky else 1))
        return entries[(id(reader), resized)]

    out: dict[str, Any] = {}
    for role in ROLES:
        out[role] = entry(readers[role], True)
        if role in originals_for:
            out[f"{role}/original"] = entry(readers[role], False)
    return None if any(v is None for v in out.values()) else out


def build_datasets(data_cfg: DataConfig, augment_cfg: AugmentConfig, seed: int = 0,
                   keep_original: bool = False) -> dict[str, TransformedDataset]:
    """``{"train", "val", "test"}`` datasets of transformed samples for a trial.

    Train: resize (the protocol's), flip, repeated ``data_cfg.repeat`` times per epoch.
    Val/test: resize only; with ``keep_original`` their metas carry the original grey image
    (for mNoCoAP's NoCo maps). Raises :class:`DatasetError` for a missing root or split.
    With ``data_cfg.cache`` an on-disk split comes resized from the node's cache
    (``datasets/cache.py``) and only the random steps run here, drawing the same numbers.
    """
    base = _base_datasets(data_cfg)
    for role, ds in base.items():
        if len(ds) == 0:
            raise DatasetError(data_cfg.root, f"{role} split is empty")
    geometry = TransformConfig(data_cfg.protocol, data_cfg.size, augment_cfg.hflip, data_cfg.scale)
    in_memory = data_cfg.dataset == "synthetic" and data_cfg.root is None
    originals_for = ({"val", "test"} if keep_original else set()) | ({"train"} if augment_cfg.bagcp == "paper" else set())
    cached = _cached_bases(data_cfg, base, originals_for) if data_cfg.cache and not in_memory else None
    if cached is None:
        train_tf = build_transforms(geometry, train=True, augment=_bagcp(
            augment_cfg, base["train"], base["train"], build_transforms(geometry, train=True)))
        eval_tf = build_transforms(TransformConfig(data_cfg.protocol, data_cfg.size, 0.0, data_cfg.scale), train=False)
        return {
            "train": TransformedDataset(base["train"], train_tf, seed=seed, repeat=data_cfg.repeat),
            "val": TransformedDataset(base["val"], eval_tf, seed=seed, keep_original=keep_original),
            "test": TransformedDataset(base["test"], eval_tf, seed=seed, keep_original=keep_original),
        }
    # already resized: the same steps minus the resize (which draws no random numbers)
    flip = [HorizontalFlip(augment_cfg.hflip)] if augment_cfg.hflip > 0 else []
    bagcp = _bagcp(augment_cfg, cached.get("train/original"), cached["train"], Compose(flip))
    resize = Resize(data_cfg.protocol, data_cfg.size, data_cfg.scale)
    sets = {"train": TransformedDataset(base["train"], Compose([resize, *flip, *bagcp]), seed=seed,
                                        repeat=data_cfg.repeat, cached=cached["train"], cached_transform=Compose(flip + bagcp))}
    for role in ("val", "test"):
        resized = WithOriginals(cached[role], cached[f"{role}/original"]) if keep_original else cached[role]
        sets[role] = TransformedDataset(base[role], Compose([resize]), seed=seed, keep_original=keep_original,
                                        cached=resized, cached_transform=Compose([]))
    return sets


__all__ = ["IN_MEMORY_SPLITS", "AugmentConfig", "DataConfig", "TransformedDataset", "build_datasets", "collate_eval", "SPLITS"]
