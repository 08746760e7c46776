"""Shared fixtures: where the real data subsets live, and skipping cleanly without them."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """The Ctrl-C tests send SIGINT to the CLI as a terminal would. A suite started as a background
    job of a non-interactive shell (``cmd &`` in a script, as CI launchers do) inherits SIGINT
    *ignored*, an ignored signal stays ignored across exec, and Python then never raises
    KeyboardInterrupt in the CLI. Catching it here makes every child start with the default."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


# Before anything imports torch: on a busy 2-core machine OpenMP's spin-waiting threads fight each
# other (measured 5-10x slower model tests); passive waiting costs nothing when the cores are idle.
# Ray workers started by the tests inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Ray reads these when it is first imported, which some test modules do before any irstdlab module
# (e.g. pytest.importorskip("ray")): the embedded Ray of every test stays on 127.0.0.1.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# The decoded-data cache (datasets/cache.py) defaults to /dev/shm; tests keep theirs in one folder of
# their own per session, so a test run leaves nothing in the machine's shared memory.
if "IRSTDLAB_DATA_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["IRSTDLAB_DATA_CACHE_DIR"] = tempfile.mkdtemp(prefix="irstdlab-test-cache-")
    atexit.register(shutil.rmtree, os.environ["IRSTDLAB_DATA_CACHE_DIR"], True)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("IRSTDLAB_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DENSESIRST_MINI = SHARED_DATA / "DenseSIRST-mini" / "SIRSTdevkit"
SIRSTV2_MINI = SHARED_DATA / "SIRST-V2-mini"


def _require(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"real data subset not found at {path} (set IRSTDLAB_SHARED_DATA to ../shared/data)")
    return path


@pytest.fixture(scope="session")
def densesirst_root() -> Path:
    """Root of DenseSIRST-mini (the folder that contains PNGImages/)."""
    return _require(DENSESIRST_MINI)


@pytest.fixture(scope="session")
def sirstv2_root() -> Path:
    """Root of SIRST-V2-mini (the folder that contains mixed/)."""
    return _require(SIRSTV2_MINI)


@pytest.fixture(autouse=True, scope="session")
def _few_torch_threads():
    """CI has 2 cores; keep torch from oversubscribing them when tests run in parallel processes."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture()
def one_torch_thread():
    """One torch thread for the test. On 2 shared cores two intra-op threads contend badly (OpenMP
    oversubscription stalls); one is several times faster. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 wire-protocol server on loopback (moto's standalone server, as Ray's storage tests
    use); yields its endpoint URL. Skips when moto[server] is not installed."""
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=_free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


S3_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
               "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture()
def s3_bucket(s3_server, monkeypatch) -> str:
    """A fresh empty bucket on the loopback server; returns ``s3://<bucket>``. The environment holds
    dummy credentials and ``AWS_ENDPOINT_URL`` (subprocesses started by the test inherit them)."""
    import uuid

    boto3 = pytest.importorskip("boto3")
    for key, value in S3_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(key, raising=False)
    name = f"irstdlab-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return f"s3://{name}"
