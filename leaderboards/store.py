"""The leaderboard on disk: a hive-partitioned Parquet directory, one file per row.

Layout: ``<root>/search=<name>/row-<key hash>.parquet``. A row is written to a hidden
temporary file in the same directory, fsynced and ``os.replace``d onto its final
name, so a reader never sees half a file and a crash cannot touch earlier rows. The
name depends only on ``(search, trial_id)``: a resumed trial *replaces* its row.

Many tiny files are slow to read (~1-3 ms each), so ``compact`` rewrites a
partition into one ``compact-*.parquet`` file. Reading always de-duplicates by
``(search, trial_id)`` keeping the newest ``written_at``; that makes compaction (and
``merge``) crash-safe: a crash between writing the new file and deleting the old
ones only leaves duplicates that reading already resolves.

The ``search`` column lives in the directory name only (hive style), so that
pandas/pyarrow/DuckDB read the partition key without a type clash.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import re
import uuid
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from irstdlab.leaderboards import schema as S
from irstdlab.leaderboards.errors import LeaderboardError

_SEARCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_NEEDED = ("trial_id", "status", "written_at")  # a file without these is not one of ours


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


def partition_dir(root: Path, search: str) -> Path:
    return root / f"search={search}"


def row_file_name(search: str, trial_id: str) -> str:
    """Stable name of a row's file: same (search, trial_id) -> same name -> replaced."""
    digest = hashlib.sha1(f"{search}\x00{trial_id}".encode()).hexdigest()[:24]
    return f"row-{digest}.parquet"


def _write_atomic(table: pa.Table, final: Path) -> None:
    tmp = final.parent / f".tmp-{uuid.uuid4().hex}.parquet"
    try:
        with builtins.open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_one(path: Path) -> tuple[pa.Table | None, str | None]:
    try:
        with pq.ParquetFile(path) as fh:
            table = fh.read()
    except (OSError, pa.ArrowException, ValueError) as exc:  # truncated, corrupt, unreadable
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    missing = [c for c in _NEEDED if c not in table.column_names]
    if missing:
        return None, f"not a leaderboard file (no column {missing[0]!r})"
    return table, None


def _harmonise(tables: list[pa.Table]) -> tuple[list[pa.Table], list[str]]:
    """Make per-file schemas concatenable: a column typed differently across files
    (beyond int/float promotion or null) is read as strings rather than dropped."""
    types: dict[str, set[pa.DataType]] = {}
    for t in tables:
        for f in t.schema:
            if not pa.types.is_null(f.type):
                types.setdefault(f.name, set()).add(f.type)
    bad = [name for name, ts in types.items()
           if len(ts) > 1 and not all(pa.types.is_integer(x) or pa.types.is_floating(x) for x in ts)]
    if not bad:
        return tables, []
    out = []
    for t in tables:
        for name in bad:
            if name in t.column_names:
                i = t.column_names.index(name)
                col = t.column(name)
                try:
                    col = col.cast(pa.string())
                except pa.ArrowException:
                    col = pa.array([None if v is None else str(v) for v in col.to_pylist()], pa.string())
                t = t.set_column(i, pa.field(name, pa.string()), col)
        out.append(t)
    return out, sorted(bad)


def concat(tables: list[pa.Table]) -> tuple[pa.Table, list[str]]:
    """Concatenate tables whose columns differ; a column missing from some is null there."""
    if not tables:
        return S.cast_core(pa.table({"search": pa.array([], pa.string())})), []
    groups: dict[pa.Schema, list[pa.Table]] = {}
    for t in tables:  # same-schema tables concatenate without promotion (fast path)
        groups.setdefault(t.schema.remove_metadata(), []).append(t.replace_schema_metadata(None))
    parts = [pa.concat_tables(g) for g in groups.values()]
    parts, retyped = _harmonise(parts)
    table = pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]
    return table.combine_chunks(), retyped


def dedup_newest(table: pa.Table) -> pa.Table:
    """Keep one row per (search, trial_id): the newest ``written_at`` (later file on ties)."""
    n = table.num_rows
    if n == 0:
        return table
    idx = pa.array(range(n), pa.int64())
    keyed = pa.table({"search": table["search"], "trial_id": table["trial_id"],
                      "written_at": table["written_at"], "i": idx})
    if keyed.group_by(["search", "trial_id"]).aggregate([]).num_rows == n:
        return table
    order = pc.sort_indices(keyed, [("search", "ascending"), ("trial_id", "ascending"),
                                    ("written_at", "ascending"), ("i", "ascending")])
    s = keyed.take(order)
    a, b = s["search"].combine_chunks(), s["trial_id"].combine_chunks()
    nxt_same = pc.and_(pc.equal(a[:-1], a[1:]), pc.equal(b[:-1], b[1:]))
    last = pc.invert(pc.fill_null(nxt_same, False))
    keep_mask = pa.concat_arrays([last, pa.array([True])])
    keep = pc.filter(s["i"], keep_mask)
    return table.take(pc.take(keep, pc.sort_indices(keep)))  # original row order


class Leaderboard:
    """One leaderboard directory. ``append`` is safe from many processes at once."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Leaderboard({str(self.root)!r})"

    # ---- writing ----
    def append(self, row: Mapping[str, Any]) -> Path:
        """Validate ``row`` and publish it atomically; returns the row's file."""
        table = S.row_table(row)
        search = check_search_name(table["search"][0].as_py())
        part = partition_dir(self.root, search)
        part.mkdir(parents=True, exist_ok=True)
        final = part / row_file_name(search, table["trial_id"][0].as_py())
        _write_atomic(table.drop_columns(["search"]), final)
        return final

    def write_table(self, table: pa.Table, prefix: str = "compact") -> list[Path]:
        """Publish many rows at once, one file per search partition (merge/compaction/bulk load)."""
        table = S.cast_core(table)
        out = []
        for search in pc.unique(table["search"]).to_pylist():
            check_search_name(search)
            part = partition_dir(self.root, search)
            part.mkdir(parents=True, exist_ok=True)
            rows = table.filter(pc.equal(table["search"], search)).drop_columns(["search"])
            final = part / f"{prefix}-{uuid.uuid4().hex[:16]}.parquet"
            _write_atomic(rows, final)
            out.append(final)
        return out

    # ---- reading ----
    def partitions(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("search="))

    def files(self, search: str | None = None) -> list[Path]:
        parts = [partition_dir(self.root, search)] if search else self.partitions()
        # compacted files first: on equal written_at the later (per-row) file wins
        return [f for p in parts if p.is_dir()
                for f in sorted(p.glob("*.parquet"), key=lambda f: (not f.name.startswith(("compact-", "merged-")), f.name))
                if not f.name.startswith((".", "_"))]

    def read_table(self, search: str | None = None, files: Iterable[Path] | None = None,
                   warn: bool = True) -> ReadResult:
        """Every good row as Arrow, unified across files, newest per key; bad files are skipped."""
        paths = list(files) if files is not None else self.files(search)
        workers = max(1, min(8, len(paths), (os.cpu_count() or 1) * 2))  # I/O + decode release the GIL
        if workers > 1:
            with ThreadPoolExecutor(workers) as ex:
                results = list(ex.map(_read_one, paths))
        else:
            results = [_read_one(p) for p in paths]
        tables, skipped = [], []
        for path, (t, reason) in zip(paths, results):
            if t is None:
                skipped.append((str(path), reason or "unreadable"))
                continue
            search_name = path.parent.name[len("search="):]
            if "search" in t.column_names:
                t = t.drop_columns(["search"])
            t = t.append_column(pa.field("search", pa.string()), pa.array([search_name] * t.num_rows, pa.string()))
            tables.append(t)
        table, retyped = concat(tables)
        table = S.cast_core(table)
        raw = table.num_rows
        table = dedup_newest(table)
        if warn:
            for file, reason in skipped:
                warnings.warn(f"{file}: skipped ({reason})", LeaderboardWarning, stacklevel=2)
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
        """Rewrite each partition's files into one; returns {search: files replaced}.

        Corrupt files are left in place (``validate`` names them). An input file that
        changed since it was read (a concurrent update of the same row) is kept, so a
        newer row is never deleted; reading de-duplicates whatever remains.
        """
        done: dict[str, int] = {}
        parts = [partition_dir(self.root, search)] if search else self.partitions()
        for part in parts:
            paths = self.files(part.name[len("search="):])
            if len(paths) <= 1:
                continue
            stats = {p: os.stat(p) for p in paths if p.exists()}
            paths = list(stats)
            res = self.read_table(files=paths, warn=False)
            bad = {p for p, _ in res.skipped}
            if res.table.num_rows:
                self.write_table(res.table, prefix="compact")
            removed = 0
            for p in paths:
                if str(p) in bad:
                    continue
                before = stats[p]
                try:  # a concurrent compaction may have removed it already
                    st = os.stat(p)
                    if (st.st_ino, st.st_mtime_ns, st.st_size) == (before.st_ino, before.st_mtime_ns,
                                                                   before.st_size):
                        p.unlink()
                        removed += 1
                except FileNotFoundError:
                    pass
            done[part.name[len("search="):]] = removed
        return done


def open(path: str | Path) -> Leaderboard:  # noqa: A001 - the package's public verb
    """Open (or designate) a leaderboard directory.

    ``path`` is the leaderboard directory itself, or a storage directory that holds
    one under ``leaderboard/``.
    """
    p = Path(path)
    if p.is_file():
        raise LeaderboardError(p, "is a file; a leaderboard is a directory of search=<name>/ folders")
    if (p / "leaderboard").is_dir() and not any(p.glob("search=*")):
        p = p / "leaderboard"
    return Leaderboard(p)


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
    temps = sum(1 for p in lb.partitions() for _ in p.glob(".tmp-*"))
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
        if not lb.root.is_dir():
            raise LeaderboardError(src, "no such leaderboard directory")
        res = lb.read_table(warn=False)
        rows_in[str(src)] = res.table.num_rows
        skipped += res.skipped
        tables.append(res.table)
    existing = dst.read_table(warn=False).table if dst.root.is_dir() else None
    combined, _ = concat(tables + ([existing] if existing is not None else []))
    keys = pa.table({"s": combined["search"], "t": combined["trial_id"]})
    duplicates = int(keys.group_by(["s", "t"]).aggregate([("s", "count")]).filter(
        pc.field("s_count") > 1).num_rows) if combined.num_rows else 0
    merged, _ = concat(tables)
    merged = dedup_newest(S.cast_core(merged))
    if merged.num_rows:
        dst.write_table(merged, prefix="merged")
    return MergeReport(str(dst.root), rows_in, merged.num_rows, duplicates, skipped)
