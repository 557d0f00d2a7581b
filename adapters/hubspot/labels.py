"""How a HubSpot access copy reads for the person: the contact and its well-known keys, and
the support tickets associated with it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.access_labels import CopyLabels

__all__ = ["COPY_LABELS"]

_FIELDS: dict[str, tuple[str, str]] = {
    "id": ("Id in HubSpot", "Id in HubSpot"),
    "createdAt": ("Created", "Aangemaakt"),
    "updatedAt": ("Last changed", "Laatst gewijzigd"),
    "archived": ("In the recycle bin", "In de prullenbak"),
    "properties.hs_object_id": ("Id in HubSpot (property)", "Id in HubSpot (eigenschap)"),
    "properties.createdate": ("Created (property)", "Aangemaakt (eigenschap)"),
    "properties.lastmodifieddate": ("Last changed (property)", "Laatst gewijzigd (eigenschap)"),
    "properties.email": ("E-mail address", "E-mailadres"),
    "properties.firstname": ("First name", "Voornaam"),
    "properties.lastname": ("Last name", "Achternaam"),
    "properties.phone": ("Phone number", "Telefoonnummer"),
    "properties.mobilephone": ("Mobile phone number", "Mobiel telefoonnummer"),
    "properties.company": ("Company", "Bedrijfsnaam"),
    "properties.jobtitle": ("Job title", "Functie"),
    "properties.address": ("Street and number", "Straat en huisnummer"),
    "properties.zip": ("Postcode", "Postcode"),
    "properties.city": ("City", "Plaats"),
    "properties.state": ("State or province", "Provincie"),
    "properties.country": ("Country", "Land"),
    "properties.lifecyclestage": ("Lifecycle stage", "Fase in de klantrelatie"),
    "properties.hs_lead_status": ("Lead status", "Leadstatus"),
    # A support ticket associated with the contact: what the person asked, and where it stands.
    "associations.tickets.*.id": (
        "Support ticket {}: id in HubSpot",
        "Supportticket {}: id in HubSpot",
    ),
    "associations.tickets.*.properties.subject": (
        "Support ticket {}: subject",
        "Supportticket {}: onderwerp",
    ),
    "associations.tickets.*.properties.content": (
        "Support ticket {}: what was written",
        "Supportticket {}: wat er geschreven is",
    ),
    "associations.tickets.*.properties.hs_pipeline_stage": (
        "Support ticket {}: stage (code)",
        "Supportticket {}: fase (code)",
    ),
    "associations.tickets.*.properties.hs_ticket_priority": (
        "Support ticket {}: priority",
        "Supportticket {}: prioriteit",
    ),
    "associations.tickets.*.properties.createdate": (
        "Support ticket {}: created",
        "Supportticket {}: aangemaakt",
    ),
    "associations.tickets.*.createdAt": (
        "Support ticket {}: created",
        "Supportticket {}: aangemaakt",
    ),
    "associations.tickets.*.updatedAt": (
        "Support ticket {}: last changed",
        "Supportticket {}: laatst gewijzigd",
    ),
}


def _kind_of(record: Mapping[str, Any]) -> tuple[str, str]:
    return "contact", ""


#: The mapping names a contact's properties; a copy holds them under ``properties``.
COPY_LABELS = CopyLabels(
    vendor="HubSpot", kind_of=_kind_of, fields=_FIELDS, mapped_under="properties."
)
