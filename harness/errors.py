"""Errors that mean "the user's input is wrong", printed by the CLI as one line (exit 2)."""

from __future__ import annotations


class UserError(Exception):
    """Base of harness-side input errors (bad config, bad search space, bad leaderboard...)."""


class ConfigError(UserError, ValueError):
    """A configuration value, key or file is invalid. The message names the key (and file)."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """Every exception type the CLI reports as a one-line error instead of a traceback."""
    from irstdlab.datasets.errors import DatasetError

    types: list[type[BaseException]] = [UserError, DatasetError]
    try:  # the leaderboard store may not be importable in a partial install
        from irstdlab.leaderboards.errors import LeaderboardError

        types.append(LeaderboardError)
    except ImportError:
        pass
    return tuple(types)
