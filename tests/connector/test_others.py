"""Other people's addresses quoted in an access copy's free text (connector/others.py)."""

from __future__ import annotations

from connector.others import (
    LEFT_OUT,
    own_addresses,
    text_without_others,
    without_others_addresses,
)


def test_another_s_address_is_left_out_and_the_person_s_own_kept_in_any_case() -> None:
    """An address not among the person's reads as left out; theirs stays as written, in the
    case it was written in, and so does every other word."""
    own = own_addresses(" Mila@Example.com ")
    text = "Mila (MILA@example.COM) en cees.de-vries+nl@post.elders.example schreven."
    assert without_others_addresses(text, own) == (
        f"Mila (MILA@example.COM) en {LEFT_OUT} schreven."
    )


def test_an_address_in_html_is_left_out_without_the_entities_around_it() -> None:
    """In a link and between ``&lt;`` and ``&gt;`` only the address goes, the markup stays."""
    html = '<a href="mailto:cees@elders.example">Cees</a> &lt;cees@elders.example&gt;'
    assert without_others_addresses(html, frozenset()) == (
        f'<a href="mailto:{LEFT_OUT}">Cees</a> &lt;{LEFT_OUT}&gt;'
    )


def test_only_the_named_keys_holding_text_are_changed() -> None:
    """A key not named, one holding no text and one absent are left as they were."""
    record = {"note": "zie bea@blind.example", "by": "bea@blind.example", "flag": True}
    kept = text_without_others(record, ("note", "flag", "absent"), frozenset())
    assert kept == {"note": f"zie {LEFT_OUT}", "by": "bea@blind.example", "flag": True}
    assert record["note"] == "zie bea@blind.example"


def test_own_addresses_passes_over_what_is_no_address() -> None:
    """None, a number and text without ``@`` are not the person's addresses."""
    assert own_addresses("A@X.example", None, 3, "", "geen adres") == frozenset({"a@x.example"})


def test_the_keys_naming_another_person_whole_are_left_out() -> None:
    """A key named to leave out (a note's author, a staff member) is not in the copy; the
    note's text and its other keys are, addresses of others in the text left out."""
    record = {"note": "zie bea@blind.example", "author": "Mieke Medewerker", "id": 7}
    kept = text_without_others(record, ("note",), frozenset(), leave_out=("author", "absent"))
    assert kept == {"note": f"zie {LEFT_OUT}", "id": 7}
    assert record["author"] == "Mieke Medewerker"
