"""Transforms: the phone fast path agrees with libphonenumber's parser everywhere it answers."""

from __future__ import annotations

import random

import pytest

from connector.transforms import _UNSURE, _e164, _e164_national, _e164_parsed

REGIONS = ["NL", "BE", "DE", "FR", "AT", "CH", "SE", "IE", "GB", "IT", "US", "CA", "BR", "AR"]


def _generated(rng: random.Random) -> str:
    head = rng.choice(["0", "0", "06", "00", "000", "01", "1", "3", "31", "0031", "9", "4"])
    digits = head + "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 14)))
    out: list[str] = []
    for index, char in enumerate(digits):
        out.append(char)
        if index < len(digits) - 1 and rng.random() < 0.2:
            out.append(rng.choice(" -"))
    return "".join(out)


def test_fast_path_agrees_with_the_parser() -> None:
    """Over 40,000 generated numbers in 14 regions, every fast answer is the parser's answer."""
    rng = random.Random(7)
    answered = 0
    for _ in range(40_000):
        region, text = rng.choice(REGIONS), _generated(rng)
        fast = _e164_national(text, region)
        if fast is _UNSURE:
            continue
        answered += 1
        assert fast == _e164_parsed(text, region), (region, text)
    assert answered > 10_000  # the fast path does take the common national form


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("06 12345678", "+31612345678"),
        ("020-1234567", "+31201234567"),
        ("0612", None),  # too short to be anyone's number
        ("+31 6 12345678", "+31612345678"),  # not national: the parser answers
        ("0031 6 12345678", "+31612345678"),
    ],
)
def test_e164_of_dutch_numbers(text: str, expected: str | None) -> None:
    """Numbers as Dutch customers type them become E.164, whichever path answers."""
    assert _e164(text, "NL") == expected
