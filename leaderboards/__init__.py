"""Parquet leaderboard: versioned schema, atomic per-row appends, query, compare, plots, export.

``irstdlab.leaderboards.open(path).append(row)`` / ``.read(filter=...)``; the column
documentation is in ``SCHEMA.md``. Imports only pandas / pyarrow / numpy (matplotlib
lazily, inside the plot functions).
"""

from irstdlab.leaderboards.errors import LeaderboardError, StorageError
from irstdlab.leaderboards.schema import SCHEMA_VERSION, STATUSES
from irstdlab.leaderboards.store import Leaderboard, LeaderboardWarning, check_search_name, open

__all__ = ["Leaderboard", "LeaderboardError", "LeaderboardWarning", "SCHEMA_VERSION", "STATUSES",
           "StorageError", "check_search_name", "open"]
