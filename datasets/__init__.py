"""Readers of the published IRSTD layouts, the synthetic generator, BAG-CP and transforms.

Never builds networks and never imports ``irstdlab.harness``.
"""

from irstdlab.datasets.errors import DatasetError
from irstdlab.datasets.sample import Sample

__all__ = ["DatasetError", "Sample"]
