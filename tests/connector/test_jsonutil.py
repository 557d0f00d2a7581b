"""JSON helpers: orjson's speed, the standard library's reach, one canonical form for hashes."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from connector import jsonutil


def test_dumps_is_compact_utf8_json_the_standard_library_reads_back() -> None:
    """The bytes are compact UTF-8 JSON (no escapes for accents) that json.loads reads back."""
    value = {"naam": "Zoë de Wit", "n": [1, 2.5, True, None], "nested": {"b": 1, "a": 2}}
    data = jsonutil.dumps(value)
    assert json.loads(data) == value
    assert b" " not in data.replace(b"Zo\xc3\xab de Wit", b"")
    assert "Zoë".encode() in data


def test_sorted_dumps_are_canonical_whatever_the_key_order() -> None:
    """With sort_keys, the same mapping in any insertion order gives the same bytes."""
    one = jsonutil.dumps({"b": 1, "a": {"y": 2, "x": 1}}, sort_keys=True)
    two = jsonutil.dumps({"a": {"x": 1, "y": 2}, "b": 1}, sort_keys=True)
    assert one == two == b'{"a":{"x":1,"y":2},"b":1}'


def test_default_sees_dates_and_sets_as_json_dumps_would() -> None:
    """Values JSON has no type for go to ``default`` (dates as their str(), not ISO 'T' form)."""
    moment = dt.datetime(2026, 1, 31, 12, 30)
    assert json.loads(jsonutil.dumps({"at": moment}, default=str)) == {"at": str(moment)}
    assert json.loads(jsonutil.dumps({"day": dt.date(2026, 1, 31)}, default=str)) == {
        "day": "2026-01-31"
    }
    with pytest.raises(TypeError):
        jsonutil.dumps({"at": moment})


def test_what_orjson_refuses_falls_back_to_the_standard_library() -> None:
    """Integers past 64 bits and non-string keys encode; NaN in the input still decodes."""
    assert json.loads(jsonutil.dumps({"big": 2**70})) == {"big": 2**70}
    assert json.loads(jsonutil.dumps({1: "a"})) == {"1": "a"}
    assert math.isnan(jsonutil.loads(b'{"x": NaN}')["x"])
    assert jsonutil.loads("[1]") == [1]


def test_loads_raises_value_error_on_what_is_not_json() -> None:
    """Callers catch ValueError, as they did for json.loads and response.json()."""
    for bad in (b"", b"<html>", b'{"a":'):
        with pytest.raises(ValueError):
            jsonutil.loads(bad)


def test_loads_raises_value_error_on_json_nested_too_deep_to_read() -> None:
    """A vendor's answer nested deeper than either parser goes is no JSON to its caller: a
    ValueError (which the answer readers turn into the vendor's error), not the standard
    library's RecursionError, which ended a sync as a bug."""
    for deep in (b"[" * 200_000 + b"]" * 200_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        with pytest.raises(ValueError, match="nested too deep"):
            jsonutil.loads(deep)
