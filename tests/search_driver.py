"""The kill-and-resume tests' driver: ``irstdlab search`` in its own process group, its live table
read line by line, and a wait for Tune's experiment snapshot before a kill.

Shared by the resume, extend, stage, S3 and cluster tests (``tests/`` is on ``sys.path`` under pytest).
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

LINE = re.compile(r"^(\w+)\s+(\d+)/(\d+)\s+(\S+)\s+(\w+)")  # live table: trial, epoch/max, metric, status


class Driver:
    """`irstdlab search ARGS` started in ``cwd``; stdout and stderr collected by a thread."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "irstdlab.harness.cli", "search", *args], cwd=cwd,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.text: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.text.append(line)
            self.lines.put(line)

    def wait_for_line(self, predicate: Callable[[str], Any], timeout: float) -> str:
        """The first line from now on for which ``predicate`` holds; fails with the output's tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            if predicate(line):
                return line
        raise AssertionError("driver never reached the expected point:\n" + "".join(self.text[-60:]))

    def wait_for(self, predicate: Callable[[re.Match], Any], timeout: float) -> re.Match:
        """The first live-table row from now on for which ``predicate`` holds."""
        line = self.wait_for_line(lambda ln: (m := LINE.match(ln)) is not None and predicate(m), timeout)
        match = LINE.match(line)
        assert match is not None
        return match

    def wait_for_text(self, needle: str, timeout: float) -> str:
        return self.wait_for_line(lambda ln: needle in ln, timeout)

    def finish(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill_group()

    def kill_group(self) -> None:
        """SIGKILL the driver and every Ray process it started, and reap it."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)


def wait_for_snapshot(fs: Any, experiment: str, trial_id: str, checkpoint: str, timeout: float = 60) -> None:
    """Poll ``experiment`` (a folder on the pyarrow filesystem ``fs``) until one of Tune's experiment
    snapshots names ``checkpoint`` of ``trial_id``.

    Tune snapshots the experiment at most every ~10 s, but always after a trial's num_to_keep-th
    (2nd) checkpoint, and uploads it in the background; a test that kills the driver to resume a
    trial from a checkpoint waits for this rather than for a fixed time."""
    import pyarrow.fs as pafs

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        infos = fs.get_file_info(pafs.FileSelector(experiment, allow_not_found=True))
        for info in infos:
            if info.type == pafs.FileType.File and info.base_name.startswith("experiment_state-"):
                try:
                    with fs.open_input_stream(info.path) as fh:
                        text = fh.read().decode(errors="replace")
                except OSError:  # replaced while we read it
                    continue
                # the checkpoint manager is stored as hex-encoded cloudpickle inside the JSON
                if trial_id in text and (checkpoint in text or checkpoint.encode().hex() in text):
                    return
        time.sleep(0.5)
    raise AssertionError(f"no experiment snapshot in {experiment} names {checkpoint} of trial {trial_id}")
