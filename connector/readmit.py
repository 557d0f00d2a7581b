"""Taking a person off the suppression list: someone erased who comes back of their own accord.

An erasure suppresses the person's address (and the phone given with it, and the numbers their
records in the sources held), so no sync brings them back, not even a restored shop backup.
If the same person later signs up again in the shop, with a new consent, the suppression
keeps them out of every system, silently but for the sync report's count. ``klantsync dsr
readmit`` lifts it for that address (and phone), with the operator's reason in the audit
trail; the next sync sends them as the shop has them now.

Refused while an erasure of the person is still open (it would be undone before it ends),
and for an address that is not suppressed. The numbers the erasure of that address read
from the sources are lifted with it; former addresses and the erased shop record stay
suppressed: the new sign-up is a new record.
"""

from __future__ import annotations

from dataclasses import dataclass

from connector import audit
from connector.dsr_input import checked_email, checked_phone, phone_regions
from connector.dsr_store import DsrStore
from connector.dsr_views import DsrUsageError
from connector.logs import redact
from connector.model import earlier_email_forms
from connector.runtime import Runtime

__all__ = ["READMITTED", "Readmission", "readmit"]

READMITTED = "dsr.readmitted"  # audit: suppression entries lifted (HMAC ids and the reason)


@dataclass(frozen=True)
class Readmission:
    """What was lifted (HMAC subject ids only)."""

    subject_ids: list[str]

    def as_dict(self) -> dict[str, object]:
        return {"readmitted": list(self.subject_ids)}


def readmit(rt: Runtime, email: str, reason: str, *, phone: str | None = None) -> Readmission:
    """Lift the suppression of ``email`` (and ``phone``), audited with ``reason``.

    A phone number without a country code is read as ``dsr erase`` reads it.

    Raises:
        DsrUsageError: no reason, an address (or phone) not suppressed, or an erasure of the
            person still open.
    """
    text = redact(" ".join(reason.split()))[:500]
    if not text:
        raise DsrUsageError("readmitting someone needs a reason (--reason)")
    subject_ids = [rt.keyring.subject_id(checked_email(email))]
    phones: list[str] = []
    if phone:
        regions = phone_regions(rt.config, "cli")
        phones.append(rt.keyring.subject_id(checked_phone(phone, regions)))
        subject_ids += phones
    db = DsrStore(rt.store)
    with rt.store.transaction():
        # Erased before addresses were read in NFC: listed under the form the address had.
        earlier = [rt.keyring.subject_id(form) for form in earlier_email_forms(email)]
        earlier = [sid for sid in earlier if sid in rt.store.suppressed(earlier)]
        if earlier and subject_ids[0] not in rt.store.suppressed(subject_ids[:1]):
            subject_ids[0] = earlier.pop(0)
        subject_ids += earlier
        listed = rt.store.suppressed(subject_ids)
        missing = [sid for sid in subject_ids if sid not in listed]
        if missing:
            what = "--email" if missing[0] == subject_ids[0] else "--phone"
            raise DsrUsageError(f"{what} is not on the suppression list: nothing to readmit")
        # The erasure that suppressed any of them, as well as one asked for under this
        # address: an erasure asked for under someone's new address suppresses their former
        # ones too, and is keyed on the new one.
        open_erasure = db.open_for("erase", subject_ids[0]) or db.open_suppressing(subject_ids)
        if open_erasure is not None:
            raise DsrUsageError(
                f"the erasure of this person ({open_erasure.id}) is still open: finish it "
                "first (dsr retry), or the readmission would undo it half-way"
            )
        # The number the shop held for them when they were erased goes with the address:
        # they may well sign up again with it, and were kept out by it (a number given
        # with the erasure is lifted only when given here too, and one another erasure
        # asks for too is no longer listed as held: see Store.suppress).
        addresses = [sid for sid in subject_ids if sid not in phones]
        subject_ids += [sid for sid in db.held_phones(addresses) if sid not in subject_ids]
        rt.store.unsuppress(subject_ids)
        audit.append(rt.store, READMITTED, {"subject_ids": subject_ids, "reason": text})
    return Readmission(subject_ids)
