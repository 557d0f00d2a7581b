"""Planning and making the address moves a page of a source implies.

Someone whose e-mail address changed at the source is moved to their new subject id before
the page is queued (:mod:`connector.moves` says how a move is made). Here the page's moves
are found, with whoever left an address the page's people took read from the source first,
and made once no write of the old addresses is on its way. With them, what the identity map
tells of a page's people beside their address: the known records that came without one (the
source removed it), and who a system holds a record of though only a dead letter says so.

Apart from the engine because it is the one place a page reads its source beside the pull
(``source_people``), and the one place moves are made: the count of them it keeps tells a
delivery batch read before one to read its rows again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from connector.adapter import Subject
from connector.crypto import Keyring
from connector.delivery import Changes
from connector.ids import SystemIds
from connector.inflight import InFlight
from connector.model import Person, is_archived, normalise_email
from connector.moves import (
    PagePlan,
    apply_moves,
    find_moves,
    page_ids,
    set_apart_id,
    subjects_of_records,
)
from connector.reports import FlowReport
from connector.settling import Settling
from connector.state import PageLetter, Store
from connector.systems import System

__all__ = ["MovePlanner", "source_people"]


async def source_people(system: System, subject: Subject) -> list[dict[str, Any]]:
    """The person records ``system`` holds for ``subject``, as a pull of it would list them.

    Where the adapter reads them apart (``find_people``): ``find`` is the access and erasure
    lookup, and a shop's reads every order and its notes, a CRM's every property it defines
    (a date of birth): personal data no flow sends anywhere, to be thrown away here. Only
    live people, and only those the pull takes by the system's settings (WooCommerce's
    role = a shop manager when only customers are synced).
    """
    adapter = system.adapter
    lookup = getattr(adapter, "find_people", None) or adapter.find
    found = await lookup(subject)
    in_pull = getattr(adapter, "pull_includes", None)
    return [
        record
        for record in found
        if record.get("type", "customer") != "order"
        and not is_archived(record)
        and (in_pull is None or in_pull(record))
    ]


class MovePlanner:
    """Finds and makes the moves of one engine's pages.

    Args:
        store: the state store.
        keyring: keys derived from the master key.
        ids: the identity map's ids to and from the form the store keeps.
        in_flight: the subjects with a write in flight.
        settling: the sync's writes (:mod:`connector.settling`).
        changes: counts the moves made (:class:`connector.delivery.Changes`).
        sources: each configured flow's source (a flow whose queued write a move drops
            reads in full next: :func:`connector.moves.apply_moves`).
    """

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        ids: SystemIds,
        in_flight: InFlight,
        settling: Settling,
        changes: Changes,
        *,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self.sources = dict(sources or {})
        self.store = store
        self.keyring = keyring
        self.ids = ids
        self.in_flight = in_flight
        self.settling = settling
        self.changes = changes

    async def moved(
        self,
        source: System,
        people: dict[str, tuple[str | None, Person]],
        report: FlowReport,
        plan: PagePlan,
    ) -> PagePlan:
        """Make the moves of ``plan``; return the plan they were made by (planned anew where
        another flow made moves while this one waited).

        A write of the old address may be on its way (rows queued by an earlier run): it
        lands first, and its acknowledgement records the system's id under the old subject,
        which the move then carries to the new one. Moved before it landed, that id was
        lost, and the new address became a second record. Another flow's write counts too:
        the daemon runs flows side by side, and a move is made for every system. (One that
        landed in an earlier process, its answer lost, is sent again first: see
        connector/moves.py.)

        Another flow of the same source may have read the same page and made the same moves
        while this one waited: made again from the plan read before, the second carried what
        is under the old address now (whoever took it over) to the mover's id, or failed on
        the identity map. So the moves are made only by a plan read after the last wait.
        """
        while plan.moves:
            seen = self.changes.moves
            await self.in_flight.landed_everywhere([move.old for move in plan.moves])
            if seen == self.changes.moves:
                break
            plan = await self.plan(source, people, report)
        if plan.moves:
            moves = plan.moves
            self.settling.write(lambda store: apply_moves(store, moves, self.sources))
            self.changes.moves += 1
        return plan

    async def plan(
        self, source: System, people: dict[str, tuple[str | None, Person]], report: FlowReport
    ) -> PagePlan:
        """The moves a page implies (:func:`connector.moves.find_moves`).

        Where the identity map ties an address of the page to a record the page does not
        hold, that record is read from the source first (one lookup each: rare), as
        ``connector/targeted.py`` does for a webhook: a pull reads whoever left the address
        later (another page) or not at all (deleted in the shop). Read here, his move is
        made before the taker's; one the source no longer holds is set apart. Taken for
        him, the taker was written onto his records by his ids, and her source id replaced
        his, so his own move was missed and his erasure missed his records.
        """
        pulled = {sid: ext for sid, (ext, _) in people.items()}
        ids = page_ids(self.store, source.name, pulled)
        away = sorted(set(ids.elsewhere(pulled).values()))
        if not away:
            return find_moves(self.store, source.name, pulled, ids)
        read: set[str] = set()
        before: dict[str, tuple[str | None, Person]] = {}
        for group in await asyncio.gather(
            *(source_people(source, Subject(email="", external_id=ext)) for ext in away)
        ):
            for raw in group:
                person = source.mapping.inbound(
                    raw, report.withheld_fields, report.unreadable_values
                )
                ext = source.mapping.record_id(raw)
                if person.email is None or "@" not in person.email or ext is None:
                    continue
                read.add(ext)
                sid = self.keyring.subject_id(normalise_email(person.email))
                if sid not in people:  # the page's own record of an address wins
                    before[sid] = (ext, person)
        # Read in front, as a pull in id order reads the earlier customer first.
        merged = {**before, **people}
        people.clear()
        people.update(merged)
        pulled = {sid: ext for sid, (ext, _) in people.items()}
        ids = page_ids(self.store, source.name, pulled)
        gone = {
            ext: set_apart_id(self.keyring, source.name, self.ids.to_store(source.name, ext))
            for ext in away
            if ext not in read
        }
        return find_moves(self.store, source.name, pulled, ids, gone)

    def addressless(
        self,
        source: System,
        record_ids: Sequence[str],
        people: Mapping[str, tuple[str | None, Person]],
        plan: PagePlan,
        suppressed: Callable[[str, Mapping[str, tuple[str | None, Person]]], set[str]],
    ) -> dict[str, tuple[str | None, Person]]:
        """The people the identity map knows by ``record_ids``, records of the page that
        came without a usable address: subject id -> (record id, a person with no field).

        The shop removed their address (Shopify keeps a customer with a phone alone, and
        drops the e-mail consent with the address). Nobody can be written without an
        address, but whoever a consent-gated system got must not stay subscribed there on
        a consent the shop no longer records: the page sends them the withdrawal, by the
        system's id (:meth:`with_addressless`), and nothing else anywhere. Left out: an
        address a record of the page holds now, a person set apart by this page (another
        record took their address: the system's record under it is the taker's now), and
        whoever is suppressed (an erasure sends the rest): ``suppressed`` tells who of
        them is (``PageTaker._suppressed``).
        """
        known = subjects_of_records(self.store, source.name, record_ids)
        apart = {move.new for move in plan.moves if move.set_apart}
        found: dict[str, tuple[str | None, Person]] = {
            sid: (record_id, Person())
            for record_id, sid in known.items()
            if sid not in people and sid not in apart
        }
        for sid in suppressed(source.name, found):
            del found[sid]
        return found

    def with_addressless(
        self,
        dest: System,
        people: dict[str, tuple[str | None, Person]],
        addressless: Mapping[str, tuple[str | None, Person]],
        held: tuple[Mapping[str, str], Mapping[str, str], set[str]],
    ) -> dict[str, tuple[str | None, Person]]:
        """``people`` and those of ``addressless`` that consent-gated ``dest`` got (or has a
        write queued for), for the page to send them its withdrawal as to anyone whose
        consent is gone.

        ``held`` is what is queued for ``dest`` and what it was delivered, by subject, and
        who it holds a record of in part. With no address, the withdrawal goes by the
        system's id for the person, read when it is delivered: a first write still queued
        is replaced by it, unsent, and reaches nobody if that write never landed. One whose
        id the identity map holds under someone else too is left alone: the record under
        that id is theirs as well (whoever took the address over).
        """
        queued, delivered, in_part = held
        reached = [s for s in addressless if s in queued or s in delivered or s in in_part]
        if not reached:
            return people
        ids = self.store.external_ids(dest.name, reached)
        sent = {
            sid: addressless[sid]
            for sid in reached
            if sid not in ids or self.store.subjects_for_external(dest.name, ids[sid]) == [sid]
        }
        return {**people, **sent} if sent else people

    def written_in_part(
        self,
        system: str,
        letters: Mapping[str, PageLetter],
        queued: Mapping[str, str],
        delivered: Mapping[str, str],
    ) -> set[str]:
        """Those with a dead letter for ``system`` (``letters``) it holds a record of though
        nothing queued or delivered says so: a write it refused in part (one Mailchimp
        audience took it, another refused it) named the record it made (see
        :meth:`connector.batchsend.BatchSender.send`).

        They were sent something there, as a withdrawal of consent counts it: gated as if
        never sent, the one who opted out stayed subscribed where the write landed. Letters
        are few, so a page without any looks up nothing.
        """
        unsent = [sid for sid in letters if sid not in queued and sid not in delivered]
        if not unsent:
            return set()
        return set(self.store.external_ids(system, unsent))
