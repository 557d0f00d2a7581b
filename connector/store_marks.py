"""Marks on payload hashes.

A payload hash (in the outbox, among what was delivered) may carry a mark in front, which no
payload's own hash has. Both are read where a sync decides what to send (connector/pagetake.py)
and where a batch's answer is settled (connector/batchsend.py).
"""

from __future__ import annotations

__all__ = ["HELD", "RESEND", "UNSURE", "WITHDRAWAL", "before_resend", "landed_unsure"]

#: Marks the hash of a withdrawal of consent (a mapping's ``withdrawn``) as one: a renewal
#: (``consent_renewed``) is due when the person consents again, under whichever address the
#: withdrawal went.
WITHDRAWAL = "withdrawal:"

#: Marks a delivered hash so that no payload has it: the next sync sends the person again
#: (see :meth:`~connector.dsr_store.DsrStore.resend_on_next_sync`). The mark keeps the hash it
#: replaced, ``resend:<hash>`` (:func:`before_resend`); a bare ``resend`` is one whose payload
#: is unknown.
RESEND = "resend"

#: Behind :data:`RESEND`, marks the hash of a payload that was on its way to the system and
#: may or may not have landed: a restore's mark (connector/carryover.py) for what the replaced
#: store still had queued, ``resend:unsure:<hash>``. A correction's mark keeps what the system
#: got: a withdrawal behind it went, and is not sent again (the person may have subscribed
#: anew at the system since). This one keeps what the system may have got: a withdrawal
#: behind it is sent again, and a renewal too. Both still say what may be held: someone
#: consenting again after a withdrawal that may have landed is sent a renewal.
UNSURE = "unsure:"

#: Marks an outbox row that is held, never sent: it keeps only a write from the person's
#: former address (schema 19, connector/moves.py), which may have landed with its answer lost,
#: while the system is to get nothing of them (consent withdrawn, an erasure pending). Dropped,
#: it took with it the only record of that address, and an erasure left what the system holds
#: under it. A page that queues them again replaces the mark (the kept write then goes first);
#: an erasure deletes the row with their other traces, the retention sweep after
#: ``dead_letters_days``. (Payload hashes are hex: none is the mark.)
HELD = "held"


def before_resend(payload_hash: str) -> str:
    """The hash a system last got (or may have got), behind a resend mark of either kind
    (a bare mark stays as it is).

    What a system holds still decides what a resend sends: someone whose last payload was a
    withdrawal of consent is sent a renewal when they consent again, correction or not in
    between.
    """
    return payload_hash.removeprefix(f"{RESEND}:{UNSURE}").removeprefix(f"{RESEND}:")


def landed_unsure(payload_hash: str) -> bool:
    """Whether the hash is marked as a payload that may not have landed (:data:`UNSURE`)."""
    return payload_hash.startswith(f"{RESEND}:{UNSURE}")
