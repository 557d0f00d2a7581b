"""What a data subject request is opened with, checked before anything is recorded.

The CLI, the admin API and the daemon open requests with an e-mail address and, for a
rectification, ``field=value`` pairs; each is refused here with a message that says what to
give instead (exit 2 from the CLI, 422 from the API), so no half-valid request is stored.
"""

from __future__ import annotations

from collections.abc import Mapping

from connector.dsr_views import DsrUsageError
from connector.mapping import SystemMapping
from connector.model import CANONICAL_FIELDS, normalise_email
from connector.transforms import make_transform

__all__ = ["checked_email", "checked_fields", "e164"]


def checked_email(email: str) -> str:
    """The normalised e-mail address; refused if it cannot be one."""
    normalised = normalise_email(email)
    local, at, domain = normalised.partition("@")
    if not (local and at and "." in domain):
        raise DsrUsageError("--email is not an e-mail address")
    return normalised


def checked_fields(
    mappings: Mapping[str, SystemMapping], fields: Mapping[str, str]
) -> dict[str, str]:
    """Rectification values: canonical fields only, valid for every system that receives them."""
    if not fields:
        raise DsrUsageError("nothing to rectify: give at least one --set field=value")
    for name, value in fields.items():
        if name not in CANONICAL_FIELDS:
            known = ", ".join(sorted(CANONICAL_FIELDS))
            raise DsrUsageError(f"unknown field {name!r}; canonical fields: {known}")
        if name == "email":
            raise DsrUsageError(
                "the e-mail address identifies the subject and cannot be rectified here; "
                "change it in the source system"
            )
        for system_name, mapping in mappings.items():
            spec = mapping.fields.get(name)
            if spec is not None and spec.outbound and spec.convert(value) is None:
                raise DsrUsageError(f"{name}: the value is not valid for {system_name}")
    return dict(fields)


def e164(phone: str) -> str | None:
    """A phone number as E.164 (numbers without a country code read as Dutch), if it is one."""
    transform = make_transform("phone", "NL")
    assert transform is not None
    value = transform(phone)
    return value if isinstance(value, str) else None
