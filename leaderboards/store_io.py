"""The leaderboard's objects on a pyarrow filesystem, and combining their tables.

One object holds one or more rows of one search partition. Reading an object is a single GET of
its bytes, decoded in memory: on an object store a Parquet reader that seeks would cost a request
for the footer and another for the data, and small row objects are the common case. Writing
is a single PUT under a key nobody else uses on object stores (there is no rename there, and an
object never changes once written, which is what makes compaction safe); on a local disk the
object is written to a temporary name, fsynced and renamed, as ``storage_uri.write_bytes`` does.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from irstdlab.leaderboards import schema as S
from irstdlab.leaderboards import storage_uri as su
from irstdlab.leaderboards.storage_uri import Location

NEEDED = ("trial_id", "status", "written_at")  # an object without these is not one of ours
COMPACTED = ("compact-", "merged-")              # prefixes of many-row objects; per-row ones start "row-"
PARTITION = "search="


def table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def write_object(table: pa.Table, where: Location) -> None:
    su.write_bytes(where, table_bytes(table))


def read_object(where: Location) -> tuple[pa.Table | None, str | None]:
    """(table, None) or (None, why it was skipped): truncated, corrupt, unreadable, foreign."""
    try:
        data = su.read_bytes(where)
        with pq.ParquetFile(pa.BufferReader(data)) as fh:
            table = fh.read()
    except (OSError, pa.ArrowException, ValueError) as exc:
        return None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    missing = [c for c in NEEDED if c not in table.column_names]
    if missing:
        return None, f"not a leaderboard file (no column {missing[0]!r})"
    return table, None


def read_objects(objects: Sequence[Location]) -> list[tuple[pa.Table | None, str | None]]:
    """``read_object`` for each, in parallel: I/O and decoding release the GIL, and on an object
    store each read is a round trip, so more requests in flight hide the latency."""
    if not objects:
        return []
    per_core = 2 if objects[0].is_local else 16
    workers = max(1, min(len(objects), 8 if objects[0].is_local else 32, (os.cpu_count() or 1) * per_core))
    if workers == 1:
        return [read_object(o) for o in objects]
    with ThreadPoolExecutor(workers) as ex:
        return list(ex.map(read_object, objects))


def delete_objects(objects: Sequence[Location]) -> int:
    """Delete each; returns how many were still there (a concurrent compaction may have been first).
    Parallel on object stores, where one DELETE is one round trip."""
    if not objects:
        return 0
    if objects[0].is_local:
        return sum(su.delete(o) for o in objects)
    with ThreadPoolExecutor(min(32, len(objects))) as ex:
        return sum(ex.map(su.delete, objects))


def list_objects(root: Location, search: str | None = None) -> list[tuple[str, Location]]:
    """(search, object) for every data object under ``root`` (or one partition), in reading order:
    per search, compacted objects first, so that on equal ``written_at`` a later per-row one wins.
    Each partition is listed on its own (one request per 1000 keys on S3), never the whole tree
    below ``root``, which may hold a search's checkpoints too."""
    found: list[tuple[str, str, Location]] = []
    for part in ([search] if search else partitions(root)):
        folder = root.join(f"{PARTITION}{part}")
        for info in su.listdir(folder):
            name = info.base_name
            if info.type != pafs.FileType.File or not name.endswith(".parquet") or name.startswith((".", "_")):
                continue
            found.append((part, name, folder.join(name)))
    found.sort(key=lambda f: (f[0], not f[1].startswith(COMPACTED), f[1]))
    return [(part, loc) for part, _, loc in found]


def partitions(root: Location) -> list[str]:
    """The search names that have a ``search=<name>/`` folder (prefix) under ``root``."""
    names = set()
    for info in su.listdir(root):
        if info.type == pafs.FileType.Directory and info.base_name.startswith(PARTITION):
            names.add(info.base_name[len(PARTITION):])
    return sorted(names)


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
