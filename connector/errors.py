"""The one error tree of klantsync.

Every exception the connector raises on purpose is a :class:`KlantsyncError`. The subclass says
what happens next, so callers branch on *kind*, never on message text::

    KlantsyncError
    ├── ConfigError            bad configuration: exit 2; the message names file, key and problem
    ├── RemoteError            a call to an external system failed (system, method, path, status)
    │   ├── RetryableError     transport failure, 429, 5xx: retried with backoff (or after the
    │   │   │                      vendor's Retry-After, which it carries), then left queued
    │   │   └── RateLimitedError   the vendor's rate limit (429; Mailchimp's overload 403);
    │   │                          carries its wait hint; counts toward an outage as a 429
    │   ├── FatalRemoteError   401/403/404 on a route, a redirect, TLS failure: stop this
    │   │                      system's work
    │   └── RecordError        the vendor rejected one record (4xx): dead-letter it, go on
    ├── StoreError             the state store is unusable (locked by another daemon or sync,
    │   │                      bad schema, damaged, not a klantsync store): exit 1
    │   ├── StoreFullError     the store's disk is full: exit 1, saying what the work under way
    │   │                      left and how to go on (its ``next_step``)
    │   └── StorePathError     store.path names a place no store can be (a folder, or a folder
    │                          that cannot be created): bad configuration, exit 2
    └── ReceiptError           a signed receipt or the audit chain does not verify

Messages carry the system name, HTTP method, the URL path's *route* and status only: never
request or response bodies, query strings, e-mails, names, phones or tokens. Those can hold
personal data, and exception text ends up in logs, dead letters and the audit trail. The route
is the path with every value in it (a customer's number, a subscriber hash, an address) read
as ``{id}`` (:func:`route_of`): ``DELETE /wp-json/wc/v3/customers/7`` names the shop's record
of one person, and a failed erasure step's entry keeps its error text for years after the
erasure deleted the rows that tied that number to them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self
from urllib.parse import urlsplit

__all__ = [
    "ConfigError",
    "FatalRemoteError",
    "KlantsyncError",
    "RateLimitedError",
    "ReceiptError",
    "RecordError",
    "RemoteError",
    "RetryableError",
    "StoreError",
    "StoreFullError",
    "StorePathError",
    "route_of",
]

#: A path segment an error's route keeps as it is: a word of the vendor's API (``customers``,
#: ``delete-permanent``, ``graphql.json``), a version (``v3``, ``2025-01``) or a template's
#: placeholder (``{subscriber_hash}``).
_ROUTE_WORD = re.compile(r"[A-Za-z_-]+(?:\.[A-Za-z]+)?|v\d+|\d{4}-\d{2}|\{[A-Za-z_]+\}")
#: A run of hex digits long enough to be a hash or a key, even one with no digit in it.
_HEX_VALUE = re.compile(r"[0-9A-Fa-f]{8,}")


def route_of(path: str) -> str:
    """``path`` as a route: any segment that is not a word of the API reads ``{id}``.

    Ids, hashes and addresses are told from the API's own words by their form, not by a list
    of each vendor's routes, so an adapter cannot forget one: a number, a hash, an address
    (``@``, or escaped), an id of letters and digits. A whole URL (an adapter calling beside
    its base URL) keeps its path only, and a query string is dropped.
    """
    if "://" in path:
        try:
            path = urlsplit(path).path
        except ValueError:
            return "<invalid URL>"
    path = path.split("?", 1)[0].split("#", 1)[0]
    return "/".join(
        segment
        if not segment or (_ROUTE_WORD.fullmatch(segment) and not _HEX_VALUE.fullmatch(segment))
        else "{id}"
        for segment in path.split("/")
    )


class KlantsyncError(Exception):
    """Base of every error klantsync raises on purpose."""


class ConfigError(KlantsyncError):
    """The configuration (or a mapping it names) is invalid; the CLI exits 2.

    Args:
        file: the file that holds the problem.
        key: dotted key inside that file, e.g. ``systems.crm.base_url``.
        problem: what is wrong, in words; never the value of a secret.
    """

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        #: Further problems found in the same load of the config, told with this one.
        self.also: tuple[ConfigError, ...] = ()
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


class RemoteError(KlantsyncError):
    """A call to an external system failed.

    Args:
        system: configured system name (e.g. ``crm``).
        method: HTTP method.
        path: the URL path; kept as its route (:func:`route_of`), with no query string
            (which may hold e-mails or keys) and no id, hash or address in it.
        status: HTTP status, or ``None`` for transport failures.
        detail: a short vendor error *category* (e.g. ``VALIDATION_ERROR``), never a message body.
    """

    def __init__(
        self,
        system: str,
        method: str,
        path: str,
        status: int | None = None,
        detail: str = "",
    ) -> None:
        self.system = system
        self.method = method
        self.path = route_of(path)
        self.status = status
        self.detail = detail
        status_text = f" -> {status}" if status is not None else ""
        detail_text = f" ({detail})" if detail else ""
        super().__init__(f"{system}: {method} {self.path}{status_text}{detail_text}")

    def renamed(self, path: str) -> RemoteError:
        """This error naming ``path`` instead: a route's own template (``{subscriber_hash}``)
        where :func:`route_of` would say ``{id}``."""
        return type(self)(self.system, self.method, path, self.status, self.detail)


class RetryableError(RemoteError):
    """Transient: a transport error, a 5xx or a 429. Retried; if retries run out, left queued.

    ``wait_seconds`` is how long the vendor asked to be left alone (a 503's ``Retry-After``),
    if it said: no retry goes sooner.
    """

    def __init__(
        self,
        system: str,
        method: str,
        path: str,
        status: int | None = None,
        detail: str = "",
        wait_seconds: float | None = None,
    ) -> None:
        super().__init__(system, method, path, status, detail)
        self.wait_seconds = wait_seconds

    def renamed(self, path: str) -> Self:
        return type(self)(
            self.system, self.method, path, self.status, self.detail, self.wait_seconds
        )


class RateLimitedError(RetryableError):
    """The vendor answered 429, or its own "slow down" (Mailchimp's bare 403 under load).
    ``wait_seconds`` is the vendor's hint (policy or header), if any."""

    def __init__(
        self,
        system: str,
        method: str,
        path: str,
        status: int | None = 429,
        detail: str = "",
        wait_seconds: float | None = None,
    ) -> None:
        super().__init__(system, method, path, status, detail, wait_seconds)


class BudgetSpentError(RateLimitedError):
    """The vendor's budget of calls is spent for a while (Pipedrive's daily one): not retried,
    and the system's client sends nothing until then (the work stays queued)."""


class FatalRemoteError(RemoteError):
    """Not worth retrying now: bad credentials, missing scope, TLS failure, unknown route, a
    redirect (not followed)."""


class RecordError(RemoteError):
    """The vendor rejected one record; it goes to the dead-letter queue and the rest go on."""


class StoreError(KlantsyncError):
    """The state store cannot be used (another daemon holds it, schema too new, corrupt)."""


class StoreFullError(StoreError):
    """The disk holding the store is full; the write was rolled back.

    What to do next depends on the work it stopped (a sync resumes after its last page, an
    erasure recorded is finished by ``dsr retry ID``, a status changed nothing): the store
    does not know that work, so whoever does says it with :meth:`then`, the innermost first.

    Args:
        path: the store's path.
        said: SQLite's words for it (``database or disk is full``), never its message.
        next_step: what to do and what the stopped work left; ``None``: free space and run
            again.
    """

    def __init__(self, path: Path, said: str, next_step: str | None = None) -> None:
        self.path = path
        self.said = said
        self.next_step = next_step
        super().__init__(
            f"{path}: the disk holding the store is full (SQLite: {said}); the write was "
            f"rolled back and nothing queued is lost: {next_step or 'free space and run again'}"
        )

    def then(self, next_step: str) -> StoreFullError:
        """This error saying ``next_step``, unless work nearer the failure said one already."""
        if self.next_step is not None:
            return self
        return StoreFullError(self.path, self.said, next_step)


class StorePathError(StoreError):
    """No store can be at ``store.path``: it is a folder, or its folder cannot be created.

    That is the configuration's to fix, so the CLI exits 2 naming ``store.path``; the store
    does not know the config file, so the command layer adds it.

    Args:
        path: the store's path.
        problem: what is wrong there and what to do, in words.
    """

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


class ReceiptError(KlantsyncError):
    """A signed receipt or the audit chain failed verification."""


#: Answers that say the system, not the record, is the trouble.
_UNREACHABLE_STATUSES = frozenset({429, 502, 503, 504})


def system_down(error: RemoteError) -> bool:
    """Whether a call's failure says the system is unreachable or refusing all work (no
    answer at all, a gateway's or the vendor's "unavailable", a rate limit past its
    retries), not that something in the records made it fail (a 500 on one batch).

    A rate limit is one whatever status the vendor gave it: Mailchimp's overload is a bare
    403 (``is_overloaded``), which, judged by its status, let a run spend every record's
    retries on an account refusing all work instead of leaving the backlog queued.
    """
    return (
        error.status is None
        or error.status in _UNREACHABLE_STATUSES
        or isinstance(error, RateLimitedError)
    )
