"""How the store keeps each system's ids for the people it knows (the identity map).

Most systems' ids are their own counters (a WooCommerce customer number, a HubSpot contact id)
and are kept as they are. A system whose ids are made from personal data says so
(``personal_ids = True`` on its adapter: Mailchimp names a member by the MD5 of their e-mail),
and its ids are kept cloaked (:meth:`connector.crypto.Keyring.cloak_id`): the store then holds
nothing anyone could test an address against without the keys. The engine and the data subject
requests turn ids into the stored form and back here, and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import overload

from connector.crypto import CLOAKED_ID_PREFIX, Keyring
from connector.state import Store
from connector.systems import Systems

__all__ = ["SystemIds"]

_CHUNK = 500


class SystemIds:
    """Turns a system's ids into the form the store keeps, and back.

    Args:
        keyring: the store's keys.
        systems: the configured systems; those whose adapter has ``personal_ids`` are cloaked.
    """

    def __init__(self, keyring: Keyring, systems: Systems) -> None:
        self.keyring = keyring
        self.cloaked = frozenset(
            name
            for name, system in systems.items()
            if getattr(system.adapter, "personal_ids", False)
        )

    @overload
    def to_store(self, system: str, value: str) -> str: ...
    @overload
    def to_store(self, system: str, value: None) -> None: ...
    def to_store(self, system: str, value: str | None) -> str | None:
        """``value`` (as the system gives it) in the form the identity map keeps."""
        if value is None or system not in self.cloaked:
            return value
        return self.keyring.cloak_id(system, value)

    @overload
    def from_store(self, system: str, value: str) -> str: ...
    @overload
    def from_store(self, system: str, value: None) -> None: ...
    def from_store(self, system: str, value: str | None) -> str | None:
        """A stored id in the form the system knows (one stored before cloaking passes as is)."""
        if value is None or system not in self.cloaked:
            return value
        return self.keyring.uncloak_id(system, value)

    def all_from_store(self, ids: Mapping[str, str]) -> dict[str, str]:
        """System name -> id, each in the form its system knows."""
        return {name: self.from_store(name, value) for name, value in ids.items()}

    def record_key(self, system: str, external_id: str) -> str:
        """The keyed id that suppresses one of a source's records by its own id.

        An erasure suppresses the person's addresses and phone; this suppresses the shop's
        record itself, so a backup that brings it back under an address the connector never
        saw stays out as well. Its text cannot be an address's or a phone's (no ``@``, no
        leading ``+``), so the keyed ids never meet.
        """
        return self.keyring.subject_id(f"record:{system}:{self.to_store(system, external_id)}")

    def cloak_stored(self, store: Store) -> int:
        """Cloak the ids an older store kept as they were, for the systems that need it.

        Runs on every open, so it reads only what sorts outside the cloaked prefix: two
        seeks of the (system, external_id) index, and nothing more once every id is cloaked,
        however many there are. (Testing each id's prefix read every row of the system, a
        tenth of a second per million on every command.) An id another process changed
        meanwhile is left to it. Returns how many ids were cloaked; the store's log, which
        may still hold them as they were, is then truncated (:meth:`Store.truncate_log`).
        """
        # Every cloaked id sorts in [prefix, prefix with its last character's successor).
        low = CLOAKED_ID_PREFIX
        high = low[:-1] + chr(ord(low[-1]) + 1)
        done = 0
        for system in sorted(self.cloaked):
            rows = store.db.execute(
                "SELECT subject_no, external_id FROM identities "
                "WHERE system=?1 AND external_id < ?2 "
                "UNION ALL SELECT subject_no, external_id FROM identities "
                "WHERE system=?1 AND external_id >= ?3",
                (system, low, high),
            ).fetchall()
            for start in range(0, len(rows), _CHUNK):
                chunk = rows[start : start + _CHUNK]
                with store.transaction() as db:
                    db.executemany(
                        "UPDATE identities SET external_id=? "
                        "WHERE system=? AND subject_no=? AND external_id=?",
                        [
                            (self.keyring.cloak_id(system, ext), system, no, ext)
                            for no, ext in chunk
                        ],
                    )
                done += len(chunk)
        if done:
            store.truncate_log()
        return done
