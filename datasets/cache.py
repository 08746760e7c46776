"""A node-wide cache of decoded, deterministically resized splits, shared by every trial and epoch.

Decoding PNGs and resizing them is the same work in every trial of a search (and every epoch of a
trial); only the flip and BAG-CP that follow are random. So a split is decoded and resized once per
node into an *entry*: a folder holding the pixels as flat raw ``uint8`` files (memory-mapped by every
reader, so N trials share one copy in the page cache), ``index.npz`` (ids, boxes, sizes, resize
bookkeeping) and ``manifest.json`` (what was cached and every file's byte size).

* Key: (data set, resolved root, split, protocol, geometry, reader version). The reader version is
  a digest of the code that produces the cached values (``io.py``, ``readers.py``, ``transforms.py``,
  ``sample.py``) and the Pillow / OpenCV / numpy versions, so changing any of them misses the cache
  instead of serving stale pixels. ``geometry=None`` caches the decoded originals (for mNoCoAP's
  original images and the paper BAG-CP library).
* Invalidation: the entry's folder name also carries a digest of (size, mtime) of every source file
  (split list, images, box files, sky maps). A changed file gives another name: the old entry is
  never read again and is pruned by the next build of that key.
* Concurrency: a builder takes an ``flock`` on the key (so a second trial waits instead of decoding
  the same split again), builds into a private ``.tmp-*`` folder and renames it into place (atomic);
  if the name is taken when it renames (no lock available, e.g. a file system without ``flock``),
  the loser discards its copy and reads the winner's.
* Corruption: an entry whose manifest is unreadable, whose files' sizes differ from the manifest
  or whose index fails its CRC is moved aside and rebuilt. A cache that cannot be written at all
  (full, read-only) gives ``None``: the caller reads the files directly, the trial never fails
  because of its cache.

Where: ``data.cache_dir`` if set, else ``$IRSTDLAB_DATA_CACHE_DIR``, else ``/dev/shm/irstdlab-cache``
when ``/dev/shm`` exists and has twice the entry's size free, else ``~/.cache/irstdlab/data``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator, Sequence

import numpy as np

from irstdlab.datasets.errors import DatasetError
from irstdlab.datasets.sample import Sample

FORMAT_VERSION = 1
CACHE_DIR_ENV = "IRSTDLAB_DATA_CACHE_DIR"
SHM_DIR = Path("/dev/shm/irstdlab-cache")
HOME_DIR = Path("~/.cache/irstdlab/data")
MANIFEST = "manifest.json"
INDEX = "index.npz"
PIXEL_FILES = ("image.u8", "sky.u8")


class CacheCorrupt(Exception):
    """An entry that cannot be trusted; it is rebuilt, never shown to a trial."""


@dataclass(frozen=True)
class CacheKey:
    """What an entry holds: one split of one root, decoded, and resized by ``size``/``scale`` (or not)."""

    dataset: str
    root: str
    split: str
    protocol: str
    size: int | None  # None with scale None: the decoded originals
    scale: tuple[int, int] | None = None

    def digest(self) -> str:
        fields = dict(asdict(self), scale=None if self.scale is None else list(self.scale))
        text = json.dumps({"key": fields, "reader": reader_version()}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


_READER_VERSION: str | None = None


def reader_version() -> str:
    """Digest of the code and libraries whose output an entry stores."""
    global _READER_VERSION
    if _READER_VERSION is None:
        import cv2
        import PIL

        from irstdlab.datasets import io, readers, sample, transforms

        digest = hashlib.sha256(f"{FORMAT_VERSION} {cv2.__version__} {PIL.__version__} {np.__version__}".encode())
        for module in (io, readers, sample, transforms):
            assert module.__file__ is not None  # plain source modules of this package
            digest.update(Path(module.__file__).read_bytes())
        _READER_VERSION = digest.hexdigest()[:20]
    return _READER_VERSION


def source_files(reader: Any) -> list[Path]:
    """Every file a reader's split is made of: the split list, then per id its image, boxes and sky map."""
    files = [reader.split_file]
    for ident in reader.ids:
        files += [reader.image_path(ident), reader.box_path(ident)]
        if getattr(reader, "has_sky", False):
            files += [p for p in reader.sky_paths(ident) if p.is_file()][:1]
    return files


def fingerprint(files: Sequence[Path]) -> str:
    """Digest of (path, size, mtime) of every file: any edit, replacement or touch changes it."""
    digest = hashlib.sha256()
    for path in files:
        try:
            st = os.stat(path)
        except OSError:
            digest.update(f"{path}\0missing\n".encode())
            continue
        digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def cache_roots(cache_dir: str | None) -> list[Path]:
    """Folders searched for an entry, first = where a new one goes unless it lacks room."""
    chosen = cache_dir or os.environ.get(CACHE_DIR_ENV)
    if chosen:
        return [Path(chosen).expanduser()]
    roots = [SHM_DIR] if SHM_DIR.parent.is_dir() else []
    return roots + [HOME_DIR.expanduser()]


def _has_room(folder: Path, needed: int) -> bool:
    probe = folder if folder.is_dir() else folder.parent
    try:
        return shutil.disk_usage(probe).free >= 2 * needed
    except OSError:
        return False


# ------------------------------------------------------------------------------ reading
class CachedSplit:
    """A cached split as a dataset of :class:`Sample` (read-only views into shared memory maps).

    The maps open at once, so a later prune of the folder (its source files changed) cannot pull
    them from under a running trial (Linux keeps unlinked mapped files). Forked loader workers
    inherit them; a pickled copy (spawned workers) re-opens them by path."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.manifest = check_entry(self.folder)
        with np.load(self.folder / INDEX, allow_pickle=False) as index:
            self.index = {name: index[name] for name in index.files}
        self.ids = [str(i) for i in self.index["ids"]]
        self.meta = dict(self.manifest["meta"])
        self._maps: dict[str, np.ndarray] | None = None
        self._pixels()

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__, _maps=None)

    def _pixels(self) -> dict[str, np.ndarray]:
        if self._maps is None:
            self._maps = {name: np.memmap(self.folder / name, dtype=np.uint8, mode="r")
                          for name in PIXEL_FILES if self.manifest["files"].get(name)}
        return self._maps

    def __len__(self) -> int:
        return len(self.ids)

    def _plane(self, name: str, i: int) -> np.ndarray | None:
        start = int(self.index[f"{name}_offset"][i])
        if start < 0:
            return None
        h, w = (int(v) for v in self.index["shape"][i])
        return self._pixels()[name + ".u8"][start:start + h * w].reshape(h, w)

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i %= len(self)
        lo, hi = (int(v) for v in self.index["box_span"][i])
        olo, ohi = (int(v) for v in self.index["orig_box_span"][i])
        meta = dict(self.meta, orig_boxes=self.index["orig_boxes"][olo:ohi].copy())
        if self.manifest["resized"]:
            sy, sx = (float(v) for v in self.index["scale"][i])
            pad_b, pad_r = (int(v) for v in self.index["pad"][i])
            meta.update(scale=(sy, sx), pad=(pad_b, pad_r), input_size=tuple(int(v) for v in self.index["shape"][i]))
        orig_h, orig_w = (int(v) for v in self.index["orig_size"][i])
        image = self._plane("image", i)
        assert image is not None  # every cached sample has its image plane; only sky maps are optional
        return Sample(self.ids[i], image, self.index["boxes"][lo:hi].copy(), self._plane("sky", i),
                      None, (orig_h, orig_w), meta)


def check_entry(folder: Path) -> dict[str, Any]:
    """The entry's manifest after checking every file's size and the index's CRC; else CacheCorrupt."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != FORMAT_VERSION:
            raise CacheCorrupt(f"format {manifest.get('format')!r}")
        for name, size in manifest["files"].items():
            actual = (folder / name).stat().st_size
            if actual != size:
                raise CacheCorrupt(f"{name}: {actual} bytes, manifest says {size}")
        if zlib.crc32((folder / INDEX).read_bytes()) != manifest["index_crc32"]:
            raise CacheCorrupt(f"{INDEX}: CRC mismatch")
        return manifest
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CacheCorrupt(f"{type(exc).__name__}: {exc}") from None


# ------------------------------------------------------------------------------ building
def _write_entry(folder: Path, samples: Iterator[Sample], resized: bool, meta: dict[str, Any]) -> None:
    folder.mkdir(parents=True)
    ids: list[str] = []
    shapes: list[tuple[int, int]] = []
    orig_sizes: list[tuple[int, int]] = []
    scales: list[Any] = []
    pads: list[Any] = []
    spans: list[tuple[int, int]] = []
    orig_spans: list[tuple[int, int]] = []
    boxes: list[np.ndarray] = []
    orig_boxes: list[np.ndarray] = []
    offsets: dict[str, list[int]] = {"image": [], "sky": []}
    written = {"image": 0, "sky": 0}
    box_count = orig_count = 0
    with open(folder / "image.u8", "wb") as image_file, open(folder / "sky.u8", "wb") as sky_file:
        outs = {"image": image_file, "sky": sky_file}
        for sample in samples:
            ids.append(sample.id)
            shapes.append(sample.size)
            orig_sizes.append(sample.orig_size)
            scales.append(sample.meta.get("scale", (1.0, 1.0)))
            pads.append(sample.meta.get("pad", (0, 0)))
            for name, plane in (("image", sample.image), ("sky", sample.sky)):
                if plane is None:
                    offsets[name].append(-1)
                    continue
                offsets[name].append(written[name])
                data = np.ascontiguousarray(plane, np.uint8).tobytes()
                outs[name].write(data)
                written[name] += len(data)
            boxes.append(np.asarray(sample.boxes, np.float32).reshape(-1, 4))
            spans.append((box_count, box_count + len(boxes[-1])))
            box_count += len(boxes[-1])
            orig_boxes.append(np.asarray(sample.meta["orig_boxes"], np.float32).reshape(-1, 4))
            orig_spans.append((orig_count, orig_count + len(orig_boxes[-1])))
            orig_count += len(orig_boxes[-1])
    np.savez(folder / INDEX, ids=np.asarray(ids, dtype=str), shape=np.asarray(shapes, np.int64).reshape(-1, 2),
             orig_size=np.asarray(orig_sizes, np.int64).reshape(-1, 2),
             scale=np.asarray(scales, np.float64).reshape(-1, 2), pad=np.asarray(pads, np.int64).reshape(-1, 2),
             boxes=np.concatenate(boxes or [np.zeros((0, 4), np.float32)]),
             box_span=np.asarray(spans, np.int64).reshape(-1, 2),
             orig_boxes=np.concatenate(orig_boxes or [np.zeros((0, 4), np.float32)]),
             orig_box_span=np.asarray(orig_spans, np.int64).reshape(-1, 2),
             image_offset=np.asarray(offsets["image"], np.int64), sky_offset=np.asarray(offsets["sky"], np.int64))
    files = {name: (folder / name).stat().st_size for name in (*PIXEL_FILES, INDEX)}
    manifest = {"format": FORMAT_VERSION, "resized": resized, "count": len(ids), "meta": meta, "files": files,
                "index_crc32": zlib.crc32((folder / INDEX).read_bytes())}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))  # last: a folder without it is unfinished


@contextlib.contextmanager
def _key_lock(path: Path, enabled: bool):
    """An exclusive ``flock`` for one key; a file system that refuses it just runs unlocked."""
    if not enabled:
        yield
        return
    try:
        import fcntl

        handle = open(path, "a+")
    except (ImportError, OSError):
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError:
            pass
        yield


def _discard(folder: Path) -> None:
    """Move aside, then delete: a reader that still maps the old files keeps its pages."""
    trash = folder.with_name(f".trash-{folder.name}-{uuid.uuid4().hex[:8]}")
    with contextlib.suppress(OSError):
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def _prune(root: Path, key_digest: str, keep: str) -> None:
    """Remove the key's other entries (older source files) and temp folders of dead builders."""
    for path in root.glob(f"{key_digest}-*"):
        if path.is_dir() and path.name != keep:
            _discard(path)
    for path in root.glob(f".tmp-{key_digest}-*"):
        pid = path.name.rsplit("-", 2)[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def open_cached(key: CacheKey, files: Sequence[Path], samples: Any, *, estimate_bytes: int,
                meta: dict[str, Any] | None = None, cache_dir: str | None = None, lock: bool = True,
                log: Any = None) -> CachedSplit | None:
    """The entry of ``key`` for the current ``files``, built from ``samples()`` (an iterator of
    resized samples with ``meta['orig_boxes']``) when missing or corrupt; None when no cache folder
    can hold it. ``meta``: what every sample's meta starts with (the reader's).
    ``DatasetError`` from decoding propagates (bad data is the user's to fix)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    key_digest = key.digest()
    name = f"{key_digest}-{fingerprint(files)}"
    roots = cache_roots(cache_dir)
    for root in roots:
        if (root / name).is_dir():
            try:
                return CachedSplit(root / name)
            except CacheCorrupt as exc:
                log(f"data cache: {root / name} is corrupt ({exc}); rebuilding it")
                _discard(root / name)
    target = next((r for r in roots if _has_room(r, estimate_bytes)), None)
    if target is None:
        log(f"data cache: no room for {estimate_bytes / 2**20:.0f} MiB in {', '.join(map(str, roots))}; "
            "reading the files directly")
        return None
    try:
        target.mkdir(parents=True, exist_ok=True)
        with _key_lock(target / f"{key_digest}.lock", lock):
            final = target / name
            if final.is_dir():  # another trial built it while this one waited
                try:
                    return CachedSplit(final)
                except CacheCorrupt:
                    _discard(final)
            tmp = target / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            started = time.perf_counter()
            try:
                _write_entry(tmp, samples(), key.size is not None or key.scale is not None,
                             dict(meta or {}))
                try:
                    tmp.rename(final)
                    log(f"data cache: built {final} ({key.dataset} {key.split}, "
                        f"{sum(f.stat().st_size for f in final.iterdir()) / 2**20:.1f} MiB, "
                        f"{time.perf_counter() - started:.1f} s)")
                except OSError as exc:  # lost a race with an unlocked builder: use the winner's
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    shutil.rmtree(tmp, ignore_errors=True)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            _prune(target, key_digest, keep=name)
            return CachedSplit(final)
    except DatasetError:
        raise
    except (OSError, CacheCorrupt) as exc:
        log(f"data cache: cannot use {target} ({exc}); reading the files directly")
        return None


__all__ = ["CACHE_DIR_ENV", "CacheCorrupt", "CacheKey", "CachedSplit", "cache_roots", "check_entry",
           "fingerprint", "open_cached", "reader_version", "source_files"]
