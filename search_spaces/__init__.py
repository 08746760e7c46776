"""The shipped YAML search spaces users copy and edit (data only).

The code that reads them, ``irstdlab.harness.space_loader``, lives in the harness: a search space is
validated against ``TrialConfig``, and no lower layer imports the harness. This package only
carries the files; ``importlib.resources.files("irstdlab.search_spaces")`` finds them installed."""
