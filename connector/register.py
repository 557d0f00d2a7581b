"""The Art. 30 processing register (verwerkingsregister), built from the configuration that runs.

:func:`build_register` turns a loaded :class:`~connector.config.Config` into one JSON-ready
structure: the controller's record (Art. 30(1)) and the agency's record as processor
(Art. 30(2)). The categories of personal data come from the mappings' allow-lists, so a field
added to a mapping appears in the register with no other change; the security measures come
from the settings actually in force. :mod:`connector.register_render` renders the structure as
Markdown or printable HTML; ``--format json`` prints it as is.

Every label is given in the requested language (``nl`` or ``en``). Free text from the config
(purposes, retention, names) is shown as written.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from connector.audit import config_digest
from connector.compliance import (
    EEA_COUNTRIES,
    in_eea,
    processor_recipients,
    third_country_transfers,
    transfer,
)
from connector.config import Config, adapter_capabilities, adapter_copy_categories
from connector.listen import listener_is_loopback
from connector.model import CANONICAL_FIELDS, CATEGORIES
from connector.settings import USER_ASSIGNED_COUNTRIES

__all__ = [
    "KEPT_UNTIL",
    "LANGS",
    "OWN_DATA",
    "build_register",
    "country_name",
    "rests_on_consent",
    "role_label",
    "security_measures",
]

LANGS = ("nl", "en")

_LEGAL_BASIS = {
    "consent": ("Consent (Art. 6(1)(a) GDPR)", "Toestemming (art. 6 lid 1 sub a AVG)"),
    "contract": (
        "Performance of a contract (Art. 6(1)(b) GDPR)",
        "Uitvoering van een overeenkomst (art. 6 lid 1 sub b AVG)",
    ),
    "legal_obligation": (
        "Legal obligation (Art. 6(1)(c) GDPR)",
        "Wettelijke verplichting (art. 6 lid 1 sub c AVG)",
    ),
    "vital_interests": (
        "Vital interests (Art. 6(1)(d) GDPR)",
        "Vitaal belang (art. 6 lid 1 sub d AVG)",
    ),
    "public_task": (
        "Public task (Art. 6(1)(e) GDPR)",
        "Taak van algemeen belang (art. 6 lid 1 sub e AVG)",
    ),
    "legitimate_interests": (
        "Legitimate interests (Art. 6(1)(f) GDPR)",
        "Gerechtvaardigd belang (art. 6 lid 1 sub f AVG)",
    ),
}

_ROLES = {
    "processor": ("Processor", "Verwerker"),
    "sub-processor": ("Sub-processor", "Subverwerker"),
    "controller": ("Independent controller", "Zelfstandig verwerkingsverantwoordelijke"),
    "joint-controller": ("Joint controller", "Gezamenlijk verwerkingsverantwoordelijke"),
}

#: What the connector keeps for a ``[retention]`` period: each setting's label (en, nl).
#: The register and the person's access report (connector/access.py) both read this one list.
OWN_DATA = {
    # The sweep deletes both on this one period (retention.PURGED_KINDS): a held write is a
    # person's sealed payload as much as a dead letter is.
    "dead_letters_days": (
        "Records a system refused (dead letters), and writes held from a customer's former "
        "address (kept so an erasure finds what a system may hold under it)",
        "Geweigerde records (dead letters), en vastgehouden schrijfopdrachten van een eerder "
        "adres van een klant (bewaard zodat wissen vindt wat een systeem daaronder kan hebben)",
    ),
    "manifests_days": (
        "Manifests of completed data subject requests",
        "Manifesten van afgehandelde verzoeken van betrokkenen",
    ),
    "access_bundles_days": (
        "Access bundles written (Art. 15)",
        "Geschreven inzagepakketten (art. 15)",
    ),
    "audit_days": ("Audit log", "Auditlogboek"),
    "jobs_days": ("Finished background jobs", "Afgeronde achtergrondtaken"),
    # The sweep deletes both on this one period (retention.PURGED_KINDS).
    "webhook_ids_days": (
        "Webhook delivery ids (replay check), and keyed hashes of the system ids of records "
        "an erasure deleted (to know a system's report of that deletion)",
        "Id's van webhookleveringen (controle op herhaling), en sleutel-hashes van de "
        "systeem-id's van records die bij wissen zijn verwijderd (om de melding van een "
        "systeem over die verwijdering te herkennen)",
    ),
    "runs_days": ("Run history of the flows", "Uitvoeringsgeschiedenis van de koppelingen"),
    "replaced_stores_days": (
        "A store replaced by a restore from backup",
        "Een door het terugzetten van een back-up vervangen opslag",
    ),
}


#: What the connector keeps with no period in days: the retention sweep
#: (connector/retention.py) deletes none of it. An erasure deletes the person's identity map
#: rows and opt-outs (``DsrStore.delete_traces``); a readmission their suppression entries.
#: Each: its label, until when it is kept, and why.
KEPT_UNTIL: dict[str, tuple[tuple[str, str], tuple[str, str], tuple[str, str]]] = {
    "identity_map": (
        (
            "Identity map: each person's pseudonym and those of their former addresses, their "
            "ids in each system, and keyed hashes of what each system was last sent",
            "Identiteitenkoppeling: het pseudoniem van elke persoon en die van hun eerdere "
            "adressen, hun id's in elk systeem, en sleutel-hashes van wat elk systeem het "
            "laatst ontving",
        ),
        ("Until the person's erasure", "Tot het wissen van de betrokkene"),
        (
            "It is how a person is updated in each system rather than added again, and how "
            "their requests reach every system; someone who stops being a customer without "
            "asking to be erased stays in it.",
            "Daarmee wordt een persoon in elk systeem bijgewerkt in plaats van opnieuw "
            "toegevoegd, en bereiken hun verzoeken elk systeem; wie geen klant meer is en niet "
            "om wissen vraagt, blijft erin staan.",
        ),
    ),
    "opt_outs": (
        (
            "Unsubscribes at a system itself (opt-outs, by pseudonym), and when the person "
            "last unsubscribed or subscribed there",
            "Afmeldingen bij een systeem zelf (onder pseudoniem), en wanneer de betrokkene "
            "zich daar het laatst af- of aanmeldde",
        ),
        (
            "Until the person subscribes there again, or is erased (when they last did either: "
            "until the erasure)",
            "Tot de betrokkene zich daar opnieuw aanmeldt, of wordt gewist (wanneer die zich "
            "het laatst af- of aanmeldde: tot het wissen)",
        ),
        (
            "A later sync must not subscribe them again, and a late delivery of an older "
            "choice of theirs must not undo a newer one.",
            "Een latere synchronisatie mag hen niet opnieuw aanmelden, en een late levering "
            "van een eerdere keuze mag een nieuwere niet ongedaan maken.",
        ),
    ),
    "suppression": (
        (
            "Suppression list: pseudonyms of erased people's e-mail addresses and phone numbers",
            "Blokkadelijst: pseudoniemen van e-mailadressen en telefoonnummers van gewiste "
            "personen",
        ),
        (
            "As long as the erasure must hold: until the person is readmitted (dsr readmit)",
            "Zolang het wissen moet gelden: tot de betrokkene weer wordt toegelaten (dsr readmit)",
        ),
        (
            "Without it a later sync, or a system's backup restored, would bring them back.",
            "Zonder deze lijst zou een latere synchronisatie, of een teruggezette back-up van "
            "een systeem, hen terugbrengen.",
        ),
    ),
    "requests": (
        (
            "Records of data subject requests: kind, dates, each system's outcome and the "
            "signed receipt, the person by pseudonym",
            "Registratie van verzoeken van betrokkenen: soort, data, uitkomst per systeem en "
            "het ondertekende ontvangstbewijs, de betrokkene onder pseudoniem",
        ),
        (
            "No set period: not deleted automatically",
            "Geen vaste termijn: niet automatisch verwijderd",
        ),
        (
            "They are the record that each request was handled (Art. 5(2) GDPR); the "
            "request's manifest, which holds the person's address, is deleted on its own "
            "period.",
            "Ze zijn het bewijs dat elk verzoek is afgehandeld (art. 5 lid 2 AVG); het "
            "manifest van het verzoek, met het adres van de betrokkene, wordt na zijn eigen "
            "termijn verwijderd.",
        ),
    ),
    "incidents": (
        (
            "Records of personal data breaches (klantsync incident): their summary and "
            "closing note, when each was found, the systems concerned and how many people "
            "each held then",
            "Registratie van inbreuken in verband met persoonsgegevens (klantsync incident): "
            "de samenvatting en afsluitende notitie, wanneer elke inbreuk ontdekt werd, de "
            "betrokken systemen en hoeveel personen elk toen bevatte",
        ),
        (
            "No set period: not deleted automatically",
            "Geen vaste termijn: niet automatisch verwijderd",
        ),
        (
            "The controller documents every breach, its effects and what was done about it "
            "(Art. 33(5) GDPR); e-mail addresses and phone numbers in their text are masked.",
            "De verwerkingsverantwoordelijke documenteert elke inbreuk, de gevolgen ervan en "
            "de genomen maatregelen (art. 33 lid 5 AVG); e-mailadressen en telefoonnummers in "
            "de tekst zijn gemaskeerd.",
        ),
    ),
}


def _pick(pair: tuple[str, str], lang: str) -> str:
    return pair[1] if lang == "nl" else pair[0]


#: Countries whose name takes an article in a sentence ("processes your data in the United
#: States", "in het Verenigd Koninkrijk"): English, then Dutch. Names from pycountry and its
#: Dutch translation; any other country is named bare, as both languages name it (and so are
#: the names ISO gives inverted, "Virgin Islands, British").
_ARTICLES: dict[str, tuple[str, str]] = {
    "US": ("the", "de"),
    "GB": ("the", "het"),
    "AE": ("the", "de"),
    "PH": ("the", "de"),
    "BS": ("the", "de"),
    "KY": ("the", "de"),
    "MV": ("the", "de"),
    "SC": ("the", "de"),
    "MH": ("the", "de"),
    "SB": ("the", "de"),
    "DO": ("the", "de"),
    "CF": ("the", "de"),
    "KM": ("the", "de"),
    "GM": ("the", ""),
    "TC": ("the", "de"),
}


def country_in_text(code: str, lang: str) -> str:
    """The country's name as a sentence gives it after "in": with its article where the
    language puts one ("the United States", "de Verenigde Staten")."""
    name = country_name(code, lang)
    article = _pick(_ARTICLES.get(code.strip().upper(), ("", "")), lang)
    return f"{article} {name}" if article and name != code.strip().upper() else name


def country_name(code: str, lang: str) -> str:
    """The country's name in ``lang``; the code itself when unknown."""
    code = code.strip().upper()
    if code in EEA_COUNTRIES:
        return _pick(EEA_COUNTRIES[code], lang)
    if code in USER_ASSIGNED_COUNTRIES:
        return _pick(USER_ASSIGNED_COUNTRIES[code], lang)
    import pycountry

    found = pycountry.countries.get(alpha_2=code)
    if found is None:
        return code
    name = str(found.name)
    if lang == "nl":
        import gettext

        try:
            translation = gettext.translation("iso3166-1", pycountry.LOCALES_DIR, languages=["nl"])
            name = translation.gettext(name)
        except OSError:  # locale files missing in a trimmed install: English is still right
            pass
    return name


def role_label(role: str, lang: str) -> str:
    """What a system's processor record calls its holder (``role``), in ``lang``."""
    return _pick(_ROLES[role], lang)


def build_register(
    config: Config, lang: str = "nl", generated_at: dt.datetime | None = None
) -> dict[str, Any]:
    """The processing register of ``config`` as a JSON-ready dict, labelled in ``lang``.

    Raises:
        ValueError: ``lang`` is not ``nl`` or ``en``.
    """
    if lang not in LANGS:
        raise ValueError(f"language must be one of {LANGS}")
    when = generated_at or dt.datetime.now(dt.UTC)
    controller = config.controller
    record: dict[str, Any] = {
        "schema": "klantsync.register/1",
        "lang": lang,
        "generated_at": when.isoformat(timespec="seconds"),
        "config_sha256": config_digest(config)["sha256"],
        "controller": controller.model_dump() if controller is not None else None,
        # Art. 30(1)(a): a joint controller's name and contact details beside the controller's.
        "joint_controllers": [
            {
                "system": name,
                "legal_name": settings.processor.legal_name,
                "contact": settings.processor.contact,
            }
            for name, settings in config.systems.items()
            if settings.processor is not None and settings.processor.role == "joint-controller"
        ],
        "processing": [_processing(config, flow, lang) for flow in config.flows],
        "data_subjects": list(config.privacy.data_subjects),
        "personal_data": _personal_data(config, lang),
        "recipients": [_recipient(config, name, lang) for name in config.systems],
        # The agency running the connector handles every record it moves: a recipient too
        # (Art. 4(9), 30(1)(d)), whose own record as processor is processor_record below.
        "operator": _operator(config, lang),
        "transfers": _transfers(config, lang),
        # Systems whose place of processing is not recorded: no transfer can be ruled out.
        "transfers_unknown": _where_unknown(config),
        "retention": {
            "flows": [
                {"flow": f.name, "retention": f.privacy.retention if f.privacy else ""}
                for f in config.flows
            ],
            "connector": [
                *(
                    {
                        "item": key,
                        "label": _pick(label, lang),
                        "days": getattr(config.retention, key),
                    }
                    for key, label in OWN_DATA.items()
                ),
                # Kept until an event, or for good: no [retention] period; listed so the
                # register names everything the connector holds.
                *(
                    {
                        "item": key,
                        "label": _pick(label, lang),
                        "days": None,
                        "until": _pick(until, lang),
                        "why": _pick(why, lang),
                    }
                    for key, (label, until, why) in KEPT_UNTIL.items()
                ),
            ],
        },
        "security": security_measures(config, lang),
    }
    record["processor_record"] = _processor_record(config, record, lang)
    return record


def _processing(config: Config, flow: Any, lang: str) -> dict[str, Any]:
    privacy = flow.privacy
    basis = privacy.legal_basis if privacy else None
    return {
        "flow": flow.name,
        "source": flow.source,
        "destinations": list(flow.destinations),
        "purposes": list(privacy.purposes) if privacy else [],
        # The flow's own basis, which holds for what the consent gate does not decide.
        "legal_basis": basis,
        "legal_basis_label": _pick(_LEGAL_BASIS[basis], lang) if basis else "",
        "legal_bases": _legal_bases(config, flow, basis, lang),
        "retention": privacy.retention if privacy else "",
    }


def _legal_bases(config: Config, flow: Any, basis: str | None, lang: str) -> list[dict[str, Any]]:
    """The basis each destination of ``flow`` is sent data under, grouped by basis.

    A destination whose mapping requires a consent is sent only people who gave it (the
    engine's gate): that disclosure rests on consent (Art. 6(1)(a)), whatever the flow
    states for the rest; a newsletter is no part of performing a contract.
    """
    consents = {d: config.mappings[d].requires_consent for d in flow.destinations}
    by_basis: dict[str | None, list[str]] = {}
    for name in flow.destinations:
        by_basis.setdefault(_grounds(config, name, basis), []).append(name)
    return [
        {
            "legal_basis": grounds,
            "label": _pick(_LEGAL_BASIS[grounds], lang) if grounds else "",
            "destinations": names,
            "consents": {d: consents[d] for d in names if consents[d]},
        }
        for grounds, names in by_basis.items()
    ]


def _grounds(config: Config, destination: str, basis: str | None) -> str | None:
    """The basis ``destination`` is sent data under: consent where its mapping requires
    one (the engine's gate), else the flow's ``basis``."""
    return "consent" if config.mappings[destination].requires_consent else basis


def rests_on_consent(config: Config) -> bool:
    """Whether any processing the config runs rests on consent, as the register states the
    grounds: a flow whose ``legal_basis`` is consent, or a destination sent only people who
    gave one. Where it does, the person must be told they may withdraw it (Art. 7(3),
    13(2)(c), 14(2)(d))."""
    for flow in config.flows:
        # Read as art15_facts reads flows: a flow without privacy or destinations states
        # no grounds, rather than failing the person's access copy.
        basis = getattr(getattr(flow, "privacy", None), "legal_basis", None)
        destinations = getattr(flow, "destinations", None) or []
        if basis == "consent" or any(
            _grounds(config, name, basis) == "consent" for name in destinations
        ):
            return True
    return False


def _grouped(fields: list[Any], lang: str) -> list[dict[str, Any]]:
    """Mapped fields grouped by category, in the vocabulary's category order."""
    groups: list[dict[str, Any]] = []
    for category, names in CATEGORIES.items():
        members = [f for f in fields if CANONICAL_FIELDS[f.canonical].category == category]
        if not members:
            continue
        groups.append(
            {
                "category": category,
                "label": _pick(names, lang),
                "fields": [
                    {
                        "name": f.canonical,
                        "label": _field_label(f.canonical, lang),
                        "purpose": f.purpose,
                    }
                    for f in members
                ],
            }
        )
    return groups


def _field_label(name: str, lang: str) -> str:
    field = CANONICAL_FIELDS[name]
    return field.label_nl if lang == "nl" else field.label_en


def _toml(value: Any) -> str:
    """A marker's value as the mapping file writes it (``true``, not Python's ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _personal_data(config: Config, lang: str) -> dict[str, Any]:
    destinations = [d for f in config.flows for d in f.destinations]
    sources = [f.source for f in config.flows]
    # A system in no flow is sent no sync, but data subject requests reach it (a
    # correction's values, an erasure): it holds what its mapping allows, and is listed so.
    unflowed = [n for n in config.systems if n not in destinations and n not in sources]
    received: list[dict[str, Any]] = []
    for name in dict.fromkeys([*destinations, *unflowed]):
        mapping = config.mappings[name]
        # The allow-list is what the system may receive: the outbound fields, and the
        # e-mail, which every write carries whatever its field's direction says.
        outbound = mapping.sent_fields()
        received.append(
            {
                "system": name,
                "requires_consent": mapping.requires_consent,
                # Whether an unsubscribe at the system itself is heard (and then kept to):
                # only its webhook tells klantsync of one (connector/webhooks.py).
                "opt_outs_heard": _hears_opt_outs(config, name),
                # What someone who withdrew that consent is sent (their e-mail and this):
                # the system learns of the withdrawal, so the register says so.
                "withdrawn": {k: _toml(v) for k, v in mapping.withdrawn.items()},
                "in_no_flow": name in unflowed,
                # A system klantsync never writes to (Shopify) is sent no correction
                # either: in no flow, it receives nothing; only erasures reach it.
                "written": "update" in adapter_capabilities(config.systems[name].adapter),
                "categories": _grouped(outbound, lang),
                "held_beside": _held_beside(config, name, outbound, lang),
            }
        )
    provided = []
    for name in dict.fromkeys(sources):
        inbound = [f for f in config.mappings[name].fields.values() if f.inbound]
        provided.append(
            {
                "system": name,
                "categories": _grouped(inbound, lang),
                "held_beside": _held_beside(config, name, inbound, lang),
            }
        )
    summary = []
    for category, names in CATEGORIES.items():
        systems = [
            r["system"] for r in received if any(g["category"] == category for g in r["categories"])
        ]
        if systems:
            summary.append({"category": category, "label": _pick(names, lang), "systems": systems})
    return {"received": received, "provided": provided, "summary": summary}


def _held_beside(config: Config, name: str, listed: list[Any], lang: str) -> list[dict[str, str]]:
    """The categories a system's own records of a person hold beyond the fields ``listed``
    (a shop's orders and the IP address each was placed from, a CRM's notes, a newsletter's
    activity), in the vocabulary's order.

    klantsync sends none of them, but it reads them into a person's access copy (Art. 15),
    so it processes them too (Art. 30(1)(c)); the access report and the breach notification
    name them, and the register must not list fewer categories than those do.
    """
    shown = {CANONICAL_FIELDS[f.canonical].category for f in listed}
    held = adapter_copy_categories(config.systems[name].adapter) - shown
    return [
        {"category": category, "label": _pick(names, lang)}
        for category, names in CATEGORIES.items()
        if category in held
    ]


def _hears_opt_outs(config: Config, name: str) -> bool:
    """Whether ``name``'s webhooks are set up, the one way an unsubscribe made at the system
    itself reaches klantsync; without them the consent the source records decides alone."""
    settings = config.systems[name]
    return settings.webhooks is not None and "webhooks" in adapter_capabilities(settings.adapter)


def _recipient(config: Config, name: str, lang: str) -> dict[str, Any]:
    settings = config.systems[name]
    roles = []
    if any(f.source == name for f in config.flows):
        roles.append("source")
    if any(name in f.destinations for f in config.flows):
        roles.append("destination")
    processor = settings.processor
    entry: dict[str, Any] = {"system": name, "adapter": settings.adapter, "flows": roles}
    if processor is None:
        entry["processor"] = None
        return entry
    known = "country" in processor.model_fields_set
    entry["processor"] = {
        "legal_name": processor.legal_name,
        "role": processor.role,
        "role_label": role_label(processor.role, lang),
        "agreement_reference": processor.agreement_reference,
        "agreement_signed": _date(processor.agreement_signed),
        "agreement_review": _date(processor.agreement_review),
        "country": processor.country.upper() if known else None,
        "country_name": country_name(processor.country, lang) if known else None,
        "in_eea": in_eea(processor.country) if known else None,
        "transfer_mechanism": processor.transfer_mechanism,
        # Those recorded in onward_transfers alone included: they receive the data too.
        "sub_processors": processor_recipients(processor),
        "onward_transfers": [o.model_dump() for o in processor.onward_transfers],
        "security": processor.security,
        "contact": processor.contact,
    }
    return entry


def _operator(config: Config, lang: str) -> dict[str, Any] | None:
    """The agency that runs the connector ([privacy] agency) as a recipient, or None when
    none is recorded (the controller may run it itself)."""
    privacy = config.privacy
    if not privacy.agency:
        return None
    return {
        "legal_name": privacy.agency,
        "contact": privacy.agency_contact,
        "role": "processor",
        "role_label": _pick(_ROLES["processor"], lang),
    }


def _date(value: dt.date | None) -> str | None:
    return value.isoformat() if value is not None else None


def _where_unknown(config: Config) -> list[str]:
    """Systems with no processor recorded, or one whose ``country`` was left out (the
    model's default, NL, is no statement of where the data is)."""
    return [
        name
        for name, settings in config.systems.items()
        if transfer(settings.processor) == "unknown"
    ]


def _transfers(config: Config, lang: str) -> list[dict[str, Any]]:
    """Each transfer to a third country (Art. 30(1)(e)): the one to a processor outside
    the EEA, and each its sub-processors make (``onward_transfers``), named by country.

    Systems with no processor, or none recorded where, are listed as unknown instead
    (:func:`_where_unknown`).
    """
    out = []
    for name, settings in config.systems.items():
        processor = settings.processor
        if processor is None:
            continue  # listed as unknown
        for row in third_country_transfers(processor):
            out.append(
                {
                    "system": name,
                    "onward": row.onward,
                    "processor": processor.legal_name,
                    "country": row.country,
                    "country_name": country_name(row.country, lang),
                    "mechanism": row.mechanism,
                    "recipient": row.recipient,
                    # False: the processor passes the data on, to countries not recorded;
                    # ``country`` is then its own.
                    "country_named": row.named,
                }
            )
    return out


def security_measures(
    config: Config, lang: str, *, periods_above: bool = True
) -> list[dict[str, str]]:
    """The technical measures in force, derived from the settings that run, as ``code``/``text``.

    Each text states what this connector does with *this* configuration; nothing is listed
    that a setting could have turned off without the register saying so.

    ``periods_above``: the text they go in states the connector's retention periods before
    them (the register does); where it does not (the breach notification draft), the
    retention measure states them itself.
    """
    nl = lang == "nl"
    out: list[tuple[str, str]] = []
    plain = [
        name
        for name, s in config.systems.items()
        if urlsplit(s.base_url).scheme.lower() == "http"  # as the config reads it: HTTP:// too
    ]
    if plain:
        # Allowed only to this machine, with the development switch on: the register must
        # not claim encryption for what travels unencrypted.
        names = ", ".join(plain)
        out.append(
            (
                "tls",
                "Verbindingen met de systemen gebruiken TLS 1.2 of hoger met gecontroleerde "
                f"certificaten, BEHALVE met {names}: dat gaat onversleuteld (http://) naar deze "
                "machine."
                if nl
                else "Connections to the systems use TLS 1.2 or higher with verified "
                f"certificates, EXCEPT to {names}: that travels unencrypted (http://) to this "
                "machine.",
            )
        )
    else:
        out.append(
            (
                "tls",
                "Alle verbindingen met de systemen gebruiken TLS 1.2 of hoger; certificaten "
                "worden altijd gecontroleerd (verificatie kan niet worden uitgeschakeld)."
                if nl
                else "Every connection to the systems uses TLS 1.2 or higher; certificates are "
                "always verified (verification cannot be switched off).",
            )
        )
    if config.development.allow_insecure_loopback:
        out.append(
            (
                "insecure-loopback",
                "LET OP: de ontwikkelschakelaar staat aan; onversleuteld http:// naar deze "
                "machine is toegestaan. In productie moet deze uit staan."
                if nl
                else "WARNING: the development switch is on; unencrypted http:// to this machine "
                "is allowed. It must be off in production.",
            )
        )
    private_ca = [
        name
        for name, s in config.systems.items()
        if s.ca_bundle is not None and name not in plain  # no certificate over http://
    ]
    if private_ca:
        names = ", ".join(private_ca)
        out.append(
            (
                "private-ca",
                f"Certificaten van {names} worden gecontroleerd tegen een eigen "
                "certificaatautoriteit (ca_bundle)."
                if nl
                else f"Certificates of {names} are verified against a private certificate "
                "authority (ca_bundle).",
            )
        )
    out.append(
        (
            "encryption",
            "Gegevens die wachten op aflevering, geweigerde records en manifesten van verzoeken "
            "worden versleuteld opgeslagen (AES-256-GCM) met een sleutel die in de opslag alleen "
            "versleuteld met een hoofdsleutel buiten de configuratie staat (vervangbaar); wat "
            "wacht wordt na aflevering verwijderd, de rest na zijn bewaartermijn."
            if nl
            else "Records waiting for delivery, refused records and request manifests are "
            "encrypted at rest (AES-256-GCM) under a key the store holds only wrapped by a "
            "master key kept outside the configuration (replaceable); what waits is deleted "
            "once delivered, the rest when its retention period ends.",
        )
    )
    days = config.retention.access_bundles_days
    out.append(
        (
            "pseudonymisation",
            "De connector kent betrokkenen alleen onder een pseudoniem (HMAC-SHA256 met geheime "
            "sleutel over het e-mailadres) en bewaart geen leesbare kopie van klantgegevens, "
            "behalve de inzagebundels (art. 15) die hij op verzoek schrijft: die worden na "
            f"{days} dagen verwijderd."
            if nl
            else "The connector knows data subjects only by a pseudonym (keyed HMAC-SHA256 of "
            "the e-mail address) and keeps no readable copy of customer data, except the "
            f"access bundles (Art. 15) it writes on request: they are deleted after {days} "
            "days.",
        )
    )
    out.append(
        (
            "audit-log",
            "Elke doorgifte, elk verzoek van een betrokkene en elke configuratiewijziging wordt "
            "vastgelegd in een hash-geketend auditlogboek dat elke wijziging zichtbaar maakt; "
            "het bevat aantallen, veldnamen en betrokkenen alleen onder hun pseudoniem (nog "
            "steeds persoonsgegevens, art. 4 lid 5 AVG), nooit namen, adressen of andere "
            "gegevens leesbaar."
            if nl
            else "Every transfer, data subject request and configuration change is recorded in "
            "a hash-chained audit log that reveals any alteration; it holds counts, field "
            "names and data subjects only by their pseudonym (still personal data, Art. 4(5) "
            "GDPR), never a name, an address or other data in clear.",
        )
    )
    out.append(("admin-api", _admin_text(config, nl)))
    destinations = dict.fromkeys(d for f in config.flows for d in f.destinations)
    counts = ", ".join(f"{d}: {len(config.mappings[d].sent_fields())}" for d in destinations)
    out.append(
        (
            "minimisation",
            "Dataminimalisatie: elk systeem ontvangt alleen de velden die in zijn mapping staan "
            f"(allow-list; aantal velden per systeem: {counts}); andere velden worden nooit "
            "doorgestuurd."
            if nl
            else "Data minimisation: each system receives only the fields named in its mapping "
            f"(allow-list; fields per system: {counts}); no other field is ever sent.",
        )
    )
    out.append(("accuracy", _accuracy_text(config, destinations, nl)))
    for name, mapping in config.mappings.items():
        if mapping.requires_consent:
            out.append(
                (
                    f"consent-gate:{name}",
                    f"{name} ontvangt alleen personen met toestemming voor "
                    f"{mapping.requires_consent}."
                    if nl
                    else f"{name} receives only people who consented to "
                    f"{mapping.requires_consent}.",
                )
            )
    out.append(
        (
            "suppression",
            "Verwijderverzoeken worden naar elk systeem gebracht; elk systeem verwijdert zoals "
            "het kan (direct, later door de leverancier, of eerst gemarkeerd en na een termijn "
            "gewist), en het ondertekende ontvangstbewijs zegt per systeem welke en of het "
            "terug te halen is; een verwijderde persoon komt op een blokkadelijst "
            "(gepseudonimiseerd), zodat een latere synchronisatie hem nooit opnieuw aanmaakt."
            if nl
            else "Erasure requests are carried to every system; each deletes as it can (at once, "
            "later by the vendor, or marked deleted and purged after a period), and the signed "
            "receipt says which for each system and whether it can be restored; an erased "
            "person is put on a (pseudonymous) suppression list, so a later sync never "
            "re-creates them.",
        )
    )
    out.append(("retention", _retention_measure(config, lang, periods_above)))
    return [{"code": code, "text": text} for code, text in out]


def _retention_measure(config: Config, lang: str, periods_above: bool) -> str:
    """The retention measure: pointing at the periods the register states before it, or,
    where nothing states them, naming them (from ``[retention]``, as the register does).

    Only what has a period in days is deleted by the sweep; what is kept until an erasure
    or a readmission, or for good (:data:`KEPT_UNTIL`), is said to be, not to expire.
    """
    nl = lang == "nl"
    if periods_above:
        return (
            "De connector verwijdert zijn eigen gegevens met een termijn in dagen hierboven "
            "automatisch zodra die termijn verstreken is; de rest bewaart hij zoals hierboven "
            "staat (tot het wissen of het weer toelaten van de betrokkene; verzoeken blijven "
            "geregistreerd)."
            if nl
            else "The connector deletes its own data with a period in days above automatically "
            "once that period has passed; the rest it keeps as stated above (until the "
            "person's erasure or readmission; the records of requests stay)."
        )
    unit = "dagen" if nl else "days"
    periods = "; ".join(
        f"{_pick(label, lang)}: {getattr(config.retention, key)} {unit}"
        for key, label in OWN_DATA.items()
    )
    kept = "; ".join(
        f"{_pick(label, lang)}: {_pick(until, lang).lower()}"
        for label, until, _why in KEPT_UNTIL.values()
    )
    return (
        f"De connector verwijdert zijn eigen gegevens automatisch na deze bewaartermijnen: "
        f"{periods}. Zonder termijn in dagen bewaart hij: {kept}."
        if nl
        else f"The connector deletes its own data automatically after these retention periods: "
        f"{periods}. It keeps with no period in days: {kept}."
    )


def _accuracy_text(config: Config, destinations: Iterable[str], nl: bool) -> str:
    """Art. 5(1)(d): what a value the source no longer holds becomes at the systems
    (connector/emptying.py), naming the fields a mapping keeps instead."""
    kept = [
        f"{name}.{spec.path}"
        for name in destinations
        for spec in config.mappings[name].sent_fields()
        if spec.keep_when_emptied
    ]
    if nl:
        text = (
            "Juistheid: een veld dat de bron leeg maakt, wordt leeggemaakt in elk systeem "
            "waar de koppeling het eerder schreef; correcties (art. 16) kunnen een veld ook "
            "leegmaken."
        )
        return text + (f" Behouden door hun mapping: {', '.join(kept)}." if kept else "")
    text = (
        "Accuracy: a field the source empties is emptied in each system the flow wrote it "
        "to; corrections (Art. 16) can empty a field too."
    )
    return text + (f" Kept by their mappings: {', '.join(kept)}." if kept else "")


def _admin_text(config: Config, nl: bool) -> str:
    daemon = config.daemon
    local = listener_is_loopback(daemon.admin_listen)
    if daemon.admin_token is None:
        # Said as what it means: the API is off (connector/admin.py refuses every call), not
        # open without a token, as "no token" alone reads in a list of security measures.
        return (
            "Er is geen toegangstoken voor de beheer-API ingesteld: de beheer-API staat uit "
            "en weigert elke aanroep."
            if nl
            else "No admin API token is configured: the admin API is off and refuses every call."
        )
    where = daemon.admin_listen
    if nl:
        scope = " (alleen bereikbaar vanaf deze machine)" if local else ""
        return (
            f"De beheer-API vereist een toegangstoken (bearer token) en luistert op {where}{scope}."
        )
    scope = " (reachable from this machine only)" if local else ""
    return f"The admin API requires a bearer token and listens on {where}{scope}."


def _processor_record(config: Config, record: dict[str, Any], lang: str) -> dict[str, Any] | None:
    """Art. 30(2): what the agency, as the connector's operator, records as processor."""
    privacy = config.privacy
    if not privacy.agency:
        return None
    nl = lang == "nl"
    activities = []
    for flow in config.flows:
        dests = ", ".join(flow.destinations)
        activities.append(
            f"Synchronisatie van klantgegevens van {flow.source} naar {dests} ({flow.name})"
            if nl
            else f"Synchronising customer data from {flow.source} to {dests} ({flow.name})"
        )
    activities.append(
        "Uitvoeren van verzoeken van betrokkenen (inzage, verwijdering, rectificatie) bij alle "
        "gekoppelde systemen"
        if nl
        else "Carrying out data subject requests (access, erasure, rectification) at every "
        "connected system"
    )
    controller = config.controller
    return {
        "processor": privacy.agency,
        "contact": privacy.agency_contact,
        "controller": controller.name if controller else None,
        "controller_contact": (controller.email or controller.contact) if controller else None,
        # Art. 30(2)(a): the controller's data protection officer too, where there is one,
        # and the representatives (Art. 27) and the processor's own officer, where there are.
        "controller_dpo": (controller.dpo or None) if controller else None,
        "controller_representative": (controller.representative or None) if controller else None,
        "dpo": privacy.agency_dpo or None,
        "representative": privacy.agency_representative or None,
        "activities": activities,
        "transfers": record["transfers"],
        "transfers_unknown": record["transfers_unknown"],
        "security": record["security"],
    }
