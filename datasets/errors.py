"""The one error type of the data layer: it names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class DatasetError(Exception):
    """Bad or missing input data.

    ``str(err)`` is one line: ``<file>: <problem>``. The CLI prints exactly that
    and exits 2; callers that want the parts read ``err.file`` / ``err.problem``.
    """

    def __init__(self, file: str | Path | None, problem: str):
        self.file = str(file) if file is not None else None
        self.problem = problem
        super().__init__(f"{self.file}: {problem}" if self.file else problem)
