"""Where a search (or a train run) keeps its state: a shared folder or any pyarrow filesystem URI.

``--storage`` is a plain path (every node must reach it on a cluster) or a URI such as
``s3://bucket/prefix`` (``leaderboards/storage_uri.py`` resolves it). Tune and Train get
``storage_path`` with the matching ``storage_filesystem``, so experiment state, trial checkpoints
and nested Train runs live there. Our own small state files (``irstdlab-search.json``,
``asha_rungs.jsonl``, ``trial_records/``) are read and written through the same filesystem by
*reference*: an absolute path on a local disk, the URI elsewhere. A reference is a plain string,
so it pickles into ``tuner.pkl`` and re-resolves on whichever driver restores the search.

What needs a POSIX file (the Optuna journal, Ray's log) stays in a driver-local work folder
(``$IRSTDLAB_WORK_DIR``, else ``$XDG_CACHE_HOME/irstdlab`` or ``~/.cache/irstdlab``) and is
copied to the storage after each update; a resume restores it from there, so deleting the work
folder loses nothing.

The driver is the only writer of these files (one per search), so it remembers what it last wrote
to an object store and reads that back without another request.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irstdlab.leaderboards import storage_uri
from irstdlab.leaderboards.storage_uri import Location, is_uri

WORK_DIR_ENV = "IRSTDLAB_WORK_DIR"
_written: dict[str, bytes] = {}  # reference -> the bytes this process last wrote there
_written_lock = threading.Lock()
_reachable: set[str] = set()  # storage URIs that answered in this process


def work_root() -> Path:
    """The driver-local scratch root: never needed for a resume."""
    if os.environ.get(WORK_DIR_ENV):
        return Path(os.environ[WORK_DIR_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "irstdlab"


def local_copy_path(ref: str) -> Path:
    """The driver-local POSIX file that stands for the remote file ``ref`` (same on every call)."""
    location = _location(ref)
    digest = hashlib.sha256(ref.encode()).hexdigest()[:12]
    return work_root() / "copies" / digest / location.name


def reference(location: Location) -> str:
    """A string that resolves to ``location`` again, on any driver: the absolute path on a local
    disk (the user's path may be relative to a folder we are no longer in), else the URI."""
    return location.path if location.is_local else location.uri


@functools.lru_cache(maxsize=256)
def _location(ref: str) -> Location:
    return storage_uri.resolve(ref)


def is_remote(ref: str) -> bool:
    return is_uri(ref) and not _location(ref).is_local


def join(ref: str, *parts: str) -> str:
    return reference(_location(ref).join(*parts))


def parent(ref: str) -> str:
    return reference(_location(ref).parent)


def shown(ref: str) -> str:
    """What to print for ``ref``: the URI (secrets removed) or the path."""
    return _location(ref).uri


def exists(ref: str) -> bool:
    return (ref in _written and is_remote(ref)) or storage_uri.exists(_location(ref))


def read_bytes(ref: str) -> bytes:
    """The file's bytes; ``FileNotFoundError`` when there is none."""
    cached = _written.get(ref) if is_remote(ref) else None
    if cached is not None:
        return cached
    location = _location(ref)
    if not storage_uri.is_file(location):
        raise FileNotFoundError(ref)
    return storage_uri.read_bytes(location)


def write_bytes(ref: str, data: bytes) -> None:
    """Publish ``data`` whole (one PUT on an object store, temp + rename on a disk)."""
    storage_uri.write_bytes(_location(ref), data)
    if is_remote(ref):  # a local file is cheap to read again, and tests edit local files by hand
        with _written_lock:
            _written[ref] = data


def forget(ref: str) -> None:
    """Drop what this process remembers of ``ref`` (another process may have written it)."""
    with _written_lock:
        _written.pop(ref, None)


def upload_file(local: Path, ref: str) -> None:
    """Copy a driver-local file to ``ref`` (a no-op when ``ref`` is that file)."""
    if not is_remote(ref) and os.path.abspath(local) == _location(ref).path:
        return
    storage_uri.write_bytes(_location(ref), local.read_bytes())


def download_file(ref: str, local: Path) -> bool:
    """Copy ``ref`` to the driver-local ``local``; False when ``ref`` does not exist."""
    location = _location(ref)
    if not storage_uri.is_file(location):
        return False
    local.parent.mkdir(parents=True, exist_ok=True)
    tmp = local.with_name(f".{local.name}.{os.getpid()}.tmp")
    tmp.write_bytes(storage_uri.read_bytes(location))
    os.replace(tmp, local)
    return True


@dataclass(frozen=True)
class SearchStorage:
    """The storage root of ``--storage`` and one search (or run) name under it."""

    root: Location
    name: str

    @property
    def remote(self) -> bool:
        return not self.root.is_local

    @property
    def root_ref(self) -> str:
        return reference(self.root)

    @property
    def search_ref(self) -> str:
        return reference(self.root.join(self.name))

    @property
    def leaderboard_ref(self) -> str:
        return reference(self.root.join("leaderboard"))

    def file(self, filename: str) -> str:
        return reference(self.root.join(self.name, filename))

    def shown(self, *parts: str) -> str:
        return self.root.join(self.name, *parts).uri

    def tune_storage(self) -> tuple[str, Any]:
        """``(storage_path, storage_filesystem)`` for ``RunConfig``: the filesystem is None on a
        local disk, so Tune and Train keep their usual local behaviour there."""
        return (self.root.path, self.root.fs) if self.remote else (self.root.path, None)

    def tune_search_path(self) -> tuple[str, Any]:
        """The experiment folder for ``Tuner.restore`` / ``can_restore`` and its filesystem."""
        path = self.root.join(self.name).path
        return (path, self.root.fs) if self.remote else (path, None)

    @property
    def work_dir(self) -> Path:
        """Driver-local files of this search (Ray's log, the journal's working copy): the search's
        own folder on a local disk, a per-search scratch folder otherwise."""
        if not self.remote:
            return Path(self.root.join(self.name).path)
        digest = hashlib.sha256(self.search_ref.encode()).hexdigest()[:10]
        return work_root() / "runs" / f"{self.name}-{digest}"


def tune_storage_of(ref: str) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for a storage reference (the workers' view)."""
    location = _location(ref)
    return (location.path, None) if location.is_local else (location.path, location.fs)


def open_storage(storage: str, name: str, field: str = "--storage") -> SearchStorage:
    """Resolve ``--storage`` and check it can be used before Ray starts: a local folder must be
    writable (``paths.ensure_writable_dir``), a URI's storage must answer (one line naming it, exit 2,
    within ``storage_uri.REACHABLE_TIMEOUT_S``)."""
    from irstdlab.harness.paths import ensure_writable_dir

    if not is_uri(storage):
        ensure_writable_dir(storage, field)
        ensure_writable_dir(Path(storage) / "leaderboard", field)
        return SearchStorage(storage_uri.resolve(os.path.abspath(storage)), name)
    root = storage_uri.resolve(storage)
    if root.is_local:  # file:///...
        ensure_writable_dir(root.path, field)
        return SearchStorage(root, name)
    if root.uri not in _reachable:  # the CLI checks before its slow imports; once is enough
        storage_uri.check_reachable(root)
        _reachable.add(root.uri)
    return SearchStorage(root, name)


__all__ = ["SearchStorage", "WORK_DIR_ENV", "download_file", "exists", "forget", "is_remote", "join",
           "local_copy_path", "open_storage", "parent", "read_bytes", "reference", "shown", "tune_storage_of",
           "upload_file", "work_root", "write_bytes"]
