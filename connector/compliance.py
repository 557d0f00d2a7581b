"""Compliance gaps: what the configuration that runs lacks for GDPR accountability.

``klantsync check`` runs :func:`check_compliance` and exits 1 when it finds a gap. A gap is not
a configuration *error* (the connector can sync without a processor agreement on file); it is
something the controller must put right, named by the config key that records it:

- no ``[controller]`` block, or one without a name or without any contact details
  (``email``, ``address`` or ``contact``) (Art. 30(1)(a));
- no categories of data subjects (``[privacy] data_subjects`` empty) (Art. 30(1)(c));
- a system held by a joint controller without its contact details (``contact``)
  (Art. 30(1)(a));
- a system that receives personal data (a flow's source or destination) without a processor
  agreement on record, or whose agreement's review date has passed (Art. 28);
- a system processing outside the EEA without a transfer mechanism, an onward transfer
  outside the EEA without one, or an onward transfer whose countries are not recorded
  (Art. 30(1)(e), 44-46);
- a mapped field without a purpose (Art. 5(1)(b); mapping loading already refuses this, but
  the check does not rely on it);
- a flow without purposes, legal basis or retention period (Art. 6, 5(1)(e), 30(1)(b)/(f)).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict, dataclass
from typing import Any, Literal

from connector.config import Config
from connector.settings import ProcessorSettings

__all__ = [
    "EEA_COUNTRIES",
    "Gap",
    "ThirdCountryTransfer",
    "Transfer",
    "check_compliance",
    "in_eea",
    "processor_recipients",
    "same_recipient",
    "systems_in_use",
    "third_country_transfers",
    "today",
    "transfer",
]

#: EU member states plus Iceland, Liechtenstein and Norway (ISO 3166-1 alpha-2), with names.
#: Transfers to any other country need a mechanism (adequacy decision, SCCs, BCRs, ...).
EEA_COUNTRIES: dict[str, tuple[str, str]] = {
    "AT": ("Austria", "Oostenrijk"),
    "BE": ("Belgium", "België"),
    "BG": ("Bulgaria", "Bulgarije"),
    "HR": ("Croatia", "Kroatië"),
    "CY": ("Cyprus", "Cyprus"),
    "CZ": ("Czechia", "Tsjechië"),
    "DK": ("Denmark", "Denemarken"),
    "EE": ("Estonia", "Estland"),
    "FI": ("Finland", "Finland"),
    "FR": ("France", "Frankrijk"),
    "DE": ("Germany", "Duitsland"),
    "GR": ("Greece", "Griekenland"),
    "HU": ("Hungary", "Hongarije"),
    "IE": ("Ireland", "Ierland"),
    "IT": ("Italy", "Italië"),
    "LV": ("Latvia", "Letland"),
    "LT": ("Lithuania", "Litouwen"),
    "LU": ("Luxembourg", "Luxemburg"),
    "MT": ("Malta", "Malta"),
    "NL": ("Netherlands", "Nederland"),
    "PL": ("Poland", "Polen"),
    "PT": ("Portugal", "Portugal"),
    "RO": ("Romania", "Roemenië"),
    "SK": ("Slovakia", "Slowakije"),
    "SI": ("Slovenia", "Slovenië"),
    "ES": ("Spain", "Spanje"),
    "SE": ("Sweden", "Zweden"),
    "IS": ("Iceland", "IJsland"),
    "LI": ("Liechtenstein", "Liechtenstein"),
    "NO": ("Norway", "Noorwegen"),
}


def in_eea(country: str) -> bool:
    """Whether an ISO 3166-1 alpha-2 code is an EEA country (case-insensitive)."""
    return country.strip().upper() in EEA_COUNTRIES


#: How a system's data leaves the EEA, by its processor's record (see :func:`transfer`).
Transfer = Literal["direct", "onward", "unknown"]


def transfer(processor: ProcessorSettings | None) -> Transfer | None:
    """Whether, and how, what a system is sent leaves the EEA, by its processor's record.

    - ``"unknown"``: no processor, or one without a ``country`` (the model's default, NL, is
      no statement of where the data is): a transfer cannot be ruled out;
    - ``"direct"``: the processor processes it outside the EEA;
    - ``"onward"``: a processor in the EEA that names a ``transfer_mechanism`` passes it on
      outside (to a parent or a sub-processor: HubSpot Ireland to HubSpot, Inc.);
    - ``None``: processed in the EEA and, as far as the record says, kept there.

    The one rule the register (Art. 30(1)(e)) and the access report (Art. 15(2)) both state
    transfers by: an onward transfer the register listed and the person's report left out
    told the person their data stayed in the EEA.
    """
    if processor is None or "country" not in processor.model_fields_set:
        return "unknown"
    if not in_eea(processor.country):
        return "direct"
    if "onward_transfers" in processor.model_fields_set:
        # Given, it is the record: "onward_transfers = []" says the data stays in the EEA.
        return "onward" if any(not in_eea(o.country) for o in processor.onward_transfers) else None
    return "onward" if processor.transfer_mechanism.strip() else None


@dataclass(frozen=True)
class ThirdCountryTransfer:
    """One transfer of a system's data to a country outside the EEA.

    Attributes:
        country: where the data goes (ISO 3166-1 alpha-2). For an onward transfer whose
            countries are not recorded (``named`` false): the processor's own country.
        mechanism: its safeguard, "" when none is recorded.
        onward: passed on by the processor (to a sub-processor or its parent), not sent to
            a processor there by klantsync.
        recipient: who receives an onward transfer there, "" when not named.
        named: whether ``country`` is the third country itself.
    """

    country: str
    mechanism: str
    onward: bool
    recipient: str = ""
    named: bool = True


def third_country_transfers(processor: ProcessorSettings | None) -> list[ThirdCountryTransfer]:
    """Each transfer outside the EEA a system's processor record states, by :func:`transfer`:
    the direct one to the processor, then each of ``onward_transfers`` outside the EEA.

    A processor in the EEA naming a ``transfer_mechanism`` with no ``onward_transfers``
    recorded yields one onward transfer to countries not named (``named`` false), so the
    register and access reports still state it, and ``check`` asks for the countries.
    """
    kind = transfer(processor)
    if processor is None or kind not in ("direct", "onward"):
        return []
    rows = []
    if kind == "direct":
        rows.append(
            ThirdCountryTransfer(processor.country, processor.transfer_mechanism.strip(), False)
        )
    rows += [
        ThirdCountryTransfer(o.country, o.mechanism.strip(), True, o.recipient.strip())
        for o in processor.onward_transfers
        if not in_eea(o.country)
    ]
    if kind == "onward" and "onward_transfers" not in processor.model_fields_set:
        rows.append(
            ThirdCountryTransfer(
                processor.country, processor.transfer_mechanism.strip(), True, named=False
            )
        )
    return rows


def processor_recipients(processor: ProcessorSettings) -> list[str]:
    """Who a processor passes the data on to: its ``sub_processors``, then each recipient of
    an ``onward_transfers`` row that none of them already names.

    The register's sub-processors (Art. 30(1)(d)) and the access report's recipients
    (Art. 15(1)(c)) both read this: a recipient recorded in ``onward_transfers`` alone was
    otherwise told of in the transfers section only, as if it were no recipient. One listed
    as "HubSpot, Inc. (US)" is not repeated for "HubSpot, Inc." (:func:`same_recipient`).
    """
    named = [str(s) for s in processor.sub_processors]
    for row in processor.onward_transfers:
        recipient = row.recipient.strip()
        if recipient and not any(same_recipient(recipient, n) for n in named):
            named.append(recipient)
    return named


#: One parenthesised note at the end of a name, such as the country in "HubSpot, Inc. (US)".
_TRAILING_NOTE = re.compile(r"\s*\([^()]*\)$")


def same_recipient(one: str, other: str) -> bool:
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


def today() -> dt.date:
    """Today's date (UTC); a module function so tests can replace it."""
    return dt.datetime.now(dt.UTC).date()


@dataclass(frozen=True)
class Gap:
    """One compliance gap.

    Attributes:
        code: stable identifier of the kind of gap (for scripts and the audit log).
        file: the file holding the key (the config file or a mapping file).
        key: the dotted key that records (or should record) the fact.
        message: what is missing, in words.
    """

    code: str
    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        """The gap as a JSON-ready dict."""
        return asdict(self)


def systems_in_use(config: Config) -> list[str]:
    """Systems that process the customers' data, in config order: every configured one.

    A system in no flow counts too: data subject requests still reach it (a correction's
    values, an erasure), and the register lists it. Left out, its transfer outside the EEA
    without a safeguard, or its agreement due for review, went unreported.
    """
    return list(config.systems)


def check_compliance(config: Config, on: dt.date | None = None) -> list[Gap]:
    """Every compliance gap of ``config``, in config order.

    Args:
        config: the loaded configuration.
        on: the date to judge review dates against; defaults to :func:`today`.
    """
    date = on or today()
    file = str(config.path)
    gaps: list[Gap] = []
    if config.controller is None:
        gaps.append(
            Gap("no-controller", file, "controller", "no controller (name and contact) recorded")
        )
    elif not config.controller.name.strip():
        # A template's blank name is no controller either: the register named nobody.
        gaps.append(Gap("no-controller", file, "controller.name", "the controller has no name"))
    controller = config.controller
    if controller is not None and not any(
        value.strip() for value in (controller.address, controller.email, controller.contact)
    ):
        # Art. 30(1)(a) asks for contact details beside the name: the register said "not
        # recorded" for each way to reach the controller while check passed.
        gaps.append(
            Gap(
                "controller-no-contact",
                file,
                "controller.email",
                "the controller has no contact details (email, address or contact)",
            )
        )
    if not any(subjects.strip() for subjects in config.privacy.data_subjects):
        # Art. 30(1)(c): the register listed no category of data subjects.
        gaps.append(
            Gap(
                "no-data-subjects",
                file,
                "privacy.data_subjects",
                "no categories of data subjects (customers, newsletter subscribers, ...)",
            )
        )
    for name in systems_in_use(config):
        gaps += _system_gaps(config, name, date)
    for name, mapping in config.mappings.items():
        if name not in systems_in_use(config):
            continue
        for field_name, field in mapping.fields.items():
            if not field.purpose.strip():
                gaps.append(
                    Gap(
                        "field-no-purpose",
                        str(mapping.path),
                        f"fields.{field_name}.purpose",
                        f"field {field_name!r} sent to or read from {name!r} has no purpose",
                    )
                )
    for index, flow in enumerate(config.flows):
        key = f"flows[{index}].privacy"
        privacy = flow.privacy
        # Blanks are no purpose, as a blank retention is no period (a template's [""]).
        if privacy is None or not any(purpose.strip() for purpose in privacy.purposes):
            gaps.append(
                Gap("flow-no-purpose", file, f"{key}.purposes", f"flow {flow.name!r}: no purposes")
            )
        if privacy is None or privacy.legal_basis is None:
            gaps.append(
                Gap(
                    "flow-no-legal-basis",
                    file,
                    f"{key}.legal_basis",
                    f"flow {flow.name!r}: no legal basis",
                )
            )
        if privacy is None or not privacy.retention.strip():
            gaps.append(
                Gap(
                    "flow-no-retention",
                    file,
                    f"{key}.retention",
                    f"flow {flow.name!r}: no retention period",
                )
            )
    return gaps


def reviews_due(
    config: Config, on: dt.date | None = None, within_days: int = 30
) -> list[tuple[str, dt.date]]:
    """Systems in use whose agreement review date falls within ``within_days`` of ``on``.

    Not yet a gap (that comes when the date passes), but worth a warning while there is time.
    """
    date = on or today()
    horizon = date + dt.timedelta(days=within_days)
    due = []
    for name in systems_in_use(config):
        processor = config.systems[name].processor
        review = processor.agreement_review if processor is not None else None
        if review is not None and date <= review <= horizon:
            due.append((name, review))
    return due


def _system_gaps(config: Config, name: str, date: dt.date) -> list[Gap]:
    file = str(config.path)
    key = f"systems.{name}.processor"
    processor = config.systems[name].processor
    if processor is None:
        return [
            Gap(
                "no-agreement",
                file,
                key,
                f"system {name!r} receives personal data but no processor "
                "(verwerkersovereenkomst) is recorded",
            )
        ]
    gaps: list[Gap] = []
    # An independent controller (the recipient decides what it does with the data) signs no
    # processing agreement (Art. 28 is for processors): asking for one made check fail until
    # a made-up reference was written down.
    if processor.role != "controller" and not processor.agreement_reference.strip():
        gaps.append(
            Gap(
                "no-agreement",
                file,
                f"{key}.agreement_reference",
                f"system {name!r} receives personal data but has no agreement reference",
            )
        )
    if processor.role == "joint-controller" and not processor.contact.strip():
        # Art. 30(1)(a) names a joint controller with its contact details, as the controller.
        gaps.append(
            Gap(
                "joint-controller-no-contact",
                file,
                f"{key}.contact",
                f"system {name!r} is held by a joint controller whose contact details are "
                "not recorded",
            )
        )
    if processor.agreement_review is not None and processor.agreement_review < date:
        gaps.append(
            Gap(
                "agreement-review-passed",
                file,
                f"{key}.agreement_review",
                f"system {name!r}: the agreement's review date "
                f"{processor.agreement_review.isoformat()} has passed",
            )
        )
    if "country" not in processor.model_fields_set:
        # The model's default (NL) is no statement of where the data is: the register and
        # access reports cannot say whether it leaves the EEA.
        gaps.append(
            Gap(
                "no-country",
                file,
                f"{key}.country",
                f"system {name!r}: where its processor processes the data is not recorded",
            )
        )
    elif not in_eea(processor.country) and not processor.transfer_mechanism.strip():
        gaps.append(
            Gap(
                "transfer-no-mechanism",
                file,
                f"{key}.transfer_mechanism",
                f"system {name!r} processes in {processor.country.upper()} (outside the EEA) "
                "without a transfer mechanism",
            )
        )
    if transfer(processor) == "onward" and "onward_transfers" not in processor.model_fields_set:
        # Art. 30(1)(e) names the third countries: "passes it on outside the EEA" does not.
        gaps.append(
            Gap(
                "onward-no-country",
                file,
                f"{key}.onward_transfers",
                f"system {name!r}: its processor passes the data on outside the EEA "
                "(transfer_mechanism) but the countries it goes to are not recorded",
            )
        )
    for index, onward in enumerate(processor.onward_transfers):
        if not in_eea(onward.country) and not onward.mechanism.strip():
            gaps.append(
                Gap(
                    "onward-transfer-no-mechanism",
                    file,
                    f"{key}.onward_transfers[{index}].mechanism",
                    f"system {name!r}: its processor passes the data on to {onward.country} "
                    "(outside the EEA) without a transfer mechanism",
                )
            )
    return gaps
