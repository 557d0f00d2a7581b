"""Hypothesis strategies and drivers the property tests share."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

#: A JSON value that holds no other: null, a yes/no, a number or a text.
JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)

#: JSON as any sender may shape it: scalars, lists and objects nested a few levels deep.
JSON = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=25,
)

#: TOML values as they would be written inline: any type, where a key expects one.
TOML_LITERALS = st.recursive(
    st.sampled_from(["true", "false", "0", "-1", "1e3", '""', "[]", "{}", "2024-01-01"])
    | st.integers(min_value=-(2**40), max_value=2**40).map(str)
    | st.text(max_size=12).map(json.dumps),
    lambda inner: (
        st.lists(inner, max_size=3).map(lambda items: f"[{', '.join(items)}]")
        | st.lists(
            st.tuples(st.sampled_from(["a", "path", "source", "env"]), inner), max_size=2
        ).map(lambda pairs: "{" + ", ".join(f"{k} = {v}" for k, v in dict(pairs).items()) + "}")
    ),
    max_leaves=5,
)


def every_key_takes_any_value(
    text: str, path: Path, load: Callable[[Path], object], *, examples: int
) -> None:
    """Write ``text`` to ``path`` with one top-level ``key = value`` line given any TOML
    value, ``examples`` times, and call ``load`` on it; ``load`` says what may happen."""
    lines = text.splitlines()
    settable = [n for n, line in enumerate(lines) if re.match(r"^[A-Za-z_]+\s*=", line)]

    @settings(max_examples=examples, derandomize=True, deadline=None)
    @given(line=st.sampled_from(settable), value=TOML_LITERALS)
    def loads(line: int, value: str) -> None:
        changed = list(lines)
        key = changed[line].split("=", 1)[0].rstrip()
        changed[line] = f"{key} = {value}"
        path.write_text("\n".join(changed) + "\n")
        load(path)

    loads()
