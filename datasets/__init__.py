"""Readers of the published IRSTD layouts, the synthetic generator, BAG-CP and transforms.

Never builds networks and never imports ``irstdlab.harness``.
"""

from irstdlab.datasets.bagcp import TABLE_III_ROWS, BagCP, BagCPConfig, TargetLibrary, build_bagcp, make_source
from irstdlab.datasets.errors import DatasetError
from irstdlab.datasets.readers import DenseSIRST, SirstV2, open_dataset
from irstdlab.datasets.sample import Sample
from irstdlab.datasets.synthetic import SyntheticConfig, SyntheticDataset, write_dataset
from irstdlab.datasets.transforms import (
    Compose,
    HorizontalFlip,
    Resize,
    TransformConfig,
    build_transforms,
    collate_detection,
)

__all__ = [
    "TABLE_III_ROWS",
    "BagCP",
    "BagCPConfig",
    "Compose",
    "DatasetError",
    "DenseSIRST",
    "HorizontalFlip",
    "Resize",
    "Sample",
    "SirstV2",
    "SyntheticConfig",
    "SyntheticDataset",
    "TargetLibrary",
    "TransformConfig",
    "build_bagcp",
    "build_transforms",
    "collate_detection",
    "make_source",
    "open_dataset",
    "write_dataset",
]
