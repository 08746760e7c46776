"""The Parquet leaderboard store: schema and validation, atomic per-row files with
update semantics, concurrent appends, corrupt files, compaction, merge, and reading
the directory without irstdlab."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

import irstdlab.leaderboards as lb
from irstdlab.leaderboards import schema as S
from irstdlab.leaderboards.store import LeaderboardWarning, merge, validate

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def row(trial: str, search: str = "s1", **extra) -> dict:
    base = {"search": search, "trial_id": trial, "status": "completed", "model": "bafenet",
            "dataset": "densesirst", "protocol": "reference", "seed": 0, "epochs_completed": 20,
            "max_epochs": 20, "metrics": {"val/mAP07": 0.25}}
    base.update(extra)
    return base


def read_quiet(board: lb.Leaderboard, **kw) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeaderboardWarning)
        return board.read(**kw)


def test_roundtrip_types_and_derived_columns(tmp_path):
    board = lb.open(tmp_path)
    started = dt.datetime(2026, 3, 1, 12, 0, 0)  # naive -> UTC
    board.append(row("t1", seed=7, started_at=started, ended_at="2026-03-01T13:00:00+01:00",
                     params={"p": 0.25, "adapter_hidden": 64, "exchange": "channel", "seg_head": True,
                             "inactive": None},
                     metrics={"val/mAP07": 0.5, "test/mAP07": 0.4}, best={"val/mAP07": 0.55}, best_epoch=18,
                     curves={"precision": [1.0, 0.5], "recall": [0.1, 0.6]}, gmacs=57.6, params_m=22.3))
    f = next(tmp_path.glob("search=s1/row-*.parquet"))
    schema = pq.read_schema(f)
    assert "search" not in schema.names  # hive partition only
    assert schema.field("param.p").type == pa.float64()
    assert schema.field("param.adapter_hidden").type == pa.int64()
    assert schema.field("param.exchange").type == pa.string()
    assert schema.field("param.seg_head").type == pa.bool_()
    assert schema.field("curve.precision").type == pa.list_(pa.float64())
    assert schema.field("written_at").type == pa.timestamp("us", tz="UTC")
    df = board.read()
    r = df.iloc[0]
    assert (r["search"], r["trial_id"], r["seed"], r["schema_version"]) == ("s1", "t1", 7, S.SCHEMA_VERSION)
    assert r["fidelity"] == 1.0 and r["source"] == "run"
    assert r["metric.val/mAP07"] == 0.5 and r["best.val/mAP07"] == 0.55 and r["best_epoch"] == 18
    assert pd.isna(r["param.inactive"])
    assert r["started_at"] == pd.Timestamp("2026-03-01T12:00:00Z")
    assert r["ended_at"] == pd.Timestamp("2026-03-01T12:00:00Z")
    assert list(r["curve.recall"]) == [0.1, 0.6]
    import json

    assert json.loads(r["params_json"]) == {"p": 0.25, "adapter_hidden": 64, "exchange": "channel",
                                            "seg_head": True, "inactive": None}


def test_numpy_scalars_are_typed_like_python_ones(tmp_path):
    board = lb.open(tmp_path)
    board.append(row("t1", seed=np.int64(3), params={"flag": np.True_, "k": np.int32(4), "x": np.float32(0.5)},
                     metrics={"val/mAP07": np.float64(0.125)}))
    f = next(tmp_path.glob("search=s1/*.parquet"))
    types = {n: str(pq.read_schema(f).field(n).type) for n in ("param.flag", "param.k", "param.x")}
    assert types == {"param.flag": "bool", "param.k": "int64", "param.x": "double"}
    r = board.read().iloc[0]
    assert (r["seed"], r["param.flag"], r["param.k"], r["param.x"], r["metric.val/mAP07"]) == (3, True, 4, 0.5, 0.125)


@pytest.mark.parametrize("bad, field", [
    ({"search": None}, "search"),
    ({"model": ""}, "model"),
    ({"seed": "zero"}, "seed"),
    ({"status": "TERMINATED"}, "status"),
    ({"gmacs": "57G"}, "gmacs"),
    ({"metric.val/mAP07": "high"}, "metric.val/mAP07"),
    ({"accuracy": 0.9}, "accuracy"),
    ({"params": {"x": [1, 2]}}, "param.x"),
    ({"fidelity": 1.5}, "fidelity"),
    ({"started_at": "yesterday"}, "started_at"),
    ({"search": "a/b"}, "search"),
    ({"schema_version": S.SCHEMA_VERSION + 1}, "schema_version"),
])
def test_bad_rows_name_the_field(tmp_path, bad, field):
    board = lb.open(tmp_path)
    r = row("t1")
    if "metric.val/mAP07" in bad:
        r.pop("metrics")
    r.update(bad)
    with pytest.raises(lb.LeaderboardError) as err:
        board.append(r)
    msg = str(err.value)
    assert msg.startswith(f"{field}: ") and "\n" not in msg
    assert not list(tmp_path.rglob("*.parquet"))  # nothing written


def test_same_key_updates_its_row_never_duplicates(tmp_path):
    board = lb.open(tmp_path)
    board.append(row("t1", status="early_stopped", epochs_completed=5, metrics={"val/mAP07": 0.1}))
    board.append(row("t2"))
    assert len(board.read()) == 1  # the early-stopped row does not rank
    partial = board.read(include_partial=True)
    assert partial.set_index("trial_id")["partial"].to_dict() == {"t1": True, "t2": False}
    assert partial.set_index("trial_id").loc["t1", "fidelity"] == 0.25
    board.append(row("t1", metrics={"val/mAP07": 0.3}))  # the resumed trial finished
    assert len(list(tmp_path.rglob("*.parquet"))) == 2
    df = board.read()
    assert sorted(df["trial_id"]) == ["t1", "t2"]
    assert df.set_index("trial_id").loc["t1", "metric.val/mAP07"] == 0.3


def test_column_in_some_files_only_is_never_dropped(tmp_path):
    board = lb.open(tmp_path)
    for i in range(40):
        params = {"p": 0.5, "k": i}  # int in most files ...
        if i == 17:
            params["only_here"] = "x"
        if i == 3:
            params["k"] = 2.5  # ... float in one: promoted, not dropped
        board.append(row(f"t{i}", params=params, metrics={"val/mAP07": i / 100, **({"extra": 1.0} if i < 2 else {})}))
    df = board.read()
    assert len(df) == 40
    assert df["param.only_here"].notna().sum() == 1
    assert df["metric.extra"].notna().sum() == 2
    assert df["param.k"].dtype == np.float64 and df.set_index("trial_id").loc["t3", "param.k"] == 2.5
    # a type clash (string vs number) keeps every row and reads the column as strings
    board.append(row("t99", params={"p": "half"}))
    with pytest.warns(LeaderboardWarning, match="param.p"):
        df = board.read()
    assert len(df) == 41 and set(df["param.p"]) == {"0.5", "half"}


def _writer(root: str, worker: int, n: int) -> None:
    board = lb.open(root)
    for i in range(n):
        board.append(row(f"w{worker}-{i}", search=f"s{worker % 2}", seed=worker,
                         params={"p": i / n, **({"w": worker} if worker % 3 == 0 else {})},
                         metrics={"val/mAP07": (worker * n + i) / 1000}))
        if i % 10 == 0:  # every worker also updates one common row
            board.append(row("shared", search="s0", seed=worker, metrics={"val/mAP07": float(worker)}))


def test_concurrent_appends_from_8_processes(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, 50)) for w in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    board = lb.open(tmp_path)
    res = board.read_table()
    assert not res.skipped and res.raw_rows == 401 and res.table.num_rows == 401
    df = board.read()
    assert len(df) == 401 and df[["search", "trial_id"]].duplicated().sum() == 0
    ours = df[df["trial_id"] != "shared"]
    expected = {(w, i): (w * 50 + i) / 1000 for w in range(8) for i in range(50)}
    got = {(int(t[1]), int(t.split("-")[1])): v for t, v in zip(ours["trial_id"], ours["metric.val/mAP07"])}
    assert got == expected
    assert df["param.w"].notna().sum() == 150  # workers 0, 3, 6 only
    assert not list(tmp_path.rglob(".tmp-*"))
    assert df.set_index("trial_id").loc["shared", "metric.val/mAP07"] in range(8)


def test_truncated_and_foreign_files_are_named_and_skipped(tmp_path):
    board = lb.open(tmp_path)
    paths = [board.append(row(f"t{i}", metrics={"val/mAP07": i / 10})) for i in range(10)]
    victim = paths[4]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a crash that bypassed the atomic rename
    (tmp_path / "search=s1" / "junk.parquet").write_bytes(b"not parquet at all")
    pq.write_table(pa.table({"x": [1]}), tmp_path / "search=s1" / "foreign.parquet")
    (tmp_path / "search=s1" / ".tmp-dead.parquet").write_bytes(data[:100])  # an interrupted writer
    with pytest.warns(LeaderboardWarning) as caught:
        df = board.read()
    assert sorted(df["trial_id"]) == sorted(f"t{i}" for i in range(10) if i != 4)
    msgs = " ".join(str(w.message) for w in caught)
    assert str(victim) in msgs and "junk.parquet" in msgs and "foreign.parquet" in msgs
    rep = validate(board)
    assert not rep.ok and rep.rows == 9 and rep.stale_temp_files == 1
    assert {Path(p).name for p, _ in rep.corrupt} == {victim.name, "junk.parquet", "foreign.parquet"}


def test_compact_keeps_newest_and_later_updates_still_win(tmp_path):
    board = lb.open(tmp_path)
    for i in range(30):
        board.append(row(f"t{i}", search="s1" if i % 3 else "s2", metrics={"val/mAP07": i / 100}))
    board.append(row("t5", metrics={"val/mAP07": 0.99}))
    (tmp_path / "search=s1" / "junk.parquet").write_bytes(b"PAR1 broken")
    before = read_quiet(board).sort_values(["search", "trial_id"]).reset_index(drop=True)
    done = board.compact()
    assert done == {"s1": 20, "s2": 10}
    names = sorted(p.name.split("-")[0] for p in board.files())
    assert names == ["compact", "compact", "junk.parquet"]  # the corrupt file is left for a human
    after = read_quiet(board).sort_values(["search", "trial_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, after)
    assert after.set_index("trial_id").loc["t5", "metric.val/mAP07"] == 0.99
    # an update after compaction: its row file is newer than the compacted copy
    board.append(row("t5", metrics={"val/mAP07": 0.5}))
    df = read_quiet(board)
    assert len(df) == 30 and df.set_index("trial_id").loc["t5", "metric.val/mAP07"] == 0.5
    # an older write (explicit written_at) does not beat the newer compacted copy
    board.append(row("t7", metrics={"val/mAP07": 0.0}, written_at=T0))
    assert read_quiet(board).set_index("trial_id").loc["t7", "metric.val/mAP07"] == 0.07


def test_merge_unions_keeps_newest_and_skips_corrupt(tmp_path):
    a, b, dst = lb.open(tmp_path / "a"), lb.open(tmp_path / "b"), tmp_path / "dst"
    for i in range(5):
        a.append(row(f"t{i}", metrics={"val/mAP07": 0.1}, written_at=T0))
    for i in range(3, 8):
        b.append(row(f"t{i}", metrics={"val/mAP07": 0.2}, written_at=T0 + dt.timedelta(hours=1)))
    bad = b.append(row("t9"))
    bad.write_bytes(bad.read_bytes()[:40])
    rep = merge([tmp_path / "a", tmp_path / "b"], dst)
    assert rep.rows_in == {str(tmp_path / "a"): 5, str(tmp_path / "b"): 5}
    assert rep.duplicates == 2 and rep.written == 8 and [Path(p) for p, _ in rep.skipped] == [bad]
    df = lb.open(dst).read().set_index("trial_id")
    assert len(df) == 8
    assert df.loc["t2", "metric.val/mAP07"] == 0.1 and df.loc["t4", "metric.val/mAP07"] == 0.2


def test_readable_without_irstdlab(tmp_path):
    board = lb.open(tmp_path / "leaderboard")
    for i in range(6):
        board.append(row(f"t{i}", search=f"s{i % 2}", params={"p": i} if i else {"q": "only-first"}))
    assert lb.open(tmp_path).root == tmp_path / "leaderboard"  # storage dir -> its leaderboard/
    # the recipe in SCHEMA.md: plain pyarrow, hive partitioning, unified schema
    files = [str(p) for p in (tmp_path / "leaderboard").rglob("*.parquet")]
    part_schema = pa.schema([("search", pa.string())])
    unified = pa.unify_schemas([pq.read_schema(f) for f in files] + [part_schema], promote_options="permissive")
    part = ds.partitioning(part_schema, flavor="hive")
    table = ds.dataset(files, schema=unified, partitioning=part,
                       partition_base_dir=str(tmp_path / "leaderboard")).to_table()
    plain = table.to_pandas().sort_values("trial_id")
    assert list(plain["search"]) == ["s0", "s1"] * 3
    assert plain["param.q"].notna().sum() == 1 and plain["param.p"].notna().sum() == 5
    # a single file is an ordinary Parquet file for pandas
    one = pd.read_parquet(files[0])
    assert len(one) == 1 and "metric.val/mAP07" in one.columns


def test_dedup_keeps_the_newest_per_key_in_original_order():
    from irstdlab.leaderboards.store import dedup_newest

    rng = np.random.default_rng(0)
    n = 500
    keys = rng.integers(0, 60, n)
    when = rng.permutation(n)  # distinct times
    table = pa.table({"search": [f"s{k % 3}" for k in keys], "trial_id": [f"t{k}" for k in keys],
                      "written_at": pa.array([T0 + dt.timedelta(seconds=int(w)) for w in when],
                                             pa.timestamp("us", tz="UTC")),
                      "pos": np.arange(n)})
    got = dedup_newest(table).to_pandas()
    frame = table.to_pandas()
    want = frame.loc[frame.groupby(["search", "trial_id"])["written_at"].idxmax()].sort_values("pos")
    assert list(got["pos"]) == list(want["pos"])


def _endless_writer(root: str) -> None:
    board = lb.open(root)
    i = 0
    while True:  # new rows and rewrites of one row, until killed
        board.append(row(f"n{i}", params={"i": i}))
        board.append(row("same", metrics={"val/mAP07": i / 1e6}))
        i += 1


def test_a_writer_killed_mid_write_leaves_every_published_row_readable(tmp_path):
    import os
    import signal
    import time

    ctx = mp.get_context("fork")
    proc = ctx.Process(target=_endless_writer, args=(str(tmp_path),))
    proc.start()
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("search=s1/row-*.parquet"))) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    res = lb.open(tmp_path).read_table()
    published = list(tmp_path.glob("search=s1/row-*.parquet"))
    assert not res.skipped and len(published) >= 20
    assert res.table.num_rows == len(published)  # one row per published file, none half-written
    ids = set(res.table["trial_id"].to_pylist())
    n = len(ids - {"same"})
    assert ids - {"same"} == {f"n{i}" for i in range(n)}  # appends landed in order, none lost


def test_two_compactions_at_once_lose_nothing(tmp_path):
    board = lb.open(tmp_path)
    for i in range(60):
        board.append(row(f"t{i}", metrics={"val/mAP07": i / 100}))
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=lb.open(tmp_path).compact) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    df = board.read()
    assert sorted(df["trial_id"]) == sorted(f"t{i}" for i in range(60))
    assert dict(zip(df["trial_id"], df["metric.val/mAP07"]))["t42"] == 0.42
    assert not list(tmp_path.glob("search=s1/row-*"))
