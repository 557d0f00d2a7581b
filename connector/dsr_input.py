"""What a data subject request is opened with, checked before anything is recorded.

The CLI, the admin API and the daemon open requests with an e-mail address and, for a
rectification, ``field=value`` pairs; each is refused here with a message that says what to
give instead (exit 2 from the CLI, 422 from the API), so no half-valid request is stored.

A rectification's value that is empty (or blanks alone) asks for the field to be emptied in
every system that is written it (``--set phone=``: "remove my phone number"); the manifest
holds it as ``""`` (see :func:`emptied`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from connector.config import Config
from connector.dsr_views import DsrUsageError
from connector.mapping import SystemMapping
from connector.model import CANONICAL_FIELDS, CONSENT_FIELDS, is_email_address, normalise_email
from connector.transforms import make_transform

__all__ = [
    "checked_email",
    "checked_fields",
    "checked_phone",
    "emptied",
    "empties",
    "phone_regions",
]


def checked_email(email: str) -> str:
    """The normalised e-mail address; refused if it cannot be one."""
    normalised = normalise_email(email)
    if not is_email_address(normalised):
        raise DsrUsageError("--email is not an e-mail address")
    return normalised


def checked_fields(
    mappings: Mapping[str, SystemMapping], fields: Mapping[str, str]
) -> dict[str, str]:
    """Rectification values: canonical fields some system is written, valid for every
    system that receives them; an empty value (or blanks alone), kept as ``""``, empties the
    field wherever it is written, and is checked against no system's conversion."""
    if not fields:
        raise DsrUsageError("nothing to rectify: give at least one --set field=value")
    checked: dict[str, str] = {}
    for name, value in fields.items():
        if name not in CANONICAL_FIELDS:
            known = ", ".join(sorted(CANONICAL_FIELDS))
            raise DsrUsageError(f"unknown field {name!r}; canonical fields: {known}")
        if name == "email":
            raise DsrUsageError(
                "the e-mail address identifies the subject and cannot be rectified here; "
                "change it in the source system"
            )
        empty = empties(value)
        if empty and name in CONSENT_FIELDS.values():
            raise DsrUsageError(_consent_not_emptied(mappings, name))
        if not _written(mappings, name):
            # Accepted, it completed with every system skipped and a signed receipt: a
            # correction that corrected nothing passed for one carried out.
            raise DsrUsageError(
                f"{name}: no configured system is written this field (no mapping sends it), "
                "so klantsync cannot correct it; correct it in the system that holds it"
            )
        if empty:
            checked[name] = ""
            continue
        for system_name, mapping in mappings.items():
            spec = mapping.fields.get(name)
            if spec is not None and spec.outbound and spec.convert(value) is None:
                raise DsrUsageError(f"{name}: the value is not valid for {system_name}")
        checked[name] = value
    return checked


def emptied(fields: Mapping[str, str]) -> list[str]:
    """The names of a correction's ``fields`` that it empties (an empty value), sorted."""
    return sorted(name for name, value in fields.items() if empties(value))


def empties(value: str) -> bool:
    """Whether a correction's value asks for its field to be emptied (empty, or blanks)."""
    return not value.strip()


def _consent_not_emptied(mappings: Mapping[str, SystemMapping], name: str) -> str:
    """Why a consent field is not emptied by a correction, and where it is withdrawn."""
    # Emptied, the systems gated on it would neither be sent the withdrawal (the mapping's
    # ``withdrawn``) nor stop being sent the person: consent changes where it is recorded,
    # and the sync carries it.
    where = sorted(
        system
        for system, mapping in mappings.items()
        if (spec := mapping.fields.get(name)) is not None and spec.inbound
    )
    at = f"in {', '.join(where)}" if where else "in the system that records it"
    return (
        f"{name}: a consent is not emptied by a correction; it is withdrawn at the source, "
        f"{at} (the person unsubscribes, or their opt-in is unset there), and the next sync "
        "sends the withdrawal to every system that needs the consent"
    )


def _written(mappings: Mapping[str, SystemMapping], name: str) -> bool:
    """Whether some system's mapping sends canonical field ``name`` (a correction writes it)."""
    specs = (mapping.fields.get(name) for mapping in mappings.values())
    return any(spec is not None and spec.outbound for spec in specs)


def _e164(phone: str, region: str) -> str | None:
    """A phone number as E.164 (one without a country code read in ``region``), if it is one."""
    transform = make_transform("phone", region)
    assert transform is not None
    value = transform(phone)
    return value if isinstance(value, str) else None


def checked_phone(phone: str, regions: Iterable[str]) -> str:
    """The number to suppress, as E.164; one without a country code is read as the shops do.

    ``regions`` are the countries the sources' mappings read such numbers in
    (``default_region``). Read in the wrong one, "0470 12 34 56" becomes another person's
    valid-looking number: that number would be suppressed and the person's own would not.
    So where the shops differ and the readings do too, the number needs its country code.
    """
    readings = {region: _e164(phone, region) for region in sorted(set(regions)) or ["NL"]}
    numbers = set(readings.values())
    if None in numbers:
        where = " or ".join(readings)
        raise DsrUsageError(
            f"--phone is not a phone number (read as a number of {where} where it has no "
            "country code)"
        )
    if len(numbers) > 1:
        raise DsrUsageError(
            "--phone has no country code, and the shops read such numbers in different "
            f"countries ({', '.join(readings)}): give it with its country code, "
            "e.g. +32 470 12 34 56"
        )
    (number,) = numbers
    assert number is not None
    return number


def phone_regions(config: Config, source: str) -> list[str]:
    """Where a number without a country code is read: as the system that sent it reads
    numbers (``webhook:<system>``), else as the shops (the flows' sources) do."""
    mappings = config.mappings
    sender = source.removeprefix("webhook:")
    if source.startswith("webhook:") and sender in mappings:
        return [mappings[sender].default_region]
    sources = {f.source for f in config.flows} or set(mappings)
    return [mappings[name].default_region for name in sorted(sources) if name in mappings]
