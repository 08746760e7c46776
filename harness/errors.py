"""Errors that mean "the user's input is wrong", printed by the CLI as one line (exit 2)."""

from __future__ import annotations


class UserError(Exception):
    """Base of harness-side input errors (bad config, bad search space, bad leaderboard...)."""


class ConfigError(UserError, ValueError):
    """A configuration value, key or file is invalid. The message names the key (and file); ``key``
    carries the dotted key as data where the raiser knows it (None otherwise)."""

    def __init__(self, message: str = "", *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key

    def __reduce__(self):  # keep ``key`` when the error crosses a process (Ray pickles it)
        return _config_error, (str(self), self.key)


def _config_error(message: str, key: str | None) -> ConfigError:
    return ConfigError(message, key=key)


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
