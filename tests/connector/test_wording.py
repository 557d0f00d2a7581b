"""Counts in the notes a person and a supervisory authority read."""

from __future__ import annotations

import pytest

from connector.wording import counted


@pytest.mark.parametrize(
    ("count", "noun", "plural", "said"),
    [
        (1, "audience", None, "1 audience"),
        (2, "audience", None, "2 audiences"),
        (0, "record", None, "0 records"),
        (1, "more review", None, "1 more review"),
        (3, "more review", None, "3 more reviews"),
        (1, "erased person", "erased people", "1 erased person"),
        (2, "erased person", "erased people", "2 erased people"),
    ],
)
def test_a_count_says_its_noun_in_the_plural_unless_it_is_one(
    count: int, noun: str, plural: str | None, said: str
) -> None:
    assert counted(count, noun, plural) == said
