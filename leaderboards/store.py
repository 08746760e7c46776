"""The leaderboard on any pyarrow filesystem: a hive-partitioned Parquet dataset, one object per row.

Layout: ``<root>/search=<name>/row-<key hash>[-<unique>].parquet``, where ``<root>`` is a local
path or a URI such as ``s3://bucket/prefix/leaderboard`` (``storage_uri.resolve``). A row is
published whole (``store_io.write_object``): on a local disk it is written to a hidden temporary
file, fsynced and renamed onto a name that depends only on ``(search, trial_id)``, so a resumed
trial *replaces* its row; an object store has no rename, so there each write is a single PUT
under a key of its own and the older versions stay until ``compact`` removes them.

Many small objects are slow to read (~1-3 ms each locally, a round trip each on S3), so
``compact`` rewrites a partition into one ``compact-*.parquet`` object. Reading always
de-duplicates by ``(search, trial_id)`` keeping the newest ``written_at``; that makes
compaction (and ``merge``) crash-safe: a crash between writing the new object and deleting the
old ones only leaves duplicates that reading already resolves.

The ``search`` column lives in the folder name only (hive style), so that pandas/pyarrow/DuckDB
read the partition key without a type clash.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from irstdlab.leaderboards import schema as S
from irstdlab.leaderboards import storage_uri as su
from irstdlab.leaderboards.errors import LeaderboardError
from irstdlab.leaderboards.storage_uri import Location
from irstdlab.leaderboards.store_io import (PARTITION, concat, dedup_newest, delete_objects, list_objects,
                                             read_objects, write_object)
from irstdlab.leaderboards.store_io import partitions as list_partitions

__all__ = ["Leaderboard", "LeaderboardWarning", "MergeReport", "ReadResult", "ValidationReport",
           "check_search_name", "concat", "dedup_newest", "merge", "open", "row_file_name", "validate"]

_SEARCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class LeaderboardWarning(UserWarning):
    """A file was skipped (corrupt, truncated, not a leaderboard file) or a column was retyped."""


@dataclass
class ReadResult:
    table: pa.Table                         # every good row, de-duplicated by (search, trial_id)
    files: int = 0                          # files read successfully
    raw_rows: int = 0                       # rows before de-duplication
    skipped: list[tuple[str, str]] = field(default_factory=list)    # (file, reason)
    retyped: list[str] = field(default_factory=list)                # columns read as strings


def check_search_name(search: str) -> str:
    """Raise ``LeaderboardError`` unless ``search`` can name a partition directory."""
    if not isinstance(search, str) or not _SEARCH_RE.match(search):
        raise LeaderboardError("search", f"{search!r}: use letters, digits and . _ + - "
                               "(it names a directory), starting with a letter or digit")
    return search


def row_file_name(search: str, trial_id: str, unique: bool = False) -> str:
    """A row's object name: stable per (search, trial_id) (a rewrite replaces it) unless ``unique``
    (object stores: every version gets its own key, readers keep the newest)."""
    digest = hashlib.sha1(f"{search}\x00{trial_id}".encode()).hexdigest()[:24]
    return f"row-{digest}-{uuid.uuid4().hex[:16]}.parquet" if unique else f"row-{digest}.parquet"


def _shown(where: Location) -> Path | str:
    """How an object is named to the user: a local path, or its URI."""
    return Path(where.uri) if where.is_local else where.uri


def _stat(where: Location) -> tuple[int, int, int] | None:
    try:
        st = os.stat(where.path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class Leaderboard:
    """One leaderboard folder or prefix. ``append`` is safe from many processes at once."""

    def __init__(self, root: str | Path | Location):
        self.location = su.resolve(root)

    @property
    def root(self) -> Path | str:
        """The leaderboard's folder (local) or URI (anything else), as given."""
        return _shown(self.location)

    def __repr__(self) -> str:
        return f"Leaderboard({str(self.root)!r})"

    def exists(self) -> bool:
        return su.is_dir(self.location)

    # ---- writing ----
    def append(self, row: Mapping[str, Any]) -> Path | str:
        """Validate ``row`` and publish it whole; returns the row's file (or object URI)."""
        table = S.row_table(row)
        search = check_search_name(table["search"][0].as_py())
        name = row_file_name(search, table["trial_id"][0].as_py(), unique=not self.location.is_local)
        where = self.location.join(f"{PARTITION}{search}", name)
        write_object(table.drop_columns(["search"]), where)
        return _shown(where)

    def write_table(self, table: pa.Table, prefix: str = "compact") -> list[Path | str]:
        """Publish many rows at once, one object per search partition (merge/compaction/bulk load)."""
        table = S.cast_core(table)
        out = []
        for search in pc.unique(table["search"]).to_pylist():
            check_search_name(search)
            rows = table.filter(pc.equal(table["search"], search)).drop_columns(["search"])
            where = self.location.join(f"{PARTITION}{search}", f"{prefix}-{uuid.uuid4().hex[:16]}.parquet")
            write_object(rows, where)
            out.append(_shown(where))
        return out

    # ---- reading ----
    def partitions(self) -> list[str]:
        """The names of the searches that have a partition here."""
        return list_partitions(self.location)

    def objects(self, search: str | None = None) -> list[tuple[str, Location]]:
        """(search, object) pairs in reading order (compacted objects first within a search)."""
        return list_objects(self.location, search)

    def files(self, search: str | None = None) -> list[Location]:
        return [where for _, where in self.objects(search)]

    def read_table(self, search: str | None = None, files: Iterable[tuple[str, Location]] | None = None,
                   warn: bool = True) -> ReadResult:
        """Every good row as Arrow, unified across objects, newest per key; bad objects are skipped."""
        pairs = list(files) if files is not None else self.objects(search)
        results = read_objects([where for _, where in pairs])
        tables, skipped = [], []
        for (search_name, where), (t, reason) in zip(pairs, results):
            if t is None:
                skipped.append((str(where), reason))
                continue
            if "search" in t.column_names:
                t = t.drop_columns(["search"])
            t = t.append_column(pa.field("search", pa.string()), pa.array([search_name] * t.num_rows, pa.string()))
            tables.append(t)
        table, retyped = concat(tables)
        table = S.cast_core(table)
        raw = table.num_rows
        table = dedup_newest(table)
        if warn:
            for name, reason in skipped:
                warnings.warn(f"{name}: skipped ({reason})", LeaderboardWarning, stacklevel=2)
            for col in retyped:
                warnings.warn(f"{col}: typed differently across files; read as strings", LeaderboardWarning,
                              stacklevel=2)
        return ReadResult(table, len(tables), raw, skipped, retyped)

    def read(self, filter: str | None = None, include_partial: bool = False,
             with_paper: bool = False, search: str | None = None) -> Any:
        """The leaderboard as a pandas DataFrame.

        ``filter`` is a condition over column names (``param.p > 0.25`` works as
        written), parsed and whitelisted by ``filter_expr``, never executed. Only
        full-fidelity completed rows unless ``include_partial``; then a boolean
        ``partial`` column flags the others. ``with_paper`` adds the paper's rows.
        """
        from irstdlab.leaderboards import query

        df = S.to_pandas(self.read_table(search=search).table)
        if with_paper:
            from irstdlab.leaderboards.paper import paper_frame

            df = query.concat_frames([df, paper_frame()])
        return query.select(df, filter=filter, include_partial=include_partial)

    # ---- maintenance ----
    def compact(self, search: str | None = None) -> dict[str, int]:
        """Rewrite each partition's objects into one; returns {search: objects replaced}.

        Safe while rows are appended: the compacted object is written first, then only the
        objects it was made from are deleted. Corrupt objects are left in place (``validate``
        names them). Locally a row file is rewritten in place by an update, so an input that
        changed since it was read is kept; on object stores every write has its own key and an
        object never changes. Reading de-duplicates whatever remains.
        """
        done: dict[str, int] = {}
        local = self.location.is_local
        for name in ([search] if search else self.partitions()):
            pairs = self.objects(name)
            if len(pairs) <= 1:
                continue
            stats = {where.path: _stat(where) for _, where in pairs} if local else {}
            if local:
                pairs = [(s, w) for s, w in pairs if stats[w.path] is not None]
            res = self.read_table(files=pairs, warn=False)
            bad = {p for p, _ in res.skipped}
            if res.table.num_rows:
                self.write_table(res.table, prefix="compact")
            victims = [where for _, where in pairs
                       if str(where) not in bad and not (local and _stat(where) != stats[where.path])]
            done[name] = delete_objects(victims)
        return done


def open(path: str | Path | Location) -> Leaderboard:  # noqa: A001 - the package's public verb
    """Open (or designate) a leaderboard: a folder, or any pyarrow filesystem URI (``s3://…``).

    ``path`` is the leaderboard itself, or a storage location that holds one under ``leaderboard/``.
    """
    where = su.resolve(path)
    if su.is_file(where):
        raise LeaderboardError(where.uri, "is a file; a leaderboard is a directory of search=<name>/ folders")
    inner = where.join("leaderboard")
    if su.is_dir(inner) and not list_partitions(where):
        where = inner
    return Leaderboard(where)


@dataclass
class ValidationReport:
    root: str
    files: int
    good_files: int
    rows: int                                   # rows after de-duplication
    superseded: int                             # older versions of a row still on disk (compact removes them)
    corrupt: list[tuple[str, str]]              # (file, reason): skipped, every other row survives
    retyped: list[str]                          # columns typed differently across files
    invalid: list[tuple[str, str, str]]         # (search/trial_id, field, problem)
    repeated_runs: int                          # rows sharing (search, config_hash, seed, protocol, dataset)
    stale_temp_files: int                       # .tmp-* left by a crashed writer (harmless)

    @property
    def ok(self) -> bool:
        return not self.corrupt and not self.invalid and not self.retyped


def validate(lb: Leaderboard) -> ValidationReport:
    """Schema check, duplicate detection, corrupt/truncated files named."""
    res = lb.read_table(warn=False)
    t = res.table
    df = t.select([c for c in ("search", "trial_id", "status", "schema_version", "fidelity", "model",
                               "dataset", "protocol", "config_hash", "seed")]).to_pandas()
    invalid: list[tuple[str, str, str]] = []
    for rec in df.itertuples(index=False):
        key = f"{rec.search}/{rec.trial_id}"
        for name in S.REQUIRED:
            if getattr(rec, name) is None or getattr(rec, name) != getattr(rec, name):
                invalid.append((key, name, "required value is missing"))
        if rec.status not in S.STATUSES:
            invalid.append((key, "status", f"unknown status {rec.status!r}"))
        if rec.schema_version == rec.schema_version and rec.schema_version > S.SCHEMA_VERSION:
            invalid.append((key, "schema_version", f"{rec.schema_version} is newer than {S.SCHEMA_VERSION}"))
        if rec.fidelity == rec.fidelity and rec.fidelity is not None and not 0 <= rec.fidelity <= 1 + 1e-9:
            invalid.append((key, "fidelity", f"{rec.fidelity} outside [0, 1]"))
    runs = df.dropna(subset=["config_hash", "seed"])
    repeated = int(runs.duplicated(["search", "config_hash", "seed", "protocol", "dataset"], keep=False).sum())
    temps = sum(1 for part in lb.partitions() for info in su.listdir(lb.location.join(f"{PARTITION}{part}"))
                if info.base_name.startswith(".tmp-"))
    return ValidationReport(str(lb.root), len(res.skipped) + res.files, res.files, t.num_rows,
                            res.raw_rows - t.num_rows, res.skipped, res.retyped, invalid, repeated, temps)


@dataclass
class MergeReport:
    into: str
    rows_in: dict[str, int]                     # source -> good rows read
    written: int                                # rows written into the destination
    duplicates: int                             # keys present in more than one place (newest kept)
    skipped: list[tuple[str, str]]              # corrupt files named and skipped


def merge(sources: list[str | Path], into: str | Path) -> MergeReport:
    """Copy every good row of ``sources`` into ``into``; one key -> newest ``written_at``."""
    dst = open(into)
    tables, rows_in, skipped = [], {}, []
    for src in sources:
        lb = open(src)
        if not lb.exists():
            raise LeaderboardError(src, "no such leaderboard directory")
        res = lb.read_table(warn=False)
        rows_in[str(src)] = res.table.num_rows
        skipped += res.skipped
        tables.append(res.table)
    existing = dst.read_table(warn=False).table if dst.exists() else None
    combined, _ = concat(tables + ([existing] if existing is not None else []))
    keys = pa.table({"s": combined["search"], "t": combined["trial_id"]})
    duplicates = int(keys.group_by(["s", "t"]).aggregate([("s", "count")]).filter(
        pc.field("s_count") > 1).num_rows) if combined.num_rows else 0
    merged, _ = concat(tables)
    merged = dedup_newest(S.cast_core(merged))
    if merged.num_rows:
        dst.write_table(merged, prefix="merged")
    return MergeReport(str(dst.root), rows_in, merged.num_rows, duplicates, skipped)
