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

The reports' words and layout are in :mod:`connector.access_render`; this module holds the
facts they state and writes the files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from connector.access_labels import SystemLabels
from connector.access_render import AUDIT_TRAIL, _html, _markdown
from connector.access_render import _rows as _rows
from connector.access_render import _sections as _sections
from connector.compliance import processor_recipients, third_country_transfers, transfer
from connector.config import Config, adapter_copy_categories
from connector.model import CANONICAL_FIELDS, CATEGORIES
from connector.privatefile import write_private
from connector.register import KEPT_UNTIL, OWN_DATA, rests_on_consent

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

#: Where data.json lists, per system, which of the person's fields klantsync last sent it
#: (:func:`sent_by_klantsync`); the reports give it a section of their own.
SENT = "sent_by_klantsync"

LANGS = ("nl", "en")


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
            named = processor_recipients(processor)
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
