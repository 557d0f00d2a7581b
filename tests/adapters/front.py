"""A front end (CDN, proxy, maintenance mode) between an adapter and its vendor's sandbox.

Such a front end can answer a call with a 200 HTML page of its own: the vendor never saw
the call, or carried it out and its answer was replaced on the way back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

MAINTENANCE_PAGE = (
    b"<!DOCTYPE html><html><head><title>Down for maintenance</title></head>"
    b"<body><h1>We'll be back soon</h1></body></html>"
)

#: What the front end does with a call: ``"page"`` answers it with the page and never
#: passes it on; ``"after"`` passes it on, lets the vendor carry it out, then answers with
#: the page instead of the vendor's answer; ``None`` passes it through untouched.
Decision = Literal["page", "after"] | None


class FrontPage:
    """An ASGI app in front of ``app``; ``decide(scope)`` says what to do with each call."""

    def __init__(self, app: Any, decide: Callable[[dict[str, Any]], Decision]) -> None:
        self.app = app
        self.decide = decide

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        what = self.decide(scope) if scope["type"] == "http" else None
        if what == "after":

            async def swallow(_message: Any) -> None:
                return None

            await self.app(scope, receive, swallow)
        if what is None:
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/html")],
            }
        )
        await send({"type": "http.response.body", "body": MAINTENANCE_PAGE})
