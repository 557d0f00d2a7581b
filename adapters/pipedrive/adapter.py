"""The Pipedrive API v2 persons adapter (settings and client config live in ``settings.py``).

What it does, by contract verb:

- ``pull``: ``GET /persons`` sorted by ``update_time``, 500 a page, each page after the
  first asked for from the newest ``update_time`` read (``updated_since``); a second
  holding more than half a page is listed on its own (``updated_until`` the next second, by
  id, by ``additional_data.next_cursor``) and listed again until two listings find the same
  persons (see :meth:`~adapters.pipedrive._pull.PersonPages.pull`: the cursor may be a
  position, which a person changed meanwhile shifts); the stored cursor carries the
  ``updated_since`` watermark, so a later pull reads only what changed (re-reading the
  boundary second is harmless: the engine skips unchanged content);
- ``upsert``: v2 has neither a batch write nor an upsert for persons, so each record is one
  to three calls, run with bounded concurrency: ``PATCH /persons/{id}`` when the identity map
  knows the id, else the e-mail is looked up and the person whose *primary* e-mail it is is
  patched, else ``POST /persons``. A person holding the address only beside their own (a
  housemate's, the customer's address added as a second e-mail) is not the customer's: it
  is neither renamed after them nor taken as theirs. The lookup is ``GET /persons/search``
  (exact e-mail, the search bucket), or, when many come at once (a first sync), one listing
  of every person (:mod:`.directory`). A ``POST`` whose answer is lost is not sent again:
  the person it made is looked for among those changed since just before it (at most two
  ``GET /persons``), then searched, and written to (:mod:`._writes`);
- ``update``: the same without the ``POST``: only a person Pipedrive holds is changed;
- ``find``: ``GET /persons/{id}`` for a known id, plus every exact e-mail hit of the search
  whose primary e-mail it is (Pipedrive lets several persons share an e-mail; one holding
  it beside another primary one is not the subject's, as ``upsert`` tells them apart),
  each read in full with what Pipedrive keeps beside them: notes, deals and leads (archived
  ones of both too), activities and label names (:mod:`.linked`); a person in the 30-day bin
  among them is reported held, marked so (:func:`~.payloads.in_the_bin`);
  ``find_records`` (an erasure's snapshot and check, a correction) the persons alone, and
  ``find_people`` (a targeted sync: a webhook, ``resync --email``) the live persons alone,
  as ``pull`` lists them;
- ``erase``: ``DELETE /persons/{id}`` for each of those persons. Pipedrive only *marks* a
  person deleted and purges it 30 days later ("Marks a person as deleted. After 30 days, the
  person will be permanently deleted."), and can restore it meanwhile: the result says so
  (``delete_purged_later``, reversible) and the receipt must too. API v2 has no immediate
  permanent deletion of a person. Before each, the notes about the person alone are
  deleted (API v1), and the deals and leads (archived ones of both too), activities and
  notes also on another record, which are the business's, are counted on the receipt
  (:mod:`.linked`);
- webhooks: v2 deliveries with HTTP Basic credentials (see :mod:`adapters.pipedrive.webhooks`).

A person marked deleted is not live: no sync or correction writes to them. Whether v2
``GET /persons/{id}`` answers such a person with 404 or with ``is_deleted: true`` during the
30 days is UNVERIFIED (the reference says neither; the sandbox answers 404 unless asked to
show them). Shown, they are still held, restorable until purged: ``find`` reports them and
``erase`` counts them as found (deleted already, reversible), not as "no person held".

The class is made of parts, each a private module of this package it inherits: ``pull``
and the listing of every person in :mod:`adapters.pipedrive._pull`; ``upsert`` and
``update`` in :mod:`adapters.pipedrive._writes`, one person's ``PATCH`` in
:mod:`adapters.pipedrive._patch` (what it carries beside the record's fields in
:mod:`adapters.pipedrive._patch_fields`, the connector's own e-mail and phone entries in
:mod:`adapters.pipedrive._own_entries`); ``find``, ``find_records``, ``find_people`` and
whose a person is in :mod:`adapters.pipedrive._lookup`; ``erase`` and its notes in
:mod:`adapters.pipedrive._erasure`; and what they all share (the attributes set here, one
person read, a search by e-mail) in :mod:`adapters.pipedrive._calls`. This module keeps
the class and its wiring, ``held_addresses`` (merges), the webhooks and ``SPEC``.
"""

from __future__ import annotations

import asyncio

from adapters.pipedrive._erasure import ERASED_NOTE as ERASED_NOTE
from adapters.pipedrive._erasure import ERASURE_ENDPOINT, ERASURE_NOTE, PersonErasure
from adapters.pipedrive._erasure import IN_THE_BIN_NOTE as IN_THE_BIN_NOTE
from adapters.pipedrive._lookup import NOT_HELD_NOTE as NOT_HELD_NOTE
from adapters.pipedrive._own_entries import _entry_values
from adapters.pipedrive._writes import PersonWrites
from adapters.pipedrive.directory import Directory
from adapters.pipedrive.labels import COPY_LABELS
from adapters.pipedrive.linked import LinkedReader
from adapters.pipedrive.sandbox import PipedriveSandbox
from adapters.pipedrive.sent import LastSent
from adapters.pipedrive.settings import (
    PipedriveSettings,
    client_config,
    pipedrive_limits,
)
from adapters.pipedrive.webhooks import parse_delivery, verify_delivery
from connector.access_labels import CopyLabels
from connector.adapter import (
    AdapterSpec,
    Capability,
    WebhookEvent,
    WebhookRequest,
)
from connector.http import SystemClient

__all__ = ["ERASURE_ENDPOINT", "ERASURE_NOTE", "SPEC", "PipedriveAdapter"]


class PipedriveAdapter(PersonWrites, PersonErasure):
    """Pipedrive API v2 persons, as the :class:`~connector.adapter.Adapter` contract asks.

    Args:
        client: the company's HTTP client, built by :mod:`connector.http`, whose base URL is
            the API v2 root (``https://<company>.pipedrive.com/api/v2``).
        settings: the company's validated settings.
    """

    kind: str = "pipedrive"
    capabilities: frozenset[Capability] = frozenset(
        {"pull", "upsert", "update", "find", "erase", "webhooks"}
    )
    #: What an access copy (``find``) holds beyond the mapped fields (connector/access.py).
    #: A person comes with their deals, leads (what was offered: "orders"), activities and
    #: notes.
    copy_categories: frozenset[str] = frozenset({"orders", "notes"})
    #: What its records are and its keys hold, in plain words for the access reports.
    copy_labels: CopyLabels = COPY_LABELS

    def __init__(self, client: SystemClient, settings: PipedriveSettings) -> None:
        self.client = client
        self.settings = settings
        self.limits = pipedrive_limits(settings)
        self.directory = Directory(client.clock)
        self.sent = LastSent()
        self.linked = LinkedReader(client, settings.base_url)
        self._listing = asyncio.Lock()

    # -- merges ------------------------------------------------------------------------------

    async def held_addresses(self, external_id: str) -> list[str] | None:
        """Every e-mail address of the live person ``external_id``, primary first; ``None``
        when Pipedrive holds no live person under it (404, in the bin, not an id).

        The connector reads the person a merge kept with it (:mod:`connector.merges`): the
        merge keeps the kept person's primary address, and the customer's may be one of the
        others."""
        if not external_id.isdecimal():
            return None
        person = await self._read(int(external_id))
        if person is None or person.get("is_deleted"):
            return None
        entries = person.get("emails")
        listed = entries if isinstance(entries, list) else []
        ordered = sorted(listed, key=lambda e: not (isinstance(e, dict) and e.get("primary")))
        return _entry_values(ordered)

    # -- webhooks ----------------------------------------------------------------------------

    def verify_webhook(self, request: WebhookRequest, secret: str, now: float) -> bool:
        """Check the delivery's HTTP Basic credentials against ``secret`` (``"user:password"``).

        ``now`` is unused: Pipedrive signs nothing and sends no timestamp to check.
        """
        return verify_delivery(request, secret)

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        """Person create/change -> ``changed``; delete -> ``deleted``, or ``merged`` where it
        names the person kept; anything else ignored."""
        return parse_delivery(request)


SPEC = AdapterSpec(
    kind="pipedrive",
    settings_model=PipedriveSettings,
    factory=PipedriveAdapter,
    client_config=client_config,
    limits=pipedrive_limits,
    sandbox=PipedriveSandbox,
)
