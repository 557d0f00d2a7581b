"""connector/paging.py: a listing that is handed back a token it followed ends, named."""

from __future__ import annotations

import pytest

from connector.errors import FatalRemoteError
from connector.paging import PAGING_LOOP, PageTokens


def test_a_token_followed_before_ends_the_listing_naming_the_call() -> None:
    tokens = PageTokens("crm", "GET", "/crm/v3/objects/contacts")
    assert tokens.follow("a") == "a"
    assert tokens.follow("b", 200) == "b"
    with pytest.raises(FatalRemoteError) as info:
        tokens.follow("a", 207)
    assert info.value.detail == PAGING_LOOP
    assert (info.value.system, info.value.method, info.value.status) == ("crm", "GET", 207)


def test_the_token_a_resumed_listing_starts_from_counts_as_followed() -> None:
    tokens = PageTokens("shop", "POST", "/admin/api/graphql.json", first="resume")
    with pytest.raises(FatalRemoteError):
        tokens.follow("resume")
    assert PageTokens("shop", "POST", "/x", first=None).follow("resume") == "resume"
