"""Naming the access scope a call was refused for, so the operator knows what to grant.

A vendor refuses a call its token lacks a scope for with a code (HubSpot: 403
``MISSING_SCOPES``; Shopify: ``ACCESS_DENIED`` inside an HTTP 200) and names the scope in a
message, which errors never carry (a message can echo a request's input). The adapter knows
which scopes each of its calls needs: :func:`naming_scope` puts them in the error instead,
as ``<code>: grant <grantee> <scope>``, so ``check``, a sync's status or an erasure's part
says what to grant, never what was asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from connector.errors import FatalRemoteError

__all__ = ["ScopeRefusal", "naming_scope"]


@dataclass(frozen=True)
class ScopeRefusal:
    """How one vendor says a call's token lacks a scope.

    Attributes:
        code: the error detail the adapter raises such a refusal with; the detail naming
            the scope starts with it.
        grantee: who is granted scopes, in the vendor's words (``the private app``).
        status: the HTTP status the refusal comes with (``None``: any).
        also: other details that mean the same refusal (an error without a category).
    """

    code: str
    grantee: str
    status: int | None = None
    also: frozenset[str] = frozenset()

    def refused(self, exc: FatalRemoteError) -> bool:
        """Whether ``exc`` is this refusal (and does not name a scope yet)."""
        if self.status is not None and exc.status != self.status:
            return False
        return exc.detail == self.code or exc.detail in self.also

    def detail(self, scopes: tuple[str, ...]) -> str:
        """The refusal's detail naming ``scopes``: ``ACCESS_DENIED: grant the app a and b``."""
        return f"{self.code}: grant {self.grantee} {' and '.join(scopes)}"


@contextmanager
def naming_scope(refusal: ScopeRefusal, *scopes: str) -> Iterator[None]:
    """Run calls that need ``scopes``; the vendor's ``refusal`` of one is raised naming them.

    An inner ``naming_scope`` has named its own call's scopes already: the outer one leaves
    its error as it is.

    Raises:
        FatalRemoteError: the refusal, its detail naming ``scopes`` (same system, method,
            route and status); other errors as they were.
    """
    try:
        yield
    except FatalRemoteError as exc:
        if not scopes or not refusal.refused(exc):
            raise
        detail = refusal.detail(scopes)
        raise FatalRemoteError(exc.system, exc.method, exc.path, exc.status, detail) from exc
