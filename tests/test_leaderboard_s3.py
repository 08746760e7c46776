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


def test_bad_credentials_are_one_line(s3_server_with_auth, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server_with_auth)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    t0 = time.monotonic()
    with pytest.raises(su.StorageError) as err:
        su.check_reachable(su.resolve("s3://some-bucket/lb"))
    assert time.monotonic() - t0 < 30
    text = str(err.value)
    assert text.startswith("s3://some-bucket/lb: access denied: check the credentials"), text
    assert "not-the-secret" not in text and "\n" not in text
