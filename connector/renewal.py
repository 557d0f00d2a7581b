"""A consent given again: what is sent someone whose last write at a system withdrew it.

Apart from the page's work because it is one rule with its own history (marks, legacy
withdrawals, corrections that send again), read only for a changed payload to a system whose
mapping has ``consent_renewed`` (Mailchimp's pending member, asked to confirm).
"""

from __future__ import annotations

from typing import Any

from connector.crypto import Keyring
from connector.model import Person
from connector.state import RESEND, WITHDRAWAL, before_resend, landed_unsure
from connector.systems import System

__all__ = ["renewed"]


def renewed(
    keyring: Keyring,
    dest: System,
    person: Person,
    fields: dict[str, Any],
    digest: str,
    last: str,
    delivered: str | None,
) -> tuple[dict[str, Any], str]:
    """``fields`` and their hash, renewed where what ``dest`` holds is a withdrawal.

    Someone unsubscribed for a withdrawn consent who consents again is sent the mapping's
    ``consent_renewed`` with their fields (Mailchimp: asked to confirm, see its adapter).
    Once that landed, the same renewal is what they last got, and stays unchanged until
    their data changes: it is not sent again. A withdrawal is known by its mark
    (:data:`WITHDRAWAL`), whatever address it went under (they may have moved since),
    and behind a mark to send again (a correction reached the shop). Only a changed
    payload gets here, so an unchanged re-sync hashes nothing more.

    ``last`` is what waits in the outbox, else what was delivered (``delivered``).
    Where either is a withdrawal, the system holds one, or will once it lands: until a
    renewal lands, every payload is one. So a renewal still waiting is replaced by one
    with the newer fields; compared with the waiting one alone, it was replaced by a
    plain write, which Mailchimp applied to the unsubscribed member without asking them.
    """
    held = [before_resend(h) for h in (last, delivered) if h is not None]
    renewal = dest.mapping.renewal(fields)
    renewal_digest = keyring.payload_hash(dest.name, renewal)
    if any(h.startswith(WITHDRAWAL) for h in held):
        return renewal, renewal_digest
    if before_resend(last) == renewal_digest:
        if last.startswith(f"{RESEND}:") and not landed_unsure(last):
            # The renewal went, and a correction marked it to send again: the fields go
            # as they are. Sent as the renewal, it asked the member to confirm again
            # (one who unsubscribed at the system since was e-mailed), for a change of
            # data. A restore's mark (it may not have landed) sends the renewal.
            return fields, digest
        return renewal, renewal_digest
    # A withdrawal delivered before withdrawals were marked: its bare hash.
    legacy = keyring.payload_hash(dest.name, dest.mapping.withdrawal(person))
    if legacy in held:
        return renewal, renewal_digest
    return fields, digest
