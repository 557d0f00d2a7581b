"""How a Mailchimp access copy reads for the person: a member per audience, and its keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.access_labels import CopyLabels

__all__ = ["COPY_LABELS"]

_FIELDS: dict[str, tuple[str, str]] = {
    "id": ("Id in Mailchimp", "Id in Mailchimp"),
    "list_id": ("List (audience)", "Lijst (doelgroep)"),
    "email_address": ("E-mail address", "E-mailadres"),
    "status": ("Subscription status", "Status van het abonnement"),
    "merge_fields.FNAME": ("First name", "Voornaam"),
    "merge_fields.LNAME": ("Last name", "Achternaam"),
    "merge_fields.PHONE": ("Phone number", "Telefoonnummer"),
    "merge_fields.ADDRESS": ("Address", "Adres"),
    "merge_fields.BIRTHDAY": ("Birthday", "Verjaardag"),
    "ip_signup": ("IP address at sign-up", "IP-adres bij aanmelden"),
    "timestamp_signup": ("Signed up", "Aangemeld"),
    "ip_opt": ("IP address at confirmation", "IP-adres bij bevestigen"),
    "timestamp_opt": ("Confirmed", "Bevestigd"),
    "last_changed": ("Last changed", "Laatst gewijzigd"),
    "language": ("Language", "Taal"),
    "email_type": ("E-mail format", "Opmaak van de e-mails"),
    "tags.*.name": ("Tag {}", "Label {}"),
    "notes.*.note": ("Note {}: text", "Notitie {}: tekst"),
    "notes.*.created_at": ("Note {}: written", "Notitie {}: geschreven"),
    "notes.*.updated_at": ("Note {}: last changed", "Notitie {}: laatst gewijzigd"),
    "full_name": ("Name", "Naam"),
    "vip": ("Marked as VIP", "Gemarkeerd als VIP"),
    "source": ("Signed up through", "Aangemeld via"),
    "tags_count": ("Number of tags", "Aantal labels"),
    # The member's activity-feed (what the adapter reads), not the older .../activity,
    # whose keys are action, timestamp and title.
    "activity.*.activity_type": ("Activity {}: what", "Activiteit {}: wat"),
    "activity.*.created_at_timestamp": ("Activity {}: when", "Activiteit {}: wanneer"),
    "activity.*.campaign_title": ("Activity {}: e-mail", "Activiteit {}: e-mail"),
    "activity.*.link_clicked": ("Activity {}: link clicked", "Activiteit {}: aangeklikte link"),
}


#: What a member's ``status`` means for the person (Mailchimp's statuses: payloads.py).
_STATUSES: dict[str, tuple[str, str]] = {
    "subscribed": (
        "you are subscribed: this list's newsletters are sent to you",
        "u bent aangemeld: de nieuwsbrieven van deze lijst worden u gestuurd",
    ),
    "unsubscribed": (
        "you are unsubscribed: no newsletters of this list are sent to you; Mailchimp keeps "
        "the member so that you are not subscribed again without your consent",
        "u bent afgemeld: u krijgt geen nieuwsbrieven van deze lijst; Mailchimp bewaart het "
        "lid zodat u niet zonder uw toestemming opnieuw wordt aangemeld",
    ),
    "cleaned": (
        "e-mails to this address bounced (could not be delivered), so Mailchimp sends "
        "nothing to it any more",
        "e-mails aan dit adres kwamen niet aan (bounce), dus Mailchimp stuurt er niets meer "
        "naartoe",
    ),
    "pending": (
        "waiting for you to confirm your subscription; nothing is sent to you before",
        "wacht tot u uw aanmelding bevestigt; tot dan wordt u niets gestuurd",
    ),
    "transactional": (
        "not subscribed to newsletters: only e-mails about an order or your account",
        "niet aangemeld voor nieuwsbrieven: alleen e-mails over een bestelling of uw account",
    ),
    "archived": (
        "taken off this list: nothing is sent to you, but Mailchimp keeps the member and "
        "can add it back",
        "van deze lijst gehaald: u wordt niets gestuurd, maar Mailchimp bewaart het lid en "
        "kan het terugzetten",
    ),
}


def _kind_of(record: Mapping[str, Any]) -> tuple[str, str]:
    return "subscription", str(record.get("list_id") or "")


COPY_LABELS = CopyLabels(
    vendor="Mailchimp", kind_of=_kind_of, fields=_FIELDS, values={"status": _STATUSES}
)
