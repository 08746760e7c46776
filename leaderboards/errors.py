"""The one error type of the leaderboard: it names the file or field and the problem."""

from __future__ import annotations

from pathlib import Path


class LeaderboardError(Exception):
    """Bad leaderboard input (a row, a file, a filter, a metric name).

    ``str(err)`` is one line: ``<where>: <problem>`` where ``where`` is a file path or a
    field name. The CLI prints exactly that and exits 2.
    """

    def __init__(self, where: str | Path | None, problem: str):
        self.where = str(where) if where is not None else None
        self.problem = " ".join(str(problem).split())  # one line, always
        super().__init__(f"{self.where}: {self.problem}" if self.where else self.problem)


class StorageError(LeaderboardError):
    """Storage cannot be used: a bad URI, refused credentials, a missing bucket, an unreachable endpoint.

    One line naming the URI (secrets removed); the CLI prints it and exits 2 like every LeaderboardError.
    """
