"""What ``check --online`` finds of a mapping's contact properties in the portal.

A mapping names HubSpot contact properties by their internal names. One the portal does not
define (a typo, a custom property never created, or archived), or one HubSpot lets no
integration write (``createdate``, a calculated property), passes every check that does not
ask HubSpot; the first sync then has each record's write refused in a 207
(``PROPERTY_DOESNT_EXIST``, ``READ_ONLY_VALUE``): a dead letter per customer, found only after
the customers were sent. The portal's property list (``GET /crm/v3/properties/contacts``)
says both beforehand, and an enumeration's options, among which a value the mapping sets
itself (``withdrawn``, ``consent_renewed``) must be for HubSpot to take it.

Only property names and mapping keys are said, never a value: a fixed value is the operator's,
but a message of this module's is as free of values as every other error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from adapters.hubspot._properties import definitions_by_name, properties_path, read_only_value
from adapters.hubspot._scopes import SCHEMA_SCOPES, needing
from connector.http import SystemClient, answer_object
from connector.mapping import SystemMapping

__all__ = [
    "CONTACT_PROPERTIES",
    "Mapped",
    "configured_warnings",
    "contact_definitions",
    "mapped_properties",
    "option_warnings",
    "refusals",
]

#: The portal's contact property definitions (every one, unpaged; archived ones left out).
CONTACT_PROPERTIES: Final = properties_path("contacts")

#: Property types whose values are one of the definition's options: an enumeration (select,
#: radio, checkbox) and a single checkbox (``bool``, options ``true`` and ``false``).
_OPTION_TYPES: Final = frozenset({"enumeration", "bool"})


@dataclass(frozen=True)
class Mapped:
    """A contact property a mapping names.

    Attributes:
        name: the property's internal name, as writes and reads carry it.
        key: the mapping key that names it (``fields.phone.path``, ``withdrawn.status``).
        written: whether writes carry it (an inbound-only field's property is only read).
        fixed: the value the mapping itself sets it to, as HubSpot is sent it (``withdrawn``,
            ``consent_renewed``); ``None`` for a field, whose values come from the source.
    """

    name: str
    key: str
    written: bool
    fixed: str | None = None


def mapped_properties(mapping: SystemMapping, as_text: Callable[[Any], str]) -> list[Mapped]:
    """Every property ``mapping`` names, each with the key naming it; ``as_text`` turns a fixed
    value into the text a write sends (HubSpot takes every value as a string).

    A field's path under the mapping's ``record_root`` is the property's name, and writes send
    it as it stands. The e-mail is written whatever its field's direction (every write carries
    it), as :meth:`SystemMapping.sent_fields` says.
    """
    sent = {field.canonical for field in mapping.sent_fields()}
    named = [
        Mapped(field.path, f"fields.{field.canonical}.path", field.canonical in sent)
        for field in mapping.fields.values()
    ]
    for table, values in (
        ("withdrawn", mapping.withdrawn),
        ("consent_renewed", mapping.consent_renewed),
    ):
        named += [
            Mapped(name, f"{table}.{name}", True, as_text(value)) for name, value in values.items()
        ]
    return named


async def contact_definitions(client: SystemClient) -> dict[str, Mapping[str, Any]]:
    """The portal's contact property definitions, by name.

    Raises:
        FatalRemoteError: the list refused (403), naming the scope to grant
            (``crm.schemas.contacts.read``); or the call's failure.
        RetryableError: an answer that holds no list (a front end's page): read as "no
            properties", it would have called every mapped property missing.
    """
    with needing(SCHEMA_SCOPES["contacts"]):
        response = await client.request("GET", CONTACT_PROPERTIES)
    body = answer_object(
        response,
        system=client.system,
        method="GET",
        path=CONTACT_PROPERTIES,
        required=("results",),
    )
    return definitions_by_name(body["results"])


def refusals(named: Sequence[Mapped], definitions: Mapping[str, Mapping[str, Any]]) -> str:
    """What HubSpot would refuse of the mapping, in words (``""``: nothing): each property
    the portal does not define, and each written one an integration may not write."""
    missing = [m for m in named if m.name not in definitions]
    read_only = [
        m
        for m in named
        if m.written and m.name in definitions and read_only_value(definitions[m.name])
    ]
    said: list[str] = []
    if missing:
        said.append(
            f"HubSpot defines no contact property {_listed(missing)}: create it in HubSpot or "
            "correct the mapping"
        )
    if read_only:
        said.append(
            f"HubSpot lets no integration write {_listed(read_only)}: read it only "
            '(direction = "in") or take it out of the mapping'
        )
    if not said:
        return ""
    if not any(m.written for m in (*missing, *read_only)):
        return "; ".join(said)  # read only: reads find nothing there, and no write fails
    return "; ".join(said) + " (HubSpot refuses each write naming one: a dead letter per record)"


def option_warnings(
    system: str, named: Sequence[Mapped], definitions: Mapping[str, Mapping[str, Any]]
) -> list[str]:
    """A warning per value the mapping sets itself that is not among its property's options
    (HubSpot refuses such a write). A multiple checkbox takes several options, separated by
    semicolons; an empty value clears the property, which every one allows."""
    warnings: list[str] = []
    for mapped in named:
        definition = definitions.get(mapped.name)
        if not mapped.fixed or definition is None or definition.get("type") not in _OPTION_TYPES:
            continue
        offered = _options(definition)
        if not offered:
            continue  # no options listed: nothing to hold the value against
        several = definition.get("fieldType") == "checkbox"
        given = set(mapped.fixed.split(";")) if several else {mapped.fixed}
        if not given <= offered:
            warnings.append(
                f"{system}: {mapped.key} sets the property {mapped.name} to a value that is "
                "not one of its options in HubSpot, which refuses that write: use an option's "
                "internal value, or add the option in HubSpot"
            )
    return warnings


def configured_warnings(
    system: str,
    configured: Sequence[str],
    named: Sequence[Mapped],
    definitions: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    """A warning naming the system's configured ``properties`` the portal does not define
    (a typo, a custom property never created), one the mapping names left out: that is the
    mapping's error (:func:`refusals`), said once.

    A warning, not an error: no write carries one the mapping does not name, and a read
    asking for a property the portal lacks is answered with the rest (the sandbox answers
    it null; that HubSpot passes over it without an error is UNVERIFIED), so nothing fails;
    it is only read nowhere, which nothing else would ever say."""
    mapped = {m.name for m in named}
    missing = [
        name for name in dict.fromkeys(configured) if name not in definitions and name not in mapped
    ]
    if not missing:
        return []
    return [
        f"{system}: systems.{system}.properties names {', '.join(missing)}, which HubSpot "
        "defines no contact property for: nothing is read there; create them in HubSpot or "
        "correct the setting"
    ]


def _options(definition: Mapping[str, Any]) -> set[str]:
    """The internal values of the property's options (what a write sends, not the labels)."""
    options = definition.get("options")
    return {
        str(option["value"])
        for option in (options if isinstance(options, list) else [])
        if isinstance(option, dict) and option.get("value") is not None
    }


def _listed(named: Sequence[Mapped]) -> str:
    """``name (key)``, comma-separated, in the mapping's order."""
    return ", ".join(f"{m.name} ({m.key})" for m in named)
