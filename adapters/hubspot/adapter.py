"""The HubSpot CRM v3 contacts adapter (settings and client config live in ``settings.py``).

What it does, by contract verb:

- ``pull``: a first read lists every contact (``GET /crm/v3/objects/contacts`` paged by
  ``after``, with loop detection); later ones search for the contacts modified since the
  last one (``POST .../search`` by ``lastmodifieddate``: :mod:`adapters.hubspot._changes`);
- ``upsert``: ``POST .../batch/upsert`` keyed on e-mail, one ``objectWriteTraceId`` per input
  so HubSpot answers a partial failure with 207 and says which inputs failed; a property the
  record names to empty (``clear``) is sent ``""``, as HubSpot empties one, unless HubSpot
  would refuse it (see ``_with_emptied``): the result's ``kept`` then names it;
- ``update``: ``POST .../batch/update`` only, by id or by e-mail, so a contact HubSpot does not
  hold is never created; one in the recycle bin is left unchanged, and the result says so;
- ``find``: ``POST .../batch/read`` by e-mail (the e-mail travels in the body, never in a URL
  path that could end up in an error message), then by HubSpot id; each read once for live
  contacts and once with ``archived=true`` for the recycle bin, because an archived contact
  is still held (restorable for 90 days); each contact found with the records associated
  with it (engagements, deals, companies and support tickets) and its address's
  subscription statuses (:mod:`adapters.hubspot._related`);
- ``find_records`` (an erasure's snapshot and check, a correction): the contacts ``find``
  finds, with those properties alone and nothing associated with them;
- ``find_people`` (a targeted sync: a webhook, ``resync --email``): the live contact by id,
  else by e-mail, with the configured properties the mapping reads only, as ``pull`` reads
  it (``ask_only_for_paths``);
- ``erase``: ``POST .../gdpr-delete`` only, archived contacts included, and nothing at all for
  a subject HubSpot does not hold (by e-mail it would blocklist the address). Never ``DELETE``
  or ``batch/archive``, which are soft deletes HubSpot can restore for 90 days. The deals,
  companies and support tickets associated with the contact, which gdpr-delete leaves, are
  counted first and named on the receipt;
- ``check_mapping`` (``check --online``): the portal's contact properties
  (``GET /crm/v3/properties/contacts``) against the properties the mapping names and the
  configured ``properties``, which a ``find`` cannot vouch for (:mod:`adapters.hubspot._mapped`);
- webhooks: v3 signatures and ``contact.*`` events.

The class is made of parts, each a module of this package it inherits: ``upsert`` and
``update`` in :mod:`adapters.hubspot._writes` (a batch's inputs in
:mod:`adapters.hubspot._inputs`, its 207 read in :mod:`adapters.hubspot._batch_answers`),
``find``, ``find_records`` and ``find_people`` in :mod:`adapters.hubspot._find`, ``erase`` in
:mod:`adapters.hubspot._erasure`, the webhooks in :mod:`adapters.hubspot._webhooks`, and the
attributes they share in :mod:`adapters.hubspot._parts`. ``pull``, ``check_mapping`` and
``SPEC`` are here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from adapters.hubspot._changes import PullCursor, changed_since, decode_cursor, latest_change
from adapters.hubspot._erasure import ERASURE_NOTE, GDPR_DELETE, ContactErasure
from adapters.hubspot._find import PROPERTIES_UNREAD, PROPERTIES_UNREAD_REASON, ContactFinds
from adapters.hubspot._inputs import _as_property
from adapters.hubspot._lookup import CONTACTS, ContactLookup
from adapters.hubspot._mapped import (
    configured_warnings,
    contact_definitions,
    mapped_properties,
    option_warnings,
    refusals,
)
from adapters.hubspot._parts import OWN_PROPERTIES
from adapters.hubspot._properties import PropertyLists
from adapters.hubspot._related import MAIN_PROPERTIES, Related, next_after
from adapters.hubspot._scopes import CONTACTS_READ, needing
from adapters.hubspot._webhooks import ContactWebhooks
from adapters.hubspot._writes import ContactWrites
from adapters.hubspot.labels import COPY_LABELS
from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.hubspot.settings import (
    DEFAULT_PROPERTIES,
    HubSpotSettings,
    client_config,
    hubspot_limits,
    wait_hint,
)
from adapters.hubspot.signature import sign_v3
from connector.access_labels import CopyLabels
from connector.adapter import AdapterSpec, Capability, Page
from connector.errors import ConfigError
from connector.http import SystemClient, answer_object
from connector.mapping import SystemMapping
from connector.paging import PageTokens

__all__ = [
    "DEFAULT_PROPERTIES",
    "ERASURE_NOTE",
    "GDPR_DELETE",
    "PROPERTIES_UNREAD",
    "PROPERTIES_UNREAD_REASON",
    "SPEC",
    "HubSpotAdapter",
    "HubSpotSettings",
    "client_config",
    "hubspot_limits",
    "sign_v3",
    "wait_hint",
]


class HubSpotAdapter(ContactWrites, ContactFinds, ContactErasure, ContactWebhooks):
    """HubSpot CRM v3 contacts, as the :class:`~connector.adapter.Adapter` contract asks.

    The writes, the reads of a subject, the erasure and the webhooks are the parts it
    inherits (see the module's docstring); ``pull`` and the checks are its own.

    Args:
        client: the portal's HTTP client, built by :mod:`connector.http`.
        settings: the portal's validated settings.
    """

    kind: str = "hubspot"
    capabilities: frozenset[Capability] = frozenset(
        {"pull", "upsert", "update", "find", "erase", "webhooks"}
    )
    #: What an access copy (``find``) holds beyond the mapped fields (connector/access.py).
    #: A contact comes with its associated deals, companies, notes, calls, e-mails,
    #: meetings, tasks and support tickets (correspondence, as "notes" says), and its
    #: e-mail subscriptions with their legal basis.
    copy_categories: frozenset[str] = frozenset({"orders", "notes", "professional", "consent"})
    #: What its records are and its keys hold, in plain words for the access reports.
    copy_labels: CopyLabels = COPY_LABELS

    def __init__(self, client: SystemClient, settings: HubSpotSettings) -> None:
        self.client = client
        self.settings = settings
        self.limits = hubspot_limits(settings)
        #: The contact properties pulls and targeted syncs ask for (``None``: the configured
        #: ``properties`` whole, before :meth:`ask_only_for_paths`).
        self.asked_fields: frozenset[str] | None = None
        self._asked = list(settings.properties)
        self._properties = ",".join(settings.properties)
        self._lookup = ContactLookup(client, settings.properties)
        # Without the schema scope a copy holds the configured properties only (and an
        # associated record its kind's main ones).
        self._property_lists = PropertyLists(
            client, {"contacts": settings.properties, **MAIN_PROPERTIES}
        )
        self._related = Related(client, self._property_lists)
        #: What the last :meth:`check_mapping` found for the operator to act on.
        self._warnings: list[str] = []

    def ask_only_for_paths(self, paths: Mapping[str, str]) -> None:
        """Read contacts with the configured ``properties`` the mapping reads alone, and the
        e-mail every lookup tells contacts apart by (:data:`OWN_PROPERTIES`).

        ``paths`` are the mapping's (:meth:`SystemMapping.source_paths`, each with the
        mapping key naming it): under its ``record_root`` they are property names, and the
        id (``id_path``) is the contact's own, answered with every read. Pulls, targeted
        syncs and an erasure's lookups then leave a street address or postcode the mapping
        does not read in HubSpot; an access copy (:meth:`find`) still reads every property
        the portal defines.
        """
        read = {path.split(".", 1)[0] for path, key in paths.items() if key != "id_path"}
        wanted = read | set(OWN_PROPERTIES)
        asked = [name for name in self.settings.properties if name in wanted]
        asked += [name for name in OWN_PROPERTIES if name not in asked]
        self._asked = asked
        self._properties = ",".join(asked)
        self._lookup.properties = list(asked)
        self.asked_fields = frozenset(asked)

    # -- pull --------------------------------------------------------------------------------

    async def pull(self, cursor: str | None) -> AsyncIterator[Page]:
        """Yield pages of the contacts changed since ``cursor``, each with the cursor after it.

        Without a cursor (a flow's first read, ``sync --full``) every contact is listed
        (``GET .../contacts`` by ``after``), after one search for the latest modification in
        the portal; from then on only the contacts modified since are searched for
        (:mod:`adapters.hubspot._changes`).

        Raises:
            FatalRemoteError: HubSpot handed back an ``after`` token already used in this pull,
                or search pages that do not move forward (a paging loop would never end).
            RetryableError: a page answered with something that is not a list of contacts.
        """
        state = decode_cursor(cursor)
        if state.since is not None and state.list_after is None:
            lag_ms = self.settings.search_lag_seconds * 1000
            async for page in changed_since(
                self.client, state.since, self._asked, self.limits.page_size, lag_ms
            ):
                yield page
            return
        since = state.since
        if state.list_after is None:
            since = await latest_change(self.client)
        # A list resumed without one (a cursor from before the search) ends without one: the
        # next read lists every contact again, as its changes while paused are not known.
        async for page in self._list(state.list_after, since):
            yield page

    async def _list(self, after: str | None, since: int | None) -> AsyncIterator[Page]:
        """Every contact from ``after`` on, 100 a call; the last page's cursor searches from
        ``since`` (the latest modification when the first page was read)."""
        tokens = PageTokens(self.client.system, "GET", CONTACTS, first=after)
        while True:
            params: dict[str, Any] = {"limit": self.limits.page_size}
            params["properties"] = self._properties
            if after:
                params["after"] = after
            with needing(CONTACTS_READ):
                response = await self.client.request("GET", CONTACTS, params=params)
            # Not json_object: a page it reads as {} (a front end's 200 HTML page) has no
            # paging either, and would end the pull "complete" with the rest never read.
            body = answer_object(
                response,
                system=self.client.system,
                method="GET",
                path=CONTACTS,
                required=("results",),
            )
            records = [r for r in body.get("results") or [] if isinstance(r, dict)]
            following = next_after(body)
            if following is None:
                final = PullCursor(since=since).encode()
                yield Page(records=records, cursor=final, complete=True)
                return
            tokens.follow(following, response.status_code)
            yield Page(records=records, cursor=PullCursor(since, following).encode())
            after = following

    # -- check -------------------------------------------------------------------------------

    async def check_mapping(self, mapping: SystemMapping) -> None:
        """Hold the properties ``mapping`` names against the portal's contact properties
        (``GET /crm/v3/properties/contacts``), for ``check --online``.

        A ``find`` cannot tell a property the portal lacks, nor one HubSpot lets no
        integration write: the first sync did, with a dead letter for every customer sent. A
        value the mapping sets itself that an enumeration does not offer is a warning
        (:meth:`online_warnings`), as is a configured ``properties`` name the portal lacks
        (:func:`~adapters.hubspot._mapped.configured_warnings`).

        Raises:
            ConfigError: naming the mapping file and each such property with the key naming
                it (names only, no value).
            FatalRemoteError: the list refused (403), naming the scope to grant the private
                app, ``crm.schemas.contacts.read``; or the call's failure.
        """
        definitions = await contact_definitions(self.client)
        named = mapped_properties(mapping, _as_property)
        system = self.client.system
        self._warnings = option_warnings(system, named, definitions)
        self._warnings += configured_warnings(system, self.settings.properties, named, definitions)
        refused = refusals(named, definitions)
        if refused:
            raise ConfigError(str(mapping.path), "", refused)

    def online_warnings(self) -> list[str]:
        """What :meth:`check_mapping` found for the operator to act on, which ``check
        --online`` reports among its warnings."""
        return list(self._warnings)


SPEC = AdapterSpec(
    kind="hubspot",
    settings_model=HubSpotSettings,
    factory=HubSpotAdapter,
    client_config=client_config,
    limits=hubspot_limits,
    sandbox=HubSpotSandbox,
)
