"""Where results live: a plain path or any URI ``pyarrow.fs.FileSystem.from_uri`` understands.

``resolve("s3://bucket/prefix")`` gives a ``Location``: the pyarrow filesystem, the path inside
it and the URI to print. S3 is built here rather than by ``from_uri`` for three reasons: the
endpoint also comes from ``AWS_ENDPOINT_URL`` (MinIO, Ceph, a loopback test server), the region
is never looked up over the network, and short connect/request timeouts with few retries make an
unreachable endpoint fail in seconds instead of minutes. Credentials come only from the
environment or the SDK's own configuration (``~/.aws``, instance roles); a URI carrying a secret
is refused, and every URI we print has its query secrets removed.

The helpers (``join``, ``read_bytes``, ``write_bytes``, ``exists``, ``listdir``, ``delete``) are the
only file operations the rest of irstdlab needs on such storage. An object store has no rename,
so ``write_bytes`` is a single PUT there; on a local disk it writes a temporary name, fsyncs and
renames, so a reader never sees half a file on either.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from irstdlab.leaderboards.errors import StorageError

__all__ = ["Location", "StorageError", "check_reachable", "delete", "exists", "explain", "is_dir", "is_file",
           "is_uri", "listdir", "read_bytes", "redact", "resolve", "write_bytes"]

CONNECT_TIMEOUT_S = 5.0     # an unreachable endpoint is reported after about this much (x attempts)
REQUEST_TIMEOUT_S = 20.0
S3_ATTEMPTS = 2
REACHABLE_TIMEOUT_S = 30.0

_NO_DIRECTORIES = {"s3", "gcs"}  # object stores: a key needs no parent folder
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# query keys that carry a secret: refused (credentials belong in the environment) and never printed
_SECRET_KEYS = {"access_key", "secret_key", "session_token", "password", "token", "credentials"}
# the S3FileSystem arguments a URI may set (the rest of from_uri's options are not needed here)
_S3_QUERY = {"region", "scheme", "endpoint_override", "allow_bucket_creation", "force_virtual_addressing"}


def redact(uri: str) -> str:
    """``uri`` with secrets in its query or user-info removed (safe to print or store)."""
    if not _SCHEME_RE.match(uri):
        return uri
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = [(k, "***" if k.lower() in _SECRET_KEYS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, safe="*:/"), parts.fragment))


@dataclass(frozen=True)
class Location:
    fs: pafs.FileSystem
    path: str                       # inside ``fs``, no trailing slash ("bucket/prefix" on S3)
    uri: str                        # what to print: the user's path or the URI without secrets

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    def join(self, *parts: str) -> Location:
        path = "/".join([self.path.rstrip("/"), *(p.strip("/") for p in parts if p)])
        uri = "/".join([self.uri.rstrip("/"), *(p.strip("/") for p in parts if p)]) if "?" not in self.uri \
            else _join_uri(self.uri, parts)
        return Location(self.fs, path, uri)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        head = self.path.rstrip("/").rsplit("/", 1)[0]
        uri_parts = urlsplit(self.uri) if _SCHEME_RE.match(self.uri) else None
        if uri_parts is None:
            uri = str(Path(self.uri).parent)
        else:
            uri = urlunsplit(uri_parts._replace(path=uri_parts.path.rstrip("/").rsplit("/", 1)[0]))
        return Location(self.fs, head, uri)

    def __str__(self) -> str:
        return self.uri


def _join_uri(uri: str, parts: tuple[str, ...]) -> str:
    s = urlsplit(uri)
    path = "/".join([s.path.rstrip("/"), *(p.strip("/") for p in parts if p)])
    return urlunsplit(s._replace(path=path))


def is_uri(text: str | os.PathLike) -> bool:
    return isinstance(text, str) and bool(_SCHEME_RE.match(text))


def resolve(uri_or_path: str | os.PathLike | Location) -> Location:
    """A plain path (local disk) or a filesystem URI -> ``Location``; ``StorageError`` on a bad URI."""
    if isinstance(uri_or_path, Location):
        return uri_or_path
    text = os.fspath(uri_or_path)
    if not is_uri(text):
        return Location(pafs.LocalFileSystem(), os.path.abspath(text), text)
    shown = redact(text)
    parts = urlsplit(text)
    query = dict(parse_qsl(parts.query))
    if parts.netloc.rfind("@") >= 0 or _SECRET_KEYS & {k.lower() for k in query}:
        raise StorageError(shown, "credentials do not belong in the URI; set them in the environment "
                                  "(e.g. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE)")
    scheme = parts.scheme.lower()
    try:
        if scheme == "s3":
            fs, path = _s3(parts.netloc, parts.path, query, shown)
        else:
            fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise StorageError(shown, f"not a usable storage URI ({_one_line(exc)})") from None
    return Location(fs, path.rstrip("/") or path, shown)


def _s3(bucket: str, key: str, query: dict[str, str], shown: str) -> tuple[pafs.S3FileSystem, str]:
    if not bucket:
        raise StorageError(shown, "no bucket: write s3://BUCKET/prefix")
    unknown = sorted(set(query) - _S3_QUERY)
    if unknown:
        raise StorageError(shown, f"unknown URI option {unknown[0]!r} (known: {', '.join(sorted(_S3_QUERY))})")
    kwargs: dict[str, object] = {
        "connect_timeout": CONNECT_TIMEOUT_S, "request_timeout": REQUEST_TIMEOUT_S,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_ATTEMPTS),
        # without a region the SDK would ask AWS for the bucket's; most endpoints ignore it
        "region": query.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1",
    }
    endpoint = query.get("endpoint_override") or os.environ.get("AWS_ENDPOINT_URL_S3") \
        or os.environ.get("AWS_ENDPOINT_URL")
    scheme = query.get("scheme")
    if endpoint:
        if "://" in endpoint:
            ep = urlsplit(endpoint)
            scheme = scheme or ep.scheme
            endpoint = ep.netloc + ep.path.rstrip("/")
        kwargs["endpoint_override"] = endpoint
    if scheme:
        kwargs["scheme"] = scheme
    for flag in ("allow_bucket_creation", "force_virtual_addressing"):
        if flag in query:
            kwargs[flag] = query[flag].lower() in ("1", "true", "yes")
    return pafs.S3FileSystem(**kwargs), f"{bucket}{key}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def explain(exc: BaseException) -> str:
    """A storage exception in the user's words (what to check), one line."""
    text = _one_line(exc)
    low = text.lower()
    if any(s in low for s in ("network_connection", "curlcode", "could not connect", "timed out", "timeout was",
                              "resolve host", "unreachable", "connection refused")):
        return f"endpoint unreachable [{text[:160]}]"
    if any(s in low for s in ("access_denied", "accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch",
                              "invalid_access_key", "forbidden", "http response code: 403", "no credentials",
                              "unable to locate credentials")):
        return ("access denied: check the credentials in the environment (AWS_ACCESS_KEY_ID / "
                f"AWS_SECRET_ACCESS_KEY / AWS_PROFILE) [{text[:160]}]")
    if any(s in low for s in ("nosuchbucket", "no_such_bucket", "bucket does not exist")):
        return "the bucket does not exist"
    return text


def check_reachable(location: Location, timeout_s: float = REACHABLE_TIMEOUT_S) -> None:
    """Raise ``StorageError`` naming the URI unless the storage answers within ``timeout_s``.

    On S3 this asks for the bucket itself: a missing bucket, refused credentials and an endpoint
    that does not answer each give their own one-line reason.
    """
    outcome: list[BaseException | pafs.FileInfo] = []

    def probe() -> None:
        try:
            head = location.path.split("/", 1)[0] if isinstance(location.fs, pafs.S3FileSystem) else location.path
            outcome.append(location.fs.get_file_info(head))
            if isinstance(location.fs, pafs.S3FileSystem):  # HEAD on a bucket may pass anonymously: list too
                location.fs.get_file_info(pafs.FileSelector(location.path, allow_not_found=True))
        except BaseException as exc:  # noqa: BLE001 - reported below, in the caller's thread
            outcome.insert(0, exc)

    worker = threading.Thread(target=probe, name="irstdlab-storage-probe", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise StorageError(location.uri, f"endpoint unreachable: no answer within {timeout_s:.0f} s")
    if outcome and isinstance(outcome[0], BaseException):
        raise StorageError(location.uri, explain(outcome[0]))
    info = outcome[0] if outcome else None
    if isinstance(location.fs, pafs.S3FileSystem) and isinstance(info, pafs.FileInfo) \
            and info.type == pafs.FileType.NotFound:
        raise StorageError(location.uri, f"the bucket {location.path.split('/', 1)[0]!r} does not exist")


# ---- the file operations the rest of the code uses -------------------------------------------------

def exists(location: Location) -> bool:
    return location.fs.get_file_info(location.path).type != pafs.FileType.NotFound


def is_dir(location: Location) -> bool:
    return location.fs.get_file_info(location.path).type == pafs.FileType.Directory


def is_file(location: Location) -> bool:
    return location.fs.get_file_info(location.path).type == pafs.FileType.File


def read_bytes(location: Location) -> bytes:
    with location.fs.open_input_stream(location.path) as fh:
        return fh.read()


def write_bytes(location: Location, data: bytes) -> None:
    """Publish ``data`` whole: a single PUT on an object store, temp name + fsync + rename locally."""
    if not location.is_local:
        if location.fs.type_name not in _NO_DIRECTORIES:  # there, create_dir would cost requests for markers
            location.fs.create_dir(location.path.rsplit("/", 1)[0], recursive=True)
        with location.fs.open_output_stream(location.path) as fh:  # buffered: one PUT when it fits
            fh.write(data)
        return
    final = Path(location.path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{uuid.uuid4().hex}{final.suffix}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def listdir(location: Location, recursive: bool = False) -> list[pafs.FileInfo]:
    """Entries under ``location`` (empty when it does not exist), sorted by path."""
    sel = pafs.FileSelector(location.path, allow_not_found=True, recursive=recursive)
    return sorted(location.fs.get_file_info(sel), key=lambda i: i.path)


def delete(location: Location, missing_ok: bool = True) -> bool:
    """Delete one file; False when it was already gone (and ``missing_ok``)."""
    try:
        location.fs.delete_file(location.path)
        return True
    except FileNotFoundError:
        if missing_ok:
            return False
        raise
    except OSError:
        if missing_ok and not exists(location):
            return False
        raise
