"""The breach clock: personal-data incidents and the 72-hour notification (GDPR Art. 33).

``klantsync incident open`` records when the controller became aware of a breach, starts the
72-hour clock and writes a notification draft for the Autoriteit Persoonsgegevens, pre-filled
from the config (controller, processors, categories of data) and the store (how many data
subjects the connector knows in each system). The counts are a snapshot taken at opening, so
the draft does not shift while it is being completed.

The summary and the closing note are the operator's own words; they are not customer data
and must not hold any (the CLI help says so). E-mail addresses and phone numbers in them are
masked before they are stored, as in every other free text an operator gives: the store, and
every backup of it, holds no contact detail in clear. Nothing else is masked: a breach is
often about a key, a token or a password, and those words must stay.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from typing import Any

from connector import audit
from connector.config import Config, adapter_copy_categories
from connector.logs import mask_contact_details
from connector.model import CANONICAL_FIELDS, CATEGORIES
from connector.register_render import local_time
from connector.settings import ProcessorSettings
from connector.state import Store

__all__ = [
    "NOTIFY_WITHIN",
    "Incident",
    "close_incident",
    "get_incident",
    "list_incidents",
    "notification_draft",
    "open_incident",
    "open_summary",
    "time_left_text",
    "utc_now",
]

#: Art. 33(1): notify "without undue delay and, where feasible, not later than 72 hours".
NOTIFY_WITHIN = dt.timedelta(hours=72)


def utc_now() -> dt.datetime:
    """Now, UTC; a module function so tests can replace the clock."""
    return dt.datetime.now(dt.UTC)


def _stamp(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Incident:
    """One recorded incident.

    Attributes:
        id: its number.
        summary: the operator's description (no personal data; e-mail addresses and
            phone numbers masked).
        aware_at: when the controller became aware (the clock starts here).
        opened_at: when it was recorded.
        deadline: ``aware_at`` + 72 hours.
        systems: the systems involved.
        scope: per system, the categories of data it holds and the subjects the connector
            knows there; ``total`` is the number of distinct subjects over those systems.
        closed_at: when it was closed, if it is.
        close_note: the operator's closing note.
    """

    id: int
    summary: str
    aware_at: str
    opened_at: str
    deadline: str
    systems: list[str]
    scope: dict[str, Any]
    closed_at: str | None = None
    close_note: str | None = None

    def seconds_left(self, now: dt.datetime) -> float:
        """Seconds until the deadline (negative when overdue)."""
        return (dt.datetime.fromisoformat(self.deadline) - now).total_seconds()

    def status(self, now: dt.datetime) -> str:
        """``closed``, ``overdue`` or ``open``."""
        if self.closed_at:
            return "closed"
        return "overdue" if self.seconds_left(now) < 0 else "open"

    def as_dict(self, now: dt.datetime) -> dict[str, Any]:
        """JSON-ready, with the status and time left as of ``now``."""
        out = asdict(self)
        out["status"] = self.status(now)
        out["seconds_left"] = None if self.closed_at else int(self.seconds_left(now))
        return out


def time_left_text(incident: Incident, now: dt.datetime) -> str:
    """``"41h 12m left"``, ``"overdue by 3h 05m"`` or ``"closed"``."""
    if incident.closed_at:
        return "closed"
    seconds = int(incident.seconds_left(now))
    hours, rest = divmod(abs(seconds), 3600)
    text = f"{hours}h {rest // 60:02d}m"
    return f"{text} left" if seconds >= 0 else f"overdue by {text}"


def _scope(store: Store, config: Config, systems: list[str]) -> dict[str, Any]:
    per_system: dict[str, Any] = {}
    for name in systems:
        mapping = config.mappings[name]
        # What the system holds beyond its mapped fields (a shop's orders and the IP address
        # each was placed from, a CRM's notes) was breached too: the access report names it
        # (Art. 15(1)(b)), and the notification must (Art. 33(3)(a)).
        held = {CANONICAL_FIELDS[f].category for f in mapping.fields}
        held |= adapter_copy_categories(config.systems[name].adapter)
        categories = [c for c in CATEGORIES if c in held]
        subjects = store.db.execute(
            "SELECT COUNT(*) FROM identities WHERE system=?", (name,)
        ).fetchone()[0]
        per_system[name] = {
            "categories": categories,
            "fields": list(mapping.fields),
            "subjects": int(subjects),
        }
    marks = ",".join("?" * len(systems))
    total = store.db.execute(
        f"SELECT COUNT(DISTINCT subject_no) FROM identities WHERE system IN ({marks})",  # noqa: S608
        tuple(systems),
    ).fetchone()[0]
    return {"systems": per_system, "total": int(total)}


def _refuse_undecoded(text: str, what: str) -> None:
    """Refuse ``text`` if it holds bytes that were never decoded as text.

    A terminal set to another encoding than the machine's (Latin-1 beside UTF-8) hands over
    an "ë" as a byte Python keeps as a lone surrogate, which no column of the store takes:
    the codec's own words ("surrogates not allowed") told the operator nothing to act on.

    Raises:
        ValueError: ``text`` cannot be written as UTF-8.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(
            f"{what} is not UTF-8 text: set the terminal's encoding to UTF-8 (it sent "
            "another, such as Latin-1) and type it again"
        ) from None


def _row(row: tuple[Any, ...]) -> Incident:
    return Incident(
        id=int(row[0]),
        summary=row[1],
        aware_at=row[2],
        opened_at=row[3],
        deadline=row[4],
        systems=json.loads(row[5]),
        scope=json.loads(row[6]),
        closed_at=row[7],
        close_note=row[8],
    )


_COLUMNS = "id, summary, aware_at, opened_at, deadline, systems, scope, closed_at, close_note"


def open_incident(
    store: Store,
    config: Config,
    summary: str,
    *,
    systems: list[str] | None = None,
    aware_at: dt.datetime | None = None,
    now: dt.datetime | None = None,
) -> Incident:
    """Record an incident and start its clock; return it.

    Args:
        store: the store.
        config: the loaded config (for the systems and their mappings).
        summary: the operator's description; stored with e-mail addresses and phone
            numbers masked.
        systems: the systems involved; default every configured system.
        aware_at: when the controller became aware; default ``now``.
        now: the current time; default :func:`utc_now`.

    Raises:
        ValueError: the summary is empty or not text, a system is unknown, or ``aware_at``
            is in the future.
    """
    current = now or utc_now()
    aware = aware_at or current
    if aware.tzinfo is None:
        aware = aware.replace(tzinfo=dt.UTC)
    if not summary.strip():
        raise ValueError("the summary is empty")
    _refuse_undecoded(summary, "the summary")
    if aware > current:
        raise ValueError("the time of awareness is in the future")
    # A system named twice (--system crm --system crm) is one system concerned, not two.
    chosen = list(dict.fromkeys(systems or config.systems))
    unknown = [s for s in chosen if s not in config.systems]
    if unknown:
        raise ValueError(f"no system named {unknown[0]!r}; known: {sorted(config.systems)}")
    scope = _scope(store, config, chosen)
    # Added in UTC: added to a time in a zone with summer time (Europe/Amsterdam), a
    # timedelta moves the wall clock, and across the change the 72 hours became 71 or 73.
    deadline = aware.astimezone(dt.UTC) + NOTIFY_WITHIN
    with store.transaction() as db:
        cur = db.execute(
            "INSERT INTO incidents(summary, aware_at, opened_at, deadline, systems, scope) "
            "VALUES (?,?,?,?,?,?)",
            (
                mask_contact_details(summary),
                _stamp(aware),
                _stamp(current),
                _stamp(deadline),
                json.dumps(chosen),
                json.dumps(scope),
            ),
        )
        assert cur.lastrowid is not None
        incident_id = cur.lastrowid
        # The audit entry holds the clock, not the summary: the log's rule is no free text.
        audit.append(
            store,
            audit.INCIDENT_OPENED,
            {"incident": incident_id, "deadline": _stamp(deadline), "systems": chosen},
        )
    found = get_incident(store, incident_id)
    assert found is not None
    return found


def get_incident(store: Store, incident_id: int) -> Incident | None:
    """The incident with this id, if there is one."""
    row = store.db.execute(
        f"SELECT {_COLUMNS} FROM incidents WHERE id=?",  # noqa: S608 - fixed column list
        (incident_id,),
    ).fetchone()
    return None if row is None else _row(row)


def list_incidents(store: Store) -> list[Incident]:
    """Every incident, newest first."""
    rows = store.db.execute(f"SELECT {_COLUMNS} FROM incidents ORDER BY id DESC")  # noqa: S608
    return [_row(r) for r in rows]


def open_summary(store: Store, now: dt.datetime | None = None) -> dict[str, Any]:
    """The incidents not yet closed, for ``status``, the metrics and the daily review.

    ``open`` counts them all, ``overdue`` those past their 72 hours; each is listed by id,
    deadline and time left (never its summary, which is the operator's free text).
    """
    when = now or utc_now()
    rows = store.db.execute(
        f"SELECT {_COLUMNS} FROM incidents WHERE closed_at IS NULL ORDER BY deadline"  # noqa: S608
    )
    listed = [_row(r) for r in rows]
    return {
        "open": len(listed),
        "overdue": sum(1 for i in listed if i.status(when) == "overdue"),
        "incidents": [
            {
                "id": i.id,
                "deadline": i.deadline,
                "status": i.status(when),
                "seconds_left": int(i.seconds_left(when)),
                "time_left": time_left_text(i, when),
                "systems": i.systems,
            }
            for i in listed
        ],
    }


def close_incident(
    store: Store, incident_id: int, note: str, now: dt.datetime | None = None
) -> Incident:
    """Close an incident with the operator's note (contact details masked); return it.

    Raises:
        LookupError: no such incident.
        ValueError: the note is empty or not text, or the incident is already closed.
    """
    # Looked at in the write transaction: a second close between a look before it and the
    # write (two operators, or the command run again) passed the check and wrote its note
    # and time over the first's, with a second incident.closed entry.
    with store.transaction() as db:
        incident = get_incident(store, incident_id)
        if incident is None:
            raise LookupError(f"no incident {incident_id}")
        if incident.closed_at:
            raise ValueError(f"incident {incident_id} is already closed")
        if not note.strip():
            raise ValueError("the closing note is empty")
        _refuse_undecoded(note, "the closing note")
        closed = _stamp(now or utc_now())
        db.execute(
            "UPDATE incidents SET closed_at=?, close_note=? WHERE id=?",
            (closed, mask_contact_details(note), incident_id),
        )
        audit.append(
            store,
            audit.INCIDENT_CLOSED,
            {"incident": incident_id, "overdue": closed > incident.deadline},
        )
    found = get_incident(store, incident_id)
    assert found is not None
    return found


_DRAFT: dict[str, dict[str, str]] = {
    "nl": {
        "title": "Concept-melding datalek aan de Autoriteit Persoonsgegevens (incident {id})",
        "intro": "Concept, opgesteld door klantsync uit de configuratie en de administratie van "
        "de connector. Controleer en vul aan, en meld via het meldloket datalekken van de "
        "Autoriteit Persoonsgegevens.",
        "deadline": "Uiterste meldtijd (72 uur na ontdekking, art. 33 AVG)",
        "org": "1. Gegevens van de organisatie (verwerkingsverantwoordelijke)",
        "what": "2. Wat is er gebeurd",
        "aware": "Ontdekt op",
        "opened": "Vastgelegd op",
        "data": "3. Betrokken systemen en persoonsgegevens",
        "system": "Systeem",
        "processor": "Verwerker",
        "categories": "Categorieën persoonsgegevens",
        "subjects": "Betrokkenen bekend bij de connector",
        "count": "4. Aantal betrokkenen",
        "count_text": "De connector kent ten hoogste {n} verschillende betrokkenen in deze "
        "systemen. De systemen zelf kunnen meer personen bevatten dan de connector kent.",
        "kinds": "5. Categorieën betrokkenen",
        "security": "6. Beveiliging (waren de gegevens versleuteld of gepseudonimiseerd?)",
        "security_own": "De maatregelen hieronder zijn die van de connector zelf, welk systeem "
        "ook getroffen is. Die van de betrokken systemen: [In te vullen]",
        "effects": "7. Mogelijke gevolgen voor betrokkenen",
        "measures": "8. Genomen en voorgenomen maatregelen",
        "inform": "9. Informeren van betrokkenen (art. 34 AVG)",
        "delay": "10. Redenen voor de vertraging (art. 33 lid 1 AVG)",
        "delay_late": "Deze melding komt later dan 72 uur na de ontdekking: vermeld waarom. "
        "[In te vullen]",
        "delay_if_late": "Alleen als de melding later wordt gedaan dan {deadline}: vermeld "
        "de redenen voor de vertraging; anders laat u dit onderdeel weg.",
        "todo": "[In te vullen]",
        "none": "niet vastgelegd",
        "no_country": "land van verwerking niet vastgelegd",
        "missing": "ONTBREEKT: vul [controller] in de configuratie in",
        "closed": "Gesloten op {at}: {note}",
    },
    "en": {
        "title": "Draft personal data breach notification to the Autoriteit Persoonsgegevens "
        "(incident {id})",
        "intro": "Draft, prepared by klantsync from the configuration and the connector's "
        "records. Check and complete it, then notify through the Autoriteit Persoonsgegevens' "
        "data breach desk.",
        "deadline": "Notify by (72 hours after becoming aware, Art. 33 GDPR)",
        "org": "1. The organisation (controller)",
        "what": "2. What happened",
        "aware": "Became aware at",
        "opened": "Recorded at",
        "data": "3. Systems and personal data involved",
        "system": "System",
        "processor": "Processor",
        "categories": "Categories of personal data",
        "subjects": "Data subjects known to the connector",
        "count": "4. Number of data subjects",
        "count_text": "The connector knows at most {n} distinct data subjects in these systems. "
        "The systems themselves may hold more people than the connector knows.",
        "kinds": "5. Categories of data subjects",
        "security": "6. Security (were the data encrypted or pseudonymised?)",
        "security_own": "The measures below are the connector's own, whichever system was "
        "breached. Those of the systems involved: [To be completed]",
        "effects": "7. Likely consequences for the data subjects",
        "measures": "8. Measures taken and proposed",
        "inform": "9. Informing the data subjects (Art. 34 GDPR)",
        "delay": "10. Reasons for the delay (Art. 33(1) GDPR)",
        "delay_late": "This notification is made later than 72 hours after becoming aware: "
        "state why. [To be completed]",
        "delay_if_late": "Only if the notification is made later than {deadline}: state the "
        "reasons for the delay; otherwise leave this section out.",
        "todo": "[To be completed]",
        "none": "not recorded",
        "no_country": "country of processing not recorded",
        "missing": "MISSING: fill in [controller] in the configuration",
        "closed": "Closed at {at}: {note}",
    },
}


def _late(incident: Incident, now: dt.datetime) -> bool:
    """Whether the notification can no longer be made within the 72 hours: the incident was
    recorded after them, or is still open past them."""
    if incident.opened_at > incident.deadline:
        return True
    return incident.closed_at is None and _stamp(now) > incident.deadline


def _who(processor: ProcessorSettings | None, t: dict[str, str], lang: str) -> str:
    """The processor and its country of processing, as far as the config states them; a
    system's holder that is no processor with its role."""
    from connector.register import country_name, role_label

    if processor is None:
        return t["none"]
    # The model's default country (NL) is no statement of where the data is: the register
    # lists such a system as unknown, and the regulator must not be told otherwise.
    if "country" not in processor.model_fields_set:
        where = t["no_country"]
    else:
        where = country_name(processor.country, lang)
    # A joint (Art. 26) or independent controller is no processor (Art. 28), as the register
    # says: the column's heading must not make the regulator read it as one.
    if processor.role in ("controller", "joint-controller"):
        where = f"{role_label(processor.role, lang)}, {where}"
    return f"{processor.legal_name} ({where})"


def notification_draft(
    incident: Incident, config: Config, lang: str = "nl", now: dt.datetime | None = None
) -> str:
    """The Markdown draft of the notification to the Autoriteit Persoonsgegevens.

    ``now`` (default :func:`utc_now`) decides how the reasons for a delay are asked for: as
    due, once the 72 hours have passed; as conditional, before.

    Raises:
        ValueError: ``lang`` is not ``nl`` or ``en``.
    """
    from connector.register import security_measures
    from connector.register_render import md_escape as esc

    if lang not in _DRAFT:
        raise ValueError("language must be nl or en")
    t = _DRAFT[lang]
    lines = [f"# {esc(t['title'].format(id=incident.id))}", "", f"_{esc(t['intro'])}_", ""]
    lines += [f"**{esc(t['deadline'])}: {esc(local_time(incident.deadline))}**", ""]
    lines += [f"## {esc(t['org'])}", ""]
    c = config.controller
    if c is None:
        lines.append(esc(t["missing"]))
    else:
        for label, value in (
            ("Naam" if lang == "nl" else "Name", c.name),
            ("KvK", c.kvk),
            ("Adres" if lang == "nl" else "Address", c.address),
            ("Contact", c.contact),
            ("E-mail", c.email),
            ("FG" if lang == "nl" else "DPO", c.dpo),
        ):
            lines.append(f"- {esc(label)}: {esc(value or t['none'])}")
    lines += ["", f"## {esc(t['what'])}", "", esc(incident.summary), ""]
    lines.append(f"- {esc(t['aware'])}: {esc(local_time(incident.aware_at))}")
    lines.append(f"- {esc(t['opened'])}: {esc(local_time(incident.opened_at))}")
    if incident.closed_at:
        at = local_time(incident.closed_at)
        closed = t["closed"].format(at=at, note=incident.close_note or "")
        lines.append(f"- {esc(closed)}")
    lines += ["", f"## {esc(t['data'])}", ""]
    lines.append(
        f"| {esc(t['system'])} | {esc(t['processor'])} | {esc(t['categories'])} "
        f"| {esc(t['subjects'])} |"
    )
    lines.append("|---|---|---|---:|")
    for name, info in incident.scope["systems"].items():
        settings = config.systems.get(name)
        who = _who(settings.processor if settings is not None else None, t, lang)
        cats = ", ".join(CATEGORIES[cat][1 if lang == "nl" else 0] for cat in info["categories"])
        lines.append(f"| {esc(name)} | {esc(who)} | {esc(cats)} | {info['subjects']} |")
    lines += ["", f"## {esc(t['count'])}", ""]
    lines += [esc(t["count_text"].format(n=incident.scope["total"])), ""]
    lines += [f"## {esc(t['kinds'])}", ""]
    lines += [f"- {esc(k)}" for k in config.privacy.data_subjects] or [esc(t["none"])]
    lines += ["", f"## {esc(t['security'])}", "", esc(t["security_own"]), ""]
    # The register's measures, but stating the retention periods: the draft lists none.
    measures = security_measures(config, lang, periods_above=False)
    lines += [f"- {esc(m['text'])}" for m in measures]
    for key in ("effects", "measures", "inform"):
        lines += ["", f"## {esc(t[key])}", "", esc(t["todo"])]
    # Art. 33(1): a notification made after the 72 hours "shall be accompanied by reasons
    # for the delay"; a draft written in time may still be sent late, so it says when.
    if _late(incident, now or utc_now()):
        delay = t["delay_late"]
    else:
        delay = t["delay_if_late"].format(deadline=local_time(incident.deadline))
    lines += ["", f"## {esc(t['delay'])}", "", esc(delay)]
    return "\n".join(lines) + "\n"
