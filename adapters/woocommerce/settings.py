"""A WooCommerce shop's settings, limits and client: what the ``[systems.<name>]`` table holds.

Kept apart from :mod:`adapters.woocommerce.adapter` so the operator-facing knobs (which roles a
pull lists, whether an erasure blanks the orders) and how the client authenticates read in one
place.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Final, Literal

from pydantic import field_validator

from connector.adapter import ClientConfig, Limits
from connector.http import retry_after
from connector.ratelimit import RateLimit
from connector.settings import SystemSettings

__all__ = [
    "BATCH_SIZE",
    "BUILT_IN_ROLES",
    "PAGE_SIZE",
    "WooCommerceSettings",
    "woocommerce_client_config",
    "woocommerce_limits",
]

PAGE_SIZE = 100  # WordPress caps per_page at 100
BATCH_SIZE = 100  # woocommerce_rest_batch_items_limit, across create + update + delete

#: WordPress's and WooCommerce's own roles; a plugin may register more (``add_role``).
BUILT_IN_ROLES: Final = (
    "administrator",
    "editor",
    "author",
    "contributor",
    "subscriber",
    "customer",
    "shop_manager",
)
#: A role name as WordPress makes them (``sanitize_key``): lower-case letters, digits, ``_``
#: and ``-``. wc/v3 takes any role the site registered, so one a plugin adds
#: (``wholesale_customer``) is named as it is; whether the shop knows it is
#: ``check --online``'s (:meth:`WooCommerceAdapter.check_settings`).
ROLE_NAME = re.compile(r"[a-z0-9_-]+")
#: What a role that is not a role name is told (the value itself is not repeated: a
#: config error names the key, never what was written there).
ROLE_EXPECTED = (
    'must be "all", a role name (lower-case letters, digits, _ and -: "customer", or one a '
    'plugin adds), or a list of roles but "all" (role = ["customer", "subscriber"])'
)
#: What an item of a list of roles that is none of them is told.
ROLE_IN_LIST = (
    'is not a role name: lower-case letters, digits, _ and - ("all" stands alone: role = "all")'
)


class WooCommerceSettings(SystemSettings):
    """The ``[systems.<name>]`` table of a WooCommerce shop.

    Attributes:
        anonymise_orders: blank the subject's orders (billing, shipping, note; not the
            addresses' country and state) before deleting the customer on erasure. Turn off
            only where order data must be kept by law, and say so in the register.
        role: which users a pull lists (WooCommerce's own default is ``customer``): "all",
            one role, or several (a tuple of two or more: a one-role list is read as that
            role). wc/v3 lists one role per call, or all: several are listed as all, and
            those of another role left out here (:meth:`WooCommerceAdapter.pull_includes`).
    """

    required_credentials: ClassVar[tuple[str, ...]] = ("consumer_key", "consumer_secret")
    #: WooCommerce reads the key and secret (HTTP Basic) over HTTPS only; over plain http it
    #: wants OAuth 1.0a signatures [docs], which this adapter does not make.
    https_only: ClassVar[str | None] = (
        "WooCommerce accepts the consumer key and secret over https:// only (over http:// it "
        "requires OAuth 1.0a signatures, which klantsync does not send): every call would be "
        "refused with 401"
    )

    adapter: Literal["woocommerce"]
    anonymise_orders: bool = True
    role: str | tuple[str, ...] = "all"

    @field_validator("role", mode="before")
    @classmethod
    def _roles(cls, value: Any) -> Any:
        # Checked here, not by the type: a union's own error names its branches, which
        # someone editing the TOML file never wrote.
        if isinstance(value, str):
            if value != "all" and not ROLE_NAME.fullmatch(value):
                raise ValueError(ROLE_EXPECTED)
            return value
        if not isinstance(value, list | tuple):
            raise ValueError(ROLE_EXPECTED)
        if not value:
            raise ValueError(
                'an empty list of roles lists nobody: name one or more roles, or "all"'
            )
        for place, name in enumerate(value, start=1):
            if not isinstance(name, str) or not ROLE_NAME.fullmatch(name) or name == "all":
                raise ValueError(f"item {place} of the list {ROLE_IN_LIST}")
        named = tuple(dict.fromkeys(value))
        # One role alone is asked of the shop by name, which lists no one else at all.
        return named[0] if len(named) == 1 else named

    def check_warnings(self) -> list[str]:
        """A role not among WordPress's and WooCommerce's own: a plugin's, or a typo
        ("customers") that a sync of one role would meet as a bare 400 and a list of roles
        as nobody listed, in silence. ``check --online`` asks the shop."""
        named = (self.role,) if isinstance(self.role, str) else self.role
        return [
            f"role: {role!r} is not one of WordPress's or WooCommerce's own roles "
            f"({', '.join(BUILT_IN_ROLES)}): right for a role a plugin adds; "
            "check --online asks the shop whether it knows it"
            for role in named
            if role != "all" and role not in BUILT_IN_ROLES
        ]


def woocommerce_limits(settings: WooCommerceSettings) -> Limits:
    """wc/v3 has no rate limit of its own; a host or WAF limit comes from the settings."""
    rate: dict[str, RateLimit] = {}
    if settings.rate_limit is not None:
        rate["default"] = RateLimit(settings.rate_limit.requests, settings.rate_limit.per_seconds)
    return Limits(
        batch_size=BATCH_SIZE,
        page_size=PAGE_SIZE,
        rate=rate,
        max_concurrency=settings.max_concurrency or 4,
    )


def woocommerce_client_config(settings: WooCommerceSettings) -> ClientConfig:
    """HTTP basic with the consumer key and secret (over HTTPS, as WooCommerce prescribes)."""
    return ClientConfig(
        auth=(settings.credential("consumer_key"), settings.credential("consumer_secret")),
        wait_hint=retry_after,
    )
