"""Renders the processing register (:func:`connector.register.build_register`) for people.

Markdown for version control and e-mail; HTML for the owner and the auditor: one
self-contained page with print CSS, so "print to PDF" gives a clean document. Both read only
the structure the JSON format prints, so the three formats never disagree. Every value from
the configuration is escaped: a company name with ``<`` or ``|`` in it must not break the page.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["TEXT", "local_time", "md_escape", "render", "render_html", "render_markdown"]

#: Headings and fixed phrases, by language. The Dutch headings follow the terms Dutch
#: controllers (and the Autoriteit Persoonsgegevens' model register) use.
TEXT: dict[str, dict[str, str]] = {
    "nl": {
        "title": "Verwerkingsregister (art. 30 AVG)",
        "generated": "Gegenereerd uit de actieve configuratie op",
        "config_hash": "SHA-256 van configuratie en mappings",
        "controller": "Naam en contactgegevens verwerkingsverantwoordelijke",
        "name": "Naam",
        "address": "Adres",
        "kvk": "KvK-nummer",
        "contact": "Contactpersoon",
        "email": "E-mailadres",
        "dpo": "Functionaris gegevensbescherming (FG)",
        "representative": "Vertegenwoordiger in de Unie (art. 27 AVG)",
        "none": "niet vastgelegd",
        "purposes": "Doeleinden van de verwerking",
        "flow": "Verwerking",
        "legal_basis": "Grondslag",
        "from_to": "Van {source} naar {destinations}",
        "data_subjects": "Categorieën betrokkenen",
        "personal_data": "Categorieën persoonsgegevens",
        "received_by": "Verstrekt aan {system}",
        "in_no_flow": "Dit systeem krijgt geen synchronisatie; verzoeken van betrokkenen "
        "(correcties, wissen) worden er wel naartoe gebracht.",
        "in_no_flow_unwritten": "Dit systeem krijgt geen synchronisatie en geen correcties "
        "(klantsync schrijft er niet naar); verzoeken om wissen worden er wel naartoe gebracht.",
        "provided_by": "Afkomstig uit {system}",
        "held_beside": "Daarnaast bevatten de eigen gegevens van dit systeem over een persoon: "
        "{categories}. De synchronisaties van klantsync nemen deze niet mee; klantsync leest ze "
        "wel in het inzageoverzicht dat een betrokkene vraagt (art. 15 AVG).",
        "category": "Categorie",
        "fields": "Gegevens",
        "purpose": "Doel",
        "consent_only": "Alleen personen met toestemming voor {purpose} worden naar dit systeem "
        "gestuurd.",
        "opt_out_kept": "Wie zich bij het systeem zelf afmeldt, krijgt daar niets meer dan de "
        "intrekking tot hij zich er opnieuw aanmeldt (de afmelding wordt onder pseudoniem "
        "bewaard tot dan, of tot het wissen van de betrokkene).",
        "opt_out_unheard": "Een afmelding bij het systeem zelf bereikt de connector alleen via "
        "de webhooks van dat systeem, en die zijn niet ingesteld ([systems.{system}.webhooks]): "
        "wie zich daar afmeldt, krijgt zijn gegevens er nog toegestuurd zolang de toestemming "
        "in de bron staat.",
        "withdrawal_sent": "Wie die toestemming intrekt nadat de gegevens hier zijn ontvangen, "
        "krijgt hier alleen nog het e-mailadres met de intrekking ({marker}); een correctie "
        "waarom de betrokkene vraagt, bereikt het bewaarde record nog (art. 19 AVG).",
        "recipients": "Categorieën ontvangers",
        "operator": "Beheerder van de connector",
        "operator_handles": "Verwerkt elk klantrecord dat de connector doorgeeft en voert de "
        "verzoeken van betrokkenen uit, namens de verwerkingsverantwoordelijke; zijn register "
        "als verwerker staat hieronder.",
        "system": "Systeem",
        "processor": "Verwerker",
        "role": "Rol",
        "agreement": "Verwerkersovereenkomst",
        "signed": "Getekend",
        "review": "Herzien vóór",
        "country": "Land van verwerking",
        "sub_processors": "Subverwerkers",
        "processor_security": "Beveiliging volgens de verwerker",
        "no_processor": "Geen verwerker vastgelegd",
        "transfers": "Doorgifte naar derde landen",
        "mechanism": "Waarborg",
        "no_transfers": "Er worden geen persoonsgegevens buiten de Europese Economische Ruimte "
        "(EER) verwerkt.",
        "transfers_unknown": "Niet vastgelegd waar {systems} de gegevens verwerkt; doorgifte "
        "buiten de EER is daar niet uit te sluiten ([systems.<naam>.processor] country).",
        "recipient": "Ontvanger",
        "joint_controller": "Gezamenlijk verwerkingsverantwoordelijke",
        "joint_agreement": "Regeling tussen gezamenlijk verwerkingsverantwoordelijken "
        "(art. 26 AVG)",
        "consent_to": "toestemming voor {purpose}",
        "not_required": "niet vereist (zelfstandig verwerkingsverantwoordelijke)",
        "missing": "ONTBREEKT",
        "retention": "Bewaartermijnen",
        "connector_retention": "Gegevens van de connector zelf",
        "period": "Termijn",
        "days": "{n} dagen",
        "security": "Beveiligingsmaatregelen",
        "processor_record": "Register als verwerker (art. 30 lid 2 AVG)",
        "agency": "Verwerker (beheerder van de connector)",
        "on_behalf_of": "Namens verwerkingsverantwoordelijke",
        "controller_dpo": "Functionaris gegevensbescherming (FG) van de "
        "verwerkingsverantwoordelijke",
        "controller_representative": "Vertegenwoordiger van de verwerkingsverantwoordelijke "
        "(art. 27 AVG)",
        "agency_dpo": "Functionaris gegevensbescherming (FG) van de verwerker",
        "agency_representative": "Vertegenwoordiger van de verwerker (art. 27 AVG)",
        "activities": "Categorieën van verwerkingen",
        "no_agency": "Geen verwerker (bureau) vastgelegd in [privacy].agency.",
        "onward": "doorgifte door subverwerkers",
        "onward_to": "doorgifte aan {recipient}",
        "onward_unnamed": "doorgifte door subverwerkers; derde landen: ONTBREEKT "
        "(onward_transfers)",
        "see_security": "Zie Beveiligingsmaatregelen hierboven.",
    },
    "en": {
        "title": "Record of processing activities (Art. 30 GDPR)",
        "generated": "Generated from the running configuration on",
        "config_hash": "SHA-256 of configuration and mappings",
        "controller": "Name and contact details of the controller",
        "name": "Name",
        "address": "Address",
        "kvk": "Chamber of Commerce (KvK) number",
        "contact": "Contact",
        "email": "E-mail address",
        "dpo": "Data protection officer (DPO)",
        "representative": "Representative in the Union (Art. 27 GDPR)",
        "none": "not recorded",
        "purposes": "Purposes of the processing",
        "flow": "Processing",
        "legal_basis": "Legal basis",
        "from_to": "From {source} to {destinations}",
        "data_subjects": "Categories of data subjects",
        "personal_data": "Categories of personal data",
        "received_by": "Disclosed to {system}",
        "in_no_flow": "This system is sent no sync; data subject requests (corrections, "
        "erasures) are carried to it.",
        "in_no_flow_unwritten": "This system is sent no sync and no corrections (klantsync "
        "does not write to it); erasures are carried to it.",
        "provided_by": "Obtained from {system}",
        "held_beside": "Beside these, this system's own records of a person hold: "
        "{categories}. klantsync's syncs do not carry these; it does read them into the "
        "access copy a data subject asks for (Art. 15 GDPR).",
        "category": "Category",
        "fields": "Data",
        "purpose": "Purpose",
        "consent_only": "Only people who consented to {purpose} are sent to this system.",
        "opt_out_kept": "Someone who unsubscribes at the system itself is sent nothing more "
        "there but the withdrawal until they subscribe there again (the opt-out is kept under "
        "their pseudonym until then, or until their erasure).",
        "opt_out_unheard": "An unsubscribe made at the system itself reaches the connector only "
        "through that system's webhooks, which are not configured "
        "([systems.{system}.webhooks]): someone who unsubscribes there is still sent their "
        "data there for as long as the consent recorded at the source stands.",
        "withdrawal_sent": "Someone who withdraws that consent after their data was received "
        "here is sent only their e-mail address with the withdrawal ({marker}); a correction "
        "they ask for still reaches the record kept here (Art. 19 GDPR).",
        "recipients": "Categories of recipients",
        "operator": "Operator of the connector",
        "operator_handles": "Handles every customer record the connector passes on and carries "
        "out the data subject requests, on behalf of the controller; its record as processor "
        "is below.",
        "system": "System",
        "processor": "Processor",
        "role": "Role",
        "agreement": "Processing agreement",
        "signed": "Signed",
        "review": "Review by",
        "country": "Country of processing",
        "sub_processors": "Sub-processors",
        "processor_security": "Security as stated by the processor",
        "no_processor": "No processor recorded",
        "transfers": "Transfers to third countries",
        "mechanism": "Safeguard",
        "no_transfers": "No personal data is processed outside the European Economic Area (EEA).",
        "transfers_unknown": "Where {systems} process the data is not recorded; a transfer "
        "outside the EEA cannot be ruled out there ([systems.<name>.processor] country).",
        "recipient": "Recipient",
        "joint_controller": "Joint controller",
        "joint_agreement": "Arrangement between joint controllers (Art. 26 GDPR)",
        "consent_to": "consent to {purpose}",
        "not_required": "not required (independent controller)",
        "missing": "MISSING",
        "retention": "Retention periods",
        "connector_retention": "The connector's own data",
        "period": "Period",
        "days": "{n} days",
        "security": "Security measures",
        "processor_record": "Record as processor (Art. 30(2) GDPR)",
        "agency": "Processor (operator of the connector)",
        "on_behalf_of": "On behalf of controller",
        "controller_dpo": "Data protection officer (DPO) of the controller",
        "controller_representative": "Representative of the controller (Art. 27 GDPR)",
        "agency_dpo": "Data protection officer (DPO) of the processor",
        "agency_representative": "Representative of the processor (Art. 27 GDPR)",
        "activities": "Categories of processing",
        "no_agency": "No processor (agency) recorded in [privacy].agency.",
        "onward": "onward transfer by sub-processors",
        "onward_to": "onward transfer to {recipient}",
        "onward_unnamed": "onward transfer by sub-processors; third countries: MISSING "
        "(onward_transfers)",
        "see_security": "See Security measures above.",
    },
}

# What can change meaning inside a line; "(" matters only after "]", which is escaped. "~"
# anywhere: GFM strikes "~~x~~" (and "~x~") through, so a name with tildes lost its meaning.
_MD_SPECIAL = re.compile(r"([\\`*_~\[\]<>|&])")
# What can change meaning at the start of a block: a value may open a paragraph or a list
# item ("- " is a block start too), where "# x" is a heading, "---" a rule (or, under a
# paragraph line, turns it into a heading), "+ x" or "1. x" a list. ("~~~", a code fence,
# is escaped by _MD_SPECIAL already.)
_MD_BLOCK_START = re.compile(r"^(?:([#+\-=:])|(\d+)([.)]))")
# What GFM turns into a link of its own: "scheme://..." and "www.x" where a word starts. An
# escaped ":" or "." reads the same but is no longer part of one: a vendor's value is shown,
# not made a link the reader may follow.
_MD_AUTOLINK = re.compile(r"(?<=[a-zA-Z])(:)(?=//)|(?<![A-Za-z0-9])((?i:www))(\.)")


def md_escape(value: Any) -> str:
    """Markdown-escaped single-line text (table cells cannot hold newlines) that means
    the same wherever a line or a list item of it starts."""
    text = _MD_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))
    text = _MD_AUTOLINK.sub(_escape_link, text)
    return _MD_BLOCK_START.sub(_escape_start, text)


def _escape_start(found: re.Match[str]) -> str:
    if found.group(1) is not None:
        return "\\" + found.group(1)
    return f"{found.group(2)}\\{found.group(3)}"


def _escape_link(found: re.Match[str]) -> str:
    if found.group(1) is not None:
        return "\\:"
    return f"{found.group(2)}\\."


def local_time(stamp: str) -> str:
    """An aware ISO time with the Dutch wall-clock time beside it, as the documents give
    every time: the controller, the person and the Autoriteit Persoonsgegevens keep Dutch
    time, the stamps are UTC. Anything else (no offset, not a time) is returned as given,
    as is every time on a host without the zone data (UTC alone is exact)."""
    try:
        when = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if when.tzinfo is None:
        return stamp
    try:
        from zoneinfo import ZoneInfo

        local = when.astimezone(ZoneInfo("Europe/Amsterdam"))
    except (ImportError, KeyError, OSError):
        return stamp
    return f"{stamp} ({local.strftime('%Y-%m-%d %H:%M')} Europe/Amsterdam)"


def _h(value: Any) -> str:
    return html.escape(str(value), quote=True)


class _Doc:
    """The register's sections, written once against a tiny markup interface."""

    def __init__(self, reg: dict[str, Any], markup: _Markup) -> None:
        self.reg = reg
        self.t = TEXT[reg["lang"]]
        self.m = markup

    def write(self) -> None:
        t, m, reg = self.t, self.m, self.reg
        m.title(t["title"])
        generated = local_time(reg["generated_at"])
        m.note(f"{t['generated']} {generated}. {t['config_hash']}: {reg['config_sha256']}")
        self.controller()
        self.purposes()
        m.heading(t["data_subjects"])
        m.bullets(reg["data_subjects"] or [t["none"]])
        self.personal_data()
        self.recipients()
        self.transfers(reg["transfers"], reg["transfers_unknown"])
        self.retention()
        m.heading(t["security"])
        m.bullets([s["text"] for s in reg["security"]])
        self.processor_record()

    def controller(self) -> None:
        t, c = self.t, self.reg["controller"]
        self.m.heading(t["controller"])
        if c is None:
            self.m.para(f"{t['missing']}: [controller]")
            return
        keys = ("name", "address", "kvk", "contact", "email", "dpo")
        rows = [[t[k], c[k] or t["none"]] for k in keys]
        if c.get("representative"):  # only a controller outside the Union has one
            rows.append([t["representative"], c["representative"]])
        for joint in self.reg.get("joint_controllers", []):  # registers from before: none
            contact = joint["contact"] or t["missing"]
            rows.append(
                [t["joint_controller"], f"{joint['legal_name']} ({joint['system']}): {contact}"]
            )
        self.m.table(["", ""], rows)

    def purposes(self) -> None:
        t = self.t
        self.m.heading(t["purposes"])
        rows = []
        for p in self.reg["processing"]:
            flow = t["from_to"].format(
                source=p["source"], destinations=", ".join(p["destinations"])
            )
            rows.append(
                [
                    f"{p['flow']}: {flow}",
                    "; ".join(p["purposes"]) or t["missing"],
                    _legal_basis_text(p, t),
                ]
            )
        self.m.table([t["flow"], t["purposes"], t["legal_basis"]], rows)

    def personal_data(self) -> None:
        t, data = self.t, self.reg["personal_data"]
        self.m.heading(t["personal_data"])
        header = [t["category"], t["fields"], t["purpose"]]
        for item in data["received"]:
            self.m.subheading(t["received_by"].format(system=item["system"]))
            if item.get("in_no_flow") and not item.get("written", True):
                self.m.para(t["in_no_flow_unwritten"])
                self._held_beside(item)
                continue  # it is sent nothing: no categories to list
            if item.get("in_no_flow"):
                self.m.para(t["in_no_flow"])
            if item["requires_consent"]:
                # Kept to only where the system's webhook tells klantsync of an unsubscribe;
                # elsewhere the register says what it cannot hear.
                after = t["opt_out_kept"] if item["opt_outs_heard"] else t["opt_out_unheard"]
                consent = t["consent_only"].format(purpose=item["requires_consent"])
                self.m.para(f"{consent} {after.format(system=item['system'])}")
            if item.get("withdrawn"):
                marker = ", ".join(f"{k} = {v}" for k, v in sorted(item["withdrawn"].items()))
                self.m.para(t["withdrawal_sent"].format(marker=marker))
            self.m.table(header, _category_rows(item["categories"]))
            self._held_beside(item)
        for item in data["provided"]:
            self.m.subheading(t["provided_by"].format(system=item["system"]))
            self.m.table(header, _category_rows(item["categories"]))
            self._held_beside(item)

    def _held_beside(self, item: dict[str, Any]) -> None:
        """What the system holds beyond the fields listed (registers from before it: none)."""
        held = item.get("held_beside") or []
        if held:
            labels = "; ".join(c["label"] for c in held)
            self.m.para(self.t["held_beside"].format(categories=labels))

    def recipients(self) -> None:
        t = self.t
        self.m.heading(t["recipients"])
        self.operator()
        for r in self.reg["recipients"]:
            p = r["processor"]
            self.m.subheading(f"{t['system']} {r['system']} ({r['adapter']})")
            if p is None:
                self.m.para(f"{t['missing']}: {t['no_processor']}")
                continue
            # An independent controller signs no processing agreement (Art. 28 binds
            # processors only); check asks none of it either. Joint controllers are no
            # processors either: they set out their arrangement under Art. 26.
            independent = p["role"] == "controller"
            joint = p["role"] == "joint-controller"
            agreement = p["agreement_reference"] or (
                t["not_required"] if independent else t["missing"]
            )
            place = f"{p['country_name']} ({p['country']})" if p["country"] else t["missing"]
            holder = {"controller": t["recipient"], "joint-controller": t["joint_controller"]}
            self.m.table(
                ["", ""],
                [
                    [holder.get(p["role"], t["processor"]), p["legal_name"]],
                    [t["role"], p["role_label"]],
                    [t["joint_agreement"] if joint else t["agreement"], agreement],
                    [t["signed"], p["agreement_signed"] or t["none"]],
                    [t["review"], p["agreement_review"] or t["none"]],
                    [t["country"], place],
                    [t["sub_processors"], ", ".join(p["sub_processors"]) or t["none"]],
                    [t["processor_security"], p["security"] or t["none"]],
                    *([[t["contact"], p["contact"]]] if p.get("contact") else []),
                ],
            )

    def operator(self) -> None:
        t, o = self.t, self.reg.get("operator")  # registers from before it have none
        if o is None:
            return
        self.m.subheading(t["operator"])
        self.m.table(
            ["", ""],
            [
                [t["processor"], o["legal_name"]],
                [t["role"], o["role_label"]],
                [t["contact"], o["contact"] or t["none"]],
            ],
        )
        self.m.para(t["operator_handles"])

    def transfers(
        self, transfers: Sequence[dict[str, Any]], unknown: Sequence[str], level: int = 2
    ) -> None:
        t = self.t
        (self.m.heading if level == 2 else self.m.subheading)(t["transfers"])
        if unknown:
            systems = ", ".join(unknown)
            self.m.para(f"{t['missing']}: {t['transfers_unknown'].format(systems=systems)}")
        elif not transfers:
            self.m.para(t["no_transfers"])
        if not transfers:
            return
        self.m.table(
            [t["system"], t["processor"], t["country"], t["mechanism"]],
            [
                [
                    x["system"],
                    x["processor"],
                    x["country_name"] + (f" ({_onward(x, t)})" if x["onward"] else ""),
                    x["mechanism"] or t["missing"],
                ]
                for x in transfers
            ],
        )

    def retention(self) -> None:
        t, ret = self.t, self.reg["retention"]
        self.m.heading(t["retention"])
        self.m.table(
            [t["flow"], t["period"]],
            [[r["flow"], r["retention"] or t["missing"]] for r in ret["flows"]],
        )
        self.m.subheading(t["connector_retention"])
        self.m.table(["", t["period"]], [[r["label"], _period(r, t)] for r in ret["connector"]])

    def processor_record(self) -> None:
        t, rec = self.t, self.reg["processor_record"]
        self.m.heading(t["processor_record"])
        if rec is None:
            self.m.para(t["no_agency"])
            return
        controller = f"{rec['controller'] or t['missing']} {rec['controller_contact'] or ''}"
        rows = [
            [t["agency"], f"{rec['processor']} {rec['contact']}".strip()],
        ]
        if rec.get("dpo"):  # as the controller's: where one is appointed
            rows.append([t["agency_dpo"], rec["dpo"]])
        if rec.get("representative"):
            rows.append([t["agency_representative"], rec["representative"]])
        rows.append([t["on_behalf_of"], controller.strip()])
        if rec.get("controller_dpo"):  # registers from before it have none
            rows.append([t["controller_dpo"], rec["controller_dpo"]])
        if rec.get("controller_representative"):
            rows.append([t["controller_representative"], rec["controller_representative"]])
        self.m.table(["", ""], rows)
        self.m.subheading(t["activities"])
        self.m.bullets(rec["activities"])
        self.transfers(rec["transfers"], rec["transfers_unknown"], level=3)
        self.m.subheading(t["security"])
        self.m.para(t["see_security"])


def _onward(x: dict[str, Any], t: dict[str, str]) -> str:
    """What an onward transfer's country cell says of it: to whom, or that the third
    countries are missing (registers from before ``country_named`` named none either)."""
    if not x.get("country_named", False):
        return t["onward_unnamed"]
    return t["onward_to"].format(recipient=x["recipient"]) if x.get("recipient") else t["onward"]


def _legal_basis_text(p: dict[str, Any], t: dict[str, str]) -> str:
    """The legal basis of a flow: one per group of its destinations, each consent-gated one
    with the consent it needs; one basis for all is named alone, as before."""
    groups = p.get("legal_bases")
    if not groups:
        return str(p["legal_basis_label"] or t["missing"])
    if len(groups) == 1 and not groups[0]["consents"]:
        return str(groups[0]["label"] or t["missing"])
    parts = []
    for group in groups:
        consents = group["consents"]
        names = ", ".join(
            f"{d} ({t['consent_to'].format(purpose=consents[d])})" if d in consents else d
            for d in group["destinations"]
        )
        parts.append(f"{group['label'] or t['missing']}: {names}")
    return "; ".join(parts)


def _period(row: dict[str, Any], t: dict[str, str]) -> str:
    """How long the connector keeps one kind of its own data: days, or until when and why."""
    if row["days"] is not None:
        return t["days"].format(n=row["days"])
    return f"{row['until']}. {row['why']}"


def _category_rows(categories: Sequence[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for group in categories:
        for index, field in enumerate(group["fields"]):
            rows.append([group["label"] if index == 0 else "", field["label"], field["purpose"]])
    return rows


class _Markup:
    """What a format must provide; each call appends to ``parts``."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def title(self, text: str) -> None:
        raise NotImplementedError

    def heading(self, text: str) -> None:
        raise NotImplementedError

    def subheading(self, text: str) -> None:
        raise NotImplementedError

    def note(self, text: str) -> None:
        raise NotImplementedError

    def para(self, text: str) -> None:
        raise NotImplementedError

    def bullets(self, items: Sequence[str]) -> None:
        raise NotImplementedError

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError


class _Markdown(_Markup):
    def title(self, text: str) -> None:
        self.parts.append(f"# {md_escape(text)}\n")

    def heading(self, text: str) -> None:
        self.parts.append(f"\n## {md_escape(text)}\n")

    def subheading(self, text: str) -> None:
        self.parts.append(f"\n### {md_escape(text)}\n")

    def note(self, text: str) -> None:
        self.parts.append(f"_{md_escape(text)}_\n")

    def para(self, text: str) -> None:
        self.parts.append(f"{md_escape(text)}\n")

    def bullets(self, items: Sequence[str]) -> None:
        self.parts.append("".join(f"- {md_escape(i)}\n" for i in items))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        lines = ["| " + " | ".join(md_escape(h) for h in header) + " |"]
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows]
        self.parts.append("\n".join(lines) + "\n")


class _Html(_Markup):
    def title(self, text: str) -> None:
        self.parts.append(f"<h1>{_h(text)}</h1>")

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{_h(text)}</h2>")

    def subheading(self, text: str) -> None:
        self.parts.append(f"<h3>{_h(text)}</h3>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{_h(text)}</p>')

    def para(self, text: str) -> None:
        self.parts.append(f"<p>{_h(text)}</p>")

    def bullets(self, items: Sequence[str]) -> None:
        self.parts.append("<ul>" + "".join(f"<li>{_h(i)}</li>" for i in items) + "</ul>")

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        head = ""
        if any(header):
            head = "<thead><tr>" + "".join(f"<th>{_h(h)}</th>" for h in header) + "</tr></thead>"
        body = "".join("<tr>" + "".join(f"<td>{_h(c)}</td>" for c in row) + "</tr>" for row in rows)
        self.parts.append(f"<table>{head}<tbody>{body}</tbody></table>")


_CSS = """
body { font-family: Georgia, 'Times New Roman', serif; max-width: 52rem; margin: 2rem auto;
       padding: 0 1rem; color: #111; line-height: 1.45; }
h1 { font-size: 1.6rem; border-bottom: 2px solid #333; padding-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #999; }
h3 { font-size: 1.05rem; margin-top: 1.2rem; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { border: 1px solid #bbb; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #eee; }
td:first-child { width: 30%; }
.note { color: #555; font-size: .85rem; }
@media print {
  body { margin: 0; max-width: none; font-size: 10.5pt; }
  h2 { page-break-after: avoid; break-after: avoid; }
  h3 { page-break-after: avoid; break-after: avoid; }
  table, ul { page-break-inside: avoid; break-inside: avoid; }
  th { background: #eee !important; -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  @page { size: A4; margin: 18mm 16mm; }
}
"""


def _run(reg: dict[str, Any], markup: _Markup) -> _Markup:
    _Doc(reg, markup).write()
    return markup


def render_markdown(reg: dict[str, Any]) -> str:
    """The register as Markdown."""
    return "\n".join(_run(reg, _Markdown()).parts)


def render_html(reg: dict[str, Any]) -> str:
    """The register as one self-contained, printable HTML page."""
    body = "\n".join(_run(reg, _Html()).parts)
    title = _h(TEXT[reg["lang"]]["title"])
    return (
        f'<!DOCTYPE html>\n<html lang="{_h(reg["lang"])}">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "md": render_markdown,
    "html": render_html,
}


def render(reg: dict[str, Any], fmt: str) -> str:
    """The register in ``fmt`` (``md``, ``html`` or ``json``)."""
    if fmt == "json":
        import json

        return json.dumps(reg, indent=2, ensure_ascii=False) + "\n"
    return RENDERERS[fmt](reg)
