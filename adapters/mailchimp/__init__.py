"""Mailchimp Marketing API 3.0 audience members: the adapter, its settings and its sandbox."""

from __future__ import annotations

from adapters.mailchimp.adapter import (
    SPEC,
    MailchimpAdapter,
    MailchimpSettings,
    client_config,
    mailchimp_limits,
    wait_hint,
)
from adapters.mailchimp.payloads import subscriber_hash
from adapters.mailchimp.sandbox import MailchimpSandbox

__all__ = [
    "SPEC",
    "MailchimpAdapter",
    "MailchimpSandbox",
    "MailchimpSettings",
    "client_config",
    "mailchimp_limits",
    "subscriber_hash",
    "wait_hint",
]
