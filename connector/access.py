"""The access bundle (Art. 15 and 20 GDPR): ``data.json`` plus reports in Dutch and English.

:func:`write_bundle` writes, into one folder:

- ``data.json``: every system's records for the subject in the vendor's shape, one key per
  system, plus what the connector itself holds; machine-readable, for portability (Art. 20);
- ``report.nl.md``, ``report.en.md``, ``report.nl.html``, ``report.en.html``: the same data
  for people, with the Art. 15(1) facts taken from the live configuration (purposes,
  categories, recipients, retention, source, rights);
- in both, per system, which of the person's fields klantsync's last write there held, and
  when (:data:`SENT`, :func:`sent_by_klantsync`): the recipients of *their* data, not only
  those of everyone's (Art. 15(1)(c)). Names only, never values.

This folder is the only place the connector writes personal data in clear, and the reports say
so. Values are escaped for the format they land in (HTML entities, Markdown metacharacters), so
a name like ``<script>`` in a shop record is shown, never run.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from connector.access_labels import RETAINED_REASONS, SystemLabels
from connector.access_own import holds_nothing, nothing_line, own_lines
from connector.compliance import third_country_transfers, transfer
from connector.config import Config, adapter_copy_categories
from connector.model import CANONICAL_FIELDS, CATEGORIES
from connector.privatefile import write_private
from connector.register import KEPT_UNTIL, OWN_DATA, country_in_text, rests_on_consent
from connector.register_render import TEXT, local_time, md_escape

if TYPE_CHECKING:
    from connector.mapping import SystemMapping

__all__ = [
    "AUDIT_TRAIL",
    "BUNDLE_FILES",
    "SENT",
    "Art15Facts",
    "TransferFact",
    "art15_facts",
    "sent_by_klantsync",
    "write_bundle",
]

BUNDLE_FILES = ("data.json", "report.nl.md", "report.en.md", "report.nl.html", "report.en.html")

#: Where the connector part lists the audit entries about the person (kind, time, subject
#: id, data as stored); the reports give them a section of their own.
AUDIT_TRAIL = "audit_trail"

#: Where data.json lists, per system, which of the person's fields klantsync last sent it
#: (:func:`sent_by_klantsync`); the reports give it a section of their own.
SENT = "sent_by_klantsync"

LANGS = ("nl", "en")

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


class TransferFact(NamedTuple):
    """One transfer of a recipient's data outside the EEA, as an access report states it."""

    system: str
    legal: str  # the processor's legal name, "" when none is recorded
    country: str  # where the data goes; for an onward transfer to countries not recorded
    # (``via`` empty), the processor's own
    mechanism: str  # its safeguard, "" when none is recorded
    onward: bool  # passed on by the processor, not sent to it there
    via: str = ""  # the processor's country, for an onward transfer to a country recorded
    recipient: str = ""  # who receives an onward transfer there, when named


@dataclass(frozen=True)
class Art15Facts:
    """The Art. 15(1) facts of a configuration, language-neutral where possible.

    Attributes:
        purposes: purpose text -> canonical field names it covers.
        categories: category keys (see :data:`connector.model.CATEGORIES`).
        recipients: (system name, adapter kind, legal name or "").
        retention: per flow, its stated retention ("" when the config states none).
        sources: (flow name, source system, adapter kind).
        controller: controller name and contact, when configured.
        transfers: each transfer of a recipient's data outside the EEA, as the register
            lists them (:class:`TransferFact`).
        transfers_unknown: recipients whose place of processing is not recorded (no
            processor, or one without a country): a transfer cannot be ruled out.
        automated: the controller's statement on automated decision-making, "" for the
            standard one (none).
        sub_processors: system name -> the sub-processors its processor names (recipients
            too, Art. 15(1)(c)).
        kept: what klantsync itself keeps (an item of the register's own data), with its
            ``[retention]`` period in days, or ``None`` for one kept until an event.
        operator: the agency that runs the connector (``[privacy] agency``), "" when none
            is recorded: it handles every record the connector moves, so it is a recipient
            too, as the register lists it.
        rests_on_consent: whether any of the processing rests on consent, as the register
            states the grounds (:func:`connector.register.rests_on_consent`): the rights
            then include withdrawing it (Art. 7(3)).
    """

    purposes: dict[str, list[str]]
    categories: list[str]
    recipients: list[tuple[str, str, str]]
    retention: list[tuple[str, str]]
    sources: list[tuple[str, str, str]]
    controller: dict[str, str]
    transfers: list[TransferFact] = field(default_factory=list)
    transfers_unknown: list[str] = field(default_factory=list)
    automated: str = ""
    sub_processors: dict[str, list[str]] = field(default_factory=dict)
    kept: list[tuple[str, int | None]] = field(default_factory=list)
    operator: str = ""
    rests_on_consent: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "purposes": self.purposes,
            "categories": self.categories,
            "recipients": [
                {
                    "system": s,
                    "adapter": a,
                    "legal_name": n,
                    "sub_processors": list(self.sub_processors.get(s, [])),
                }
                for s, a, n in self.recipients
            ],
            "retention": [{"flow": f, "retention": r} for f, r in self.retention],
            "connector_retention": [{"item": item, "days": days} for item, days in self.kept],
            "sources": [{"flow": f, "system": s, "adapter": a} for f, s, a in self.sources],
            "controller": self.controller,
            "transfers": [
                {
                    "system": s,
                    "legal_name": n,
                    "country": c,
                    "safeguard": m,
                    "onward": o,
                    "processor_country": v or None,
                    "recipient": r,
                }
                for s, n, c, m, o, v, r in self.transfers
            ],
            "transfers_unknown": list(self.transfers_unknown),
            "operator": {"legal_name": self.operator, "role": "processor"}
            if self.operator
            else None,
            "automated_decision_making": self.automated or "none",
            "rests_on_consent": self.rests_on_consent,
        }


def art15_facts(config: Config) -> Art15Facts:
    """Collect the Art. 15(1) facts from the live configuration and mappings."""
    purposes: dict[str, set[str]] = {}
    categories: set[str] = set()
    for mapping in config.mappings.values():
        for name, purpose in mapping.purposes().items():
            purposes.setdefault(purpose, set()).add(name)
            categories.add(CANONICAL_FIELDS[name].category)
    for settings in config.systems.values():
        # The copy shows more than the mapped fields (a shop's orders, the IP address they
        # were placed from): the categories say so too (Art. 15(1)(b)).
        categories |= adapter_copy_categories(settings.adapter)
    for flow in config.flows:
        # Flow-level purposes exist in newer configs only; read them when present.
        for purpose in getattr(getattr(flow, "privacy", None), "purposes", None) or []:
            purposes.setdefault(str(purpose), set())
    recipients = []
    sub_processors: dict[str, list[str]] = {}
    transfers = []
    unknown = []
    for name, settings in config.systems.items():
        processor = getattr(settings, "processor", None)
        legal = str(getattr(processor, "legal_name", "") or "")
        recipients.append((name, settings.adapter, legal))
        if processor is not None:
            named = _recipients_of(processor.sub_processors, processor.onward_transfers)
            if named:
                sub_processors[name] = named
        # As the register states them (compliance.transfer): the model's default country is
        # no statement, so nothing is ruled out; an EEA processor naming a safeguard passes
        # the data on outside the EEA.
        if transfer(processor) == "unknown":
            unknown.append(name)
        elif processor is not None:
            # Art. 15(2): the person is told of each transfer, where to, and its safeguard.
            transfers += [
                TransferFact(
                    name,
                    legal,
                    row.country,
                    row.mechanism,
                    row.onward,
                    processor.country if row.onward and row.named else "",
                    row.recipient,
                )
                for row in third_country_transfers(processor)
            ]
    retention = []
    for flow in config.flows:
        stated = getattr(flow, "retention", None) or getattr(
            getattr(flow, "privacy", None), "retention", None
        )
        retention.append((flow.name, str(stated or "")))
    sources = [(f.name, f.source, config.systems[f.source].adapter) for f in config.flows]
    controller_cfg = getattr(config, "controller", None)
    controller = {}
    if controller_cfg is not None:
        controller = {
            key: str(getattr(controller_cfg, key, "") or "")
            for key in ("name", "address", "contact", "email", "dpo")
            if getattr(controller_cfg, key, "")
        }
    return Art15Facts(
        purposes={p: sorted(fields) for p, fields in sorted(purposes.items())},
        categories=[c for c in CATEGORIES if c in categories],  # the vocabulary's order
        recipients=recipients,
        retention=retention,
        sources=sources,
        controller=controller,
        transfers=transfers,
        transfers_unknown=unknown,
        automated=config.privacy.automated_decisions.strip(),
        sub_processors=sub_processors,
        kept=_kept(config),
        operator=config.privacy.agency,
        rests_on_consent=rests_on_consent(config),
    )


def _kept(config: Config) -> list[tuple[str, int | None]]:
    """What klantsync itself keeps, from the register's own lists (one list: an item added
    there is in the person's report too): each ``[retention]`` item with its period in
    days, then what is kept until an event (the identity map until erasure).

    Art. 15(1)(d): the audit trail keyed by the person's pseudonym, their access bundles,
    dead letters are theirs too, and the person has no register to look the periods up in.
    """
    periods: list[tuple[str, int | None]] = [
        (key, int(getattr(config.retention, key))) for key in OWN_DATA
    ]
    return periods + [(key, None) for key in KEPT_UNTIL]


def sent_by_klantsync(
    delivered: Iterable[tuple[str, str, bool, frozenset[str] | None]],
    mappings: Mapping[str, SystemMapping],
) -> dict[str, dict[str, Any]]:
    """Per system, which of the person's fields the last write klantsync delivered there
    gave a value (or left with the value an earlier one gave, the source's being
    unreadable), by canonical name, and when: the recipients of this person's data, where
    the Art. 15(1) facts name everyone's (Art. 15(1)(c)). Names only, never a value.

    Args:
        delivered: (system, delivered_at, whether it was a withdrawal of consent, the
            system's field paths that write gave a value, or ``None`` where the row is from
            before the store kept them), one per subject id of the person; per system the
            latest counts. A withdrawal keeps the field set of the write before it.
        mappings: each configured system's mapping, which turns its paths back into
            canonical names; a path it no longer knows (or a system no longer configured)
            is given as is.

    Each entry: ``fields`` (``None`` where not recorded: ``may_have_been_sent`` then lists
    the fields the mapping sends), ``fields_recorded``, ``last_sent`` and
    ``consent_withdrawn`` (the last write was the person's withdrawal: unsubscribed).
    """
    latest: dict[str, tuple[str, bool, frozenset[str] | None]] = {}
    for system, at, withdrawn, paths in delivered:
        if system not in latest or at >= latest[system][0]:
            latest[system] = (at, withdrawn, paths)
    found: dict[str, dict[str, Any]] = {}
    for system, (at, withdrawn, paths) in sorted(latest.items()):
        mapping = mappings.get(system)
        entry: dict[str, Any] = {}
        if paths is None:
            sends = [f.canonical for f in mapping.sent_fields()] if mapping is not None else []
            entry |= {"fields": None, "fields_recorded": False}
            entry["may_have_been_sent"] = _in_vocabulary_order(sends)
        else:
            canonical: dict[str, str] = {}
            if mapping is not None:
                canonical = {f.path: name for name, f in mapping.fields.items()}
                canonical |= {f.path: f.canonical for f in mapping.sent_fields()}
            names = [canonical.get(path, path) for path in paths]
            entry |= {"fields": _in_vocabulary_order(names), "fields_recorded": True}
        entry |= {"last_sent": at, "consent_withdrawn": withdrawn}
        found[system] = entry
    return found


def _in_vocabulary_order(names: Iterable[str]) -> list[str]:
    """``names`` once each: canonical ones in the vocabulary's order, then the rest sorted."""
    unique = set(names)
    known = [name for name in CANONICAL_FIELDS if name in unique]
    return known + sorted(unique - set(known))


def write_bundle(
    out_dir: Path,
    *,
    request_id: str,
    subject_id: str,
    generated_at: str,
    systems: Mapping[str, tuple[str, Sequence[Mapping[str, Any]]]],
    connector: Mapping[str, Any],
    facts: Art15Facts,
    exempt: Mapping[str, str] | None = None,
    sent: Mapping[str, Mapping[str, Any]] | None = None,
    labels: Mapping[str, SystemLabels] | None = None,
) -> list[Path]:
    """Write ``data.json`` and the four reports into ``out_dir``; return the paths.

    Args:
        systems: system name -> (adapter kind, the records it holds for the subject).
        connector: what the connector itself keeps (ids, timestamps, statuses, and the
            person's data it holds sealed, opened: ``sealed_data``).
        exempt: system name -> the reason it was exempted from the request and not read
            (``dsr exempt``; redacted when stored). The person is told it (Art. 12(4)): the
            copy must not pass for complete while a recipient was left out.
        sent: per system, which of the person's fields klantsync last sent it, and when
            (:func:`sent_by_klantsync`).
        labels: per system, what its records are and its fields hold in plain words
            (:func:`connector.access_labels.labels_for`), for the reports alone; a system
            without is shown with the vendor's keys.
    """
    exempt = dict(exempt or {})
    sent = dict(sent or {})
    labels = dict(labels or {})
    out_dir.mkdir(parents=True, exist_ok=True)
    # The folder is closed to others when it is the bundle's own; one that holds other
    # things (an operator's `--out .`) keeps its mode: the files themselves are 0600.
    if all(entry.name in BUNDLE_FILES for entry in out_dir.iterdir()):
        os.chmod(out_dir, 0o700)
    data = {
        "format": "klantsync-access/1",
        "request_id": request_id,
        "subject_id": subject_id,
        "generated_at": generated_at,
        "systems": {
            name: {"adapter": kind, "records": list(records)}
            for name, (kind, records) in systems.items()
        },
        **(
            {"exempt_systems": [{"system": n, "reason": r} for n, r in exempt.items()]}
            if exempt
            else {}
        ),
        SENT: sent,
        "connector": dict(connector),
        "art15": facts.as_dict(),
    }
    texts = {"data.json": json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"}
    head = {"request_id": request_id, "subject_id": subject_id, "generated_at": generated_at}
    for lang in LANGS:
        texts[f"report.{lang}.md"] = _markdown(
            lang, head, systems, exempt, connector, facts, sent, labels
        )
        texts[f"report.{lang}.html"] = _html(
            lang, head, systems, exempt, connector, facts, sent, labels
        )
    written = []
    for name in BUNDLE_FILES:
        path = out_dir / name
        # Personal data in clear: 0600 from the start, and a file or a symlink already at
        # the name is replaced, not written into (it kept its mode, or led elsewhere).
        write_private(path, texts[name].encode("utf-8"))
        written.append(path)
    return written


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
#: ``notesNotRead``, ``dealsNotRead`` and ``activitiesNotRead``), by code.
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
        "activitiesNotRead.reason",
    }
)


def _recipients_of(sub_processors: Sequence[str], onward: Sequence[Any]) -> list[str]:
    """Who a processor passes the data on to: its sub-processors, then each recipient of an
    onward transfer that none of them already names (Art. 15(1)(c)). A recipient named in
    ``onward_transfers`` alone was told of in the transfers section only, as if it were no
    recipient; one listed as "HubSpot, Inc. (US)" is not repeated for "HubSpot, Inc."
    (:func:`_same_recipient`)."""
    named = [str(s) for s in sub_processors]
    for row in onward:
        recipient = str(getattr(row, "recipient", "") or "").strip()
        if recipient and not any(_same_recipient(recipient, n) for n in named):
            named.append(recipient)
    return named


#: One parenthesised note at the end of a name, such as the country in "HubSpot, Inc. (US)".
_TRAILING_NOTE = re.compile(r"\s*\([^()]*\)$")


def _same_recipient(one: str, other: str) -> bool:
    """Whether two names given for a recipient name the same company: equal once casefolded,
    their whitespace collapsed and one trailing parenthesised note (a country) dropped.

    Equality, not a shared beginning: "Google" is not "Google Cloud EMEA Ltd (IE)", another
    company, and a recipient taken for one already named is one the person is never told of
    (Art. 15(1)(c)); a repeated one costs a line. The note goes because sub-processor lists
    tag names with their country ("HubSpot, Inc. (US)") where ``onward_transfers`` gives the
    country a field of its own ("HubSpot, Inc.").
    """

    def key(name: str) -> str:
        return _TRAILING_NOTE.sub("", " ".join(name.split())).casefold()

    return key(one) == key(other)


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
