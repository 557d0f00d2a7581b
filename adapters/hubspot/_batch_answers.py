"""Reading HubSpot's answer to a batch write (200, or 207 for a partial failure): which input
each result and each error names, and the reason and retry an error gives its records.

Kept apart from the writes (:mod:`adapters.hubspot._writes`) because what may be read out of
an error is a privacy rule of its own: a reason holds HubSpot's codes only, never its
message, which quotes what was sent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from connector.http import SystemClient

#: Error categories worth retrying when HubSpot reports them per input in a 207.
RETRYABLE_CATEGORIES: Final = frozenset({"RATE_LIMITS", "RATE_LIMIT", "INTERNAL_ERROR", "LOCKED"})


def _result_ref(result: Mapping[str, Any], by_email: Mapping[str, str]) -> str | None:
    trace = result.get("objectWriteTraceId")
    if isinstance(trace, str) and trace:
        return trace
    properties = result.get("properties")
    if isinstance(properties, dict):
        email = properties.get("email")
        if isinstance(email, str):
            return by_email.get(email.lower())
    return None


def _error_refs(error: Mapping[str, Any]) -> list[str]:
    context = error.get("context")
    if not isinstance(context, dict):
        return []
    traces = context.get("objectWriteTraceId")
    if isinstance(traces, str):
        return [traces]
    if isinstance(traces, list):
        return [trace for trace in traces if isinstance(trace, str)]
    return []


def _refs_by_sent_id(error: Mapping[str, Any], by_sent_id: Mapping[str, str]) -> list[str]:
    """The records an error names by the ids their inputs were sent with (``context.ids``),
    as HubSpot names the contacts a ``batch/update`` found no live one for
    (``OBJECT_NOT_FOUND``). Read by trace id alone, such a record was "neither confirmed nor
    refused", retried by the same id for good: never written by e-mail, nor to the record a
    merge made of its contact."""
    context = error.get("context")
    ids = context.get("ids") if isinstance(context, dict) else None
    if not isinstance(ids, list):
        return []
    named = [str(sent).lower() for sent in ids if isinstance(sent, str | int)]
    return [by_sent_id[sent] for sent in named if sent and sent in by_sent_id]


def _category(error: Mapping[str, Any], client: SystemClient) -> str:
    """The error's category where it passes the client's rule for what a category may carry
    (:meth:`~connector.http.SystemClient.is_category`), else ``BATCH_ERROR``; never its
    message, which echoes input. The reason goes to dead letters and ``status``: a
    "category" holding digits (a phone number) or a lone word (a name) is no code."""
    category = error.get("category")
    return category if isinstance(category, str) and client.is_category(category) else "BATCH_ERROR"


_JSON: Final = json.JSONDecoder()


def _problem_codes(error: Mapping[str, Any], client: SystemClient) -> list[str]:
    """HubSpot's codes for what it refused in an input, which its category alone does not
    say: a property the portal lacks (``PROPERTY_DOESNT_EXIST``) or a value it will not take
    (``INVALID_EMAIL``). They come from the error's details (``errors[].code``) and from the
    problems its message lists as JSON after "Property values were not valid: " (``error``,
    as HubSpot's error-handling guide shows it). Only what passes the client's rule for
    codes is kept; the message's text, which quotes what was sent, never is."""
    found: list[Any] = []
    details = error.get("errors")
    if isinstance(details, list):
        found += [item.get("code") for item in details if isinstance(item, dict)]
    message = error.get("message")
    if isinstance(message, str) and "[" in message:
        try:
            # The list alone: text HubSpot may add after it is no reason to read none.
            problems, _ = _JSON.raw_decode(message, message.index("["))
        except ValueError:
            problems = None
        if isinstance(problems, list):
            found += [item.get("error") for item in problems if isinstance(item, dict)]
    return sorted({code for code in found if isinstance(code, str) and client.is_category(code)})


def _is_retryable(error: Mapping[str, Any], category: str) -> bool:
    status = str(error.get("status") or "")
    if status.isdecimal() and (int(status) >= 500 or int(status) == 429):
        return True
    return category in RETRYABLE_CATEGORIES
