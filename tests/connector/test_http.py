"""The HTTP policy: TLS always verified, errors classified and free of personal data."""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
import respx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from adapters.hubspot.settings import budget_spent as hubspot_budget_spent
from adapters.hubspot.settings import wait_hint as hubspot_wait_hint
from connector.devtls import DevCA
from connector.errors import (
    BudgetSpentError,
    FatalRemoteError,
    RateLimitedError,
    RecordError,
    RetryableError,
)
from connector.http import (
    RetryPolicy,
    SystemClient,
    build_ssl_context,
    check_url,
    host_problem,
    is_loopback,
    redact_url,
    retry_after,
    server_pair_problem,
)
from connector.ratelimit import RateLimit, RateLimiter
from connector.sandboxkit import serve_tls
from tests.conftest import (
    CANARY_EMAIL,
    CANARY_NAME,
    CANARY_PHONE_E164,
    FakeClock,
    SimulatedTime,
    VirtualTime,
    modes_before_chmod,
    no_sleep,
)

SECRET_EMAIL = "geheim.persoon@example.nl"


def _respx_transport() -> httpx.AsyncHTTPTransport:
    """httpx's own transport, which respx intercepts (SystemClient's own is connector.h1)."""
    return httpx.AsyncHTTPTransport()


class Recorder:
    """A tiny HTTPS endpoint that remembers every request body it received."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    def app(self) -> Starlette:
        async def echo(request: Request) -> JSONResponse:
            self.bodies.append(await request.body())
            return JSONResponse({"ok": True})

        return Starlette(routes=[Route("/echo", echo, methods=["POST"])])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Recorder, DevCA, str]]:
    recorder = Recorder()
    ca = DevCA(tmp_path / "good")
    with serve_tls({"r": recorder.app()}, tmp_path / "good", ca=ca) as (_, apps):
        yield recorder, ca, apps["r"].url


def _client(url: str, ca_bundle: Path | None) -> SystemClient:
    return SystemClient(
        "crm", url, ca_bundle=ca_bundle, retry=RetryPolicy(attempts=2, sleep=no_sleep)
    )


async def test_trusted_ca_over_real_tls_works(served: tuple[Recorder, DevCA, str]) -> None:
    """With the right CA a call over loopback TLS succeeds."""
    recorder, ca, url = served
    async with _client(url, ca.ca_path) as client:
        response = await client.request("POST", "/echo", json={"email": SECRET_EMAIL})
    assert response.status_code == 200 and len(recorder.bodies) == 1


def _handshake(client: ssl.SSLContext, server: ssl.SSLContext, host: str) -> None:
    """A TLS handshake in memory (no socket): raises what the client's verification raises."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    c = client.wrap_bio(c_in, c_out, server_hostname=host)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for name, end, out, peer_in in (("c", c, c_out, s_in), ("s", s, s_out, c_in)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def test_local_ca_certificates_verify_under_strict_x509_checks(tmp_path: Path) -> None:
    """On Python 3.13 the default context (what build_ssl_context starts from) verifies
    strictly (VERIFY_X509_STRICT), which wants key identifiers on the CA and the server
    certificate: without them the demo, the sandboxes and every loopback TLS test failed
    with "Missing Authority Key Identifier". The 3.13 default is set by hand here."""
    ca = DevCA(tmp_path)
    cert = ca.issue("vendor")
    client = build_ssl_context(ca.ca_path)
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert.cert_path, cert.key_path)
    _handshake(client, server, "127.0.0.1")


@pytest.mark.parametrize("private_ca", [False, True])
async def test_an_sslkeylogfile_in_the_environment_gets_no_tls_secret_of_a_vendor_call(
    served: tuple[Recorder, DevCA, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    private_ca: bool,
) -> None:
    """SSLKEYLOGFILE, a debugging variable left in a unit's or a container's environment,
    made every vendor call write its TLS session secrets to that file (created under the
    umask, readable by others), from which anyone holding a capture reads the customer
    data and the credentials in clear. It is not followed."""
    recorder, ca, url = served
    keylog = tmp_path / "tls-secrets.log"
    monkeypatch.setenv("SSLKEYLOGFILE", str(keylog))
    assert build_ssl_context(ca.ca_path if private_ca else None).keylog_filename is None
    async with _client(url, ca.ca_path) as client:
        await client.request("POST", "/echo", json={"email": SECRET_EMAIL})
    assert len(recorder.bodies) == 1
    assert not keylog.exists()


async def test_proxy_and_ca_variables_in_the_environment_change_nothing_of_a_vendor_call(
    served: tuple[Recorder, DevCA, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY, ALL_PROXY (an http:// proxy that would see every call) and
    SSL_CERT_FILE, SSL_CERT_DIR, REQUESTS_CA_BUNDLE (another set of trusted CAs) are not
    read: a call goes straight to the vendor, trusting its ``ca_bundle`` or the public roots
    alone."""
    recorder, ca, url = served
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # the discard port: nothing answers
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    for name in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.setenv(name, str(ca.ca_path))
    monkeypatch.setenv("SSL_CERT_DIR", str(ca.ca_path.parent))
    async with _client(url, ca.ca_path) as client:
        await client.request("POST", "/echo", json={"email": SECRET_EMAIL})
    assert len(recorder.bodies) == 1
    async with _client(url, None) as client:
        with pytest.raises(FatalRemoteError, match="TLS"):
            await client.request("POST", "/echo", json={"email": SECRET_EMAIL})
    assert len(recorder.bodies) == 1


def test_the_local_ca_writes_a_server_key_owner_only_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandboxes' TLS server key (a server the config trusts through its CA) is never
    readable by others: written under the umask and narrowed after, it was for a moment,
    and for good after a kill in between."""
    with modes_before_chmod(monkeypatch) as before_chmod:
        served = DevCA(tmp_path / "tls").issue("sandbox")
    assert served.key_path.stat().st_mode & 0o777 == 0o600
    assert before_chmod.get(served.key_path.name, 0o600) & 0o077 == 0


async def test_unknown_ca_refused_and_no_body_leaves(
    served: tuple[Recorder, DevCA, str], tmp_path: Path
) -> None:
    """A certificate from a CA we do not trust is refused before any body is sent."""
    recorder, _, url = served
    other = DevCA(tmp_path / "other")
    async with _client(url, other.ca_path) as client:
        with pytest.raises(FatalRemoteError) as info:
            await client.request("POST", "/echo", json={"email": SECRET_EMAIL})
    assert "TLS" in str(info.value) and SECRET_EMAIL not in str(info.value)
    assert recorder.bodies == []


async def test_public_roots_do_not_trust_a_private_ca(served: tuple[Recorder, DevCA, str]) -> None:
    """Without ca_bundle only public roots are trusted: the local CA is refused."""
    recorder, _, url = served
    async with _client(url, None) as client:
        with pytest.raises(FatalRemoteError):
            await client.request("POST", "/echo", json={"email": SECRET_EMAIL})
    assert recorder.bodies == []


@pytest.mark.parametrize(
    ("problem", "reason"),
    [
        ("expired", "certificate has expired"),
        ("wrong_host", "mismatch, certificate is not valid for '127.0.0.1'"),
        ("other_ca", "unable to get local issuer certificate"),
    ],
)
async def test_a_refused_certificate_is_said_with_openssl_s_reason(
    tmp_path: Path, problem: str, reason: str
) -> None:
    """An expired certificate, one for another host and one from a CA ``ca_bundle`` is not
    were each "TLS verification failed", sending the operator to look at all three: the
    error says which, in OpenSSL's words."""
    ca = DevCA(tmp_path)
    cert = (
        ca.issue("bad", expired=True)
        if problem == "expired"
        else ca.issue("bad", hosts=("shop.elsewhere.example",))
        if problem == "wrong_host"
        else ca.issue("good")
    )
    trusted = DevCA(tmp_path / "other").ca_path if problem == "other_ca" else ca.ca_path
    with serve_tls({"r": Recorder().app()}, tmp_path, cert=cert) as (_, apps):
        async with _client(apps["r"].url, trusted) as client:
            with pytest.raises(FatalRemoteError) as info:
                await client.request("POST", "/echo", json={"email": SECRET_EMAIL})
    assert "TLS verification failed: " in str(info.value) and reason in str(info.value)
    # OpenSSL's words alone, not the exception's text around them.
    assert "[SSL" not in str(info.value) and "_ssl.c" not in str(info.value)
    assert SECRET_EMAIL not in str(info.value)


@pytest.mark.parametrize("problem", ["expired", "wrong_host"])
async def test_expired_or_wrong_host_certificate_refused(tmp_path: Path, problem: str) -> None:
    """An expired certificate or one for another host is refused; nothing is received."""
    recorder = Recorder()
    ca = DevCA(tmp_path)
    cert = (
        ca.issue("bad", expired=True)
        if problem == "expired"
        else ca.issue("bad", hosts=("shop.elsewhere.example",))
    )
    with serve_tls({"r": recorder.app()}, tmp_path, cert=cert) as (_, apps):
        async with _client(apps["r"].url, ca.ca_path) as client:
            with pytest.raises(FatalRemoteError) as info:
                await client.request("POST", "/echo", json={"email": SECRET_EMAIL})
    assert "TLS" in str(info.value)
    assert recorder.bodies == []


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api.hubapi.com", True),
        ("http://api.hubapi.com", False),
        ("ftp://shop.example.nl", False),
        ("https://user:pw@shop.example.nl", False),
        ("https://user@shop.example.nl", False),
        ("https://:pw@shop.example.nl", False),
        ("https:///api", False),
        ("https://shop.example.nl/api\u200b", False),
        ("https://\u217b.example", False),
        ("http://127.0.0.1:8080", False),
    ],
)
def test_url_policy(url: str, ok: bool) -> None:
    """https only; credentials in URLs refused (a user or a password alone too); a URL
    with no host, an invisible character (a zero-width space) or a host httpx cannot
    encode (an IDNA-invalid one) refused; loopback http needs the switch."""
    assert (check_url(url) is None) is ok


def test_loopback_http_allowed_only_with_switch() -> None:
    """The development switch opens http to loopback, never to other hosts."""
    assert check_url("http://localhost:8080", allow_insecure_loopback=True) is None
    assert check_url("http://10.0.0.5", allow_insecure_loopback=True) is not None
    # Not a reserved name: DNS may resolve it anywhere.
    assert check_url("http://localhost.localdomain", allow_insecure_loopback=True) is not None
    # The switch opens http, no other scheme.
    assert check_url("ftp://127.0.0.1", allow_insecure_loopback=True) is not None


def test_host_problem_keeps_dns_limits_and_reads_ipv6_in_brackets() -> None:
    """A label of 63 characters and a name of 253 are hosts, one more of either is not; an
    IPv6 address is read with or without brackets, and "[::1]" is loopback."""
    assert host_problem("a" * 63 + ".example") is None
    assert host_problem("a" * 64 + ".example") is not None
    assert host_problem(".".join(["a" * 63] * 3 + ["b" * 61])) is None  # 253 characters
    assert host_problem(".".join(["a" * 63] * 3 + ["b" * 62])) is not None
    assert host_problem("[::1]") is None and host_problem("::1") is None
    assert host_problem("[::zz]") == "is not an IPv6 address"
    assert host_problem("fe80::1::2") == "is not an IPv6 address"
    assert is_loopback("[::1]") and is_loopback("::1") and not is_loopback("[2001:db8::1]")


def test_redact_url_drops_query_and_credentials() -> None:
    """Only scheme, host, port and path survive redaction."""
    assert (
        redact_url(f"https://u:p@x.test:8443/a/b?email={SECRET_EMAIL}") == "https://x.test:8443/a/b"
    )
    # A URL urllib cannot read is not handed back as it was, query string and all.
    assert redact_url(f"https://[x.test/a?email={SECRET_EMAIL}") == "<invalid URL>"


@respx.mock
async def test_5xx_is_retried_then_succeeds() -> None:
    """A 500 and a 503 then a 200: the call succeeds after two retries (a 500 is the
    server's failure too, not a record the vendor refused)."""
    route = respx.get("https://crm.test/x").mock(
        side_effect=[httpx.Response(500), httpx.Response(503), httpx.Response(200, json={})]
    )
    client = SystemClient(
        "crm",
        "https://crm.test",
        transport=_respx_transport(),
        retry=RetryPolicy(attempts=4, sleep=no_sleep),
    )
    response = await client.request("GET", "/x")
    assert response.status_code == 200 and route.call_count == 3
    assert client.stats.retries == 2
    await client.aclose()


@respx.mock
@pytest.mark.parametrize(
    ("failure", "retried"),
    [
        (httpx.Response(429), True),  # refused for the rate: certainly not done
        (httpx.ConnectError("refused"), True),  # no connection: certainly not done
        (httpx.Response(503), False),  # may follow work the vendor did
        (httpx.ReadError("reset"), False),  # the answer lost on the way back
    ],
    ids=["429", "no-connection", "503", "answer-lost"],
)
async def test_a_call_that_must_not_be_made_twice_is_retried_only_when_not_carried_out(
    failure: httpx.Response | Exception, retried: bool
) -> None:
    """A create with no key to match it by (Pipedrive's POST /persons): repeated after an
    answer was lost it made a second person. It is retried only where the vendor certainly
    did nothing, else raised at once for the caller to look first."""
    route = respx.post("https://crm.test/x").mock(
        side_effect=[failure, httpx.Response(201, json={})]
    )
    client = SystemClient(
        "crm",
        "https://crm.test",
        transport=_respx_transport(),
        retry=RetryPolicy(attempts=3, sleep=no_sleep),
    )
    if retried:
        response = await client.request("POST", "/x", json={}, repeatable=False)
        assert response.status_code == 201 and route.call_count == 2
    else:
        with pytest.raises(RetryableError):
            await client.request("POST", "/x", json={}, repeatable=False)
        assert route.call_count == 1
    await client.aclose()


@respx.mock
async def test_errors_never_carry_body_or_query() -> None:
    """A 4xx whose body echoes an e-mail yields an error with path and status only."""
    respx.post("https://crm.test/contacts").mock(
        return_value=httpx.Response(
            400, json={"category": "VALIDATION_ERROR", "message": f"{SECRET_EMAIL} is invalid"}
        )
    )
    client = SystemClient(
        "crm",
        "https://crm.test",
        transport=_respx_transport(),
        retry=RetryPolicy(attempts=1, sleep=no_sleep),
    )
    with pytest.raises(RecordError) as info:
        await client.request("POST", "/contacts", params={"email": SECRET_EMAIL}, json={})
    text = str(info.value)
    assert SECRET_EMAIL not in text and "email=" not in text
    assert "POST /contacts -> 400 (VALIDATION_ERROR)" in text
    await client.aclose()


@pytest.mark.parametrize(
    ("path", "route"),
    [
        ("/wp-json/wc/v3/customers/7", "/wp-json/wc/v3/customers/{id}"),
        ("/api/v2/persons/123", "/api/v2/persons/{id}"),
        ("https://acme.pipedrive.com/api/v1/notes/55?x=1", "/api/v1/notes/{id}"),
        (
            "/lists/a1b2c3d4e5/members/d41d8cd98f00b204e9800998ecf8427e/actions/delete-permanent",
            "/lists/{id}/members/{id}/actions/delete-permanent",
        ),
        ("/lists/{id}/members/{subscriber_hash}", "/lists/{id}/members/{subscriber_hash}"),
        ("/lists/abcdefabcdef/members", "/lists/{id}/members"),  # a hex id with no digit
        (f"/communication-preferences/v3/status/email/{CANARY_EMAIL}", None),
        ("/communication-preferences/v3/status/email/anna%40example.nl", None),
        ("/crm/v4/objects/contacts/501/associations/notes", None),
        ("/admin/api/2025-01/graphql.json", "/admin/api/2025-01/graphql.json"),
        ("/crm/v3/objects/contacts/batch/upsert", "/crm/v3/objects/contacts/batch/upsert"),
    ],
)
def test_an_error_names_the_route_with_no_id_hash_or_address_in_it(
    path: str, route: str | None
) -> None:
    """Whatever path an adapter raises an error for, its message names the route: a
    customer's number in it, tied to a keyed id in a failed step's audit entry, would outlive
    the erasure that deleted what tied it to the person."""
    error = RecordError("shop", "DELETE", path, 403, "woocommerce_rest_cannot_delete")
    assert error.path == str(error).split()[2]
    assert not re.search(r"/\d+(?:/|\s)|@|%40|[0-9a-f]{8}", str(error)), str(error)
    if route is not None:
        assert error.path == route


VENDOR_SENTENCE = f"Person {CANARY_NAME} Qwertyson is not valid"


@pytest.mark.parametrize(
    ("body", "titles", "expected"),
    [
        # Codes and titles the vendors document, and the adapters report, are kept.
        ({"category": "VALIDATION_ERROR", "message": VENDOR_SENTENCE}, (), "VALIDATION_ERROR"),
        (
            {"errorType": "RATE_LIMIT", "message": "You have reached your daily limit."},
            (),
            "RATE_LIMIT",
        ),
        (
            {"code": "woocommerce_rest_invalid_id", "message": VENDOR_SENTENCE},
            (),
            "woocommerce_rest_invalid_id",
        ),
        (
            {"title": "Member Exists", "detail": f"{CANARY_EMAIL} is already a list member."},
            ("Member Exists",),
            "Member Exists",
        ),
        (
            {"title": "Too Many Requests", "detail": "limit of 10 connections"},
            (),
            "Too Many Requests",
        ),
        (
            {"error": "Internal server error", "error_info": VENDOR_SENTENCE},
            (),
            "Internal server error",
        ),
        # Anything else is text that may be about a person: only the status remains.
        ({"title": VENDOR_SENTENCE, "detail": CANARY_EMAIL}, ("Member Exists",), ""),
        ({"error": VENDOR_SENTENCE, "error_info": "see developers.pipedrive.com"}, (), ""),
        ({"title": "Member Exists", "detail": CANARY_EMAIL}, (), ""),
        ({"code": CANARY_NAME, "category": CANARY_PHONE_E164.lstrip("+")}, (), ""),
        ({"error": CANARY_EMAIL}, (), ""),
        ({"error": "NL91ABNA0417164300"}, (), ""),
        ({"code": "VALIDATION_ERROR_" + "X" * 60}, (), ""),
        # A lone word, even in capitals, could be a name; a vendor declares its one-word codes.
        ({"error": "JANSEN"}, (), ""),
        ({"category": "CONFLICT", "message": VENDOR_SENTENCE}, ("CONFLICT",), "CONFLICT"),
    ],
)
@respx.mock
async def test_error_detail_is_a_code_or_known_title_never_free_text(
    body: dict[str, str], titles: tuple[str, ...], expected: str
) -> None:
    """Only a machine code, a standard reason phrase or a title the adapter declared becomes an
    error's detail; a vendor sentence naming a person (or an e-mail, a phone number, a lone
    name, an account number) is dropped and the error says method, path and status only."""
    respx.post("https://crm.test/persons").mock(return_value=httpx.Response(400, json=body))
    client = SystemClient(
        "crm",
        "https://crm.test",
        transport=_respx_transport(),
        retry=RetryPolicy(attempts=1, sleep=no_sleep),
        error_titles=titles,
    )
    with pytest.raises(RecordError) as caught:
        await client.request("POST", "/persons", json={})
    await client.aclose()
    assert caught.value.detail == expected
    text = str(caught.value)
    for canary in (CANARY_NAME, CANARY_EMAIL, CANARY_PHONE_E164.lstrip("+"), "NL91"):
        assert canary not in text
    assert text.startswith("crm: POST /persons -> 400")


@respx.mock
async def test_429_uses_the_vendor_wait_hint() -> None:
    """A 429 is retried after the wait the adapter reads from the vendor's response."""
    respx.get("https://crm.test/x").mock(
        side_effect=[httpx.Response(429, json={"policyName": "X"}), httpx.Response(200, json={})]
    )
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    client = SystemClient(
        "crm",
        "https://crm.test",
        transport=_respx_transport(),
        wait_hint=lambda response: 7.0,
        retry=RetryPolicy(attempts=3, sleep=record_sleep),
    )
    await client.request("GET", "/x")
    assert client.stats.rate_limited == 1
    assert 7.0 <= waits[0] <= 7.3
    await client.aclose()


async def test_a_5xx_with_retry_after_is_retried_no_sooner_than_the_vendor_said() -> None:
    """RFC 9110 gives a 503's Retry-After the meaning a 429's has (WordPress answers its
    maintenance mode with 503 and ``Retry-After: 600``): the retry waits that long, not the
    backoff's fraction of a second. The client reads it itself; the adapter's wait hint is
    for its vendor's rate limits (HubSpot's reader would give its window on any answer)."""
    answers = [
        httpx.Response(503, headers={"Retry-After": "20"}),
        httpx.Response(200, json={}),
    ]
    slept: list[float] = []
    time = VirtualTime()

    async def record(seconds: float) -> None:
        slept.append(seconds)
        await time.sleep(seconds)

    client = SystemClient(
        "shop",
        "https://shop.test",
        transport=httpx.MockTransport(lambda _request: answers.pop(0)),
        wait_hint=lambda _response: 1.0,  # a rate-limit reader: not asked about a 503
        retry=RetryPolicy(attempts=3, sleep=record),
        clock=time.clock,
    )
    async with client:
        response = await client.request("GET", "/wp-json/wc/v3/customers")
    assert response.status_code == 200
    assert len(slept) == 1 and 20 <= slept[0] <= 20.3


async def test_a_5xx_asking_for_a_wait_past_the_backoff_cap_ends_the_retries() -> None:
    """A 503 with a Retry-After longer than the policy waits is not retried inside it: the
    call fails retryable at once, carrying the wait, and its work stays queued."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, headers={"Retry-After": "600"})

    client = SystemClient(
        "shop",
        "https://shop.test",
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=6, max_seconds=30.0, sleep=no_sleep),
    )
    async with client:
        with pytest.raises(RetryableError) as caught:
            await client.request("GET", "/wp-json/wc/v3/customers")
    assert caught.value.status == 503 and caught.value.wait_seconds == 600
    assert len(calls) == 1


def _http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


@pytest.mark.parametrize("status", [429, 503], ids=["429-host-limit", "503-maintenance"])
async def test_a_retry_after_http_date_past_the_backoff_cap_ends_the_retries(status: int) -> None:
    """RFC 9110: Retry-After is delay-seconds *or* an HTTP-date, and a WordPress host's WAF
    or its maintenance mode may send either. Asked by date to stay away 120 s (past the 30 s
    the policy waits), the call fails at once, as it does for ``Retry-After: 120``."""
    time = VirtualTime()
    calls: list[float] = []
    server_now = datetime.now(UTC).replace(microsecond=0)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.now)
        return httpx.Response(
            status,
            headers={
                "Date": _http_date(server_now),
                "Retry-After": _http_date(server_now + timedelta(seconds=120)),
            },
        )

    client = SystemClient(
        "shop",
        "https://shop.test",
        wait_hint=retry_after,  # WooCommerce's reader (woocommerce_client_config)
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=6, base_seconds=0.5, max_seconds=30.0, sleep=time.sleep),
        clock=time.clock,
    )
    async with client:
        with pytest.raises(RetryableError) as caught:
            await client.request("GET", "/wp-json/wc/v3/customers")
        assert caught.value.wait_seconds is not None and caught.value.wait_seconds >= 100
        with pytest.raises(RetryableError, match="held back"):  # nor does the next call go
            await client.request("GET", "/wp-json/wc/v3/customers")
    assert calls == [1000.0]


_SERVER_NOW = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "20"}, 20.0),
        # Dated by the server's own clock, however far ours is from it.
        (
            {
                "Date": _http_date(_SERVER_NOW),
                "Retry-After": _http_date(_SERVER_NOW + timedelta(seconds=90)),
            },
            90.0,
        ),
        (
            {
                "Date": "Fri, 01 Mar 2024 12:00:00 GMT",
                "Retry-After": "Friday, 01-Mar-24 12:00:30 GMT",
            },
            30.0,
        ),
        # A date already past: no wait.
        (
            {
                "Date": _http_date(_SERVER_NOW),
                "Retry-After": _http_date(_SERVER_NOW - timedelta(seconds=5)),
            },
            0.0,
        ),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "-3"}, None),
        ({}, None),
    ],
    ids=["seconds", "date-by-date", "obsolete-date", "date-past", "junk", "negative", "none"],
)
def test_retry_after_reads_seconds_or_an_http_date(
    headers: dict[str, str], expected: float | None
) -> None:
    assert retry_after(httpx.Response(503, headers=headers)) == expected


def test_a_retry_after_date_without_the_answer_s_date_is_read_against_our_clock() -> None:
    """No ``Date`` header to read it against: the wait runs from our own wall clock."""
    until = datetime.now(UTC) + timedelta(hours=1)
    wait = retry_after(httpx.Response(429, headers={"Retry-After": _http_date(until)}))
    assert wait is not None and 3500 <= wait <= 3600


async def test_an_answer_httpx_cannot_decode_is_a_retryable_error() -> None:
    """On another transport httpx inflates the answer itself; a body that is not the gzip it
    says is its DecodingError (a RequestError, not a TransportError), classified too."""
    client = SystemClient(
        "crm",
        "https://crm.test",
        transport=httpx.MockTransport(
            lambda _request: httpx.Response(
                200, headers={"Content-Encoding": "gzip"}, content=b"{}"
            )
        ),
        retry=RetryPolicy(attempts=1, sleep=no_sleep),
    )
    async with client:
        for path in ("/contacts", "/contacts?general=path"):
            with pytest.raises(RetryableError, match="DecodingError"):
                await client.request("GET", path)


async def test_a_vendor_wait_past_the_backoff_cap_ends_the_retries_instead_of_shortening_it() -> (
    None
):
    """A host says "come back in 120 s" and the policy waits at most 30: no retry is sent
    inside the window the vendor asked us to keep out of (each would be another 429, and
    WAFs block clients that keep knocking); the call fails retryable, its work stays queued."""
    time = VirtualTime()
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.now)
        return httpx.Response(429, headers={"Retry-After": "120"})

    client = SystemClient(
        "shop",
        "https://shop.test",
        wait_hint=lambda response: float(response.headers["Retry-After"]),
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=6, base_seconds=0.5, max_seconds=30.0, sleep=time.sleep),
        clock=time.clock,
    )
    async with client:
        with pytest.raises(RateLimitedError) as caught:
            await client.request("GET", "/customers")
        assert caught.value.wait_seconds == 120
        with pytest.raises(RateLimitedError):  # nor does the next call go before then
            await client.request("GET", "/customers")
    assert calls == [1000.0]


async def test_a_wait_hint_of_days_holds_the_system_back_for_an_hour_at_most() -> None:
    """A Retry-After of a week (a proxy's, or garbled) closed the system's window until the
    daemon restarted, erasures queued behind it included. After an hour one call asks again."""
    time = VirtualTime()
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(time.now)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": str(7 * 86400)})
        return httpx.Response(200, json={})

    client = SystemClient(
        "shop",
        "https://shop.test",
        wait_hint=lambda response: float(response.headers["Retry-After"]),
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=2, base_seconds=0.5, max_seconds=30.0, sleep=time.sleep),
        clock=time.clock,
    )
    async with client:
        with pytest.raises(RateLimitedError):
            await client.request("GET", "/customers")
        with pytest.raises(RateLimitedError):  # held back: not sent
            await client.request("GET", "/customers")
        await time.sleep(3601)
        assert (await client.request("GET", "/customers")).status_code == 200
    assert len(calls) == 2


async def test_after_a_429_with_the_vendor_s_wait_every_caller_holds_back() -> None:
    """A 429 with a wait hint (HubSpot's TEN_SECONDLY_ROLLING: the app's window is full for
    10 s) holds back every caller of the client, not only the one that got it: four batches
    in flight send one call into the closed window, not four."""
    time = SimulatedTime()
    closed_until: list[float] = []
    refused = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal refused
        if not closed_until:
            closed_until.append(time.now + 10)  # the first call finds the window full
        if time.now < closed_until[0]:
            refused += 1
            return httpx.Response(429, json={"policyName": "TEN_SECONDLY_ROLLING"})
        return httpx.Response(200, json={"results": []})

    client = SystemClient(
        "crm",
        "https://crm.test",
        limits={"default": RateLimit(190, 10)},
        wait_hint=lambda response: 10.0,
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=6, base_seconds=0.5, sleep=time.sleep),
        clock=time.clock,
    )
    async with client:
        calls = (client.request("POST", "/contacts/batch/upsert") for _ in range(4))
        answers = await time.run(asyncio.gather(*calls))
    assert [a.status_code for a in answers] == [200] * 4
    assert refused == 1, f"{refused} calls were sent into a window the vendor said was full"


async def test_a_caller_queued_at_the_limiter_does_not_send_into_a_window_closed_meanwhile() -> (
    None
):
    """README: a 429 with the vendor's wait holds back every call of the client until the
    wait has passed. That holds for a caller already queued at a full limiter too: it wakes
    when its slot frees and looks at the window again before sending.

    2 calls per 10 s. At 1000 call A is answered 200 and call B is sent; C queues for a
    slot. B is answered at 1005 with a 429 and ``Retry-After: 10`` (the window is closed
    until 1015). C's slot frees at 1010: it is not sent before 1015."""
    time = SimulatedTime()
    sent: list[tuple[str, float]] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, time.now))
        if request.url.path == "/b" and sum(p == "/b" for p, _ in sent) == 1:
            await time.sleep(5)  # B is slow, and then refused for the rate
            return httpx.Response(429, headers={"Retry-After": "10"})
        return httpx.Response(200, json={})

    client = SystemClient(
        "crm",
        "https://crm.test",
        limits={"default": RateLimit(2, 10)},
        wait_hint=retry_after,
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=6, base_seconds=0.5, max_seconds=30.0, sleep=time.sleep),
        clock=time.clock,
    )

    async def later(path: str, turns: int) -> httpx.Response:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await client.request("GET", path)

    async with client:
        answers = await time.run(
            asyncio.gather(client.request("GET", "/a"), later("/b", 1), later("/c", 5))
        )
    assert [a.status_code for a in answers] == [200, 200, 200]
    inside = [(path, at) for path, at in sent if 1005.0 <= at < 1015.0]
    assert not inside, f"sent into the window the 429 closed until 1015: {inside}"
    assert [path for path, _ in sent].count("/c") == 1


async def test_after_hubspot_s_daily_429_a_caller_queued_at_the_limiter_sends_nothing() -> None:
    """HubSpot's ``DAILY`` 429: until the quota comes back nothing is sent (``budget_spent``).
    A caller already queued at a full limiter (a big sync beside a DSR fan-out) looks at the
    budget again when its slot frees, and fails instead of earning another DAILY 429.

    2 calls per 10 s. At 1000 call A is answered and call B is sent; C queues. B comes back
    at 1005 with the DAILY 429; C's slot frees at 1010."""
    time = SimulatedTime()
    sent: list[tuple[str, float]] = []
    spent = False
    daily = {"status": "error", "errorType": "RATE_LIMIT", "policyName": "DAILY"}

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal spent
        sent.append((request.url.path, time.now))
        if request.url.path == "/b":
            await time.sleep(5)
            spent = True
        if spent:
            return httpx.Response(429, json=daily)
        return httpx.Response(200, json={})

    client = SystemClient(
        "crm",
        "https://crm.test",
        limits={"default": RateLimit(2, 10)},
        wait_hint=hubspot_wait_hint,
        budget_spent=hubspot_budget_spent,
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=6, base_seconds=0.5, max_seconds=30.0, sleep=time.sleep),
        clock=time.clock,
    )

    async def later(path: str, turns: int) -> httpx.Response | BaseException:
        for _ in range(turns):
            await asyncio.sleep(0)
        try:
            return await client.request("POST", path)
        except RateLimitedError as exc:
            return exc

    async with client:
        answers = await time.run(asyncio.gather(later("/a", 0), later("/b", 1), later("/c", 5)))
    after = [(path, at) for path, at in sent if at >= 1005.0]
    assert not after, f"sent after HubSpot said the day's budget was spent: {after}"
    assert isinstance(answers[2], BudgetSpentError)


async def test_a_hold_from_an_adapter_keeps_every_caller_back_for_its_bucket_only() -> None:
    """An adapter that reads "slow down" in an answer the client took for a success
    (Shopify's THROTTLED, answered 200) holds the client back: no call in that bucket is
    sent before the wait has passed, a call in another bucket is, and a shorter hold does
    not cut the longer one short."""
    time = VirtualTime()
    sent: list[tuple[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, time.now))
        return httpx.Response(200, json={})

    client = SystemClient(
        "shop",
        "https://shop.test",
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=2, max_seconds=30.0, sleep=time.sleep),
        clock=time.clock,
    )
    async with client:
        client.hold(20.0)
        client.hold(5.0)
        await client.request("GET", "/search", bucket="search")
        await client.request("GET", "/customers")
    assert sent == [("/search", 1000.0), ("/customers", 1020.0)]


async def test_a_503_with_retry_after_holds_back_every_caller() -> None:
    """A 503 with ``Retry-After`` (WordPress in maintenance mode) says the host is down for
    that long, for every caller: the others wait it out too instead of each collecting its
    own 503. Four calls at once: one is sent before the host is back, not four."""
    time = SimulatedTime()
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(time.now)
        if len(sent) == 1:
            return httpx.Response(503, headers={"Retry-After": "20"})
        return httpx.Response(200, json={})

    client = SystemClient(
        "shop",
        "https://shop.test",
        limits={"default": RateLimit(25, 1)},
        wait_hint=retry_after,
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=6, base_seconds=0.5, sleep=time.sleep),
        clock=time.clock,
    )

    async def later(turns: int) -> httpx.Response:
        for _ in range(turns):
            await asyncio.sleep(0)
        return await client.request("GET", "/wp-json/wc/v3/customers")

    async with client:
        answers = await time.run(asyncio.gather(*(later(turns) for turns in range(4))))
    assert [a.status_code for a in answers] == [200] * 4
    assert sent[0] == 1000.0 and all(at >= 1020.0 for at in sent[1:]), sent


@respx.mock
async def test_retries_run_out_as_retryable_error() -> None:
    """A system that keeps failing yields a RetryableError after the last attempt."""
    respx.get("https://crm.test/x").mock(return_value=httpx.Response(502))
    client = SystemClient(
        "crm",
        "https://crm.test",
        transport=_respx_transport(),
        retry=RetryPolicy(attempts=3, sleep=no_sleep),
    )
    with pytest.raises(RetryableError):
        await client.request("GET", "/x")
    await client.aclose()


@respx.mock
async def test_401_is_fatal_and_404_can_be_accepted() -> None:
    """401 is fatal (no retry); a 404 the caller expects is handed back."""
    respx.get("https://crm.test/auth").mock(return_value=httpx.Response(401))
    respx.get("https://crm.test/gone").mock(return_value=httpx.Response(404))
    client = SystemClient(
        "crm",
        "https://crm.test",
        transport=_respx_transport(),
        retry=RetryPolicy(attempts=3, sleep=no_sleep),
    )
    with pytest.raises(FatalRemoteError):
        await client.request("GET", "/auth")
    assert (await client.request("GET", "/gone", accept=(404,))).status_code == 404
    await client.aclose()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_neither_followed_nor_taken_for_an_answer(status: int) -> None:
    """A vendor (a shop moved to www., a WordPress plugin sending calls to a login page)
    answering a redirect was handed to the adapter as a success: HubSpot's gdpr-delete
    redirected was reported sent, a WooCommerce lookup by id read as "no such customer",
    other calls failed as "not JSON" and were retried in vain. It fails the call as fatal,
    naming the status, and nothing is sent to where it points: no body, no credentials."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        where = f"http://elsewhere.example/{SECRET_EMAIL}?token=geheim"
        return httpx.Response(status, headers={"Location": where}, json={})

    client = SystemClient(
        "shop",
        "https://shop.example.nl",
        auth=("ck_sleutel", "cs_geheim"),
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=3, sleep=no_sleep),
    )
    for method in ("GET", "DELETE", "POST"):
        with pytest.raises(FatalRemoteError) as info:
            await client.request(method, "/wp-json/wc/v3/customers/7", json={"a": 1})
        assert info.value.status == status and "redirect" in str(info.value)
        assert "elsewhere" not in str(info.value) and SECRET_EMAIL not in str(info.value)
    assert [request.url.host for request in seen] == ["shop.example.nl"] * 3
    await client.aclose()


async def test_a_call_through_httpx_s_own_client_is_not_redirected_either() -> None:
    """A path with its own query string goes through httpx's client, not the direct path:
    a redirect there is not followed either, and nothing reaches where it points."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host != "shop.example.nl":
            return httpx.Response(200, json={})
        return httpx.Response(302, headers={"Location": "https://elsewhere.example/x"})

    client = SystemClient(
        "shop",
        "https://shop.example.nl",
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=3, sleep=no_sleep),
    )
    with pytest.raises(FatalRemoteError) as info:
        await client.request("GET", "/customers?context=edit")
    assert info.value.status == 302
    assert [request.url.host for request in seen] == ["shop.example.nl"]
    await client.aclose()


async def test_a_header_with_a_line_break_fails_the_call_naming_the_header_only() -> None:
    """A header value with CR or LF (a token pasted with its newline) is not sent, not
    retried, and the error names the header, never its value."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    client = SystemClient(
        "crm",
        "https://crm.test",
        headers={"X-Api-Key": "geheim-token\r\nX-Evil: 1"},
        retry=RetryPolicy(attempts=3, sleep=no_sleep),
    )
    with pytest.raises(FatalRemoteError) as info:
        await client.request("GET", "/x")
    assert "'X-Api-Key' holds CR, LF or NUL" in str(info.value)
    assert "geheim" not in str(info.value)
    assert client.stats.retries == 0
    await client.aclose()


async def test_a_transport_error_that_says_certificate_verify_failed_is_fatal() -> None:
    """A transport that reports a certificate refused only in its message (no SSLError
    chained) fails the call as fatal at once, not as a network error retried."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")

    client = SystemClient(
        "crm",
        "https://crm.test",
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(attempts=3, sleep=no_sleep),
    )
    with pytest.raises(FatalRemoteError) as info:
        await client.request("GET", "/x")
    assert "TLS verification failed" in str(info.value)
    assert client.stats.retries == 0
    await client.aclose()


def test_a_tls_key_the_daemon_may_not_read_is_a_problem_only_when_starting_listeners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key another user owns (as root, nothing is unreadable: the refusal is stood in
    for) stops the daemon's listeners, and not an operator's other commands."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"

    def refused(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", refused)
    assert server_pair_problem(cert, key) is None
    problem = server_pair_problem(cert, key, strict=True)
    assert problem is not None and "cannot be read (Permission denied)" in problem


def test_rate_limited_error_is_retryable() -> None:
    """429s are retryable errors in the tree."""
    assert issubclass(RateLimitedError, RetryableError)


async def test_rate_limiter_paces_to_the_window() -> None:
    """Three calls against 2 per 10 s, each answered at once: the third waits until the
    window frees. (A call not answered holds its slot: see test_ratelimit.py.)"""
    clock = FakeClock()
    waited: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waited.append(seconds)
        clock.advance(seconds)

    limiter = RateLimiter(RateLimit(2, 10), clock=clock, sleep=fake_sleep)
    for _ in range(3):
        limiter.settle(await limiter.acquire())
    assert len(waited) == 1 and 10.0 <= waited[0] <= 10.01


@respx.mock
async def test_adapter_can_mark_a_non_429_answer_as_rate_limiting() -> None:
    """A 403 HTML block page the adapter recognises is retried like a 429; other 403s stay fatal."""
    block = httpx.Response(403, text="<html>blocked</html>", headers={"content-type": "text/html"})
    respx.get("https://crm.test/slow").mock(side_effect=[block, httpx.Response(200, json={})])
    respx.get("https://crm.test/forbidden").mock(
        return_value=httpx.Response(403, json={"error": "forbidden"})
    )
    client = SystemClient(
        "deals",
        "https://crm.test",
        transport=_respx_transport(),
        rate_limited=lambda r: r.headers.get("content-type", "").startswith("text/html"),
        retry=RetryPolicy(attempts=3, sleep=no_sleep),
    )
    assert (await client.request("GET", "/slow")).status_code == 200
    assert client.stats.rate_limited == 1
    with pytest.raises(FatalRemoteError):
        await client.request("GET", "/forbidden")
    await client.aclose()


@pytest.mark.parametrize("port", ["99999", "abc", "0"])
def test_check_url_refuses_an_invalid_port_and_redact_url_survives_it(port: str) -> None:
    """A port out of range or not a number is a policy problem in words; redacting such a
    URL (in a message about it) does not raise."""
    url = f"https://127.0.0.1:{port}/api?token=x"
    assert check_url(url) == "has an invalid port; it must be a number from 1 to 65535"
    assert redact_url(url) == "https://127.0.0.1/api"
