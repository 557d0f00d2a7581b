"""Settings shared by every system, which each adapter's own settings model extends.

Kept apart from :mod:`connector.config` so adapters can import it without pulling in the
registry (which imports the adapters).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

import pycountry
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    Strict,
    field_validator,
)

if TYPE_CHECKING:
    from connector.mapping import SystemMapping

__all__ = [
    "DAY",
    "HOUR",
    "ConfigPath",
    "OnwardTransfer",
    "ProcessorSettings",
    "RateLimitSettings",
    "StrictModel",
    "SystemSettings",
    "WebhookSettings",
]


def _no_nul(value: Any) -> Any:
    # TOML allows "\u0000" in a string, and no file name holds one: opening such a path
    # raised ValueError ("embedded null byte") deep inside a command, an internal error
    # naming no key, where a typo in the path is bad configuration.
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("holds a NUL character (\\u0000); no file's path has one")
    return value


#: A file or folder the config names (a mapping, a CA bundle, the store). TOML has no path
#: type: a path is written as a string, so this one key type is read laxly.
ConfigPath = Annotated[Path, Strict(False), BeforeValidator(_no_nul)]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, so typos never pass silently.

    Numbers are finite: TOML has ``inf`` and ``nan``, and a timeout of ``inf`` is no
    timeout (a system that never answers held a sync forever), a wait of ``inf`` no retry.

    Values are strict: TOML has numbers, booleans and dates of its own, so a quoted one
    (``timeout_seconds = "30"``, ``allow_insecure_loopback = "no"``) is a mistake to name,
    not a string for pydantic to guess a value from. An integer is still a number of
    seconds (``timeout_seconds = 30``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)


#: Bounds of the time a config may give, in seconds. Finite is not enough: 1e300 seconds is
#: as much no timeout (no retry, no window) as ``inf`` is, and no deployment waits longer on
#: one vendor call than an hour, or needs a rate window or a retry wait beyond a day (the
#: longest vendor window, Pipedrive's daily budget).
HOUR = 3600
DAY = 24 * HOUR


class RateLimitSettings(StrictModel):
    """``{ requests = 190, per_seconds = 10 }``: at most that many calls per rolling window."""

    requests: int = Field(gt=0)
    per_seconds: float = Field(gt=0, le=DAY)


class WebhookSettings(StrictModel):
    """Inbound webhook verification for one system.

    ``previous_secret``: the one ``secret`` replaced, while it is rotated at the vendor. A
    vendor goes on signing with the old secret for a while (and retries what it signed
    with it), so deliveries verified by either are taken until it is removed.
    """

    secret: SecretStr
    previous_secret: SecretStr | None = None

    def secrets(self) -> list[str]:
        """The secrets a delivery may be verified with: the current one first."""
        held = [self.secret, self.previous_secret]
        return [secret.get_secret_value() for secret in held if secret is not None]


#: Codes ISO 3166-1 leaves to its users that its users agree on, by name in English and Dutch:
#: Kosovo's "XK" (the EU's, libphonenumber's, the vendors' country lists). pycountry holds
#: none of them, so a processor in Kosovo could not be registered, nor a transfer to it.
USER_ASSIGNED_COUNTRIES = {"XK": ("Kosovo", "Kosovo")}


def _iso_country(value: str, what: str = "where the data is processed") -> str:
    # Whether a transfer leaves the EEA is decided on this code: "EU", "Estonia" or the
    # alpha-3 "EST" matched no EEA country, and an Estonian processor was registered as
    # a transfer to a third country with its safeguard missing.
    code = value.strip().upper()
    if code in USER_ASSIGNED_COUNTRIES:
        return code
    if len(code) != 2 or pycountry.countries.get(alpha_2=code) is None:
        raise ValueError(
            f"{value!r} is not an ISO 3166-1 alpha-2 country code; give the country "
            f'{what} as two letters, e.g. "NL", "IE", "US" ("GB" for the United Kingdom)'
        )
    return code


class OnwardTransfer(StrictModel):
    """One entry of ``onward_transfers``: a country the processor's sub-processors (or its
    parent) take the data to, and the safeguard for it (Art. 30(1)(e), 44-46 GDPR).

    ``mechanism`` is this transfer's own: the processor's ``transfer_mechanism`` is not
    carried over, since one safeguard named for one country says nothing of another.
    """

    country: str
    mechanism: str = ""  # e.g. "SCCs 2021/914 module 3", "EU-US Data Privacy Framework"
    recipient: str = ""  # who receives it there, e.g. "HubSpot, Inc."

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        return _iso_country(value, "the data is taken to")


class ProcessorSettings(StrictModel):
    """``[systems.<name>.processor]``: who runs the system and the agreement with them."""

    legal_name: str
    role: Literal["processor", "sub-processor", "controller", "joint-controller"] = "processor"
    agreement_reference: str = ""  # verwerkersovereenkomst reference
    agreement_signed: dt.date | None = None
    agreement_review: dt.date | None = None
    country: str = "NL"  # ISO 3166-1 alpha-2 country of processing
    transfer_mechanism: str = ""  # e.g. "EU-US Data Privacy Framework", "SCCs"
    sub_processors: list[str] = Field(default_factory=list)
    # Where the sub-processors take the data, each with its safeguard. Given (even empty),
    # it is the record of onward transfers; left out, a processor in the EEA that names a
    # transfer_mechanism still counts as passing the data on, to countries not recorded.
    onward_transfers: list[OnwardTransfer] = Field(default_factory=list)
    security: str = ""  # what the processor states about its security measures
    # How to reach the holder: for a joint controller the register names it beside the
    # controller (Art. 30(1)(a)), and check asks for it.
    contact: str = ""

    @field_validator("country")
    @classmethod
    def _country(cls, value: str) -> str:
        return _iso_country(value)


class SystemSettings(StrictModel):
    """What every ``[systems.<name>]`` table holds; adapters add their own keys.

    Credentials arrive here already resolved from their ``env:``/``file:``/``credential:``
    references (for a command that calls no system, to be resolved when first used:
    ``DeferredSecret``).
    """

    required_credentials: ClassVar[tuple[str, ...]] = ()
    #: Why this kind of system cannot be reached over plain http at all, not even on
    #: loopback with ``development.allow_insecure_loopback`` (``None``: it can): its
    #: ``base_url`` must then be https, as the config says when it is loaded.
    https_only: ClassVar[str | None] = None

    adapter: str
    base_url: str
    mapping: ConfigPath
    ca_bundle: ConfigPath | None = None
    credentials: dict[str, SecretStr] = Field(default_factory=dict)
    rate_limit: RateLimitSettings | None = None
    timeout_seconds: float = Field(default=30.0, gt=0, le=HOUR)
    #: The whole of one call, however slowly its answer trickles in (the timeouts run between
    #: bytes); ``None``: four times ``timeout_seconds``, so at most four hours too.
    deadline_seconds: float | None = Field(default=None, gt=0, le=4 * HOUR)
    max_concurrency: int | None = Field(default=None, gt=0)
    webhooks: WebhookSettings | None = None
    processor: ProcessorSettings | None = None

    def credential(self, name: str) -> str:
        """The clear value of one credential (for building auth headers only)."""
        return self.credentials[name].get_secret_value()

    def check_warnings(self) -> list[str]:
        """What ``check`` tells of this system's settings that may be meant and may be a
        mistake (a name the adapter does not know, which the vendor may): worth a look, no
        failure. Each names the key it is about, below ``systems.<name>``. None here."""
        return []

    def check_mapping(self, mapping: SystemMapping) -> None:
        """Refuse a mapping this kind of system cannot be read or written with, where its
        adapter has a rule the mapping's own file cannot state (Shopify's paths are GraphQL
        field names). Run when the config is loaded, so ``check`` refuses what a sync would
        refuse only once it opened the systems. Every mapping passes here.

        Raises:
            ConfigError: naming the mapping file and its key.
        """
        del mapping
