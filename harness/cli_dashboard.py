"""`irstdlab dashboard [NAME]`: optuna-dashboard over a search's live Optuna journal.

The journal (``<storage>/<NAME>/optuna-journal.log``) is written by the search's driver while it
runs (harness/journal.py), so the dashboard shows trials as they start, their per-epoch values and
how they end. optuna-dashboard is an optional extra (``irstdlab[dashboard]``) and is imported only
here. The server listens on 127.0.0.1 only: it has no authentication, and it can write notes into
the study; reach it from another machine through an SSH tunnel.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path
from typing import Any

from irstdlab.harness.cli_args import int_range
from irstdlab.harness.paths import validate_name

HOST = "127.0.0.1"
DEFAULT_PORT = 8080
MISSING_EXTRA = 'irstdlab dashboard needs optuna-dashboard: pip install "irstdlab[dashboard]"'


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "dashboard", help="optuna-dashboard over a search's live Optuna journal (on 127.0.0.1)",
        description="Serve optuna-dashboard on 127.0.0.1 over STORAGE/NAME/optuna-journal.log until Ctrl-C.")
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="search name (default: the only search under --storage)")
    p.add_argument("--storage", default=os.environ.get("IRSTDLAB_STORAGE") or "./irstdlab-runs",
                   help="results root of the search (default $IRSTDLAB_STORAGE, else ./irstdlab-runs)")
    p.add_argument("--port", type=int_range(1, 65535), default=DEFAULT_PORT,
                   help=f"port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.set_defaults(handler=run)


def journal_of(storage: str, name: str | None) -> tuple[str, Path]:
    """(search name, its journal path); NAME may be left out when the storage holds one search.

    On an object store (``--storage s3://…``) the driver keeps the journal as a local working copy
    and uploads it after each update, so the dashboard serves a copy downloaded now: a snapshot
    (the message says so), reloaded by starting the dashboard again."""
    from irstdlab.harness import search_storage
    from irstdlab.harness.errors import ConfigError
    from irstdlab.harness.search import JOURNAL_FILE
    from irstdlab.leaderboards import storage_uri

    if search_storage.is_remote(storage):
        root = search_storage.open_storage(storage, name or "").root
        if name is None:
            found = [info.base_name for info in storage_uri.listdir(root)
                     if info.type == storage_uri.pafs.FileType.Directory
                     and storage_uri.is_file(root.join(info.base_name, JOURNAL_FILE))]
            if len(found) != 1:
                listed = f"searches: {', '.join(found)}" if found else "no search has an Optuna journal there yet"
                raise ConfigError(f"--storage {root.uri}: give NAME ({listed})")
            name = found[0]
        validate_name(name, "NAME")
        ref = search_storage.reference(root.join(name, JOURNAL_FILE))
        local = search_storage.local_copy_path(ref).with_name(f"dashboard-{JOURNAL_FILE}")
        if not search_storage.download_file(ref, local):
            raise ConfigError(f"{search_storage.shown(ref)}: no Optuna journal (has search {name!r} started a trial yet?)")
        print(f"irstdlab dashboard: serving a snapshot of {search_storage.shown(ref)} taken now "
              f"(start the dashboard again to see later trials)", flush=True)
        return name, local
    folder = Path(storage)
    if not folder.is_dir():
        raise ConfigError(f"--storage {storage}: no such directory")
    if name is not None:
        validate_name(name, "NAME")
        journal = folder / name / JOURNAL_FILE
        if not journal.is_file():
            raise ConfigError(f"{journal}: no Optuna journal (has search {name!r} started a trial yet?)")
        return name, journal
    searches = sorted(d.name for d in folder.iterdir() if (d / JOURNAL_FILE).is_file())
    if len(searches) != 1:
        found_text = f"searches: {', '.join(searches)}" if searches else "no search has an Optuna journal there yet"
        raise ConfigError(f"--storage {storage}: give NAME ({found_text})")
    return searches[0], folder / searches[0] / JOURNAL_FILE


def _check_port_free(port: int) -> None:
    """A taken port is one line naming it (bottle would print its start-up banner first)."""
    import socket

    from irstdlab.harness.errors import ConfigError

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is free
        try:
            probe.bind((HOST, port))
        except OSError:
            raise ConfigError(f"--port {port}: {HOST}:{port} is already in use; choose another --port") from None


def run(args: argparse.Namespace) -> int:
    try:
        import optuna_dashboard
    except ImportError:
        print(MISSING_EXTRA, file=sys.stderr)
        return 2
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    name, journal = journal_of(args.storage, args.name)
    _check_port_free(args.port)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    print(f"optuna-dashboard for search {name}: http://{HOST}:{args.port}/   ({journal}; Ctrl-C stops it)",
          flush=True)
    # The server runs in a daemon thread and this (main) thread waits: Python delivers Ctrl-C to the
    # main thread only, so it never lands inside a request the server is writing (where wsgiref
    # swallowed it and kept serving).
    server = threading.Thread(target=optuna_dashboard.run_server, args=(storage,),
                              kwargs={"host": HOST, "port": args.port}, name="optuna-dashboard", daemon=True)
    server.start()
    try:
        while server.is_alive():
            server.join(0.5)
    except KeyboardInterrupt:
        pass
    print("dashboard stopped", flush=True)
    return 0


__all__ = ["DEFAULT_PORT", "HOST", "MISSING_EXTRA", "journal_of", "register", "run"]
