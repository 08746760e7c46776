"""A torch-free helper of tests/test_data_cache.py: builds (or opens) one small cache entry, so the
test can run two builder processes that start in well under a second."""

from __future__ import annotations

from pathlib import Path

from irstdlab.datasets.cache import CacheKey, CachedSplit, open_cached, source_files
from irstdlab.datasets.readers import open_dataset
from irstdlab.datasets.transforms import Resize


def entry_for(root: Path, cache_dir: Path, split: str = "train_v2", lock: bool = True, log=None) -> CachedSplit | None:
    reader = open_dataset("synthetic", root, split=split, protocol="reference", load_masks=False)
    resize = Resize("reference", 64)

    def samples():
        for sample in reader:
            out = resize(sample)
            out.meta["orig_boxes"] = sample.boxes
            yield out

    key = CacheKey("synthetic", str(root), split, "reference", 64)
    return open_cached(key, source_files(reader), samples, estimate_bytes=len(reader) * 64 * 64 * 2,
                       cache_dir=str(cache_dir), lock=lock, log=log)
