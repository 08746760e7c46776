"""irstdlab.harness: configuration, trials, searches, evaluation, metrics and the CLI."""

import os

# Ray reads these when it is first imported, and several harness modules import it: set before any
# of them, so that every embedded Ray process stays on 127.0.0.1 and sends no usage statistics.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
