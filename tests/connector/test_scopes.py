"""connector/scopes.py: a call refused for a missing scope is raised naming the scope."""

from __future__ import annotations

import pytest

from connector.errors import FatalRemoteError, RecordError
from connector.scopes import ScopeRefusal, naming_scope

REFUSAL = ScopeRefusal("MISSING", "the app", status=403, also=frozenset({""}))


def refusal(status: int | None = 403, detail: str = "MISSING") -> FatalRemoteError:
    return FatalRemoteError("crm", "GET", "/people/jan%40example.com", status, detail)


def test_the_refusal_is_raised_naming_the_scopes_with_its_call_kept() -> None:
    """Same system, method, route and status; the detail names what to grant."""
    with pytest.raises(FatalRemoteError) as caught, naming_scope(REFUSAL, "read_a", "read_b"):
        raise refusal()
    assert caught.value.detail == "MISSING: grant the app read_a and read_b"
    assert (
        str(caught.value)
        == "crm: GET /people/{id} -> 403 (MISSING: grant the app read_a and read_b)"
    )
    assert isinstance(caught.value.__cause__, FatalRemoteError)


@pytest.mark.parametrize(
    "error",
    [
        refusal(status=401),  # another status: bad credentials, not a scope
        refusal(detail="NOT_FOUND"),  # another code
        RecordError("crm", "GET", "/people", 403, "MISSING"),  # not fatal
    ],
)
def test_other_errors_pass_unchanged(error: FatalRemoteError) -> None:
    with pytest.raises(type(error)) as caught, naming_scope(REFUSAL, "read_a"):
        raise error
    assert caught.value is error


def test_an_inner_call_keeps_the_scope_it_named() -> None:
    """A call needing its own scope inside a wider one is not renamed by the outer one."""
    outer, inner = naming_scope(REFUSAL, "outer"), naming_scope(REFUSAL, "inner")
    with pytest.raises(FatalRemoteError) as caught, outer, inner:
        raise refusal(detail="")
    assert caught.value.detail == "MISSING: grant the app inner"
