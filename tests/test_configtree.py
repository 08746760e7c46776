"""The dataclass-tree machinery: types, unknown keys, ranges, overrides, hashing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from irstdlab.harness.configtree import (
    ALLOW_INF,
    canonical_json,
    config_hash,
    field_paths,
    from_dict,
    merge,
    parse_override,
    set_path,
    to_dict,
)
from irstdlab.harness.errors import ConfigError


@dataclass
class Inner:
    p: float = 0.5
    hidden: int = 64
    mode: Literal["channel", "spatial"] = "channel"
    ranges: tuple[float, ...] = field(default=(1.0, 2.0), metadata={ALLOW_INF: True})  # may hold +-inf

    def validate(self) -> None:
        if not 0 < self.p <= 1:
            raise ValueError(f"p: must be in (0, 1], got {self.p}")
        if self.hidden < 1:
            raise ValueError(f"hidden: must be >= 1, got {self.hidden}")


@dataclass
class Outer:
    name: str = "x"
    root: str | None = None
    inner: Inner = field(default_factory=Inner)


def test_round_trip_and_defaults():
    cfg = from_dict(Outer, {"inner": {"p": 1, "ranges": [3, 4.5]}})
    assert cfg.inner.p == 1.0 and isinstance(cfg.inner.p, float)
    assert cfg.inner.ranges == (3.0, 4.5)
    assert from_dict(Outer, to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "data, message",
    [
        ({"inner": {"p": 1.5}}, "inner.p: must be in (0, 1], got 1.5"),
        ({"inner": {"hidden": 0}}, "inner.hidden: must be >= 1, got 0"),
        ({"inner": {"p": "high"}}, "inner.p: expected a number, got 'high'"),
        ({"inner": {"hidden": 2.5}}, "inner.hidden: expected an integer, got 2.5"),
        ({"inner": {"mode": "diagonal"}}, "inner.mode: 'diagonal' is not one of 'channel', 'spatial'"),
        ({"inner": {"hiden": 3}}, "inner.hiden: unknown key; valid keys are hidden, mode, p, ranges"),
        ({"name": None}, "name: must not be null"),
        ({"inner": 3}, "inner: expected a mapping of Inner fields, got 3"),
        ({"inner": {"ranges": [1, "a"]}}, "inner.ranges[1]: expected a number, got 'a'"),
    ],
)
def test_errors_name_the_dotted_key(data, message):
    with pytest.raises(ConfigError) as info:
        from_dict(Outer, data)
    assert str(info.value) == message


def test_bool_is_not_an_int_and_int_is_not_a_bool():
    with pytest.raises(ConfigError, match="inner.hidden: expected an integer, got True"):
        from_dict(Outer, {"inner": {"hidden": True}})


def test_overrides_parse_yaml_values_safely():
    assert parse_override("inner.p=0.25") == (["inner", "p"], 0.25)
    assert parse_override("root=null") == (["root"], None)
    assert parse_override("inner.mode=spatial") == (["inner", "mode"], "spatial")
    assert parse_override("inner.ranges=[1, 2]") == (["inner", "ranges"], [1, 2])
    # YAML tags that would construct Python objects are refused by safe_load.
    with pytest.raises(ConfigError):
        parse_override("name=!!python/object/apply:os.system ['true']")
    for bad in ("novalue", "=3", "a..b=1"):
        with pytest.raises(ConfigError, match="expected key.path=value"):
            parse_override(bad)


def test_set_path_and_merge():
    tree: dict = {"inner": {"p": 0.5}}
    set_path(tree, ["inner", "hidden"], 8)
    set_path(tree, ["name"], "y")
    assert tree == {"inner": {"p": 0.5, "hidden": 8}, "name": "y"}
    with pytest.raises(ConfigError, match="name: is a value, not a section"):
        set_path(tree, ["name", "x"], 1)
    assert merge({"a": {"b": 1, "c": 2}, "d": 1}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}, "d": 1}


def test_canonical_json_and_hash_ignore_key_order_but_not_values():
    a = from_dict(Outer, {"name": "x", "inner": {"p": 0.5, "hidden": 8}})
    b = from_dict(Outer, {"inner": {"hidden": 8, "p": 0.5}, "name": "x"})
    c = from_dict(Outer, {"inner": {"hidden": 16}})
    assert canonical_json(a) == canonical_json(b)
    assert config_hash(a) == config_hash(b) != config_hash(c)
    assert len(config_hash(a)) == 12


def test_field_paths_lists_every_leaf():
    paths = field_paths(Outer)
    assert set(paths) == {"name", "root", "inner.p", "inner.hidden", "inner.mode", "inner.ranges"}


def test_infinity_round_trips_through_json():
    import json

    cfg = from_dict(Outer, {"inner": {"ranges": [64.0, float("inf")]}})
    text = canonical_json(cfg)
    assert '"inf"' in text
    assert from_dict(Outer, json.loads(text)) == cfg
    with pytest.raises(ConfigError, match="inner.p: expected a number, got 'infinite'"):
        from_dict(Outer, {"inner": {"p": "infinite"}})
    # a float field that does not opt in with ALLOW_INF must be finite, in any spelling
    for value in (float("inf"), "-inf", 10**400):
        with pytest.raises(ConfigError, match="inner.p: must be a finite number"):
            from_dict(Outer, {"inner": {"p": value}})
    with pytest.raises(ConfigError, match="inner.hidden: .* out of range"):
        from_dict(Outer, {"inner": {"hidden": 2**63}})
