"""Value transforms a mapping can name: ``transform = ["trim", "phone"]``.

Each takes a value (or ``None``) and returns the normalised value or ``None`` when there is
nothing usable; none of them raises on bad data, because one customer's odd phone number must
not stop a sync. Phones become E.164 with libphonenumber, countries ISO 3166-1 alpha-2.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import phonenumbers
import pycountry

__all__ = ["TRANSFORMS", "Transform", "make_transform"]

Transform = Callable[[Any], Any]


def _trim(value: Any) -> Any:
    if isinstance(value, str):
        stripped = " ".join(value.split())
        return stripped or None
    return value


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _name(value: Any) -> Any:
    """Collapse spaces; fix ALL-CAPS or all-lower names, leave mixed case ("van der Berg")."""
    if not isinstance(value, str):
        return value
    text = " ".join(value.split())
    if not text:
        return None
    if text.isupper() or text.islower():
        return "-".join(
            " ".join(w[:1].upper() + w[1:].lower() for w in part.split(" "))
            for part in text.split("-")
        )
    return text


def _phone_for(region: str) -> Transform:
    def to_e164(value: Any) -> Any:
        if not isinstance(value, str) or not value.strip():
            return None
        return _e164(value.strip(), region)

    return to_e164


@lru_cache(maxsize=65_536)
def _e164(text: str, region: str) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


@lru_cache(maxsize=1024)
def _country_code(text: str) -> str | None:
    candidate = text.strip()
    if not candidate:
        return None
    if len(candidate) == 2:
        found = pycountry.countries.get(alpha_2=candidate.upper())
        return str(found.alpha_2) if found else None
    if len(candidate) == 3:
        found = pycountry.countries.get(alpha_3=candidate.upper())
        if found:
            return str(found.alpha_2)
    local = {"nederland": "NL", "belgië": "BE", "belgie": "BE", "duitsland": "DE"}
    if candidate.lower() in local:
        return local[candidate.lower()]
    try:
        return str(pycountry.countries.lookup(candidate).alpha_2)
    except LookupError:
        return None


def _country(value: Any) -> Any:
    return _country_code(value) if isinstance(value, str) else None


def _date(value: Any) -> Any:
    """ISO 8601 date (``YYYY-MM-DD``) from a date, datetime or ISO-like string."""
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and value.strip():
        text = value.strip().replace("Z", "+00:00")
        for parse in (dt.datetime.fromisoformat, dt.date.fromisoformat):
            try:
                parsed = parse(text)
            except ValueError:
                continue
            return (
                parsed.date().isoformat()
                if isinstance(parsed, dt.datetime)
                else (parsed.isoformat())
            )
        for fmt in ("%d-%m-%Y", "%d/%m/%Y"):
            try:
                return dt.datetime.strptime(text, fmt).date().isoformat()
            except ValueError:
                continue
    return None


def _bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"1", "true", "yes", "ja", "on", "subscribed", "y"}:
            return True
        if text in {"0", "false", "no", "nee", "off", "unsubscribed", "n", ""}:
            return False
    return None


def _string(value: Any) -> Any:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


#: Transforms by name. ``phone`` is built per mapping because it needs a default region.
TRANSFORMS: dict[str, Transform] = {
    "trim": _trim,
    "lower": _lower,
    "upper": _upper,
    "name": _name,
    "country": _country,
    "date": _date,
    "bool": _bool,
    "string": _string,
}


def make_transform(name: str, default_region: str) -> Transform | None:
    """The transform called ``name``, or ``None`` if there is no such transform."""
    if name == "phone":
        return _phone_for(default_region)
    return TRANSFORMS.get(name)
