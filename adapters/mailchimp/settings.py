"""How klantsync talks to a Mailchimp account: its settings, limits, auth and 429 reader.

Kept apart from :mod:`adapters.mailchimp.adapter` so the operator-facing knobs (audiences,
double opt-in, connections) and Mailchimp's limits read in one place.

Mailchimp's only limit is **10 simultaneous connections per account**: there is no request
quota and no rate-limit header, and the 11th concurrent call is answered 429. So the adapter
caps its own calls in flight (a semaphore of ``max_connections``), and a 429 is retried with
the client's exponential backoff, since there is no vendor hint to wait for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, ValidationInfo, field_validator

from connector.adapter import ClientConfig, Limits
from connector.errors import ConfigError
from connector.ratelimit import RateLimit
from connector.secrets import DeferredSecret
from connector.settings import SystemSettings

if TYPE_CHECKING:
    from connector.mapping import SystemMapping

__all__ = [
    "ACCOUNT_CONNECTIONS",
    "BATCH_SIZE",
    "ERROR_TITLES",
    "PAGE_SIZE",
    "MailchimpSettings",
    "client_config",
    "is_overloaded",
    "mailchimp_limits",
    "wait_hint",
]

#: Mailchimp's error ``title``s, its category of an error (the ``detail`` beside it echoes the
#: e-mail): the ones a member write can meet, which become a record's failure reason, and the
#: documented error types. The client keeps these titles (and the standard reason phrases such
#: as ``Too Many Requests``) and drops any other title, which could be text about a person.
ERROR_TITLES: Final = frozenset(
    {
        "API Key Invalid",
        "API Key Missing",
        "Compliance Related",
        "Forgotten Email Not Subscribed",
        "Invalid Action",
        "Invalid Method Override",
        "Invalid Resource",
        "JSON Parse Exception",
        "Member Exists",
        "Member In Compliance State",
        "Requested Fields Invalid",
        "Resource Nesting Too Deep",
        "Resource Not Found",
        "User Disabled",
        "Wrong Datacenter",
    }
)

#: Simultaneous connections Mailchimp allows per account (all API keys and apps together).
ACCOUNT_CONNECTIONS: Final = 10

#: Records per ``upsert`` call. Each record is one call per audience (no batch endpoint is
#: used, see the adapter), so 50 keeps a call short while filling the 10 connections.
BATCH_SIZE: Final = 50

#: Most members ``GET /lists/{id}/members`` returns per page (``count`` max 1000).
PAGE_SIZE: Final = 1000

#: Mailchimp's API host, below which each data centre has its own (``us21.api...``).
MAILCHIMP_HOST: Final = "api.mailchimp.com"

#: The path of the API's root on that host.
API_ROOT: Final = "/3.0"

#: Basic auth takes any user name; Mailchimp reads only the password (the API key).
AUTH_USER: Final = "klantsync"


def _at_mailchimp(base_url: str) -> tuple[str, str] | None:
    """The data centre (``us21``; ``""`` where the host names none) and the path of a base
    URL at Mailchimp's own host; ``None`` for another host (the sandbox, a proxy) or no URL
    at all (the config's own URL check says so)."""
    try:
        parts = urlsplit(base_url)
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    if host != MAILCHIMP_HOST and not host.endswith(f".{MAILCHIMP_HOST}"):
        return None
    centre = host.removesuffix(MAILCHIMP_HOST).rstrip(".")
    return ("" if "." in centre else centre), parts.path


class MailchimpSettings(SystemSettings):
    """The ``[systems.<name>]`` table of a Mailchimp account.

    ``base_url`` is ``https://<dc>.api.mailchimp.com/3.0``, where ``<dc>`` is the suffix of the
    API key after its ``-`` (``us21``).

    Attributes:
        list_ids: the audiences members are written to (at least one). Erasure covers these
            and every other audience the person is found in by ``search-members``.
        status_if_new: the status a *new* member gets. ``"subscribed"`` adds them at once
            (the shop already holds their marketing consent); ``"pending"`` is double opt-in:
            Mailchimp sends a confirmation e-mail and the member is subscribed only once they
            confirm. An existing member's status is never changed by a normal sync, but for
            a ``transactional`` one (a store contact that never opted in at Mailchimp), who
            is given this status as a new member is: the shop holds their consent.
        max_connections: calls in flight at once. Mailchimp allows 10 per *account*; lower
            this when other integrations use the same account, so together they stay under 10.
    """

    required_credentials: ClassVar[tuple[str, ...]] = ("api_key",)

    adapter: Literal["mailchimp"]
    list_ids: list[str] = Field(min_length=1)
    status_if_new: Literal["subscribed", "pending"] = "subscribed"
    max_connections: int = Field(default=ACCOUNT_CONNECTIONS, gt=0, le=ACCOUNT_CONNECTIONS)

    @field_validator("list_ids")
    @classmethod
    def _list_ids_are_plain_and_unique(cls, value: list[str]) -> list[str]:
        # List ids go into URL paths: only the characters Mailchimp's ids use (10 hex digits
        # in practice) are accepted, so no id can reach another route.
        for list_id in value:
            if not (0 < len(list_id) <= 64 and all(ch.isalnum() for ch in list_id)):
                raise ValueError("each list id must be letters and digits only (e.g. a1b2c3d4e5)")
        if len(set(value)) != len(value):
            raise ValueError("list ids must be unique")
        return value

    @field_validator("base_url")
    @classmethod
    def _mailchimp_s_api_root(cls, value: str) -> str:
        # Mailchimp's own host answers its API under /3.0 alone, at the data centre the key
        # names: without "/3.0" every call is answered 404, which a sync reported as
        # "Resource Not Found" and check --online as audiences that do not exist. Another
        # host (the sandbox, a proxy in front of Mailchimp) is the operator's to choose.
        at = _at_mailchimp(value)
        if at is None:
            return value
        centre, path = at
        if not centre or path.rstrip("/") != API_ROOT:
            raise ValueError(
                f'must be Mailchimp\'s API root, "https://<dc>.{MAILCHIMP_HOST}{API_ROOT}", '
                'where <dc> is the end of the API key after its "-" (us21)'
            )
        return value

    @field_validator("credentials")
    @classmethod
    def _key_of_the_url_s_data_centre(
        cls, value: dict[str, SecretStr], info: ValidationInfo
    ) -> dict[str, SecretStr]:
        # A key works at its own data centre alone (the end of the key after its "-"): at
        # another, every call is refused 401 "API Key Invalid", first seen by a sync, as
        # a refused key rather than the typo in base_url it is. Told only of a key already
        # read (a command that calls no system leaves it unread) and of Mailchimp's host.
        key = value.get("api_key")
        base_url = info.data.get("base_url")
        if key is None or isinstance(key, DeferredSecret) or not isinstance(base_url, str):
            return value
        at = _at_mailchimp(base_url)
        centre = at[0] if at is not None else ""
        _, dash, suffix = key.get_secret_value().rpartition("-")
        if centre and dash and suffix.isalnum() and suffix.lower() != centre:
            raise ValueError(
                f'api_key is for data centre {suffix.lower()} (its end after "-") and '
                f"base_url for {centre}: Mailchimp refuses a key at another data centre "
                f"than its own; make base_url https://{suffix.lower()}.{MAILCHIMP_HOST}{API_ROOT}"
            )
        return value

    @field_validator("max_concurrency")
    @classmethod
    def _within_the_account_s_connections(cls, value: int | None) -> int | None:
        # The generic key sets the same semaphore as max_connections: past 10 it let the
        # connector open more connections than Mailchimp allows an account, and be refused.
        if value is not None and value > ACCOUNT_CONNECTIONS:
            raise ValueError(
                f"Mailchimp allows {ACCOUNT_CONNECTIONS} connections per account; "
                "use max_connections (at most 10)"
            )
        return value

    def check_mapping(self, mapping: SystemMapping) -> None:
        """Refuse a path the mapping reads that Mailchimp cannot be asked for: members are
        read with the mapping's paths alone, as ``fields`` lists them, parted by commas
        (``MailchimpAdapter.ask_only_for_paths``), so a path holding one would be asked for
        as two, and its field never read."""
        for path, key in mapping.source_paths().items():
            if "," in path:
                raise ConfigError(str(mapping.path), key, "a Mailchimp path cannot hold a comma")


def mailchimp_limits(settings: MailchimpSettings) -> Limits:
    """Mailchimp's limits under ``settings``: 50 per upsert, 1000 per page, 10 connections.

    ``rate`` stays empty unless the operator sets ``rate_limit``: Mailchimp limits connections,
    not requests per window.
    """
    rate: dict[str, RateLimit] = {}
    if settings.rate_limit is not None:
        rate["default"] = RateLimit(settings.rate_limit.requests, settings.rate_limit.per_seconds)
    return Limits(
        batch_size=BATCH_SIZE,
        page_size=PAGE_SIZE,
        rate=rate,
        max_concurrency=settings.max_concurrency or settings.max_connections,
    )


def wait_hint(response: httpx.Response) -> float | None:
    """Always ``None``: Mailchimp's 429 carries no ``Retry-After`` and no rate-limit headers.

    A 429 means "too many connections right now", which frees as soon as calls finish, so
    the client's short exponential backoff is the right wait.
    """
    return None


def is_overloaded(response: httpx.Response) -> bool:
    """Whether a response is the bare 403 Mailchimp may answer under heavy load.

    Its own 403s ("User Disabled", a key without access) are problem documents in JSON; one
    without is the load, a "slow down" to retry after a pause like a 429, not a fatal error
    that stops every write to the audience for the run.
    """
    if response.status_code != 403:
        return False
    return "json" not in response.headers.get("content-type", "").lower()


def client_config(settings: MailchimpSettings) -> ClientConfig:
    """HTTP basic with any user name and the API key as password; Mailchimp's error titles."""
    return ClientConfig(
        auth=(AUTH_USER, settings.credential("api_key")),
        wait_hint=wait_hint,
        error_titles=ERROR_TITLES,
        rate_limited=is_overloaded,
    )
