"""Readers of the published IRSTD layouts, the synthetic generator, BAG-CP and transforms.

Never builds networks and never imports ``irstdlab.harness``.
"""

from irstdlab.datasets.errors import DatasetError
from irstdlab.datasets.readers import DenseSIRST, SirstV2, open_dataset
from irstdlab.datasets.sample import Sample

__all__ = ["DatasetError", "DenseSIRST", "Sample", "SirstV2", "open_dataset"]
