"""Storage URIs and the leaderboard on S3, against a real S3 wire-protocol server on loopback (moto)."""

from __future__ import annotations

import socket
import time

import pyarrow.fs as pafs
import pytest

from irstdlab.leaderboards import storage_uri as su


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_plain_path_is_local(tmp_path):
    loc = su.resolve(str(tmp_path / "runs"))
    assert loc.is_local and loc.path == str(tmp_path / "runs") and loc.uri == str(tmp_path / "runs")
    su.write_bytes(loc.join("a", "b.txt"), b"hello")
    assert su.read_bytes(loc.join("a/b.txt")) == b"hello"
    assert [i.base_name for i in su.listdir(loc.join("a"))] == ["b.txt"]  # no temp file left behind
    assert su.delete(loc.join("a/b.txt")) and not su.delete(loc.join("a/b.txt"))


def test_s3_round_trip_and_secret_free_uri(s3_bucket):
    loc = su.resolve(f"{s3_bucket}/prefix")
    assert isinstance(loc.fs, pafs.S3FileSystem) and loc.path == f"{s3_bucket[5:]}/prefix"
    su.check_reachable(loc)
    obj = loc.join("dir", "x.json")
    su.write_bytes(obj, b"{}")
    assert su.exists(obj) and su.read_bytes(obj) == b"{}" and str(obj) == f"{s3_bucket}/prefix/dir/x.json"
    assert [i.base_name for i in su.listdir(loc, recursive=True) if i.is_file] == ["x.json"]
    assert su.delete(obj) and not su.exists(obj)
    with pytest.raises(su.StorageError) as err:
        su.resolve(f"{s3_bucket}/p?secret_key=hunter2&region=us-east-1")
    assert "hunter2" not in str(err.value) and s3_bucket in str(err.value)


def test_endpoint_from_uri_query(s3_server, s3_bucket, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    host = s3_server.split("://", 1)[1]
    loc = su.resolve(f"{s3_bucket}/q?endpoint_override={host}&scheme=http")
    su.check_reachable(loc)
    su.write_bytes(loc.join("k"), b"1")
    assert su.read_bytes(loc.join("k")) == b"1"


def test_missing_bucket_is_one_line(s3_bucket):
    with pytest.raises(su.StorageError, match=r"s3://no-such-bucket-x/p: the bucket 'no-such-bucket-x' does not exist"):
        su.check_reachable(su.resolve("s3://no-such-bucket-x/p"))


def test_unreachable_endpoint_fails_fast(s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    t0 = time.monotonic()
    with pytest.raises(su.StorageError) as err:
        su.check_reachable(su.resolve(f"{s3_bucket}/p"))
    assert time.monotonic() - t0 < 30
    assert str(err.value).startswith(f"{s3_bucket}/p: endpoint unreachable"), str(err.value)
    assert "\n" not in str(err.value)


@pytest.fixture()
def s3_server_with_auth(tmp_path):
    """A second loopback S3 server that checks every request's credentials (moto does not by
    default); a separate process, because moto's auth switch is process-wide."""
    import os
    import subprocess
    import sys
    import urllib.request

    port = _closed_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("the auth-checking moto server did not start")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture()
def wrong_credentials(s3_server_with_auth, monkeypatch):
    """The environment pointing at the auth-checking server with a key it does not know."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server_with_auth)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


def test_bad_credentials_are_one_line(wrong_credentials):
    t0 = time.monotonic()
    with pytest.raises(su.StorageError) as err:
        su.check_reachable(su.resolve("s3://some-bucket/lb"))
    assert time.monotonic() - t0 < 30
    text = str(err.value)
    assert text.startswith("s3://some-bucket/lb: access denied: check the credentials"), text
    assert "not-the-secret" not in text and "\n" not in text


# ---- the leaderboard on S3 ---------------------------------------------------------------------

def _row(trial: str, search: str = "s1", value: float = 0.25, **extra) -> dict:
    base = {"search": search, "trial_id": trial, "status": "completed", "model": "bafenet",
            "dataset": "densesirst", "protocol": "reference", "seed": 0, "epochs_completed": 20,
            "max_epochs": 20, "metrics": {"val/mAP07": value}}
    base.update(extra)
    return base


def _cli(*args: str, timeout: float = 120):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # holds the AWS_* the s3_bucket fixture set
    return subprocess.run([sys.executable, "-m", "irstdlab.harness.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _quiet_read(board):
    import warnings

    from irstdlab.leaderboards import LeaderboardWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LeaderboardWarning)
        return board.read_table()


def _keys(fs: pafs.FileSystem, path: str) -> list[str]:
    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
                  if i.is_file)


def test_rows_on_s3_read_by_the_cli_and_by_plain_pyarrow(s3_server, s3_bucket, tmp_path):
    import json

    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    import irstdlab.leaderboards as lb

    board = lb.open(f"{s3_bucket}/runs/leaderboard")
    for i in range(6):
        board.append(_row(f"t{i}", search=f"s{i % 2}", value=i / 10, params={"p": i} if i else {"q": "first"}))
    board.append(_row("t4", search="s0", value=0.99, params={"p": 4}))  # a rewrite: its own object, the newest wins
    assert not list(tmp_path.rglob("*.parquet"))  # nothing on local disk

    proc = _cli("leaderboard", "show", f"{s3_bucket}/runs/leaderboard", "--json", "--top", "0")
    assert proc.returncode == 0, proc.stderr
    (block,) = json.loads(proc.stdout)
    ranked = {r["trial_id"]: r["metric.val/mAP07"] for r in block["rows"]}
    assert ranked == {"t0": 0.0, "t1": 0.1, "t2": 0.2, "t3": 0.3, "t4": 0.99, "t5": 0.5}
    proc = _cli("leaderboard", "validate", "--storage", f"{s3_bucket}/runs")
    assert proc.returncode == 0 and "6 rows (1 superseded" in proc.stdout, proc.stdout + proc.stderr

    # no irstdlab code: a plain S3 filesystem, hive partitioning, unified per-file schemas
    endpoint = s3_server.split("://", 1)[1]
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", region="us-east-1")
    root = f"{s3_bucket[5:]}/runs/leaderboard"
    files = _keys(fs, root)
    assert len(files) == 7 and all(f.endswith(".parquet") for f in files)
    part = pa.schema([("search", pa.string())])
    schema = pa.unify_schemas([pq.read_schema(f, filesystem=fs) for f in files] + [part], promote_options="permissive")
    table = ds.dataset(files, schema=schema, filesystem=fs, partitioning=ds.partitioning(part, flavor="hive"),
                       partition_base_dir=root).to_table()
    df = table.to_pandas().sort_values("written_at").drop_duplicates(["search", "trial_id"], keep="last")
    assert sorted(df["trial_id"]) == [f"t{i}" for i in range(6)]
    assert dict(zip(df["trial_id"], df["metric.val/mAP07"]))["t4"] == 0.99
    assert df["param.p"].notna().sum() == 5 and set(df["search"]) == {"s0", "s1"}


def test_truncated_object_is_skipped_and_named(s3_bucket):
    import irstdlab.leaderboards as lb
    from irstdlab.leaderboards import LeaderboardWarning

    board = lb.open(f"{s3_bucket}/lb")
    written = [board.append(_row(f"t{i}", value=i / 10)) for i in range(8)]
    victim = written[3]
    assert victim.startswith(f"{s3_bucket}/lb/search=s1/row-")
    where = su.resolve(victim)
    data = su.read_bytes(where)
    su.write_bytes(where, data[: len(data) // 2])  # e.g. copied in by a tool that died half-way
    with pytest.warns(LeaderboardWarning) as caught:
        res = board.read_table()
    assert sorted(res.table["trial_id"].to_pylist()) == [f"t{i}" for i in range(8) if i != 3]
    assert [name for name, _ in res.skipped] == [victim]
    assert any(victim in str(w.message) for w in caught)
    proc = _cli("leaderboard", "show", f"{s3_bucket}/lb")
    assert proc.returncode == 0 and victim in proc.stderr and "skipped" in proc.stderr, proc.stderr
    assert board.compact() == {"s1": 7}  # the truncated object stays for a human to look at
    assert sorted(o.name.split("-")[0] for o in board.files()) == ["compact", "row"]


def test_8_concurrent_writers_x_50_rows(s3_bucket):
    from concurrent.futures import ThreadPoolExecutor

    import irstdlab.leaderboards as lb

    uri = f"{s3_bucket}/lb"

    def writer(w: int) -> None:
        board = lb.open(uri)  # each writer its own filesystem client, as separate processes would have
        for i in range(50):
            board.append(_row(f"w{w}-{i}", search=f"s{w % 2}", seed=w, value=(w * 50 + i) / 1000))

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(writer, range(8)))
    res = lb.open(uri).read_table()
    assert not res.skipped and res.files == 400 and res.raw_rows == 400 and res.table.num_rows == 400
    got = dict(zip(res.table["trial_id"].to_pylist(), res.table["metric.val/mAP07"].to_pylist()))
    assert got == {f"w{w}-{i}": (w * 50 + i) / 1000 for w in range(8) for i in range(50)}


def test_compact_while_appends_happen_loses_and_duplicates_nothing(s3_bucket):
    import threading

    import irstdlab.leaderboards as lb

    uri = f"{s3_bucket}/lb"
    board = lb.open(uri)
    for i in range(40):
        board.append(_row(f"old{i}", value=i / 100))
    stop = threading.Event()
    compactions = []

    def compactor() -> None:
        own = lb.open(uri)
        while not stop.is_set():
            compactions.append(own.compact())

    thread = threading.Thread(target=compactor)
    thread.start()
    try:
        for i in range(60):  # new rows, and a row rewritten again and again (the newest must win)
            board.append(_row(f"new{i}", value=i / 100))
            board.append(_row("hot", value=float(i)))
    finally:
        stop.set()
        thread.join(60)
    assert sum(d.get("s1", 0) for d in compactions) > 0  # compaction really ran during the appends
    res = _quiet_read(board)
    values = dict(zip(res.table["trial_id"].to_pylist(), res.table["metric.val/mAP07"].to_pylist()))
    expected = {**{f"old{i}": i / 100 for i in range(40)}, **{f"new{i}": i / 100 for i in range(60)}, "hot": 59.0}
    assert values == expected and not res.skipped
    board.compact()
    res = board.read_table()
    assert res.files == 1 and res.raw_rows == res.table.num_rows == 101  # one object, no duplicate left


# ---- storage that cannot be used: one line naming the URI, exit 2, within 30 s ---------------------

def _one_line_exit_2(proc, uri: str, reason: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1000:], proc.stderr[-1000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert uri in lines[0] and reason in lines[0], lines[0]
    return lines[0]


def test_cli_missing_bucket(s3_bucket):
    t0 = time.monotonic()
    proc = _cli("leaderboard", "show", "--storage", "s3://no-such-bucket-here/runs")
    assert time.monotonic() - t0 < 30
    _one_line_exit_2(proc, "s3://no-such-bucket-here/runs/leaderboard", "does not exist")


def test_cli_unreachable_endpoint(s3_bucket, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_closed_port()}")
    t0 = time.monotonic()
    proc = _cli("leaderboard", "compact", f"{s3_bucket}/lb")
    assert time.monotonic() - t0 < 30
    _one_line_exit_2(proc, f"{s3_bucket}/lb", "endpoint unreachable")


def test_cli_bad_credentials(wrong_credentials):
    t0 = time.monotonic()
    proc = _cli("leaderboard", "validate", "s3://some-bucket/lb")
    assert time.monotonic() - t0 < 30
    line = _one_line_exit_2(proc, "s3://some-bucket/lb", "access denied")
    assert "not-the-secret" not in line


def test_cli_refuses_a_secret_in_the_uri_without_printing_it(s3_bucket):
    proc = _cli("leaderboard", "show", f"{s3_bucket}/lb?secret_key=hunter2")
    line = _one_line_exit_2(proc, s3_bucket, "credentials do not belong in the URI")
    assert "hunter2" not in line


def test_importance_reads_the_stored_space_from_s3(s3_bucket, capsys):
    import json

    import irstdlab.leaderboards as lb
    from irstdlab.harness.cli import main
    from irstdlab.harness import space_loader
    from test_leaderboard_importance import SPACE, _known_rows

    storage = f"{s3_bucket}/runs"
    board = lb.open(f"{storage}/leaderboard")
    space_hash = space_loader.parse(SPACE, "known.yaml").space_hash
    for r in _known_rows(n=12):
        board.append({**r, "space_hash": space_hash})
    assert main(["leaderboard", "importance", "--storage", storage, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["distributions"].startswith("inferred") and f"no stored space at {storage}/known/" in \
        out["distributions"]
    state = {"name": "known", "space_source": "known.yaml", "space_text": SPACE, "space_folder": None}
    su.write_bytes(su.resolve(f"{storage}/known/irstdlab-search.json"), json.dumps(state).encode())
    assert main(["leaderboard", "importance", "--storage", storage, "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["distributions"] == f"the stored space of search known ({storage}/known/irstdlab-search.json)"
