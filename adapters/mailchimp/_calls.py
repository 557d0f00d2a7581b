"""What the parts of the Mailchimp adapter share: the account's client, settings and
connection gate, one call to Mailchimp (its errors naming no person), and a member's path.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, Final
from urllib.parse import quote

import httpx

from adapters.mailchimp._outcomes import _Batch, _Outcome
from adapters.mailchimp.payloads import (
    SIGNUPS_PAUSED,
    is_subscriber_hash,
    refused_fields,
    signups_paused,
    subscriber_hash,
)
from adapters.mailchimp.settings import MailchimpSettings
from connector.adapter import OutboundRecord, UpsertResult
from connector.errors import (
    FatalRemoteError,
    RecordError,
    RemoteError,
    RetryableError,
    system_down,
)
from connector.http import SystemClient, json_object
from connector.workers import WorkerPool

#: Query of a write that changes what it carries and nothing else (a withdrawal's status, a
#: correction's fields): Mailchimp otherwise checks the whole member against the audience's
#: required merge fields, and refuses an unsubscribe because a field the owner made
#: required later is empty.
_STATUS_ONLY: Final = {"skip_merge_validation": "true"}


class MailchimpCalls:
    """The attributes every part of the adapter uses, and the calls they all make.

    :class:`~adapters.mailchimp.adapter.MailchimpAdapter` sets the attributes (see its
    ``__init__``); its parts (reads, erasure, corrections) inherit this class, so each is
    checked against the attributes declared here rather than an untyped ``self``.
    """

    client: SystemClient
    settings: MailchimpSettings
    _connections: asyncio.Semaphore
    _workers: WorkerPool[UpsertResult]

    async def _each(
        self,
        records: Sequence[OutboundRecord],
        write_one: Callable[[OutboundRecord, _Batch], Awaitable[UpsertResult]],
    ) -> list[UpsertResult]:
        """``write_one`` over ``records`` on the workers; the first fatal error is raised once
        every call has finished, and stops those not yet started."""
        batch = _Batch()
        results = await self._workers.run_all(
            [partial(write_one, record, batch) for record in records]
        )
        if batch.fatal is not None:
            raise batch.fatal
        return results

    async def _on_connection(
        self, batch: _Batch, call: Callable[[], Awaitable[_Outcome]]
    ) -> _Outcome:
        """Run ``call`` on one of the account's connections; its remote errors become outcomes.

        The first fatal error is kept on ``batch``, and calls not yet started are not made.
        """
        async with self._connections:
            if batch.fatal is not None:
                return _Outcome(ok=False, reason="NOT_SENT", retryable=True)
            try:
                return await call()
            except FatalRemoteError as exc:
                batch.fatal = batch.fatal or exc
                return _Outcome(ok=False, reason=_reason(exc), retryable=True)
            except RecordError as exc:
                return _Outcome(ok=False, reason=_reason(exc))
            except RetryableError as exc:
                return _Outcome(
                    ok=False, reason=_reason(exc), retryable=True, unreachable=system_down(exc)
                )

    async def _request(
        self,
        method: str,
        path: str,
        template: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        accept: Sequence[int] = (),
    ) -> httpx.Response:
        """One call (the caller holds a connection slot); errors name ``template``, not ``path``.

        ``path`` holds the subscriber hash; the error raised names the route with
        ``{subscriber_hash}`` instead, so no message or log identifies the person. A 400 is
        read here, not by the client, for what its title alone does not say (see
        :meth:`_refused`).
        """
        try:
            response = await self.client.request(
                method, path, params=params, json=json, accept=(*accept, 400)
            )
        except RemoteError as exc:
            renamed = exc.renamed(template)
            # The original's message holds the hash: keep only what caused *it* (the transport
            # error, if any) in the chain.
            raise renamed from exc.__cause__
        if response.status_code == 400 and 400 not in accept:
            raise self._refused(method, template, response)
        return response

    def _refused(self, method: str, template: str, response: httpx.Response) -> RemoteError:
        """The record error a 400 is: Mailchimp's title, as the client would keep it, and the
        fields its ``errors[]`` names (``Invalid Resource: COMPANY``), never its ``detail``
        or messages, which echo the e-mail and values sent (see :func:`refused_fields`).

        A pause of the address's signups is a :class:`RetryableError` instead (``Invalid
        Resource: SIGNUPS_PAUSED``): the record stays queued and is sent again by a later
        run, once Mailchimp takes signups of the address again, where a record error would
        have dead-lettered a consenting person as an address Mailchimp will not take.
        """
        body = json_object(response)
        title = body.get("title")
        category = title if isinstance(title, str) and self.client.is_category(title) else ""
        if signups_paused(body):
            paused = f"{category or 'HTTP_400'}: {SIGNUPS_PAUSED}"
            return RetryableError(self.client.system, method, template, 400, paused)
        fields = refused_fields(body) if category else []
        detail = f"{category}: {', '.join(fields)}" if fields else category
        return RecordError(self.client.system, method, template, 400, detail)


def _member_path(list_id: str, member_hash: str) -> str:
    return f"/lists/{quote(list_id, safe='')}/members/{member_hash}"


def _member_hashes(email: str, external_id: str | None) -> list[str]:
    """The member ids a person may have on an audience: their address's hash, and the id the
    connector holds when it is another (the member's address changed in Mailchimp)."""
    normalised = email.strip().lower()
    hashes = [subscriber_hash(normalised)] if "@" in normalised else []
    if external_id and is_subscriber_hash(external_id):
        hashes.append(external_id)
    return list(dict.fromkeys(hashes))


def _reason(exc: RemoteError) -> str:
    """Mailchimp's error title (the client keeps only known ones, see ERROR_TITLES), or status."""
    if exc.detail:
        return exc.detail
    return f"HTTP_{exc.status}" if exc.status is not None else type(exc).__name__
