"""The canonical person and the field vocabulary every mapping speaks.

Systems name things differently (``billing.phone``, ``phone``, ``merge_fields.PHONE``); mappings
translate them to these canonical names. Each canonical field has a *category* of personal data,
which the processing register and access reports use, in Dutch and English.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CANONICAL_FIELDS",
    "CONSENT_FIELDS",
    "CanonicalField",
    "Person",
    "earlier_email_forms",
    "is_archived",
    "legacy_email_form",
    "normalise_email",
]


@dataclass(frozen=True)
class CanonicalField:
    """One field of the vocabulary.

    Attributes:
        name: canonical name used in mappings.
        category: category of personal data (key into :data:`CATEGORIES`).
        label_en: English label for reports.
        label_nl: Dutch label for reports.
    """

    name: str
    category: str
    label_en: str
    label_nl: str


#: Categories of personal data, with their English and Dutch names for reports.
CATEGORIES: dict[str, tuple[str, str]] = {
    "contact": ("Contact details", "Contactgegevens"),
    "identity": ("Identification data", "Identificatiegegevens"),
    "address": ("Address data", "Adresgegevens"),
    "professional": ("Professional data", "Zakelijke gegevens"),
    "consent": ("Consent and preferences", "Toestemming en voorkeuren"),
    "customer": ("Customer relationship data", "Klantrelatiegegevens"),
    # What a system's access copy holds beyond the mapped fields (an adapter's
    # ``copy_categories``): no canonical field is of these.
    "orders": (
        "Orders and payments (what was bought or offered, amounts, payment method)",
        "Bestellingen en betalingen (wat er gekocht of aangeboden is, bedragen, betaalwijze)",
    ),
    "online": (
        "Online identifiers (IP address, browser)",
        "Online-identificatoren (IP-adres, browser)",
    ),
    "notes": (
        "Notes and correspondence (what staff wrote down, e-mails, calls, meetings)",
        "Notities en correspondentie (wat medewerkers noteerden, e-mails, gesprekken, afspraken)",
    ),
    "activity": (
        "Newsletter activity (e-mails sent, opened, clicked)",
        "Nieuwsbriefactiviteit (verstuurde, geopende en aangeklikte e-mails)",
    ),
}

_FIELDS = [
    CanonicalField("email", "contact", "E-mail address", "E-mailadres"),
    CanonicalField("phone", "contact", "Phone number", "Telefoonnummer"),
    CanonicalField("first_name", "identity", "First name", "Voornaam"),
    CanonicalField("last_name", "identity", "Last name", "Achternaam"),
    CanonicalField("date_of_birth", "identity", "Date of birth", "Geboortedatum"),
    CanonicalField("company", "professional", "Company", "Bedrijfsnaam"),
    CanonicalField("job_title", "professional", "Job title", "Functie"),
    CanonicalField("address_line1", "address", "Street and number", "Straat en huisnummer"),
    CanonicalField("address_line2", "address", "Address line 2", "Adresregel 2"),
    CanonicalField("postcode", "address", "Postcode", "Postcode"),
    CanonicalField("city", "address", "City", "Plaats"),
    CanonicalField("state", "address", "State or province", "Provincie"),
    CanonicalField("country", "address", "Country", "Land"),
    CanonicalField("marketing_consent", "consent", "Marketing consent", "Toestemming marketing"),
    CanonicalField("customer_since", "customer", "Customer since", "Klant sinds"),
    CanonicalField("is_paying_customer", "customer", "Paying customer", "Betalende klant"),
]

#: Every canonical field by name. A mapping naming anything else is a configuration error.
CANONICAL_FIELDS: dict[str, CanonicalField] = {f.name: f for f in _FIELDS}

#: Canonical fields that hold a consent, by the purpose name destinations gate on.
CONSENT_FIELDS: dict[str, str] = {"marketing": "marketing_consent"}


def normalise_email(email: str) -> str:
    """The form subjects are identified by: trimmed, lower-cased and, past ASCII, in Unicode
    NFC.

    The local part is case-sensitive in theory only; every vendor we talk to treats it
    case-insensitively, and a subject must map to one id whatever the shop's capitalisation.
    An "é" may arrive composed or as "e" and an accent (macOS, some forms): one mailbox,
    which must be one subject, or an erasure typed in one form misses the person synced in
    the other.
    """
    text = email.strip().lower()
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def earlier_email_forms(email: str) -> list[str]:
    """The forms an address given now may have been identified by before NFC: as given
    (lower-cased), and its decomposed form (a shop that held "e + accent"). Empty for an
    ASCII address, whose one form never changed."""
    text = email.strip().lower()
    if text.isascii():
        return []
    current = normalise_email(email)
    forms = [text, unicodedata.normalize("NFD", text)]
    return [f for f in dict.fromkeys(forms) if f != current]


def legacy_email_form(email: str) -> str | None:
    """The form an address was identified by before NFC (trimmed and lower-cased only),
    where that differs from :func:`normalise_email`'s; else ``None``. An erasure made then
    suppressed that form's subject id."""
    text = email.strip().lower()
    if text.isascii():
        return None
    return None if unicodedata.normalize("NFC", text) == text else text


def is_archived(record: Mapping[str, Any]) -> bool:
    """Whether a raw record ``find`` returned is one the system keeps in its recycle bin.

    Such a record says ``"archived": true`` (HubSpot's own field on a soft-deleted contact,
    restorable for 90 days). It is still held, so erasure and access must see it; it is not
    live, so no sync takes it as a person and no rectification writes to it (the vendor cannot
    update it, and a write would create the person again instead).
    """
    return record.get("archived") is True


class Person(dict[str, Any]):
    """A customer in canonical fields: canonical name -> normalised value.

    A plain dict subclass, because the engine builds one per record on the hot path.
    """

    @property
    def email(self) -> str | None:
        """The normalised e-mail, if the record has one."""
        value = self.get("email")
        return value if isinstance(value, str) and value else None

    def has_consent(self, purpose: str) -> bool:
        """Whether the person gave the consent a purpose needs (``marketing``)."""
        field_name = CONSENT_FIELDS.get(purpose)
        return bool(field_name and self.get(field_name) is True)
