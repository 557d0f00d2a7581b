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

import idna

__all__ = [
    "CANONICAL_FIELDS",
    "CONSENT_FIELDS",
    "INVISIBLE",
    "CanonicalField",
    "Person",
    "earlier_email_forms",
    "is_archived",
    "is_email_address",
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
    "reviews": (
        "Product reviews (what was written about a product, the rating given)",
        "Productbeoordelingen (wat er over een product geschreven is, de gegeven waardering)",
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


#: Characters that show as nothing and mean nothing in a name or an address, which come
#: along when one is copied (from a web page, a chat, a spreadsheet cell): zero-width space,
#: word joiner, byte order mark, soft hyphen; ``str.strip`` and ``str.split`` do not take
#: them for blanks. IDNA ignores the four in a domain. The zero-width joiner and non-joiner
#: are kept: they shape letters in some scripts (Persian, the Indic ones). For
#: ``str.translate``.
INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad"))


def normalise_email(email: str) -> str:
    """The form subjects are identified by: trimmed, lower-cased and, past ASCII, without
    :data:`INVISIBLE` characters, in Unicode NFC with the domain in its ASCII form (punycode).

    The local part is case-sensitive in theory only; every vendor we talk to treats it
    case-insensitively, and a subject must map to one id whatever the shop's capitalisation.
    An "é" may arrive composed or as "e" and an accent (macOS, some forms), and a domain in
    Unicode or in punycode ("bücher.de", "xn--bcher-kva.de"): one mailbox, which must be one
    subject, or an erasure typed in one form misses the person synced in the other. The
    domain takes its ASCII form, as browsers send an e-mail field and WordPress keeps it, so
    an ASCII address (nearly every one) keeps the form and the subject id it always had. An
    address pasted with an invisible character is the address without it: kept, an erasure
    pasted so was another subject's, and found nobody.
    """
    text = email.strip().lower()
    if text.isascii():
        return text
    text = unicodedata.normalize("NFC", text.translate(INVISIBLE).strip())
    local, at, domain = text.rpartition("@")
    if not at or domain.isascii():
        return text
    return f"{local}@{_ascii_domain(domain)}"


#: What no address holds outside quotes (RFC 5322's specials; a second "@" is caught apart):
#: a name and angle brackets pasted with it ("Jan <jan@...>"), or two addresses at once.
NOT_IN_AN_ADDRESS = frozenset('<>()[]\\,;:"')


def is_email_address(email: str) -> bool:
    """Whether ``email`` (as :func:`normalise_email` gives it) can be an address: one "@"
    with a part before it and a domain with a dot after it, and no blank or special.

    Quoted local parts ("jan klant"@...) are legal but no system we talk to takes them; an
    address taken as given with a blank in it (the no-break space of a copied web page
    included) or a name beside it was another subject, whose erasure found no one."""
    local, at, domain = email.partition("@")
    return bool(local and at and "." in domain and "@" not in domain) and not any(
        c.isspace() or c in NOT_IN_AN_ADDRESS for c in email
    )


def _ascii_domain(domain: str) -> str:
    """``domain`` in punycode as a browser writes it (IDNA 2008 with UTS 46 mapping), or as
    it is where it is no valid domain name (an address with such a domain reaches nobody;
    it is still one subject, and reading it must not fail)."""
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except UnicodeError:  # idna.IDNAError is one
        return domain


def _unicode_domain(text: str) -> str | None:
    """``text`` (an address, lower-cased) with a punycode domain in Unicode, NFC; ``None``
    where its domain has no punycode label or is no valid domain name."""
    local, at, domain = text.rpartition("@")
    if not at or "xn--" not in domain:
        return None
    try:
        decoded = idna.decode(domain)
    except UnicodeError:
        return None
    return unicodedata.normalize("NFC", f"{local}@{decoded}")


def earlier_email_forms(email: str) -> list[str]:
    """The forms an address given now may have been identified by before: before NFC, as
    given (lower-cased) and decomposed (a shop that held "e + accent"); before domains were
    read in punycode, in NFC with the domain as given and, for one given in punycode, in
    Unicode (a shop that held it so). Empty for an ASCII address without a punycode label,
    whose one form never changed."""
    text = email.strip().lower()
    if text.isascii() and "xn--" not in text:
        return []
    spellings = [text]
    in_unicode = _unicode_domain(text)
    if in_unicode is not None:
        spellings.append(in_unicode)
    forms = [
        form
        for spelling in spellings
        for form in (
            unicodedata.normalize("NFC", spelling),
            spelling,
            unicodedata.normalize("NFD", spelling),
        )
    ]
    current = normalise_email(email)
    return [f for f in dict.fromkeys(forms) if f != current]


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

    #: Canonical fields the source gave a value for that could not be read (a phone number
    #: that is none): absent here, like an empty one, but not empty at the source, so a
    #: write empties nothing for them (the systems keep what they had). Set on the rare
    #: record that has one; the class's empty set serves every other.
    unread: frozenset[str] = frozenset()

    @property
    def email(self) -> str | None:
        """The normalised e-mail, if the record has one."""
        value = self.get("email")
        return value if isinstance(value, str) and value else None

    def has_consent(self, purpose: str) -> bool:
        """Whether the person gave the consent a purpose needs (``marketing``)."""
        field_name = CONSENT_FIELDS.get(purpose)
        return bool(field_name and self.get(field_name) is True)
