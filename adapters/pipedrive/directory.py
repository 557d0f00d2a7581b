"""Who holds an e-mail in Pipedrive: one listing of every person, instead of a search each.

API v2 has no upsert by e-mail, so a record without a known Pipedrive id is looked up with
``GET /persons/search`` before it is written. Searches have a limit of their own, 10 calls
per 2 s on every plan, and are the dearest call against the daily token budget (40 tokens
in Pipedrive's v1 table, against 20 for a list page). A first sync of 10,000 customers
made 10,000 searches: over half an hour of waiting on that limit alone, and more of the
budget than a small company gets in a day. ``GET /persons`` (500 a page, the general burst
bucket) answers the same question for everyone at once: 20 calls for those 10,000.

When: a batch lists once the lookups of the last :data:`FRESH_SECONDS`, its own included,
reach twice the pages the last listing took (:data:`FIRST_LISTING_AFTER` before any, the
size of the company being unknown): a listing is made where it saves calls, and a few new
customers of a large company are still searched one by one.

For how long: a listing answers for :data:`FRESH_SECONDS`. A person someone adds in
Pipedrive meanwhile is not in it, and a record for their address is created beside them;
a search can miss a person created moments before as well (Pipedrive's search index
lags). What the adapter itself creates or erases is written into the listing, so its own
writes never miss each other.

A create whose answer was lost is looked for among the persons changed since just before
it was sent (:meth:`~adapters.pipedrive._writes.PersonWrites._made_by_lost_create`), not by
the search alone; the person found is written into the listing as a person created is.
Where that look could not say (more persons changed meanwhile than it reads) and the
search missed them too, the address is noted as :meth:`Directory.lost`: its next create
looks again instead of being sent, until the search can be trusted again
(:data:`SEARCH_CATCHES_UP`).

Whom: the persons whose *primary* e-mail the address is. A person holding it only beside
their own (a housemate's, with the customer's address added as a second e-mail) is not the
customer's, and a sync writing to them would rename them after the customer; the adapter
creates the customer's own person instead when nobody holds it as primary.

The listing lives in memory only: addresses are never logged or stored, and the first lookup
after it has gone stale drops it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from adapters.pipedrive.payloads import primary_value
from connector.model import normalise_email

__all__ = ["FIRST_LISTING_AFTER", "FRESH_SECONDS", "SEARCH_CATCHES_UP", "Directory"]

#: How long a listing answers lookups, in seconds.
FRESH_SECONDS: Final = 60.0

#: Lookups within :data:`FRESH_SECONDS` that make the first listing worth it.
FIRST_LISTING_AFTER: Final = 20

#: Seconds after which a search is trusted to show a person created: how long Pipedrive's
#: search index lags is not documented (UNVERIFIED); seconds are what is seen, this is ample.
SEARCH_CATCHES_UP: Final = 600.0


class Directory:
    """Live persons by primary e-mail from the latest listing, and when the next one is
    worth it.

    Args:
        clock: monotonic seconds (the client's, so tests move it with their sleeps).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._by_email: dict[str, list[int]] = {}
        #: The other way round: the address the listing holds each person under.
        self._emails_of: dict[int, list[str]] = {}
        self._listed_at: float | None = None
        self._pages = 0
        #: (time, count) of recent lookups, to judge whether a listing pays.
        self._lookups: deque[tuple[float, int]] = deque()
        #: When each address's create whose answer was lost, and whose person was not found
        #: for sure either way, was sent (the clock's seconds). Not dropped with the listing.
        self._lost: dict[str, float] = {}

    @property
    def fresh(self) -> bool:
        """Whether the latest listing still answers lookups."""
        return self._listed_at is not None and self._clock() - self._listed_at < FRESH_SECONDS

    @property
    def addresses(self) -> int:
        """How many addresses the listing holds in memory now."""
        return len(self._by_email)

    def worth_listing(self, lookups: int) -> bool:
        """Count ``lookups`` about to be made; whether listing everyone first saves calls."""
        now = self._clock()
        while self._lookups and now - self._lookups[0][0] >= FRESH_SECONDS:
            self._lookups.popleft()
        self._lookups.append((now, lookups))
        recent = sum(count for _, count in self._lookups)
        return recent >= (2 * self._pages if self._pages else FIRST_LISTING_AFTER)

    def load(self, persons: Iterable[Mapping[str, Any]], pages: int) -> None:
        """Replace the listing with ``persons`` (live ones), read in ``pages`` calls; each is
        held under their primary e-mail only."""
        by_email: dict[str, list[int]] = {}
        emails_of: dict[int, list[str]] = {}
        for person in persons:
            person_id = person.get("id")
            email = primary_value(person.get("emails"))
            if person.get("is_deleted") or not isinstance(person_id, int) or not email:
                continue
            by_email.setdefault(_key(email), []).append(person_id)
            emails_of[person_id] = [_key(email)]
        for ids in by_email.values():
            ids.sort()  # the oldest first, as a search's hits are taken
        self._by_email = by_email
        self._emails_of = emails_of
        self._pages = pages
        self._listed_at = self._clock()
        self._lookups.clear()

    def ids(self, email: str) -> list[int] | None:
        """Persons whose primary e-mail is ``email``, oldest first; ``None`` when no fresh
        listing can say."""
        if not self.fresh:
            if self._by_email:
                self.clear()  # no reason left to hold everyone's address in memory
            return None
        return list(self._by_email.get(_key(email), ()))

    def created(self, email: str, person_id: int) -> None:
        """The adapter created ``person_id`` for ``email``: later lookups find it."""
        if self.fresh:
            self._by_email.setdefault(_key(email), []).append(person_id)
            self._emails_of.setdefault(person_id, []).append(_key(email))

    def written(self, person_id: int, email: str) -> None:
        """The adapter wrote ``person_id``'s e-mail list with ``email`` primary (a sync's PATCH).

        An address it held before (the customer moved) no longer finds them: answered from
        the listing, the next customer to take that address up within its freshness was
        written over this person instead of becoming one of their own.
        """
        if not self.fresh:
            return
        key = _key(email)
        for old in self._emails_of.get(person_id, []):
            if old != key and person_id in self._by_email.get(old, []):
                self._by_email[old].remove(person_id)
                if not self._by_email[old]:
                    del self._by_email[old]
        holders = self._by_email.setdefault(key, [])
        if person_id not in holders:
            holders.append(person_id)
            holders.sort()
        self._emails_of[person_id] = [key]

    def lost(self, email: str, sent: float) -> None:
        """A create for ``email`` sent at ``sent`` (the clock's) lost its answer, and whether
        it made a person is not known: the address's next create looks again first."""
        self._lost.setdefault(_key(email), sent)

    def lost_at(self, email: str) -> float | None:
        """When the create for ``email`` that :meth:`lost` noted was sent; ``None`` if none is
        noted, or the search has had :data:`SEARCH_CATCHES_UP` to show its person since."""
        now = self._clock()
        for key, sent in list(self._lost.items()):
            if now - sent >= SEARCH_CATCHES_UP:
                del self._lost[key]  # the address leaves memory once no longer needed
        return self._lost.get(_key(email))

    def settled(self, email: str) -> None:
        """Whether ``email``'s lost create made a person is known now."""
        self._lost.pop(_key(email), None)

    def forget(self, email: str) -> None:
        """The adapter erased whoever held ``email``: the address leaves memory, from both
        indexes (an erased person's address must not stay in a long-running daemon)."""
        key = _key(email)
        self._by_email.pop(key, None)
        self._lost.pop(key, None)
        for person_id, addresses in list(self._emails_of.items()):
            if key in addresses:
                remaining = [a for a in addresses if a != key]
                if remaining:
                    self._emails_of[person_id] = remaining
                else:
                    del self._emails_of[person_id]

    def forget_person(self, person_id: int) -> None:
        """The adapter erased ``person_id``: every address the listing holds them under
        leaves memory, and no lookup answers with their id. The erasure's own address is
        not always that one: a customer who changed theirs at the source is erased under
        the new one, while the listing holds their person under the one Pipedrive had."""
        for key in self._emails_of.pop(person_id, []):
            holders = self._by_email.get(key)
            if holders is None or person_id not in holders:
                continue
            holders.remove(person_id)
            if not holders:
                del self._by_email[key]

    def clear(self) -> None:
        """Drop the listing (its addresses leave memory); lookups search until the next."""
        self._by_email = {}
        self._emails_of = {}
        self._listed_at = None


def _key(email: str) -> str:
    # As subjects are told apart: two subjects' addresses never share an entry (see
    # payloads.search_hits).
    return normalise_email(email)
