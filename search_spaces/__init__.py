"""YAML search spaces users edit, and the loader that validates them against ``TrialConfig``."""

from irstdlab.search_spaces.loader import SearchSpace, builtin_names, load, parse

__all__ = ["SearchSpace", "builtin_names", "load", "parse"]
