"""Following a vendor's next-page tokens without going round in a loop.

HubSpot's ``after``, Pipedrive's ``next_cursor`` and Shopify's ``endCursor`` each name the
next page. A vendor (or a front end in the way) that hands back a token already followed
would page in a loop forever, or end a listing on what it had read so far as if that were
all: a pull's cursor moved past people never read, an erasure's check concluded nobody was
left. Every listing of every adapter refuses it the same way, here.
"""

from __future__ import annotations

from connector.errors import FatalRemoteError

__all__ = ["PAGING_LOOP", "PageTokens"]

#: The detail of the error a listing that pages in a loop ends with.
PAGING_LOOP = "PAGING_LOOP"


class PageTokens:
    """The next-page tokens one listing (``method`` ``path`` at ``system``) has followed.

    ``first``, when given, is the token the listing starts from (a pull resumed mid-way):
    handed back again, it is a loop too.
    """

    def __init__(self, system: str, method: str, path: str, first: str | None = None) -> None:
        self._system = system
        self._method = method
        self._path = path
        self._followed: set[str] = {first} if first else set()

    def follow(self, token: str, status: int = 200) -> str:
        """``token``, recorded as followed; one followed before ends the listing.

        Raises:
            FatalRemoteError: ``token`` was followed before in this listing (detail
                :data:`PAGING_LOOP`; ``status`` is the answer's that handed it back).
        """
        if token in self._followed:
            raise FatalRemoteError(self._system, self._method, self._path, status, PAGING_LOOP)
        self._followed.add(token)
        return token
