"""The one place that builds HTTP clients: TLS policy, timeouts, retries, rate limits, errors.

Adapters never construct ``httpx`` clients themselves. They receive a :class:`SystemClient`,
which:

- refuses anything but https (plain http only to loopback, only with the development switch);
- verifies certificates always, against the system's ``ca_bundle`` when one is configured,
  with TLS 1.2 as the floor;
- puts a timeout on every call: connect, write, read (between bytes) and pool wait each, and a
  deadline on the whole of it, so a vendor trickling its answer a byte at a time does not
  hold a call for ever;
- paces calls with a per-system rolling-window limiter (one per named *bucket*, so HubSpot's
  search limit of 4/s is kept apart from its general burst limit);
- retries transport errors, 429 and 5xx with exponential backoff and jitter (tenacity),
  waiting as long as the vendor says when it says (the adapter reads the vendor's signal on
  a 429; a 5xx's ``Retry-After`` is standard HTTP, read by connector/answers.py);
- turns failures into the error tree of :mod:`connector.errors`, whose messages hold the
  system, method, path and status only: no body, no query string, no credentials. The
  vendor's error category rides along only when it is a machine code or a title the adapter
  declared: free text from an error body never does.

Beside it: connector/answers.py reads a vendor's answer (its wait, its JSON, its error
category), connector/directpath.py hands a plain call straight to the transport, and
connector/listen.py checks the daemon's own listener addresses by the host and loopback
rules here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import re
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from connector import jsonutil
from connector.answers import (
    _REASON_PHRASES,
    _error_category,
    _is_category,
    answer_object,
    is_machine_code,
    json_object,
    retry_after,
)
from connector.directpath import _DirectPath as _DirectPath
from connector.errors import (
    BudgetSpentError,
    FatalRemoteError,
    RateLimitedError,
    RecordError,
    RemoteError,
    RetryableError,
)
from connector.h1 import ACCEPT_ENCODING, DeadlineExceeded, H1Transport, UnsafeHeaderError
from connector.ratelimit import RateLimit, RateLimiter

__all__ = [
    "RetryPolicy",
    "SystemClient",
    "WaitHint",
    "answer_object",
    "build_ssl_context",
    "ca_bundle_problem",
    "check_url",
    "host_problem",
    "is_loopback",
    "is_machine_code",
    "json_object",
    "redact_url",
    "retry_after",
    "server_pair_problem",
]

#: Reads a vendor's 429 (or what the adapter takes for one) and says how long to wait, or
#: ``None`` for "use backoff". A 5xx is not handed to it: the readers know their vendor's rate
#: limits (HubSpot's window header is on every answer), and a 5xx's wait is its Retry-After.
WaitHint = Callable[[httpx.Response], float | None]

#: Names that are loopback whatever DNS says: "localhost" is reserved for it (RFC 6761).
#: "localhost.localdomain" is not reserved, only often in /etc/hosts, and resolved elsewhere
#: it would have let plain http (or a listener without TLS) reach past the machine.
LOOPBACK_NAMES = frozenset({"localhost"})


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: A host name's one label: letters (any script: an IDN), digits, hyphens, and underscores,
#: which DNS names of services and containers hold; never a hyphen at either end.
_LABEL = re.compile(r"(?!-)[\w-]{1,63}(?<!-)")


def host_problem(host: str) -> str | None:
    """What is wrong with ``host`` as a host (a name, an IPv4 address, or an IPv6 address,
    bare as a URL's hostname has it or in brackets), in words to follow "the host" (the
    host itself not repeated: what was pasted there may be anything); ``None`` when it is
    one.

    Said as what it is: a stray ``$`` or an empty label between two dots made a listener
    "beyond loopback" and a base URL one that failed only at its first call.
    """
    if host.startswith("[") or host.endswith("]") or ":" in host:
        try:
            ipaddress.IPv6Address(host.removeprefix("[").removesuffix("]"))
        except ValueError:
            return "is not an IPv6 address"
        return None
    if re.fullmatch(r"[0-9.]+", host):
        # Digits and dots are an IPv4 address or nothing: no top-level domain is a number.
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return "is not an IPv4 address (four numbers from 0 to 255, e.g. 127.0.0.1)"
        return None
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return (
            "is not a host name (letters, digits and hyphens, in parts between single dots, "
            'e.g. "shop.example.nl") nor an IP address'
        )
    return None


def check_url(url: str, *, allow_insecure_loopback: bool = False) -> str | None:
    """Apply the TLS policy to a configured URL; return the problem in words, or ``None``.

    https is required. Plain http is accepted only for a loopback host and only when the
    operator has set the explicit development switch, so a typo can never send customer data
    in clear over a network.
    """
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        # A tab or a no-break space pasted in with the URL: TOML keeps it, and the URL
        # passed here, to fail only when a sync first called it.
        return "contains a space or an invisible character (a tab, a no-break space?)"
    if "://" not in url:
        # "shop.example.nl" or "127.0.0.1:8443", the scheme left off: urlsplit finds no
        # host in it (the host read as a scheme, or as a path), and "has no host" pointed
        # at the one part that was there.
        return (
            'does not begin with "https://"; write the whole address (e.g. '
            '"https://shop.example.nl")'
        )
    try:
        parts = urlsplit(url)
    except ValueError:
        return "is not a valid URL"
    if not parts.hostname:
        return "has no host"
    problem = host_problem(parts.hostname)
    if problem:
        return f"has a host that {problem}"
    try:
        port = parts.port  # urllib checks the port only when it is asked for, by raising
    except ValueError:
        port = 0
    if port == 0:
        return "has an invalid port; it must be a number from 1 to 65535"
    if parts.username or parts.password:
        return "must not carry credentials in the URL; use the credentials table"
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        # Each call's path goes after the base: behind a query it became part of the query
        # ("/?portalId=1/crm/v3/..."), and every call went to the root.
        return "must not have a query string or a fragment (the part from ? or #)"
    try:
        httpx.URL(url)  # what the client will make of it: refused now rather than mid-sync
    except httpx.InvalidURL:
        return "is not a valid URL"
    if parts.scheme == "https":
        return None
    if parts.scheme == "http":
        if not is_loopback(parts.hostname):
            return "uses http://; only https:// is allowed (TLS is required for customer data)"
        if not allow_insecure_loopback:
            return (
                "uses http:// to a loopback host; set allow_insecure_loopback = true in "
                "[development] to permit this for local testing"
            )
        return None
    return f"has scheme {parts.scheme!r}; only https:// is allowed"


def redact_url(url: str | httpx.URL) -> str:
    """Scheme, host and path only: the query string may hold e-mails, tokens or keys."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "<invalid URL>"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        # A malformed port: the config checks refuse one, and redacting must never fail.
        port = ""
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def build_ssl_context(ca_bundle: Path | None = None) -> ssl.SSLContext:
    """Verification on, hostname checked, TLS 1.2 minimum; trust ``ca_bundle`` if given.

    Built as :func:`ssl.create_default_context` builds a client's context, less what it
    takes from the environment: it writes every session's secrets to the file
    ``SSLKEYLOGFILE`` names (a debugging variable left in a unit or an image), and with
    them anyone holding a capture of the traffic reads the customer data and credentials
    sent. Nor is any other variable read: the trusted CAs are ``ca_bundle`` or certifi's,
    never ``SSL_CERT_FILE``'s or ``SSL_CERT_DIR``'s.
    """
    if ca_bundle is not None:
        cafile = str(ca_bundle)
    else:
        import certifi  # httpx's own trust store; imported here so tests need no network CA

        cafile = certifi.where()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cafile=cafile)
    if sys.version_info >= (3, 13):
        # What create_default_context sets from 3.13 on, kept so this context verifies as
        # the default one does on every Python (the local CA's certificates pass it).
        context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def ca_bundle_problem(ca_bundle: Path, exc: BaseException | None = None) -> str | None:
    """Why ``ca_bundle`` cannot be trusted as a CA bundle, in words; ``None`` if it can.

    With ``exc`` (what :func:`build_ssl_context` raised) it only words that failure; without,
    it loads the bundle to find out. OpenSSL's reason code is kept: it says what to look for.
    """
    if exc is None:
        try:
            build_ssl_context(ca_bundle)
        except (ssl.SSLError, OSError) as error:
            exc = error
        else:
            return None
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or type(exc).__name__
        return f"CA bundle {ca_bundle} holds no usable PEM certificate ({reason})"
    if isinstance(exc, OSError):
        return f"CA bundle {ca_bundle} cannot be read ({exc.strerror or type(exc).__name__})"
    return f"CA bundle {ca_bundle} cannot be loaded ({type(exc).__name__})"


def server_pair_problem(cert: Path, key: Path, *, strict: bool = False) -> str | None:
    """Why a listener cannot serve TLS with ``cert`` and ``key``, in words; ``None`` if it can.

    A key under a passphrase is refused, not asked for: a service has nobody to type it.
    A key this user may not read is a problem only when ``strict`` (the daemon starting its
    listeners); loading the config for another command, it is left to them.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        reason = exc.reason or type(exc).__name__
        return (
            f"TLS certificate {cert} and key {key} cannot be served ({reason}): each must be "
            "PEM, the key unencrypted and the one the certificate is for"
        )
    except PermissionError as exc:
        if strict:
            return f"TLS certificate {cert} or key {key} cannot be read ({exc.strerror})"
        # Another user than the daemon's (an operator's CLI command): only the listeners,
        # which run as the service user, need to read the key.
        return None
    except OSError as exc:
        return f"TLS certificate {cert} or key {key} cannot be read ({exc.strerror})"
    return None


#: The longest a vendor's wait hint keeps every caller of one of its buckets back.
MAX_HOLD_SECONDS = 3600.0


@dataclass
class RetryPolicy:
    """How hard to try. ``sleep`` is injectable so tests never wait for real.

    Attributes:
        attempts: total tries per call, the first included.
        base_seconds: first backoff; doubles per attempt, with full jitter.
        max_seconds: cap on one backoff, and the longest wait a vendor may ask for that is
            still waited out: a longer one ends the retries (see :meth:`waits_out`).
    """

    attempts: int = 6
    base_seconds: float = 0.5
    max_seconds: float = 30.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def waits_out(self, error: BaseException | None) -> bool:
        """Whether a retry after ``error`` may be waited for.

        Not when the vendor asked us to stay away for longer than ``max_seconds``: a retry
        sent sooner lands in the window it asked us to keep out of (another 429, and WAFs
        block clients that keep knocking), and waiting longer would hold the run. The call
        fails as retryable instead, and its work stays queued for a later run.
        """
        return not (
            isinstance(error, RetryableError)
            and error.wait_seconds is not None
            and error.wait_seconds > self.max_seconds
        )

    def backoff(self, attempt: int, error: BaseException | None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        ceiling = min(self.max_seconds, self.base_seconds * (2 ** (attempt - 1)))
        backoff = random.uniform(ceiling / 2, ceiling)
        if isinstance(error, RetryableError) and error.wait_seconds is not None:
            # The vendor told us how long: never less (see waits_out), plus a little jitter
            # so workers do not stampede. Nor less than the backoff: a wait of 0 (Pipedrive's
            # ``x-ratelimit-reset`` while its 2 s window frees) taken as the whole wait sent
            # every retry in one instant, a burst of 429s, which earns Cloudflare's block.
            hinted = max(0.0, error.wait_seconds)
            return max(hinted + random.uniform(0, min(0.25, hinted / 10 + 0.01)), backoff)
        return backoff


@dataclass
class ClientStats:
    """Counters a system's client keeps for status output and metrics."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0
    server_errors: int = 0
    transport_errors: int = 0
    latencies: list[float] = field(default_factory=list)


def _is_tls_failure(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLError):
            return True
        current = current.__cause__ or current.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc) or "SSL" in type(exc).__name__


def _tls_reason(exc: BaseException) -> str | None:
    """What OpenSSL said was wrong with a TLS connection, in its words, or ``None``.

    "TLS verification failed" alone was said of a certificate expired, one for another host,
    one from a CA ``ca_bundle`` is not, and a server speaking no TLS at all: each sends the
    operator somewhere else. OpenSSL's words for them are fixed texts ("certificate has
    expired", "unable to get local issuer certificate", ``WRONG_VERSION_NUMBER``), with at
    most the host the call asked for; nothing the server sent.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError) and current.verify_message:
            return str(current.verify_message)
        if isinstance(current, ssl.SSLError) and current.reason:
            return str(current.reason)
        current = current.__cause__ or current.__context__
    return None


class _NoCookies(httpx.Cookies):
    """A cookie jar that keeps nothing: vendor APIs authenticate by token, not by session."""

    def extract_cookies(self, response: httpx.Response) -> None:
        # Nothing a vendor sets (load balancer or bot-detection cookies) is ever sent back,
        # and parsing Set-Cookie through urllib's cookie machinery on every answer was a
        # tenth of the client's time per call.
        return None


class _VendorClient(httpx.AsyncClient):
    """httpx's client without cookie state (see :class:`_NoCookies`)."""

    _no_cookies = _NoCookies()

    @property
    def cookies(self) -> httpx.Cookies:
        return self._no_cookies

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        return None  # httpx's constructor sets its empty jar here; nothing to keep


class SystemClient:
    """The HTTP client of one configured system, with the policy above applied to every call.

    Args:
        system: configured system name, used in error messages and metrics.
        base_url: the system's base URL (already checked by :func:`check_url`).
        auth: an httpx auth object or ``None``; headers for token auth go in ``headers``.
        headers: default headers (e.g. the bearer token), never logged.
        ca_bundle: PEM file of extra trusted CAs, or ``None`` for the public roots.
        limits: rate limits per bucket name; ``"default"`` applies when a call names none.
        wait_hint: the adapter's reader of vendor back-off signals.
        retry: retry policy.
        timeout: seconds for connect, read, write and pool each. The read timeout runs between
            bytes: an answer that keeps trickling in never passes it.
        deadline: seconds one attempt may take in all, from waiting for a connection to the
            last byte of the answer; by default four times ``timeout``. Past it the call
            fails as retryable, like a timeout. H1Transport keeps it (another transport, a
            test's, is handed it in the request's extensions).
        transport: replaces the network (tests, in-process sandboxes).
        max_connections: connection pool size; also caps concurrency towards the vendor.
        clock: the limiter's clock; tests pass one that their ``sleep`` advances.
        rate_limited: the adapter's test for responses that mean "slow down" without being
            a 429 (Pipedrive's Cloudflare 403 page): they are retried like a 429.
        error_titles: the vendor's multi-word error titles (Mailchimp's ``Member Exists``),
            kept as an error's ``detail`` besides machine codes and the standard reason
            phrases; any other text in an error body is dropped (see :func:`_error_category`).
        budget_spent: the adapter's reader of a rate-limited answer that says the vendor's
            budget of calls is spent (Pipedrive's daily one): for the seconds it returns, no
            call is sent and none is retried (:class:`BudgetSpentError`). Vendors block
            clients that keep calling through such 429s (Pipedrive: Cloudflare's 403 page).
    """

    def __init__(
        self,
        system: str,
        base_url: str,
        *,
        auth: httpx.Auth | tuple[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        ca_bundle: Path | None = None,
        limits: Mapping[str, RateLimit] | None = None,
        wait_hint: WaitHint | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
        deadline: float | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 10,
        clock: Callable[[], float] | None = None,
        rate_limited: Callable[[httpx.Response], bool] | None = None,
        error_titles: Collection[str] = (),
        budget_spent: Callable[[httpx.Response], float | None] | None = None,
    ) -> None:
        self.system = system
        self._budget_spent = budget_spent
        #: Until when (the client's clock) the vendor's budget is spent: nothing is sent.
        self._spent_until = 0.0
        #: Until when (the client's clock) a vendor's 429 said its window for a bucket is
        #: full: no caller sends in that bucket before then, not only the one that got it.
        self._closed_until: dict[str, float] = {}
        #: Until when (the client's clock) a 5xx's Retry-After said the host is unavailable:
        #: no caller sends in any bucket before then.
        self._unavailable_until = 0.0
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self._wait_hint = wait_hint
        self._rate_limited = rate_limited
        self._error_titles = _REASON_PHRASES | {title.casefold() for title in error_titles}
        #: Called after every call with (system, status or None, seconds): the daemon's metrics.
        self.observer: Callable[[str, int | None, float], None] | None = None
        #: Called with the system on every answer read as "slow down" (see
        #: :meth:`note_rate_limited`): the daemon's metrics.
        self.rate_limit_observer: Callable[[str], None] | None = None
        #: The client's monotonic clock (the limiter's): adapters time their own caches by it.
        self.clock: Callable[[], float] = clock or time.monotonic
        self.deadline = deadline if deadline is not None else 4 * timeout
        #: What every request carries besides httpx's timeouts: the transport keeps to it.
        self._extensions = {"deadline": self.deadline}
        self._limiters = {
            name: RateLimiter(limit, sleep=self.retry.sleep, clock=self.clock)
            for name, limit in (limits or {}).items()
        }
        pool = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        verify: ssl.SSLContext | bool = True
        if transport is None:
            verify = build_ssl_context(ca_bundle)
            transport = H1Transport(ssl_context=verify, limits=pool)
        self._client = _VendorClient(
            base_url=base_url.rstrip("/"),
            auth=auth,
            # What H1Transport inflates, within its limit; httpx would ask for more codings
            # (br, zstd) where their packages happen to be installed.
            headers={"Accept-Encoding": ACCEPT_ENCODING, **(headers or {})},
            verify=verify,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
            limits=pool,
        )
        self._direct = _DirectPath.for_client(self._client, transport, self._extensions)

    def is_category(self, value: object) -> bool:
        """Whether ``value`` may stand as an error's category: the one rule every error this
        client raises follows (a machine code, or a title the adapter declared or a standard
        reason phrase; see :func:`_error_category`), for adapters that read per-record error
        categories out of a vendor's answer themselves (a batch's 207)."""
        return isinstance(value, str) and _is_category(value, self._error_titles)

    async def __aenter__(self) -> SystemClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        bucket: str = "default",
        accept: Iterable[int] = (),
        repeatable: bool = True,
    ) -> httpx.Response:
        """Send one call with pacing, retries and error classification.

        Args:
            method: HTTP method.
            path: path relative to the base URL.
            bucket: which rate limit applies (``"default"`` or one the adapter declared).
            accept: error statuses to hand back instead of raising (e.g. 404 when absence
                is an answer, as in erasure).
            repeatable: ``False`` for a call that must not be made twice (a create with no
                key the vendor could match it by): it is retried only where the vendor
                certainly did not carry it out (429, no connection made), and an answer
                lost on the way back, or a 5xx, is raised at once for the caller to look.

        Returns:
            The response, with a status below 300 or one of ``accept``.

        Raises:
            RetryableError: retries ran out on 429, 5xx or transport errors.
            FatalRemoteError: 401, 403, other 404s, a redirect (3xx), TLS failures.
            RecordError: another 4xx (the vendor rejected what was sent).
        """
        accepted = frozenset(accept)
        if json is not None:
            # httpx would encode with the standard library; orjson is several times faster on
            # the batches a sync sends, and the body is the same compact UTF-8 JSON. Encoded
            # once, before any retry.
            content, json = jsonutil.dumps(json), None
            if not any(name.lower() == "content-type" for name in headers or {}):
                headers = {**(headers or {}), "Content-Type": "application/json"}
        call = (method, path, params, json, content, headers, bucket, accepted)
        try:
            # Most calls succeed at once; tenacity's machinery (a fifth of the client's CPU on
            # a small call) is set up only for one that did not.
            return await self._send_once(*call)
        except RetryableError as exc:
            if self.retry.attempts <= 1 or not self._worth_retrying(exc, repeatable):
                raise
            await self._sleep_and_count(self.retry.backoff(1, exc))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.attempts - 1),
            retry=retry_if_exception(lambda exc: self._worth_retrying(exc, repeatable)),
            wait=lambda state: self.retry.backoff(
                state.attempt_number + 1,  # the first attempt was made above
                state.outcome.exception() if state.outcome else None,
            ),
            sleep=self._sleep_and_count,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._send_once(*call)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _worth_retrying(self, exc: BaseException, repeatable: bool) -> bool:
        return (
            isinstance(exc, RetryableError)
            and not isinstance(exc, BudgetSpentError)
            and self.retry.waits_out(exc)
            and (repeatable or _not_carried_out(exc))
        )

    async def _sleep_and_count(self, seconds: float) -> None:
        self.stats.retries += 1
        await self.retry.sleep(seconds)

    def _reopens(self, bucket: str) -> float:
        """When (the client's clock) calls in ``bucket`` may go out again: after a 429's wait
        for that bucket, and after a 5xx's ``Retry-After`` for every bucket (the host is
        unavailable, as a WordPress in maintenance mode is, not one of its limits full)."""
        return max(self._closed_until.get(bucket, 0.0), self._unavailable_until)

    def _budget_is_spent(self) -> bool:
        return bool(self._spent_until) and self.clock() < self._spent_until

    async def _keep_out(self, method: str, path: str, bucket: str, waited: float = 0.0) -> float:
        """Wait until the vendor's window for ``bucket`` is open again, if a 429 closed it.

        A 429 with a wait hint (HubSpot's ``TEN_SECONDLY_ROLLING``, a ``Retry-After``) says
        the window is full for everyone on the credentials, so every caller holds back, not
        only the one that got it: the others would each send into it and get their own 429
        (vendors count those, and block clients that keep knocking). A 5xx's ``Retry-After``
        closes it too (:meth:`_reopens`). A wait longer than the retry policy waits out is
        not waited: the call fails as that answer would have.

        Args:
            waited: a reopening already waited for (what this returned before), not waited
                for again.

        Returns:
            The reopening waited for (or found passed), for the caller's next look.
        """
        while True:
            until = self._reopens(bucket)
            wait = until - self.clock()
            if wait <= 0 or until <= waited:
                return until
            held = self._held_back(method, path, bucket, wait)
            if not self.retry.waits_out(held):
                raise held
            # Slept once per reopening, not until the clock says so: a clock that the sleep
            # does not move (tests) must not hold the call for ever. Then looked at again:
            # another caller's 429 may have closed the window further meanwhile.
            await self.retry.sleep(wait)
            waited = until

    def _held_back(self, method: str, path: str, bucket: str, wait: float) -> RetryableError:
        """The error of a call not sent because the window is closed for ``wait`` more
        seconds: a rate limit's if a 429 closed it, else the unavailable host's."""
        if self._closed_until.get(bucket, 0.0) >= self._unavailable_until:
            return RateLimitedError(self.system, method, path, None, "held back", wait)
        return RetryableError(self.system, method, path, None, "held back", wait)

    async def _take_turn(
        self, method: str, path: str, bucket: str, limiter: RateLimiter | None
    ) -> float:
        """Wait until a call in ``bucket`` may go out, and take the limiter's slot for it.

        The budget and the window are looked at again once the slot is taken: a caller
        queued at a full limiter waits there a window long, and another call's 429 (or a
        spent budget) meanwhile would otherwise see it sent into the very window the vendor
        just closed. The slot is then given back unused (nothing was sent, so nothing is
        counted) and the caller waits again.

        Returns:
            What :meth:`RateLimiter.acquire` returned (0 without a limiter).

        Raises:
            BudgetSpentError: the vendor's budget is spent.
            RetryableError: held back for longer than the retry policy waits out.
        """
        waited = 0.0
        while True:
            if self._budget_is_spent():
                raise BudgetSpentError(self.system, method, path, None, "budget spent")
            waited = await self._keep_out(method, path, bucket, waited)
            if limiter is None:
                return 0.0
            taken = await limiter.acquire()
            until = self._reopens(bucket)
            if not self._budget_is_spent() and (until <= waited or until <= self.clock()):
                return taken
            limiter.release(taken)

    async def _send_once(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json: Any,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        bucket: str,
        accepted: frozenset[int],
    ) -> httpx.Response:
        limiter = self._limiters.get(bucket) or self._limiters.get("default")
        taken = await self._take_turn(method, path, bucket, limiter)
        self.stats.requests += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            direct = self._direct
            if direct is not None and json is None and direct.takes(path):
                response = await direct.send(method, path, params, content, headers)
            else:
                response = await self._client.request(
                    method,
                    path,
                    params=params,
                    json=json,
                    content=content,
                    headers=headers,
                    extensions=self._extensions,
                )
        except (httpx.TransportError, httpx.DecodingError) as exc:
            self.stats.transport_errors += 1
            if self.observer is not None:
                self.observer(self.system, None, loop.time() - started)
            raise self._transport_error(method, path, exc) from exc
        finally:
            if limiter is not None:
                limiter.settle(taken)  # the vendor has seen the call by now: see settle()
            self.stats.latencies.append(loop.time() - started)
            if len(self.stats.latencies) > 10_000:
                del self.stats.latencies[:5_000]
        status = response.status_code
        if self.observer is not None:
            self.observer(self.system, status, loop.time() - started)
        if status < 300 or status in accepted:
            return response
        error = self._classify(method, path, response)
        if isinstance(error, RateLimitedError) and error.wait_seconds:
            self.hold(error.wait_seconds, bucket)
        elif isinstance(error, RetryableError) and error.wait_seconds and status >= 500:
            # A 503 in maintenance is the host's: every caller would get its own. At most an
            # hour, as a hold (see hold()).
            closed = self.clock() + min(error.wait_seconds, MAX_HOLD_SECONDS)
            self._unavailable_until = max(self._unavailable_until, closed)
        raise error

    def note_rate_limited(self) -> None:
        """Count an answer that tells the client to slow down: a 429, the vendor's own
        (``rate_limited``: HubSpot's 423 and 477, Mailchimp's bare 403), or one an adapter
        reads in an answer taken for a success (Shopify's ``THROTTLED``, answered 200).
        Counted by its status alone, the metric an alert reads missed all but the 429s."""
        self.stats.rate_limited += 1
        if self.rate_limit_observer is not None:
            self.rate_limit_observer(self.system)

    def hold(self, seconds: float, bucket: str = "default") -> None:
        """Send no call in ``bucket`` for ``seconds``, from any caller (see :meth:`_keep_out`).

        A 429 with the vendor's wait does this by itself. An adapter calls it for a
        vendor's "slow down" inside an answer the client took for a success (Shopify's
        ``THROTTLED``, answered 200): the budget is the app's, so the other calls in flight
        would each be sent into it and be throttled too. A shorter hold than one in force
        leaves that one as it is.

        Args:
            seconds: how long the vendor said to stay away; at most :data:`MAX_HOLD_SECONDS`
                is kept, so a garbled wait (a proxy's Retry-After of days) cannot shut the
                system out until the daemon restarts, erasures queued behind it included:
                after the hour one call asks again, and a vendor still full says so again.
            bucket: the rate-limit bucket the answer was given in.
        """
        if not seconds > 0:  # none, or NaN: nothing to hold back for
            return
        closed = self.clock() + min(seconds, MAX_HOLD_SECONDS)
        self._closed_until[bucket] = max(self._closed_until.get(bucket, 0.0), closed)

    def _transport_error(self, method: str, path: str, exc: httpx.RequestError) -> RemoteError:
        """What a call that got no usable answer ends in."""
        if isinstance(exc, UnsafeHeaderError):
            # Our request, not the vendor, is at fault, and would be the same on a retry.
            # The header's name is said; its value (a token, an address) never.
            detail = f"header {exc.header!r} holds CR, LF or NUL"
            return FatalRemoteError(self.system, method, path, None, detail)
        if isinstance(exc, httpx.LocalProtocolError):
            return FatalRemoteError(self.system, method, path, None, type(exc).__name__)
        if _is_tls_failure(exc):
            reason = _tls_reason(exc)
            detail = "TLS verification failed" + (f": {reason}" if reason else "")
            return FatalRemoteError(self.system, method, path, None, detail)
        if isinstance(exc, DeadlineExceeded):
            # The vendor answers too slowly, or trickles, as one under load does; it may not
            # later.
            return RetryableError(self.system, method, path, None, "deadline passed")
        # DecodingError too (a body that is not the gzip it says, or inflates past the
        # limit): retryable, as an answer cut or damaged on the way is. A vendor that always
        # answers so fails the call once its retries run out, and its work stays queued.
        return RetryableError(self.system, method, path, None, type(exc).__name__)

    def _classify(self, method: str, path: str, response: httpx.Response) -> RemoteError:
        status = response.status_code
        if status < 400:
            # A redirect (the shop moved to www., a plugin sending calls to a login page) is
            # not followed: its Location may be http:// or another host, where the body and
            # the credentials would go along. Nor is it an answer: handed on as a success, a
            # redirected deletion was reported sent and a lookup by id read as "nobody".
            # base_url is to be set to where the system is now, which retrying cannot do.
            return FatalRemoteError(self.system, method, path, status, REDIRECTED)
        detail = _error_category(response, self._error_titles)
        if status == 429 or (self._rate_limited is not None and self._rate_limited(response)):
            self.note_rate_limited()
            spent = self._budget_spent(response) if self._budget_spent else None
            if spent is not None:
                self._spent_until = self.clock() + spent
                return BudgetSpentError(self.system, method, path, status, detail, spent)
            wait = self._wait_hint(response) if self._wait_hint else None
            return RateLimitedError(self.system, method, path, status, detail, wait)
        if status >= 500 or status in (408, 423):
            self.stats.server_errors += 1
            # A Retry-After here (a 503 for maintenance) is the wait RFC 9110 gives it: no
            # retry sooner, nor any other call of this client (see _send_once), and one
            # longer than the policy waits ends the retries.
            wait = retry_after(response)
            return RetryableError(self.system, method, path, status, detail, wait)
        if status in (401, 403, 404, 405):
            return FatalRemoteError(self.system, method, path, status, detail)
        return RecordError(self.system, method, path, status, detail)


#: The detail of a call the vendor answered with a redirect.
REDIRECTED = "redirect not followed; is base_url where the system is now?"


def _not_carried_out(exc: BaseException) -> bool:
    """Whether a failed call certainly did nothing at the vendor: it was refused for the
    rate (429), or no connection was made. A 5xx or an answer lost on the way back may
    follow work the vendor did."""
    if isinstance(exc, RateLimitedError):
        return True
    return isinstance(exc.__cause__, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
