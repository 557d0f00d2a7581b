"""The access bundle's reports in Dutch and English, as Markdown and as HTML.

What :func:`connector.access.write_bundle` puts in ``report.nl.md``, ``report.en.md``,
``report.nl.html`` and ``report.en.html``: the Art. 15(1) facts
(:class:`connector.access.Art15Facts`) in words, each system's records under plain labels,
what klantsync last sent each system and what it keeps itself. Values are escaped for the
format they land in (HTML entities, Markdown metacharacters), so a name like ``<script>`` in
a shop record is shown, never run.
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from connector.access_labels import RETAINED_REASONS, SystemLabels
from connector.access_own import holds_nothing, nothing_line, own_lines
from connector.model import CANONICAL_FIELDS, CATEGORIES
from connector.register import KEPT_UNTIL, OWN_DATA, country_in_text
from connector.register_render import TEXT, local_time, md_escape

if TYPE_CHECKING:
    # For annotations only: connector.access imports this module to write the reports.
    from connector.access import Art15Facts


#: Where the connector part lists the audit entries about the person (kind, time, subject
#: id, data as stored); the reports give them a section of their own.
AUDIT_TRAIL = "audit_trail"

_T: dict[str, dict[str, str]] = {
    "en": {
        "title": "Access report (Art. 15 GDPR)",
        "request": "Request",
        "subject": "Subject id (pseudonym)",
        "generated": "Generated",
        "notice": "This folder is the only place where klantsync writes your personal data in "
        "clear. Everything else it keeps about you is pseudonymised (a keyed hash) or "
        "encrypted. Hand this folder over securely and delete it afterwards.",
        "controller": "Who is responsible",
        "facts": "What is processed and why (Art. 15(1) GDPR)",
        "purposes": "Purposes",
        "fields": "fields",
        "categories": "Categories of personal data",
        "recipients": "Recipients",
        "retention": "Retention",
        "retention_default": "As long as needed for the purposes above, where this section "
        "states no period.",
        "days": "days",
        "source": "Source",
        "source_text": "Data reaches the connected systems from",
        "rights": "Your rights",
        "data": "Your data per system",
        "none": "This system holds no data about you.",
        "none_all": "None of the connected systems holds data about you: {systems}.",
        "exempt": "This system was not consulted for this request, so this copy holds none "
        "of the data it may have about you. Why: {reason}",
        "record": "Record",
        "field": "Field",
        "value": "Value",
        "connector": "What klantsync itself keeps",
        "connector_text": "Pseudonymous ids, timestamps and statuses; and, encrypted, the "
        "data waiting to be delivered to a system or that a system refused (under "
        "sealed_data, shown here as it reads).",
        "audit": "What klantsync's audit trail records about you",
        "audit_text": "klantsync keeps a trail of what it does. Each entry about you is listed "
        "here: when it was made, what it records, and its data as kept (ids, statuses, counts "
        "and field names; never the values of your data).",
        "audit_none": "The audit trail holds no entries about you.",
        "sent": "What klantsync last sent each system about you",
        "sent_text": "Per system, which of your data the last write klantsync delivered there "
        "held, and when (Art. 15(1)(c) GDPR): the names of the fields only; their values are "
        "in the system's own records above, where it could be read.",
        "sent_none": "klantsync has delivered nothing about you to any system.",
        "sent_at": "{system}: last sent {at}",
        "sent_withdrawal": ": your withdrawal of consent (unsubscribed)",
        "sent_this": "that write",
        "sent_before": "the write before it",
        "sent_held": "{write} held: {fields}",
        "sent_unrecorded": "which fields {write} held is not recorded (it was sent before "
        "klantsync kept this); the fields that may have been sent: {fields}",
        "sent_unknown": "not known (the system is no longer configured)",
        "portable": "Machine-readable copy",
        "portable_text": "data.json in this folder holds the same data in a structured, "
        "commonly used format (Art. 20 GDPR).",
        "transfers": "Transfers outside the EEA",
        "transfers_none": "None of the recipients above processes your data outside the "
        "European Economic Area.",
        "transfer_line": "{system} ({legal}) processes your data in {country}; safeguard: "
        "{mechanism}",
        "transfer_onward": "{system} ({legal}) processes your data in {country} and passes it "
        "on outside the EEA; safeguard: {mechanism}",
        "transfer_onward_to": "{system} ({legal}) processes your data in {via} and passes it "
        "on to {recipient} in {country}; safeguard: {mechanism}",
        "a_sub_processor": "a sub-processor",
        "transfer_unknown": "Where {system} processes your data is not recorded in this "
        "report: ask the controller.",
        "sub_processors": "its sub-processors",
        "automated": "Automated decision-making",
        "automated_default": "No decision about you is taken by automated means alone, and "
        "you are not profiled, in this processing (Art. 22 GDPR).",
        "retained": "kept on purpose",
        "flow": "flow",
        "yes": "yes",
        "no": "no",
    },
    "nl": {
        "title": "Inzageverslag (art. 15 AVG)",
        "request": "Verzoek",
        "subject": "Betrokkene-id (pseudoniem)",
        "generated": "Opgesteld",
        "notice": "Deze map is de enige plek waar klantsync uw persoonsgegevens onversleuteld "
        "wegschrijft. Al het andere dat klantsync over u bewaart is gepseudonimiseerd (een "
        "sleutel-hash) of versleuteld. Draag deze map veilig over en verwijder hem daarna.",
        "controller": "Wie is verantwoordelijk",
        "facts": "Wat er verwerkt wordt en waarom (art. 15 lid 1 AVG)",
        "purposes": "Doeleinden",
        "fields": "gegevens",
        "categories": "Categorieën van persoonsgegevens",
        "recipients": "Ontvangers",
        "retention": "Bewaartermijn",
        "retention_default": "Zolang nodig voor de doeleinden hierboven, waar dit onderdeel "
        "geen termijn noemt.",
        "days": "dagen",
        "source": "Bron",
        "source_text": "De gegevens komen in de gekoppelde systemen terecht vanuit",
        "rights": "Uw rechten",
        "data": "Uw gegevens per systeem",
        "none": "Dit systeem heeft geen gegevens over u.",
        "none_all": "Geen van de gekoppelde systemen heeft gegevens over u: {systems}.",
        "exempt": "Dit systeem is voor dit verzoek niet geraadpleegd; dit overzicht bevat dus "
        "geen van de gegevens die het mogelijk over u heeft. Waarom: {reason}",
        "record": "Record",
        "field": "Veld",
        "value": "Waarde",
        "connector": "Wat klantsync zelf bewaart",
        "connector_text": "Pseudonieme id's, tijdstippen en statussen; en, versleuteld, de "
        "gegevens die wachten om bij een systeem te worden afgeleverd of die een systeem "
        "weigerde (onder sealed_data, hier leesbaar weergegeven).",
        "audit": "Wat het auditlogboek van klantsync over u vastlegt",
        "audit_text": "klantsync houdt bij wat het doet. Elke vermelding over u staat hier: "
        "wanneer ze werd gemaakt, wat ze vastlegt, en haar gegevens zoals bewaard (id's, "
        "statussen, aantallen en veldnamen; nooit de waarden van uw gegevens).",
        "audit_none": "Het auditlogboek bevat geen vermeldingen over u.",
        "sent": "Wat klantsync elk systeem het laatst over u stuurde",
        "sent_text": "Per systeem welke van uw gegevens de laatste levering van klantsync daar "
        "bevatte, en wanneer (art. 15 lid 1 onder c AVG): alleen de namen van de velden; hun "
        "waarden staan hierboven in de eigen gegevens van het systeem, waar het gelezen kon "
        "worden.",
        "sent_none": "klantsync heeft geen systeem iets over u geleverd.",
        "sent_at": "{system}: laatst verstuurd {at}",
        "sent_withdrawal": ": de intrekking van uw toestemming (afgemeld)",
        "sent_this": "die levering",
        "sent_before": "de levering daarvoor",
        "sent_held": "{write} bevatte: {fields}",
        "sent_unrecorded": "welke velden {write} bevatte is niet vastgelegd (verstuurd voordat "
        "klantsync dit bijhield); de velden die verstuurd kunnen zijn: {fields}",
        "sent_unknown": "onbekend (het systeem is niet meer ingesteld)",
        "portable": "Machineleesbare kopie",
        "portable_text": "data.json in deze map bevat dezelfde gegevens in een gestructureerde, "
        "gangbare vorm (art. 20 AVG).",
        "transfers": "Doorgifte buiten de EER",
        "transfers_none": "Geen van de ontvangers hierboven verwerkt uw gegevens buiten de "
        "Europese Economische Ruimte.",
        "transfer_line": "{system} ({legal}) verwerkt uw gegevens in {country}; waarborg: "
        "{mechanism}",
        "transfer_onward": "{system} ({legal}) verwerkt uw gegevens in {country} en geeft ze "
        "door buiten de EER; waarborg: {mechanism}",
        "transfer_onward_to": "{system} ({legal}) verwerkt uw gegevens in {via} en geeft ze "
        "door aan {recipient} in {country}; waarborg: {mechanism}",
        "a_sub_processor": "een subverwerker",
        "transfer_unknown": "Waar {system} uw gegevens verwerkt, is in dit overzicht niet "
        "vastgelegd: vraag het de verwerkingsverantwoordelijke.",
        "sub_processors": "zijn subverwerkers",
        "automated": "Geautomatiseerde besluitvorming",
        "automated_default": "Er wordt bij deze verwerking geen besluit over u genomen dat "
        "uitsluitend op geautomatiseerde verwerking berust, en u wordt niet geprofileerd "
        "(art. 22 AVG).",
        "retained": "bewust bewaard",
        "flow": "koppeling",
        "yes": "ja",
        "no": "nee",
    },
}

#: What a record's ``archived: true`` means at a system whose "delete" is a bin, by adapter
#: kind, per language. HubSpot's contact DELETE moves the contact to its recycle bin, from
#: which it "can be restored within 90 days" [spec]; its ``archivedAt`` is not said to be
#: the deletion time (HubSpot gave contacts' last change there), so no date is given. A
#: Pipedrive person in its bin is explained by its ``retained`` code instead.
_ARCHIVED: dict[str, dict[str, str]] = {
    "hubspot": {
        "en": "in HubSpot's recycle bin: deleted there, but HubSpot can restore it within 90 "
        "days of its deletion; after that it can no longer be restored",
        "nl": "in de prullenbak van HubSpot: daar verwijderd, maar HubSpot kan het binnen 90 "
        "dagen na het verwijderen herstellen; daarna kan dat niet meer",
    },
}

_RIGHTS: dict[str, list[str]] = {
    "en": [
        "Rectification (Art. 16): have inaccurate data corrected.",
        "Erasure (Art. 17): have your data deleted.",
        "Restriction of processing (Art. 18).",
        "Objection (Art. 21), including to direct marketing at any time.",
        "Data portability (Art. 20): see data.json.",
        "Complaint to the supervisory authority: the Autoriteit Persoonsgegevens "
        "(autoriteitpersoonsgegevens.nl).",
    ],
    "nl": [
        "Rectificatie (art. 16): onjuiste gegevens laten verbeteren.",
        "Wissing (art. 17): uw gegevens laten verwijderen.",
        "Beperking van de verwerking (art. 18).",
        "Bezwaar (art. 21), waaronder altijd tegen direct marketing.",
        "Overdraagbaarheid (art. 20): zie data.json.",
        "Een klacht indienen bij de toezichthouder: de Autoriteit Persoonsgegevens "
        "(autoriteitpersoonsgegevens.nl).",
    ],
}

#: The right the rights list names first where any processing rests on consent
#: (:attr:`Art15Facts.rests_on_consent`): Art. 7(3), which Art. 13(2)(c) and 14(2)(d) require
#: the person be told of; where nothing rests on consent it would promise what is not there.
_WITHDRAW_CONSENT: dict[str, str] = {
    "en": "Withdrawal of consent (Art. 7(3)): withdraw your consent at any time, for the "
    "processing that rests on it; this does not affect the lawfulness of the processing "
    "based on it before you withdrew it.",
    "nl": "Uw toestemming intrekken (art. 7 lid 3): op elk moment, voor de verwerking die erop "
    "berust; dat laat de rechtmatigheid van de verwerking op basis van de toestemming vóór "
    "de intrekking onverlet.",
}


# -- shared content ------------------------------------------------------------------------


def _sections(lang: str, facts: Art15Facts) -> list[tuple[str, list[str]]]:
    """The Art. 15(1) facts as (heading, bullet lines) in ``lang``; plain text, unescaped."""
    t = _T[lang]
    index = 1 if lang == "nl" else 0

    def label(name: str) -> str:
        field = CANONICAL_FIELDS[name]
        return field.label_nl if lang == "nl" else field.label_en

    purposes = [
        f"{purpose}" + (f" ({t['fields']}: {', '.join(label(n) for n in names)})" if names else "")
        for purpose, names in facts.purposes.items()
    ]
    categories = [CATEGORIES[c][index] for c in facts.categories]
    recipients = [
        f"{name} ({kind}{', ' + legal if legal else ''})"
        + (f"; {t['sub_processors']}: {', '.join(subs)}" if subs else "")
        for name, kind, legal in facts.recipients
        for subs in [facts.sub_processors.get(name, [])]
    ]
    if facts.operator:
        # In the register's words: its "operator of the connector".
        recipients.append(f"{facts.operator} ({TEXT[lang]['operator']})")
    stated = [f"{flow}: {text}" for flow, text in facts.retention if text]
    retention = [*stated, *_kept_lines(lang, facts), t["retention_default"]]
    sources = [
        f"{t['source_text']} {system} ({kind}), {t['flow']} {flow}"
        for flow, system, kind in facts.sources
    ]
    sections = []
    if facts.controller:
        # The data protection officer is someone else to turn to than the controller's
        # contact: named bare, the person could not tell the one from the other.
        who = [
            f"{TEXT[lang]['dpo']}: {value}" if key == "dpo" else value
            for key, value in facts.controller.items()
        ]
        sections.append((t["controller"], who))
    transfers = [
        t["transfer_onward_to" if via else "transfer_onward" if onward else "transfer_line"].format(
            system=system,
            legal=legal or system,
            # The country's name and a missing safeguard as the register gives them.
            country=country_in_text(country, lang),
            via=country_in_text(via, lang) if via else "",
            recipient=recipient or t["a_sub_processor"],
            mechanism=mechanism or TEXT[lang]["missing"],
        )
        for system, legal, country, mechanism, onward, via, recipient in facts.transfers
    ] + [t["transfer_unknown"].format(system=system) for system in facts.transfers_unknown]
    transfers = transfers or [t["transfers_none"]]
    sections += [
        (t["purposes"], purposes),
        (t["categories"], categories),
        (t["recipients"], recipients),
        (t["transfers"], transfers),
        (t["retention"], retention),
        (t["source"], sources),
        (t["automated"], [facts.automated or t["automated_default"]]),
        (t["rights"], _rights(lang, facts)),
    ]
    return sections


def _rights(lang: str, facts: Art15Facts) -> list[str]:
    """The person's rights in ``lang``: withdrawing consent first where any of the
    processing rests on it, then those that hold for all of it."""
    withdraw = [_WITHDRAW_CONSENT[lang]] if facts.rests_on_consent else []
    return withdraw + _RIGHTS[lang]


def _kept_lines(lang: str, facts: Art15Facts) -> list[str]:
    """What klantsync itself keeps and how long, in ``lang``: the register's labels."""
    index = 1 if lang == "nl" else 0
    lines = []
    for item, days in facts.kept:
        if item in OWN_DATA:
            lines.append(f"klantsync: {OWN_DATA[item][index]}: {days} {_T[lang]['days']}")
        elif item in KEPT_UNTIL:
            label, until, _why = KEPT_UNTIL[item]
            lines.append(f"klantsync: {label[index]}: {until[index].lower()}")
    return lines


#: Why a system served less than it holds (Shopify's ``ordersNotRead.reason``, HubSpot's
#: ``propertiesNotRead.reason``, ``associationsNotRead.reason`` and
#: ``subscriptionsNotRead.reason``, Mailchimp's ``activityNotRead.reason``, Pipedrive's
#: ``notesNotRead``, ``dealsNotRead``, ``leadsNotRead`` and ``activitiesNotRead``), by code.
_NOT_READ: dict[str, dict[str, str]] = {
    "pipedrive_list_cut": {
        "en": "Pipedrive holds more of these about you than this copy lists (how many it "
        "lists: listed)",
        "nl": "Pipedrive bewaart hiervan meer over u dan dit overzicht toont (hoeveel het "
        "toont: listed)",
    },
    "activity_feed_cut": {
        "en": "Mailchimp may hold older activity (e-mails sent, opened, clicked) than the "
        "most recent events this copy lists (how many: eventsListed)",
        "nl": "Mailchimp kan oudere activiteit (verstuurde, geopende en aangeklikte e-mails) "
        "bewaren dan de recentste gebeurtenissen die dit overzicht toont (hoeveel: "
        "eventsListed)",
    },
    "read_all_orders": {
        "en": "Shopify counts more orders of this customer than it served: orders older than "
        "60 days are served only to an app granted the read_all_orders scope, so this copy "
        "lists the recent ones; the shop holds the rest",
        "nl": "Shopify telt meer bestellingen van deze klant dan het gaf: bestellingen ouder "
        "dan 60 dagen geeft het alleen aan een app met de bevoegdheid read_all_orders, dus "
        "dit overzicht toont de recente; de winkel bewaart de rest",
    },
    "crm.schemas.contacts.read": {
        "en": "HubSpot did not let klantsync read which properties a contact has (the app "
        "lacks the crm.schemas.contacts.read scope), so this copy is partial: it lists only "
        "the properties klantsync syncs; HubSpot may hold more about you",
        "nl": "HubSpot liet klantsync niet lezen welke eigenschappen een contact heeft (de app "
        "mist de bevoegdheid crm.schemas.contacts.read), dus dit overzicht is onvolledig: het "
        "toont alleen de eigenschappen die klantsync synchroniseert; HubSpot kan meer over u "
        "bewaren",
    },
    "associations_partial": {
        "en": "HubSpot may hold more records linked to your contact than this copy lists: of "
        "the kinds under unread it served klantsync none (the app may lack the permission "
        "to read them), of those under cut this copy lists the first ones only (how many: "
        "listedPerKind), and of those under mainPropertiesOnly their main properties only",
        "nl": "HubSpot kan meer aan uw contact gekoppelde gegevens bewaren dan dit overzicht "
        "toont: van de soorten onder unread gaf het klantsync niets (de app mist mogelijk "
        "de bevoegdheid ze te lezen), van die onder cut toont dit overzicht alleen de eerste "
        "(hoeveel: listedPerKind), en van die onder mainPropertiesOnly alleen hun "
        "belangrijkste eigenschappen",
    },
    "communication_preferences.read": {
        "en": "HubSpot did not let klantsync read your e-mail subscriptions and the legal basis "
        "of each (the app lacks the communication_preferences.read scope), so this copy does "
        "not show them; HubSpot may hold them",
        "nl": "HubSpot liet klantsync uw e-mailabonnementen en de rechtsgrond van elk niet "
        "lezen (de app mist de bevoegdheid communication_preferences.read), dus dit overzicht "
        "toont ze niet; HubSpot kan ze bewaren",
    },
}


#: Where a record says why it was read only in part.
_NOT_READ_PATHS = frozenset(
    {
        "ordersNotRead.reason",
        "propertiesNotRead.reason",
        "activityNotRead.reason",
        "associationsNotRead.reason",
        "subscriptionsNotRead.reason",
        "notesNotRead.reason",
        "dealsNotRead.reason",
        "leadsNotRead.reason",
        "activitiesNotRead.reason",
    }
)


def _not_read(lang: str, exempt: Mapping[str, str], facts: Art15Facts) -> Iterator[tuple[str, str]]:
    """Each exempted system as (heading, why it was not read) in ``lang``; plain text.

    Under the data per system, where the person looks for it: listed among the recipients
    with nothing said here, the system passed for one that holds nothing about them.
    """
    kinds = {name: kind for name, kind, _ in facts.recipients}
    for name, reason in exempt.items():
        heading = f"{name} ({kinds[name]})" if name in kinds else name
        yield heading, _T[lang]["exempt"].format(reason=reason)


def _sent_lines(lang: str, sent: Mapping[str, Mapping[str, Any]], facts: Art15Facts) -> list[str]:
    """What klantsync last sent each system about the person, one line per system: the
    fields' names in ``lang`` (a path no mapping knows as it is) and when, with the Dutch
    time; a withdrawal of consent and a field set not recorded said so. Plain text."""
    t = _T[lang]
    kinds = {name: kind for name, kind, _ in facts.recipients}

    def named(names: Sequence[str], none: str = "-") -> str:
        labels = [
            (spec.label_nl if lang == "nl" else spec.label_en)
            if (spec := CANONICAL_FIELDS.get(name)) is not None
            else name
            for name in names
        ]
        return ", ".join(labels) or none

    lines = []
    for name, entry in sent.items():
        system = f"{name} ({kinds[name]})" if name in kinds else name
        line = t["sent_at"].format(system=system, at=local_time(str(entry.get("last_sent", ""))))
        withdrawn = bool(entry.get("consent_withdrawn"))
        if withdrawn:
            line += t["sent_withdrawal"]
        write = t["sent_before" if withdrawn else "sent_this"]
        if entry.get("fields_recorded"):
            held = t["sent_held"].format(write=write, fields=named(entry.get("fields") or []))
        else:
            sendable = named(entry.get("may_have_been_sent") or [], t["sent_unknown"])
            held = t["sent_unrecorded"].format(write=write, fields=sendable)
        lines.append(f"{line}; {held}")
    return lines or [t["sent_none"]]


def _record_title(
    lang: str, number: int, record: Mapping[str, Any], labels: SystemLabels | None
) -> str:
    """A record's heading: its number and what it is and where, where the adapter says."""
    heading = labels.heading(lang, record) if labels is not None else ""
    return f"{number}. {heading}" if heading else f"{_T[lang]['record']} {number}"


def _rows(
    lang: str, record: Mapping[str, Any], kind: str = "", labels: SystemLabels | None = None
) -> Iterator[tuple[str, str]]:
    """A record's rows for a report: its leaves, each under its plain label where one is
    known, the reasons a record is kept or partly read, and what a record of a ``kind`` of
    system in its bin means, in ``lang``."""
    for path, leaf in _flatten(record):
        value = _shown(lang, leaf)
        label = labels.label(lang, record, path) if labels is not None else path
        if path == "archived" and leaf is True and kind in _ARCHIVED:
            # "archived: yes" alone does not tell the person the system can bring it back.
            yield label, f"{value}, {_ARCHIVED[kind][lang]}"
        elif path == "retained":
            yield _T[lang]["retained"], RETAINED_REASONS.get(value, {}).get(lang, value)
        elif path in _NOT_READ_PATHS:
            yield label, _NOT_READ.get(value, {}).get(lang, value)
        elif labels is not None:
            yield label, labels.value(lang, path, value)
        else:
            yield label, value


def _none_held(
    systems: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]], exempt: Mapping[str, str]
) -> bool:
    """Whether every system was read and none holds a record of the person: one sentence
    then says so, where a heading per system over "holds no data" read as a form left
    blank."""
    return bool(systems) and not exempt and not any(records for _, records in systems.values())


def _none_all(lang: str, systems: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]]) -> str:
    named = ", ".join(f"{name} ({kind})" for name, (kind, _) in systems.items())
    return _T[lang]["none_all"].format(systems=named)


def _own_sentences(
    lang: str,
    systems: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]],
    exempt: Mapping[str, str],
    connector: Mapping[str, Any],
    facts: Art15Facts,
) -> list[str]:
    """What klantsync keeps about the person in sentences (connector/access_own.py), before
    the rows as stored: an erasure, the suppression list and how to be added again, an
    unsubscribe kept; or that it holds nothing about them. Plain text."""
    if holds_nothing(systems, exempt, connector):
        return [nothing_line(lang)]
    return own_lines(lang, connector, {name: kind for name, kind, _ in facts.recipients})


def _own_rows(lang: str, connector: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """What klantsync keeps, as rows for a report: its times (UTC stamps, when a request
    was received and completed, a record delivered) with the Dutch time beside them. The
    audit entries have a section of their own (:func:`_audit_lines`)."""
    kept = {key: value for key, value in connector.items() if key != AUDIT_TRAIL}
    for path, leaf in _flatten(kept):
        yield path, local_time(_shown(lang, leaf))


def _audit_lines(lang: str, connector: Mapping[str, Any]) -> list[str]:
    """The audit entries about the person, one line each: when (with the Dutch time), the
    kind, and the entry's data as stored, its times with the Dutch time too (a request's
    deadline: due by the end of 1 February in the Netherlands, 23:59:59 there, is 22:59:59
    UTC that day, a time the person does not keep; Shopify's 30 days, due at 00:30 on 1
    January Dutch time, are 23:30 UTC on 31 December, a date they do not either); plain
    text, unescaped."""
    lines = []
    for entry in connector.get(AUDIT_TRAIL) or []:
        data = "; ".join(
            f"{path}: {local_time(_shown(lang, leaf))}"
            for path, leaf in _flatten(entry.get("data", {}))
        )
        line = f"{local_time(str(entry.get('at', '')))}: {entry.get('kind', '')}"
        lines.append(f"{line} ({data})" if data else line)
    return lines or [_T[lang]["audit_none"]]


def _shown(lang: str, leaf: Any) -> str:
    """A leaf as text in ``lang``: a yes/no in words, not Python's ``True``/``False``."""
    if isinstance(leaf, bool):
        return _T[lang]["yes" if leaf else "no"]
    return str(leaf)


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of a vendor record as (dotted path, value); meta lists keyed by their ``key``."""
    if isinstance(value, Mapping):
        for key, inner in value.items():
            yield from _flatten(inner, f"{prefix}{key}.")
    elif isinstance(value, list):
        for position, item in enumerate(value):
            if isinstance(item, Mapping) and isinstance(item.get("key"), str) and "value" in item:
                yield from _flatten(item["value"], f"{prefix}{item['key']}.")
            else:
                yield from _flatten(item, f"{prefix}{position}.")
    elif value is not None and value != "":
        yield prefix.rstrip("."), value


# -- Markdown ------------------------------------------------------------------------------


def _markdown(
    lang: str,
    head: Mapping[str, str],
    systems: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]],
    exempt: Mapping[str, str],
    connector: Mapping[str, Any],
    facts: Art15Facts,
    sent: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, SystemLabels],
) -> str:
    t = _T[lang]
    systems_all = systems
    lines = [
        f"# {t['title']}",
        "",
        f"- {t['request']}: {md_escape(head['request_id'])}",
        f"- {t['subject']}: {md_escape(head['subject_id'])}",
        f"- {t['generated']}: {md_escape(local_time(head['generated_at']))}",
        "",
        f"> {md_escape(t['notice'])}",
        "",
        f"## {t['facts']}",
    ]
    for heading, items in _sections(lang, facts):
        lines += ["", f"### {md_escape(heading)}", ""] + [f"- {md_escape(item)}" for item in items]
    lines += ["", f"## {t['data']}"]
    if _none_held(systems, exempt):
        lines += ["", md_escape(_none_all(lang, systems))]
        systems = {}
    for name, (kind, records) in systems.items():
        lines += ["", f"### {md_escape(name)} ({md_escape(kind)})", ""]
        if not records:
            lines.append(t["none"])
        for number, record in enumerate(records, start=1):
            title = md_escape(_record_title(lang, number, record, labels.get(name)))
            lines += [f"**{title}**", "", f"| {t['field']} | {t['value']} |"]
            lines.append("|---|---|")
            lines += [
                f"| {md_escape(path)} | {md_escape(value)} |"
                for path, value in _rows(lang, record, kind, labels.get(name))
            ]
            lines.append("")
    for name, reason in _not_read(lang, exempt, facts):
        lines += ["", f"### {md_escape(name)}", "", md_escape(reason)]
    lines += ["", f"## {t['sent']}", "", md_escape(t["sent_text"]), ""]
    lines += [f"- {md_escape(line)}" for line in _sent_lines(lang, sent, facts)]
    lines += ["", f"## {t['connector']}", ""]
    for line in _own_sentences(lang, systems_all, exempt, connector, facts):
        lines += [md_escape(line), ""]
    lines += [md_escape(t["connector_text"]), ""]
    lines += [
        f"- {md_escape(path)}: {md_escape(value)}" for path, value in _own_rows(lang, connector)
    ]
    lines += ["", f"### {t['audit']}", "", md_escape(t["audit_text"]), ""]
    lines += [f"- {md_escape(line)}" for line in _audit_lines(lang, connector)]
    lines += ["", f"## {t['portable']}", "", md_escape(t["portable_text"]), ""]
    return "\n".join(lines)


# -- HTML ----------------------------------------------------------------------------------


def _h(text: str) -> str:
    return html.escape(str(text), quote=True)


def _html(
    lang: str,
    head: Mapping[str, str],
    systems: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]],
    exempt: Mapping[str, str],
    connector: Mapping[str, Any],
    facts: Art15Facts,
    sent: Mapping[str, Mapping[str, Any]],
    labels: Mapping[str, SystemLabels],
) -> str:
    t = _T[lang]
    systems_all = systems
    parts = [
        "<!doctype html>",
        f'<html lang="{lang}"><head><meta charset="utf-8">',
        f"<title>{_h(t['title'])}</title></head><body>",
        f"<h1>{_h(t['title'])}</h1>",
        "<ul>",
        f"<li>{_h(t['request'])}: {_h(head['request_id'])}</li>",
        f"<li>{_h(t['subject'])}: {_h(head['subject_id'])}</li>",
        f"<li>{_h(t['generated'])}: {_h(local_time(head['generated_at']))}</li>",
        "</ul>",
        f"<p><strong>{_h(t['notice'])}</strong></p>",
        f"<h2>{_h(t['facts'])}</h2>",
    ]
    for heading, items in _sections(lang, facts):
        parts.append(f"<h3>{_h(heading)}</h3><ul>")
        parts += [f"<li>{_h(item)}</li>" for item in items]
        parts.append("</ul>")
    parts.append(f"<h2>{_h(t['data'])}</h2>")
    if _none_held(systems, exempt):
        parts.append(f"<p>{_h(_none_all(lang, systems))}</p>")
        systems = {}
    for name, (kind, records) in systems.items():
        parts.append(f"<h3>{_h(name)} ({_h(kind)})</h3>")
        if not records:
            parts.append(f"<p>{_h(t['none'])}</p>")
        for number, record in enumerate(records, start=1):
            title = _record_title(lang, number, record, labels.get(name))
            parts.append(f"<h4>{_h(title)}</h4><table>")
            parts.append(f"<tr><th>{_h(t['field'])}</th><th>{_h(t['value'])}</th></tr>")
            parts += [
                f"<tr><td>{_h(path)}</td><td>{_h(value)}</td></tr>"
                for path, value in _rows(lang, record, kind, labels.get(name))
            ]
            parts.append("</table>")
    for name, reason in _not_read(lang, exempt, facts):
        parts += [f"<h3>{_h(name)}</h3>", f"<p>{_h(reason)}</p>"]
    parts += [f"<h2>{_h(t['sent'])}</h2>", f"<p>{_h(t['sent_text'])}</p>", "<ul>"]
    parts += [f"<li>{_h(line)}</li>" for line in _sent_lines(lang, sent, facts)]
    parts.append("</ul>")
    parts.append(f"<h2>{_h(t['connector'])}</h2>")
    parts += [
        f"<p>{_h(line)}</p>" for line in _own_sentences(lang, systems_all, exempt, connector, facts)
    ]
    parts += [f"<p>{_h(t['connector_text'])}</p>", "<ul>"]
    parts += [f"<li>{_h(path)}: {_h(value)}</li>" for path, value in _own_rows(lang, connector)]
    parts += ["</ul>", f"<h3>{_h(t['audit'])}</h3>", f"<p>{_h(t['audit_text'])}</p>", "<ul>"]
    parts += [f"<li>{_h(line)}</li>" for line in _audit_lines(lang, connector)]
    parts += ["</ul>", f"<h2>{_h(t['portable'])}</h2>", f"<p>{_h(t['portable_text'])}</p>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)
