"""Subjects and their identities: the store's number for each keyed subject id, and each
system's id for them (the identity map).

The identity map, delivered hashes and the outbox are keyed by (system, subject number)
(migration 8): the store's parts that read or write them build on this one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from connector.store_base import StoreBase, rows_in, system_names

__all__ = ["PER_SYSTEM_TABLES", "SubjectStore"]

#: Tables keyed by (system, subject_no): what the connector holds per person and system.
#: A subject id reaches its rows through ``subjects`` (:meth:`Store.subject_numbers`).
PER_SYSTEM_TABLES = ("identities", "delivered", "outbox")


class SubjectStore(StoreBase):
    """Subject numbers, lookups by subject, and the identity map."""

    # A lookup by subject id first finds the ids' numbers, then seeks (system, subject_no) in
    # the per-system table. (Joined in one query, SQLite chose to read all of a system's rows
    # for a page's 100 ids and look each one's id up instead.)

    def subject_numbers(
        self,
        subject_ids: Sequence[str],
        *,
        create: bool = False,
        numbered: Collection[str] = (),
    ) -> dict[str, int]:
        """The store's number for each of ``subject_ids`` that has one (see migration 8).

        With ``create``, those without one get new numbers, in the order given; that writes,
        so it belongs inside a write transaction (one is opened if the caller has none).
        ``numbered`` names those the caller read a number for earlier: they are looked up
        first, one seek each, instead of each being offered a number and then looked up
        (two), as on a re-sync's page where everyone is known. It is a hint only: the
        numbers are read here, under the write lock, and one erased meanwhile is numbered
        anew like anyone else without one.
        """
        unique = list(dict.fromkeys(subject_ids))
        if not create or not unique:
            return self._numbers(unique)
        with self.transaction():  # under the write lock: nobody numbers them meanwhile
            if not numbered:
                return self._number(unique)
            found = self._numbers([sid for sid in unique if sid in numbered])
            rest = [sid for sid in unique if sid not in found]
            if rest:
                found.update(self._number(rest))
            return found

    def _numbers(self, subject_ids: Sequence[str]) -> dict[str, int]:
        query = "SELECT subject_id, subject_no FROM subjects WHERE subject_id IN (?...)"
        return dict(rows_in(self.db, query, subject_ids))

    def _numbered(self, numbers: Sequence[int]) -> set[int]:
        """Which of ``numbers`` a subject still has (an erasure deletes the subject's)."""
        query = "SELECT subject_no FROM subjects WHERE subject_no IN (?...)"
        return {no for (no,) in rows_in(self.db, query, list(dict.fromkeys(numbers)))}

    def _number(self, subject_ids: Sequence[str]) -> dict[str, int]:
        """Each of ``subject_ids``'s number (no id twice), the new ones numbered in the order
        given, above every number handed out before.

        SQLite's own choice (the highest in the table + 1) gave an erased person's number to
        the next newcomer, and an acknowledgement of the erased person's still waiting to be
        committed then attached their delivered hash and system id to the newcomer (see
        migration 20). The highest number handed out is kept, and moved here.

        Each id is offered a number at once, and keeps the one it had: where all are new, as
        on a page of a first sync, that is one seek of the random ``subject_id`` index each,
        where asking first and numbering after took two. Where some had one (a page that
        begins with the last one's final people, as a shop's scan by offset reads them), the
        offered numbers found in the table are the new people's, and only the others are
        looked up by id (a number offered to one of those goes unused: numbers need no order
        but their rise).
        """
        (high,) = self.db.execute(
            "SELECT MAX(COALESCE((SELECT n FROM subject_numbers_given WHERE id = 1), 0), "
            "(SELECT COALESCE(MAX(subject_no), 0) FROM subjects))"
        ).fetchone()
        offered = {sid: int(high) + n for n, sid in enumerate(subject_ids, 1)}
        added = self.db.executemany(
            "INSERT INTO subjects(subject_no, subject_id) VALUES (?, ?) "
            "ON CONFLICT(subject_id) DO NOTHING",
            [(number, sid) for sid, number in offered.items()],
        ).rowcount
        if added:
            self.db.execute(
                "INSERT INTO subject_numbers_given(id, n) VALUES (1, ?) "
                "ON CONFLICT(id) DO UPDATE SET n = excluded.n",
                (int(high) + len(subject_ids),),
            )
        if added == len(offered):
            return offered
        # No subject had a number above ``high`` before, and the write lock is held: a number
        # in that range is one offered here and taken. The range is the end of the table's
        # own key, read in one short scan instead of a seek of the random id index per person.
        taken = {
            no
            for (no,) in self.db.execute(
                "SELECT subject_no FROM subjects WHERE subject_no > ? AND subject_no <= ?",
                (int(high), int(high) + len(offered)),
            )
        }
        numbers = {sid: no for sid, no in offered.items() if no in taken}
        numbers.update(self._numbers([sid for sid in offered if sid not in numbers]))
        return numbers

    def _by_number(
        self, table: str, column: str, systems: Sequence[str], numbers: Mapping[str, int]
    ) -> dict[str, dict[str, str]]:
        """Per system, ``column`` of ``table`` per subject id, found by (system, number).

        One query for every system asked: a lookup per destination and table was nine
        statements per page for a flow to three systems.
        """
        found: dict[str, dict[str, str]] = {system: {} for system in system_names(systems)}
        if not numbers:
            return found
        subject_of = {number: subject_id for subject_id, number in numbers.items()}
        names = ",".join("?" * len(systems))
        query = (
            f"SELECT system, subject_no, {column} FROM {table} "  # noqa: S608 - fixed names
            f"WHERE system IN ({names}) AND subject_no IN (?...)"
        )
        for system, number, value in rows_in(self.db, query, list(subject_of), before=systems):
            found[system][subject_of[number]] = value
        return found

    def by_subject(
        self, table: str, subject_ids: Sequence[str]
    ) -> tuple[str, tuple[str | int, ...]]:
        """A WHERE clause (and its parameters) for ``subject_ids`` in a per-system table.

        ``identities``, ``delivered`` and ``outbox`` are keyed (system, subject_no): asked for
        a subject alone, SQLite reads the whole table (at 200,000 customers, ~95 ms on the
        event loop per data subject request). Every system that has rows there, configured
        or not, is named as well, so the key is used: found by walking the key's first column
        from one system to the next (a few index seeks, however many rows).
        """
        if table not in PER_SYSTEM_TABLES:
            raise ValueError(f"{table} is not keyed by (system, subject_no)")
        numbers = list(self.subject_numbers(subject_ids).values())
        systems = [
            row[0]
            for row in self.db.execute(
                f"WITH RECURSIVE s(system) AS (SELECT MIN(system) FROM {table} "  # noqa: S608
                f"UNION ALL SELECT (SELECT MIN(system) FROM {table} WHERE system > s.system) "
                "FROM s WHERE s.system IS NOT NULL) SELECT system FROM s WHERE system IS NOT NULL"
            )
        ]
        if not systems or not numbers:
            return "0", ()
        names = ",".join("?" * len(systems))
        marks = ",".join("?" * len(numbers))
        return f"system IN ({names}) AND subject_no IN ({marks})", (*systems, *numbers)

    def _listed(self, table: str, system: str, subject_ids: Sequence[str]) -> set[str]:
        """Which of ``subject_ids`` have a row of ``table`` (keyed by system and subject id)
        for ``system``."""
        query = f"SELECT subject_id FROM {table} WHERE system=? AND subject_id IN (?...)"  # noqa: S608
        return {str(sid) for (sid,) in rows_in(self.db, query, subject_ids, before=(system,))}

    def external_id(self, system: str, subject_id: str) -> str | None:
        return self.external_ids(system, [subject_id]).get(subject_id)

    def external_ids(self, system: str, subject_ids: Sequence[str]) -> dict[str, str]:
        """``system``'s id per subject id, for those it has one for."""
        return self.external_ids_numbered(system, self.subject_numbers(subject_ids))

    def external_ids_numbered(self, system: str, numbers: Mapping[str, int]) -> dict[str, str]:
        """:meth:`external_ids` for subjects whose numbers the caller has (outbox rows)."""
        return self._by_number("identities", "external_id", [system], numbers)[system]

    def subjects_for_external(self, system: str, external_id: str) -> list[str]:
        """Every subject the identity map holds ``system``'s record ``external_id`` under."""
        rows = self.db.execute(
            "SELECT s.subject_id FROM identities i JOIN subjects s ON s.subject_no = i.subject_no "
            "WHERE i.system=? AND i.external_id=?",
            (system, external_id),
        ).fetchall()
        return [str(row[0]) for row in rows]

    def subject_for_external(self, system: str, external_id: str) -> str | None:
        row = self.db.execute(
            "SELECT s.subject_id FROM identities i JOIN subjects s ON s.subject_no = i.subject_no "
            "WHERE i.system=? AND i.external_id=?",
            (system, external_id),
        ).fetchone()
        return None if row is None else str(row[0])

    def move_identities(
        self, system: str, subject_ids: Sequence[str], former: str, kept: str
    ) -> list[str]:
        """Those of ``subject_ids`` known by ``system``'s record ``former`` are known by
        ``kept`` from now on (the system merged the one into the other); returns them.

        One known by another id since (a sync wrote them meanwhile) keeps it."""
        numbers = self.subject_numbers(subject_ids)
        moved: list[str] = []
        with self.transaction() as db:
            for sid, number in numbers.items():
                changed = db.execute(
                    "UPDATE identities SET external_id=? "
                    "WHERE system=? AND subject_no=? AND external_id=?",
                    (kept, system, number, former),
                ).rowcount
                if changed:
                    moved.append(sid)
        return moved

    def current_subject(self, subject_id: str) -> str:
        """The id whoever has an address now is known by: the address's own id while it
        holds rows (:meth:`holds_rows`), whoever left it before; else, where someone moved
        from it and nobody has it now, the id they moved to (it is an alias of that id).

        An alias followed whoever held rows would give someone who took over an address
        (Anna, after Bert moved) the acts of the person who left it: her unsubscribe at a
        system recorded as his opt-out.
        """
        if self.holds_rows(subject_id):
            return subject_id
        row = self.db.execute(
            "SELECT subject_id FROM subject_aliases WHERE alias=? LIMIT 1", (subject_id,)
        ).fetchone()
        return subject_id if row is None else str(row[0])

    def holds_rows(self, subject_id: str) -> bool:
        """Whether any per-system table, for any system (configured or not), has a row for
        the subject: an identity, a delivery, a queued write. One that moved holds none."""
        for table in PER_SYSTEM_TABLES:
            where, params = self.by_subject(table, [subject_id])
            if self.db.execute(f"SELECT 1 FROM {table} WHERE {where} LIMIT 1", params).fetchone():  # noqa: S608
                return True
        return False
