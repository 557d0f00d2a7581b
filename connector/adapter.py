"""The adapter contract: the one seam between the engine and an external system.

An adapter is built from a :class:`~connector.http.SystemClient` and its own validated settings.
It never reads the environment, the state store or the clock. Records cross this seam as plain
dicts in the vendor's own shape; :mod:`connector.mapping` turns them into canonical people.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

import httpx

from connector import jsonutil
from connector.http import SystemClient, WaitHint
from connector.ratelimit import RateLimit
from connector.settings import SystemSettings

__all__ = [
    "PLACEHOLDER_EMAIL",
    "RETAINED",
    "Adapter",
    "AdapterSpec",
    "Capability",
    "ClientConfig",
    "ErasureMode",
    "ErasureResult",
    "Limits",
    "OutboundRecord",
    "Page",
    "SandboxLike",
    "Subject",
    "UpsertOutcome",
    "UpsertResult",
    "WebhookEvent",
    "WebhookRequest",
    "body_key",
    "delivery_json",
    "nest",
    "not_counted",
    "placed_by",
    "placed_by_another",
    "read_records",
]

#: ``webhook_url_check``: the vendor checks a webhook's URL with a GET when it is saved
#: (Mailchimp), which must be answered 200 or the webhook is not saved.
Capability = Literal["pull", "upsert", "update", "find", "erase", "webhooks", "webhook_url_check"]
#: ``kept``: nothing deleted, what the system holds is kept on purpose (say why in the note).
ErasureMode = Literal[
    "hard_delete", "async_hard_delete", "anonymise", "delete_purged_later", "kept"
]

#: The key of a found record the system keeps on purpose after an erasure; its value says why.
RETAINED = "retained"
#: ``upserted``: written, and the system does not say whether the record was new (Mailchimp's
#: ``PUT`` answers a created and an updated member alike).
#: ``not_held`` and ``skipped`` come from ``update`` only, which never creates: the system holds
#: no record the write could change, or holds one it must leave as it is (a Mailchimp member
#: that is archived changes only by being restored); ``note`` says which.
UpsertOutcome = Literal["created", "updated", "upserted", "not_held", "skipped", "failed"]


@dataclass(frozen=True)
class Limits:
    """What the system allows: batch size, pacing per bucket, concurrent connections.

    Attributes:
        batch_size: most records in one write call.
        page_size: records asked for per pull page.
        rate: rolling-window limits per bucket name (``"default"`` for plain calls).
        max_concurrency: calls in flight at once (Mailchimp allows 10 connections).
    """

    batch_size: int = 100
    page_size: int = 100
    rate: Mapping[str, RateLimit] = field(default_factory=dict)
    max_concurrency: int = 4


@dataclass(frozen=True)
class ClientConfig:
    """How :mod:`connector.http` must talk to a system: auth, back-off signal, error titles.

    Attributes:
        auth: HTTP basic credentials, or ``None``.
        headers: default headers (token headers); never logged.
        wait_hint: reads a 429 response and says how long the vendor wants us to wait.
        rate_limited: says whether a non-429 response means "slow down" (retried as a 429).
        budget_spent: reads a rate-limited response and says for how many seconds the
            vendor's budget of calls is spent (Pipedrive's daily one), or ``None``: the client
            then sends nothing to the system for that long (see :class:`SystemClient`).
        error_titles: the vendor's multi-word error titles that are categories, not text
            about a person (Mailchimp's ``Member Exists``); the client keeps them as an
            error's detail, where it drops any other text.
    """

    auth: tuple[str, str] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    wait_hint: WaitHint | None = None
    rate_limited: Callable[[httpx.Response], bool] | None = None
    error_titles: frozenset[str] = frozenset()
    budget_spent: Callable[[httpx.Response], float | None] | None = None


@dataclass(frozen=True)
class Page:
    """One page of raw records and the opaque cursor that resumes *after* it.

    ``cursor`` is what the engine stores once this page is durably queued. It may resume
    earlier than the page's end, never past it: records read again cost a pass over them and
    no write (change detection), a record passed over is lost. (Pipedrive's cursor inside
    a second too crowded to page by time names that second, read again whole on resuming.)
    ``complete`` is true on the last page of a pull.
    """

    records: Sequence[Mapping[str, Any]]
    cursor: str | None
    complete: bool = False
    total: int | None = None  # records the whole pull covers, when the vendor says (progress)


# OutboundRecord and UpsertResult are made once per record written: named tuples, not frozen
# dataclasses, whose constructors cost ~2.5 us apiece (see connector/state.py).


class OutboundRecord(NamedTuple):
    """One record to write: already minimised to the system's own field names.

    Attributes:
        ref: the caller's opaque reference, echoed in the result (never personal data).
        email: the normalised e-mail, the idempotency key most vendors upsert on.
        external_id: the system's id for this person when the connector knows it.
        fields: system field name (dotted for nested) -> value.
        spare: for ``update`` only, as :attr:`Subject.spare`: the system's ids of records the
            e-mail also finds that the connector knows as another subject's (a housemate's
            CRM person holding the address as a second e-mail); a correction leaves them.
        clear: system field names (as in ``fields``) to empty: the source now holds them
            empty, and this flow's last write gave them a value (a phone number the
            customer removed in the shop). The adapter empties each as its vendor empties
            a field; one the system cannot hold empty (Pipedrive's ``name``) is left as it
            is. Never a name in ``fields``, never the e-mail's.
    """

    ref: str
    email: str
    external_id: str | None
    fields: Mapping[str, Any]
    spare: frozenset[str] = frozenset()
    clear: frozenset[str] = frozenset()


class UpsertResult(NamedTuple):
    """What happened to one :class:`OutboundRecord`.

    ``reason`` is a vendor error *category* or status, never a message that could echo data.
    ``retryable`` marks failures worth another try (the record stays queued) as opposed to
    permanent rejections (dead-lettered); one that reached part of the system (a record
    written in one audience, not in another) gives the id it is held under there as
    ``external_id``, which the connector then knows the person by. ``note`` says in words
    what a write left alone and why (``not_held``, ``skipped``, or an update that reached
    only some of the records), for a request's receipt; like ``reason``, it never holds
    personal data. ``unreachable`` marks a retryable failure that says the system could not
    be reached or refused all work (:func:`connector.errors.system_down`): a run whose
    writes keep failing so leaves the rest queued for the next run. ``opted_out`` says the
    write found that the person unsubscribed at the system itself (Mailchimp's answer for
    someone it never wrote): the connector records it as it records that system's
    unsubscribe webhook, and sends them nothing there but their withdrawal from then on.
    ``kept`` names the fields of :attr:`OutboundRecord.clear` the write left as they were,
    because the system cannot hold them empty (a merge field an audience requires, a
    property HubSpot sets itself): a receipt or audit entry then claims no emptying of them.
    """

    ref: str
    outcome: UpsertOutcome
    external_id: str | None = None
    reason: str = ""
    retryable: bool = False
    note: str = ""
    unreachable: bool = False
    opted_out: bool = False
    kept: frozenset[str] = frozenset()


#: Stands in for the e-mail when only a system id is known. Adapters look people up by e-mail
#: first; an empty string would make some of them match everyone without an e-mail (guest
#: orders), while an address under ``.invalid`` (RFC 2606) can never match a real person.
PLACEHOLDER_EMAIL = "unknown-subject@klantsync.invalid"


@dataclass(frozen=True)
class Subject:
    """Who a data subject request is about, as far as the connector knows.

    ``external_ids`` maps system name -> that system's id, from the identity map or the
    erasure manifest (so a retry still finds someone the e-mail index no longer shows).

    ``spare`` holds the system's ids of records found for the subject that the identity map
    knows as another subject's (a housemate's CRM person with the subject's address added as
    a second e-mail): ``find`` leaves them out and ``erase`` never touches them (nor does
    ``update``, given them as :attr:`OutboundRecord.spare`).

    ``snapshot`` holds, for an erasure, what the request's snapshot found of the subject at
    the system before its first attempt, as the adapter's ``snapshot_keys`` names it (see
    :meth:`Adapter.erase`); ``None`` where the adapter names nothing or no snapshot is
    known. An attempt after one cut off half-way finds part of it gone already.
    """

    email: str
    phone: str | None = None
    external_id: str | None = None
    spare: frozenset[str] = frozenset()
    snapshot: frozenset[str] | None = None


@dataclass(frozen=True)
class ErasureResult:
    """The outcome of one system's erasure.

    Attributes:
        found: whether the system held the subject at all.
        mode: the deletion semantics used, stated honestly.
        reversible: whether the vendor can restore what was deleted.
        endpoint: method and path used (e.g. ``POST /crm/v3/objects/contacts/gdpr-delete``).
        vendor_status: the vendor's HTTP status for the deletion call(s).
        confirmation: the vendor's id for the request, when it gives one.
        note: what the receipt must say (e.g. "purged by the vendor after 30 days").
        pending: true when the vendor erases asynchronously and verification must wait.
        erased_note: what ``note`` says of this system's completed erasure of the subject
            (what it deleted, what the vendor keeps), for a call that found nothing of a
            subject the request found there before: an earlier attempt's call deleted
            them and a crash lost its outcome. The connector then records that, not
            "nobody held" (which dropped a 30-day restorability, a blocklist).
    """

    found: bool
    mode: ErasureMode
    reversible: bool
    endpoint: str
    vendor_status: int | None = None
    confirmation: str | None = None
    note: str = ""
    pending: bool = False
    erased_note: str = ""


@dataclass(frozen=True)
class WebhookRequest:
    """An inbound webhook delivery as received: raw body and headers (lower-cased keys)."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class WebhookEvent:
    """A decoded webhook event.

    Attributes:
        kind: ``"changed"`` (sync this person), ``"deleted"``, ``"erase"`` (a privacy
            deletion to mirror everywhere), ``"access"`` (a data request), ``"purge_all"``,
            ``"opted_out"`` / ``"opted_in"`` (the person unsubscribed at the sending system
            itself, or subscribed there again: see ``Store.opt_out``), ``"merged"`` (the
            record ``external_id`` was merged into the record ``merged_into`` and is gone:
            see :mod:`connector.merges`).
        delivery_id: the vendor's delivery/event id, for replay detection.
        external_id: the person's id in the sending system, if given.
        email: the person's e-mail, if the payload carries it (never logged).
        phone: the person's phone number as the payload gives it, for an erasure's
            suppression entry (never logged).
        due_within_days: the days the vendor gives to carry the request out, where that is
            shorter than GDPR's month (Shopify's compliance webhooks: 30); the deadline is
            then the earlier of the two.
        sent_at: when the vendor says it first sent the request, in epoch seconds, where it
            marks that on a delivery it sends again after one failed (Shopify's
            ``X-Shopify-Triggered-At``). The request counts from then; the mark is not
            signed, so the intake takes it only within bounds (connector/webhooks.py).
        occurred_at: when the event happened at the system, where the delivery says so
            (Mailchimp's ``fired_at``), ISO 8601 as the system gives it: a delivery retried
            after a newer one of the same person's is older, and does not undo it.
        merged_into: for ``"merged"``, the system's id of the record the merge kept.
    """

    kind: Literal[
        "changed",
        "deleted",
        "merged",
        "erase",
        "access",
        "purge_all",
        "opted_out",
        "opted_in",
        "ignored",
    ]
    delivery_id: str
    external_id: str | None = None
    email: str | None = None
    phone: str | None = None
    due_within_days: int | None = None
    sent_at: float | None = None
    occurred_at: str | None = None
    merged_into: str | None = None


@runtime_checkable
class Adapter(Protocol):
    """What every system adapter offers, as far as the system can (see ``capabilities``)."""

    kind: str
    capabilities: frozenset[Capability]
    limits: Limits

    def pull(self, cursor: str | None) -> AsyncIterator[Page]:
        """Yield pages of raw records changed since ``cursor`` (``None``: from the start)."""
        ...

    async def upsert(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Idempotent batch write (at most ``limits.batch_size``); one result per record."""
        ...

    async def update(self, records: Sequence[OutboundRecord]) -> list[UpsertResult]:
        """Change records the system already holds, and nothing else; one result per record.

        Unlike ``upsert`` it never creates a record, and never changes a status that stands
        for consent (subscribe, re-subscribe, restore from an archive): a rectification
        (Art. 16) corrects what is held and must not add anyone anywhere. A record with
        nothing to change answers ``not_held`` or ``skipped``, never ``failed``. A record
        among the record's ``spare`` ids is another subject's and is not changed.
        """
        ...

    async def find(self, subject: Subject) -> list[dict[str, Any]]:
        """Every record the system holds for the subject, in the vendor's shape.

        A record the system keeps on purpose after an erasure (orders a shop must keep for
        its tax records, say) carries ``"retained": "<why>"`` (:data:`RETAINED`): access
        shows it, and an erasure's check that nothing is left passes it over.

        An adapter whose ``find`` also reads what a pull does not (a shop's orders and their
        notes, every property a CRM defines) offers ``find_people(subject)`` too, returning
        the live person records alone, as ``pull`` lists and reads them: a targeted sync (a
        webhook, ``resync --email``) reads only what it syncs. Without it, targeted syncs use
        ``find``.

        Such an adapter (or one whose ``find`` reads a member's activity, or what a CRM keeps
        beside a person) also offers ``find_records(subject, *, orders: bool)``, which
        :func:`read_records` calls: the records ``find`` returns without what only an access
        copy holds, for an erasure (what it deletes, and its check that nothing is left) and
        a correction (what it changes). Every person record of the subject, archived ones
        included and marked as ``find`` marks them, with the fields the mapping reads and what
        tells them apart (id, e-mail); with ``orders`` too a shop's orders of the subject
        (``"type": "order"``, :data:`RETAINED` where ``find`` says so), which an erasure
        anonymises or keeps, without their notes. No notes, activity, associated records or
        properties the mapping does not read: ``delete-permanent`` and ``gdpr-delete`` take
        them unread, and a correction has no use for them. (One whose system may hold what a
        correction leaves and does not read, a shop's guest orders, says so in
        ``not_held_note: str``, which a correction's step gives where the system holds no
        person record of the subject.)
        """
        ...

    async def erase(self, subject: Subject) -> ErasureResult:
        """Permanently delete the subject with the system's GDPR route; idempotent.

        (An adapter whose erasure makes several deletions its note counts, Mailchimp's one
        per audience, also has ``snapshot_keys(records) -> frozenset[str]``: a key for each
        of the records an erasure's snapshot read (:func:`read_records`) that its erasure
        deletes and counts. The connector keeps them with the request and gives them back
        as :attr:`Subject.snapshot`; an attempt after one cut off between two deletions
        then names, beside what it deleted, what of them it found gone already, and its
        receipt does not count only the retry's share. Optional.)

        (An adapter whose pull leaves people out by a setting, WooCommerce's ``role``, also
        has ``pull_includes(record) -> bool``: a targeted sync of someone found by ``find``
        goes ahead only if a pull would list them. Optional: without it, everyone is.)

        (An adapter whose system can be asked for fewer fields of a record, WooCommerce's
        ``_fields``, also has ``ask_only_for(fields: frozenset[str])`` and
        ``asked_fields: frozenset[str] | None``: given the top-level fields its mapping
        reads (:meth:`SystemMapping.source_fields`), its ``pull`` asks for those alone, so
        the rest never leaves the system. Optional: without it, pulls read whole records and
        the mapping drops and counts what it does not read. With it may come ``async
        fields_honoured() -> bool | None``: whether the system really cuts its answers,
        which ``check --online`` asks. An adapter whose system is asked for nested fields
        one by one, Shopify's GraphQL selection, or for a record's fields by name under its
        ``record_root``, HubSpot's ``properties``, has ``ask_only_for_paths(paths:
        Mapping[str, str])`` instead, given every path its mapping reads with the mapping
        key naming it (:meth:`SystemMapping.source_paths`): a path the system cannot be
        asked for is a :class:`~connector.errors.ConfigError` naming that key, by the rule
        its settings' ``check_mapping`` applies when the config is loaded.)

        (An adapter whose settings name things in the system that a ``find`` does not
        reach, Mailchimp's audiences, also has ``async check_settings() -> None``, which
        ``check --online`` calls: it raises a KlantsyncError naming what the system lacks.
        One whose mapping names things the system defines, HubSpot's contact properties,
        has ``async check_mapping(mapping: SystemMapping) -> None`` for the same, given the
        system's mapping. Optional.)

        (An adapter whose system announces merges of its records (a ``"merged"`` webhook
        event) also has ``async held_addresses(external_id: str) -> list[str] | None``: every
        e-mail address the live record under that id holds, its primary one and the others;
        ``None`` when the system holds no live record under it. The connector reads the
        record a merge kept with it, and takes it for a subject's only where it holds the
        subject's own address (:mod:`connector.merges`). Optional: without it, merges are
        not learned.)

        (An adapter that can send a withdrawal of consent to a record by the system's id
        alone, with no address (Mailchimp unsubscribes the member it names), says so with
        ``withdraws_by_id = True``: a customer whose address the source removed is sent the
        withdrawal there. Optional: without it, such a customer is sent nothing there, as a
        write without an address would be refused.)

        (An adapter whose calls can find what the operator should act on without failing,
        Shopify answering from another API version than the configured one, also has
        ``online_warnings() -> list[str]``: what its calls so far found, which ``check
        --online`` reports among its warnings. Optional.)
        """
        ...

    def verify_webhook(self, request: WebhookRequest, secret: str, now: float) -> bool:
        """Check the vendor's signature (constant time) and, where it has one, its freshness
        window against ``now`` (epoch seconds, given so the adapter never reads the clock)."""
        ...

    def parse_webhook(self, request: WebhookRequest) -> list[WebhookEvent]:
        """Decode a verified delivery into events."""
        ...


class SandboxLike(Protocol):
    """What the demo, the contract suite and the benchmarks need of every sandbox."""

    kind: str

    def app(self) -> Any:
        """The ASGI app serving the fake vendor API."""
        ...

    def credentials(self) -> dict[str, str]:
        """Credential name -> value this sandbox accepts (names as the adapter's settings)."""
        ...

    def add_person(
        self,
        email: str,
        first_name: str = "",
        last_name: str = "",
        phone: str = "",
        **extra: Any,
    ) -> str:
        """Seed one person in the vendor's shape; return the vendor's id."""
        ...

    def holds(self, email: str) -> bool:
        """Whether a live (not deleted, not archived) record exists for ``email``."""
        ...

    def restorable(self, email: str) -> bool:
        """Whether a soft-deleted copy that the vendor could restore exists for ``email``."""
        ...

    def record_for(self, email: str) -> dict[str, Any] | None:
        """The live record for ``email`` in the vendor's shape, or ``None``."""
        ...


@dataclass(frozen=True)
class AdapterSpec:
    """One registry entry: everything the core needs to know to use a kind of system.

    Attributes:
        kind: the ``adapter = "..."`` value in the config.
        settings_model: the pydantic model of that system's ``[systems.<name>]`` table.
        factory: builds the adapter from its client and validated settings.
        client_config: auth and back-off signal for :class:`~connector.http.SystemClient`.
        limits: the system's limits under the given settings (tier, plan).
        sandbox: builds the system's sandbox (keyword arguments are sandbox-specific).
    """

    kind: str
    settings_model: type[SystemSettings]
    factory: Callable[[SystemClient, Any], Adapter]
    client_config: Callable[[Any], ClientConfig]
    limits: Callable[[Any], Limits]
    sandbox: Callable[..., SandboxLike]


async def read_records(
    adapter: Adapter, subject: Subject, *, orders: bool = False
) -> list[dict[str, Any]]:
    """The subject's records as an erasure or a correction reads them: the adapter's
    ``find_records`` (see :meth:`Adapter.find`), else its ``find``.

    ``orders``: a shop's orders of the subject too, which an erasure deletes or keeps; a
    correction changes none, and reads none.
    """
    lookup = getattr(adapter, "find_records", None)
    if lookup is None:
        return await adapter.find(subject)
    found: list[dict[str, Any]] = await lookup(subject, orders=orders)
    return found


def not_counted(kinds: Iterable[str], vendor: str) -> str:
    """What an erasure's note says of the kinds of record it could not count, the vendor
    having refused to list them (a 403: a scope or permission the connector's user lacks):
    ``"deals and tickets not counted (HubSpot would not list them)"``; empty for none.

    Said so, a kind left unread never passes for one of which nothing stays, and the
    erasure itself goes on: failing it on a count, retried until the deadline passed, kept
    the person whole.
    """
    named = list(kinds)
    return f"{' and '.join(named)} not counted ({vendor} would not list them)" if named else ""


def body_key(body: bytes) -> str:
    """A delivery's replay key where its signature covers only the body.

    A header's delivery id (``X-Shopify-Webhook-Id``, ``X-WC-Webhook-Delivery-ID``) is not
    signed: anyone holding one signed delivery could send it again under another id, and it
    was taken as new (an access request opened twice, an old record written back). The
    body's hash is the same for a vendor's retry and for any replay of it.
    """
    return "sha256:" + hashlib.sha256(body).hexdigest()


def delivery_json(body: bytes) -> Any:
    """A delivery's body read as JSON; ``None`` where it reads as none.

    Besides a body that is not JSON (``ValueError``, not UTF-8 included), one nested deeper
    than the parser goes raises ``RecursionError``: within the body's cap that is a few
    kilobytes of ``[``. Caught as a bug, a signed delivery of one was answered 500 and sent
    again until the vendor disabled the webhook; it is a body nothing can be read from.
    """
    try:
        return jsonutil.loads(body)
    except ValueError:  # not JSON, or nested too deep (jsonutil.loads says which)
        return None


def placed_by(order: Mapping[str, Any]) -> str | None:
    """The id of the customer account that placed a shop's ``order`` (WooCommerce
    ``customer_id``, Shopify ``customerId``), or ``None`` for a guest order (WooCommerce
    names nobody by 0)."""
    placer = str(order.get("customer_id") or order.get("customerId") or "")
    return None if placer in ("", "0") else placer


def placed_by_another(order: Mapping[str, Any], own: Collection[str]) -> bool:
    """Whether ``order`` was placed by a customer account none of ``own`` (the person's ids
    in the shop).

    The one rule of whose orders are the person's, for access and erasure alike: an order
    found by the address it is billed to is theirs only as a guest order (no account to say
    otherwise) or one of their own accounts'. Another account holder may bill an order to
    the address (a partner's, or one who took it over after the person changed theirs):
    shown in the person's copy it gave away that customer's name and purchase, and blanked
    by the person's erasure it destroyed that customer's order.
    """
    placer = placed_by(order)
    return placer is not None and placer not in own


def nest(
    fields: Mapping[str, Any], *, key_value_lists: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """An outbound record's dotted field names as the nested body a vendor reads.

    ``merge_fields.FNAME`` becomes ``{"merge_fields": {"FNAME": ...}}`` (the contract's
    "dotted for nested", :attr:`OutboundRecord.fields`). Under a name in ``key_value_lists``
    a child is a ``{"key", "value"}`` entry of a list instead (WooCommerce's ``meta_data``).
    """
    body: dict[str, Any] = {}
    for path, value in fields.items():
        head, dot, rest = path.partition(".")
        if dot and head in key_value_lists:
            body.setdefault(head, []).append({"key": rest, "value": value})
            continue
        *parents, leaf = path.split(".")
        node = body
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = value
    return body
