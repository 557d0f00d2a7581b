"""How a Pipedrive access copy reads for the person: the person and its well-known keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connector.access_labels import CopyLabels

__all__ = ["COPY_LABELS"]

_FIELDS: dict[str, tuple[str, str]] = {
    "id": ("Id in Pipedrive", "Id in Pipedrive"),
    "name": ("Name", "Naam"),
    "first_name": ("First name", "Voornaam"),
    "last_name": ("Last name", "Achternaam"),
    "email": ("E-mail address", "E-mailadres"),
    "phone": ("Phone number", "Telefoonnummer"),
    "emails.*.value": ("E-mail address {}", "E-mailadres {}"),
    "emails.*.primary": ("E-mail address {}: main one", "E-mailadres {}: het belangrijkste"),
    "emails.*.label": ("E-mail address {}: kind", "E-mailadres {}: soort"),
    "phones.*.value": ("Phone number {}", "Telefoonnummer {}"),
    "phones.*.primary": ("Phone number {}: main one", "Telefoonnummer {}: het belangrijkste"),
    "phones.*.label": ("Phone number {}: kind", "Telefoonnummer {}: soort"),
    "owner_id": ("Staff member responsible (id)", "Verantwoordelijke medewerker (id)"),
    "org_id": ("Organisation (id)", "Organisatie (id)"),
    "add_time": ("Created", "Aangemaakt"),
    "update_time": ("Last changed", "Laatst gewijzigd"),
    "is_deleted": ("Deleted", "Verwijderd"),
    "visible_to": ("Visible to (code)", "Zichtbaar voor (code)"),
    "labels.*.label": ("Label {}", "Label {}"),
    "notes.*.content": ("Note {}: text", "Notitie {}: tekst"),
    "notes.*.add_time": ("Note {}: written", "Notitie {}: geschreven"),
    "notes.*.update_time": ("Note {}: last changed", "Notitie {}: laatst gewijzigd"),
    "deals.*.title": ("Deal {}: title", "Deal {}: titel"),
    "deals.*.value": ("Deal {}: value", "Deal {}: waarde"),
    "deals.*.status": ("Deal {}: status", "Deal {}: status"),
    "deals.*.lost_reason": ("Deal {}: why it was lost", "Deal {}: reden van verlies"),
    "deals.*.is_archived": ("Deal {}: archived", "Deal {}: gearchiveerd"),
    "deals.*.archive_time": ("Deal {}: archived on", "Deal {}: gearchiveerd op"),
    "deals.*.add_time": ("Deal {}: created", "Deal {}: aangemaakt"),
    "deals.*.update_time": ("Deal {}: last changed", "Deal {}: laatst gewijzigd"),
    "leads.*.title": ("Lead {}: title", "Lead {}: titel"),
    "leads.*.value.amount": ("Lead {}: value", "Lead {}: waarde"),
    "leads.*.value.currency": ("Lead {}: currency", "Lead {}: valuta"),
    "leads.*.expected_close_date": (
        "Lead {}: expected to close",
        "Lead {}: verwachte afsluitdatum",
    ),
    "leads.*.is_archived": ("Lead {}: archived", "Lead {}: gearchiveerd"),
    "leads.*.add_time": ("Lead {}: created", "Lead {}: aangemaakt"),
    "leads.*.update_time": ("Lead {}: last changed", "Lead {}: laatst gewijzigd"),
    "activities.*.subject": ("Activity {}: subject", "Activiteit {}: onderwerp"),
    "activities.*.type": ("Activity {}: kind", "Activiteit {}: soort"),
    "activities.*.due_date": ("Activity {}: date", "Activiteit {}: datum"),
    "activities.*.done": ("Activity {}: done", "Activiteit {}: gedaan"),
    "activities.*.add_time": ("Activity {}: created", "Activiteit {}: aangemaakt"),
}


def _kind_of(record: Mapping[str, Any]) -> tuple[str, str]:
    return "person", ""


COPY_LABELS = CopyLabels(vendor="Pipedrive", kind_of=_kind_of, fields=_FIELDS)
