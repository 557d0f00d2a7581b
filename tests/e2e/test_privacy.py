"""Canary values seeded in the shop never appear in logs, errors or the bytes of the store."""

from __future__ import annotations

import io
import json
import logging
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters.hubspot.sandbox import HubSpotSandbox
from adapters.woocommerce.sandbox import WooCommerceSandbox
from connector.logs import RedactingFilter, mask_contact_details, redact, setup_logging
from connector.requestids import PREFIX
from tests.conftest import (
    CANARY_EMAIL,
    CANARY_NAME,
    CANARY_PHONE,
    CANARY_PHONE_E164,
    CANARY_TOKEN,
)

CANARIES = [CANARY_EMAIL, CANARY_PHONE, CANARY_PHONE_E164, CANARY_NAME, CANARY_TOKEN]


def _store_bytes(directory: Path) -> bytes:
    data = b""
    for path in directory.rglob("klantsync.db*"):
        data += path.read_bytes()
    return data


def _assert_clean(text: str | bytes, where: str) -> None:
    for canary in CANARIES:
        needle = canary.encode() if isinstance(text, bytes) else canary
        assert needle not in text, f"{canary!r} leaked into {where}"
        lowered = canary.lower().encode() if isinstance(text, bytes) else canary.lower()
        assert lowered not in text, f"{canary!r} leaked into {where}"


async def test_canaries_never_reach_logs_errors_or_store(
    shop: WooCommerceSandbox,
    crm: HubSpotSandbox,
    open_rt: Callable[..., Any],
    config_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A sync with a rejected record, a failed auth and retries leaks no canary anywhere."""
    stream = io.StringIO()
    setup_logging("DEBUG", "json")
    handler = logging.getLogger("klantsync").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)

    shop.seed_synthetic(40, seed=11)
    shop.add_person(CANARY_EMAIL, CANARY_NAME, CANARY_NAME, CANARY_PHONE)
    shop.add_person(f"bad {CANARY_EMAIL}", CANARY_NAME, "Rejected", CANARY_PHONE)
    crm.faults.fail_every = 3
    errors: list[str] = []
    # First with a wrong token (fatal errors get logged and reported), then the right one.
    monkeypatch.setenv("T_HS_TOKEN", CANARY_TOKEN)
    async with open_rt() as rt:
        (report,) = await rt.engine.sync()
        errors += report.errors
    monkeypatch.setenv("T_HS_TOKEN", "pat-sandbox")
    async with open_rt() as rt:
        (report,) = await rt.engine.sync()
        errors += report.errors
        dead = rt.store.dead_letters()
        errors += [d.reason for d in dead]
        rt.store.db.execute("PRAGMA wal_checkpoint(FULL)")
    assert crm.record_for(CANARY_EMAIL) is not None  # the canary really flowed
    assert dead  # the rejected canary record really was dead-lettered
    logs = stream.getvalue()
    assert "delivery stopped" in logs  # the failing path really logged
    _assert_clean(logs, "logs")
    _assert_clean("\n".join(errors), "error messages")
    _assert_clean(_store_bytes(config_path.parent), "the SQLite store")


def test_redaction_is_the_last_line_of_defence() -> None:
    """A log line that somehow carries an e-mail, phone or token is masked before output."""
    record = logging.LogRecord(
        "klantsync.x",
        logging.INFO,
        __file__,
        1,
        "contact %s at %s with token=%s",
        (CANARY_EMAIL, CANARY_PHONE_E164, CANARY_TOKEN),
        None,
    )
    RedactingFilter().filter(record)
    _assert_clean(record.getMessage(), "a redacted record")
    assert redact(f"mail {CANARY_EMAIL}") == "mail <email>"


def test_the_filter_redacts_a_record_s_extras_and_reads_no_structure_that_holds_itself() -> None:
    """The filter masks the extras a record carries, not only its message (a handler
    without the structlog chain sees them as the filter left them); and an extra that
    holds itself is masked whole, not followed until the recursion limit."""
    record = logging.LogRecord("klantsync.x", logging.INFO, __file__, 1, "body ignored", (), None)
    loop: list[Any] = [CANARY_EMAIL]
    loop.append(loop)
    record.__dict__.update(contact=CANARY_EMAIL, keys=[CANARY_PHONE_E164], loop=loop)
    RedactingFilter().filter(record)
    extras = vars(record)
    assert (extras["contact"], extras["keys"]) == ("<email>", ["<phone>"])
    assert extras["loop"][0] == "<email>" and "<redacted>" in json.dumps(extras["loop"])


def test_a_url_of_any_scheme_loses_its_query_string() -> None:
    """Not only http(s): a websocket's or a database's URL in an error keeps its scheme,
    host and path, and drops the query, where a name or an address may be."""
    for scheme in ("wss", "postgresql", "ftp"):
        text = f"connect to {scheme}://db.example.nl/a?name={CANARY_NAME}&x=1 failed"
        assert redact(text) == f"connect to {scheme}://db.example.nl/a failed"


def test_masking_contact_details_masks_them_url_encoded_too() -> None:
    """An operator's account of a breach masks an address or a phone number as a URL or
    a form carries them ("%40", "%2B"), as the log redaction does."""
    from urllib.parse import quote

    for contact, mask in ((CANARY_EMAIL, "<email>"), (CANARY_PHONE_E164, "<phone>")):
        masked = mask_contact_details(f"GET /members/{quote(contact, safe='')} leaked")
        assert masked == f"GET /members/{mask} leaked"


@pytest.mark.parametrize("debug", ["", "1"])
def test_an_exception_s_traceback_is_logged_only_with_klantsync_debug(
    debug: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: a job that meets a bug logs `internal error: <type>`, "the traceback only
    with KLANTSYNC_DEBUG=1". The filter dropped every traceback whatever that said; it now
    keeps the traceback's text (redacted) when asked, and never the frames' values."""
    monkeypatch.setenv("KLANTSYNC_DEBUG", debug)
    try:
        raise RuntimeError(f"a bug meeting {CANARY_EMAIL}")
    except RuntimeError:
        record = logging.LogRecord(
            "klantsync.x", logging.ERROR, __file__, 1, "job failed", None, sys.exc_info()
        )
    RedactingFilter().filter(record)
    text = vars(record)["exception"]
    assert record.exc_info is None
    assert ("Traceback (most recent call last)" in text) is bool(debug)
    assert "RuntimeError: a bug meeting <email>" in text
    _assert_clean(text, "a logged traceback")


@pytest.mark.parametrize(
    "address",
    [
        f"{CANARY_NAME.lower()}.müller@voorbeeld.de",
        f"{CANARY_NAME.lower()}.o'brien@voorbeeld.nl",
        f"{CANARY_NAME.lower()}@bloemen-café.nl",
        f"{CANARY_NAME.lower()}@bloemen-cafe\u0301.nl",  # the domain's accent as a mark
        f"{CANARY_NAME.lower()}.rene\u0301e@voorbeeld.nl",  # an accent typed as its own mark
        f"{CANARY_NAME.lower()}\u0930\u093e\u092e@example.in",  # a vowel sign (Devanagari)
        f"{CANARY_NAME.lower()}@sub.example.\u092e\u0930\u093e\u0920\u0940",
    ],
)
def test_redaction_masks_addresses_with_accents_and_apostrophes_whole(address: str) -> None:
    """Addresses customers have: an umlaut or an apostrophe in the name, an accent in the
    domain. ASCII-only matching let them through whole, or kept the name's head; an
    operator's reason naming one was stored so (dsr extend, exempt, readmit)."""
    for text in (f"asked by {address} by mail", f"KeyError: '{address}'"):
        masked = redact(text)
        assert CANARY_NAME.lower() not in masked and "@" not in masked, text


@pytest.mark.parametrize(
    "line",
    [
        f"retrying with Authorization: Bearer {CANARY_TOKEN}",
        f'request headers {{"Authorization": "Bearer {CANARY_TOKEN}"}}',
        f"Authorization: Basic {CANARY_TOKEN}",
    ],
)
def test_redaction_masks_the_token_after_the_authorization_scheme(line: str) -> None:
    """ "Authorization: Bearer <token>": the word "Bearer" was taken for the value and masked,
    and the token after it passed."""
    assert CANARY_TOKEN not in redact(line)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("extended on 2026-11-29: the shop is slow", "extended on 2026-11-29: the shop is slow"),
        ("away 2026-12-01 - 2026-12-13", "away 2026-12-01 - 2026-12-13"),
        ("signed up again 2026-11-29 14 h", "signed up again 2026-11-29 14 h"),
        (f"call {CANARY_PHONE} on 2026-11-29", "call <phone> on 2026-11-29"),
        (f"call {CANARY_PHONE_E164}", "call <phone>"),
        ("on 2026-11-29 06 12345678", "on <phone>"),
        ("call 0612-345-678", "call <phone>"),
        ("not a date 2026-13-01", "not a date <phone>"),
        # Belgian and German numbers, with slashes and dots: read as phones by the
        # connector's own transform, so masked as phones too.
        ("she called from 0470/12.34.56", "she called from <phone>"),
        ("or +32 470/12.34.56.", "or <phone>."),
        ("mobile 06.87.65.43.21", "mobile <phone>"),
        ("Berlin 030/1234567", "Berlin <phone>"),
        # Dates as the Dutch and Germans write them stay.
        ("away 30-11-2026 - 13.12.2026", "away 30-11-2026 - 13.12.2026"),
        ("on 1/12/2026 14 h", "on 1/12/2026 14 h"),
        ("on 30.11.2026 call 0470/12.34.56", "on 30.11.2026 call <phone>"),
        # Counts and amounts with thousands separators, and ISO dates with slashes, stay:
        # often the one fact a reason or an incident summary was written for.
        ("about 1.250.000 records", "about 1.250.000 records"),
        ("verlengd: 2.500.000 orders te doorzoeken", "verlengd: 2.500.000 orders te doorzoeken"),
        ("bedrag EUR 12.345.678,90 betwist", "bedrag EUR 12.345.678,90 betwist"),
        ("AP-besluit van 2026/11/30", "AP-besluit van 2026/11/30"),
        ("call 010.123.4567", "call <phone>"),
        # ... but nine digits in threes is a phone (Spain's mobiles), and an IP address
        # in dotted groups is personal data too: both masked.
        ("klant belt 612.345.678", "klant belt <phone>"),
        ("login from 81.204.123.145 refused", "login from <phone> refused"),
        ("from 192.168.100.200", "from <phone>"),
        # A request id whose hex digits are all digits is an id, not a phone; a phone
        # beside one is still masked.
        ("request er-20260105-97368204 completed", "request er-20260105-97368204 completed"),
        (
            "ac-20261130-12345678, rc-20261130-0a1b2c3d",
            "ac-20261130-12345678, rc-20261130-0a1b2c3d",
        ),
        ("er-20260105-97368204 called 0612345678", "er-20260105-97368204 called <phone>"),
        ("er-20260105-97368204-0612345678", "er-20260105-97368204-<phone>"),
        ("ber-20260105-97368204", "ber-<phone>"),
    ],
)
def test_redaction_masks_phones_and_leaves_dates(text: str, expected: str) -> None:
    """A date in an operator's reason or a deadline is kept; a phone beside it is not.
    Incident texts are masked by the same patterns."""
    assert redact(text) == expected
    assert mask_contact_details(text) == expected


@pytest.mark.parametrize("kind", sorted(PREFIX))
def test_a_request_id_of_every_kind_is_left_whole_by_the_masking(kind: str) -> None:
    """An id of each kind the request service makes, its hex digits all digits, is kept as
    it is, not masked as a phone: the masking reads the kinds' prefixes where the service
    does (connector/requestids.py), so a kind added there is kept too."""
    text = f"request {PREFIX[kind]}-20260105-97368204 completed"
    assert redact(text) == text
    assert mask_contact_details(text) == text


async def test_the_journal_names_a_request_whose_id_has_only_digits_by_that_id(
    open_rt: Callable[..., Any],
    shop: WooCommerceSandbox,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An operator matches the daemon's "request completed" line to the request the admin
    API, `dsr list` and the receipt name by its id (``er-YYYYMMDD-<8 hex>``). About one id
    in 43 has hex digits that are all digits: the phone redaction masked it
    (``er-<phone>``), and no line of the journal could be matched to its request."""
    from connector.dsr import DsrService

    stream = io.StringIO()
    setup_logging("INFO", "json")
    handler = logging.getLogger("klantsync").handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    shop.add_person(CANARY_EMAIL, CANARY_NAME, "Klant", CANARY_PHONE)
    monkeypatch.setattr("connector.dsr.secrets.token_hex", lambda _n=4: "97368204")
    async with open_rt() as rt:
        await rt.engine.sync()
        view = await DsrService(rt).erase(CANARY_EMAIL)
    assert view.status == "completed" and view.id.endswith("-97368204")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    completed = [line for line in lines if line["event"] == "request completed"]
    assert [line["request"] for line in completed] == [view.id]
    _assert_clean(stream.getvalue(), "the journal")


def test_what_the_libraries_underneath_log_is_redacted_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """apscheduler (a scheduled job that raised), uvicorn (an error in a request) and
    asyncio log through the same redaction: the exception's type and masked text as a
    field, no traceback; their chatter below warnings stays out."""
    setup_logging("INFO", "json")
    try:
        raise KeyError(CANARY_EMAIL)
    except KeyError:
        logging.getLogger("apscheduler.executors.default").exception(
            "Job %r raised an exception", "flow shop-to-crm"
        )
    logging.getLogger("uvicorn.error").error("Exception in ASGI application %s", CANARY_PHONE)
    logging.getLogger("asyncio").info("poll took %s for %s", 0.2, CANARY_NAME)
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines()]
    assert [(line["logger"], line["level"]) for line in lines] == [
        ("apscheduler.executors.default", "error"),
        ("uvicorn.error", "error"),
    ]
    assert lines[0]["exception"] == "KeyError: '<email>'"
    assert "Traceback" not in err
    _assert_clean(err, "the libraries' logs")


def test_log_extras_that_are_not_strings_are_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An extra that is a list or a dict (adapters/shopify/webhooks.py logs `keys`, a list
    taken from a vendor's body) is redacted all the way down, as a string extra is: the
    filter and the structlog chain both looked at str values only, and the JSON line
    carried an e-mail address and a phone number in clear."""
    setup_logging("INFO", "json")
    logging.getLogger("klantsync.x").warning(
        "body ignored",
        extra={"keys": [CANARY_EMAIL], "detail": {"phone": (CANARY_PHONE,), CANARY_EMAIL: 1}},
    )
    (line,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert line["event"] == "body ignored"
    assert line["keys"] == ["<email>"]
    assert line["detail"] == {"phone": ["<phone>"], "<email>": 1}


def test_an_e_mail_in_a_url_query_string_is_redacted_in_exception_text(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """httpx builds a query from params ({"email": ...}, as the WooCommerce and Mailchimp
    adapters look people up), so the address is percent-encoded ("%40", "%2B") and the
    e-mail pattern passed it; httpx's own HTTPStatusError carries the full URL in its text.
    A URL's query string is dropped, as connector/http.py's redact_url drops it, and an
    address percent-encoded elsewhere (a path) is masked."""
    import httpx

    setup_logging("INFO", "json")
    request = httpx.Request(
        "GET",
        "https://shop.example.nl/wp-json/wc/v3/customers",
        params={"email": CANARY_EMAIL, "role": "all"},
    )
    try:
        httpx.Response(404, request=request).raise_for_status()
    except httpx.HTTPStatusError:
        logging.getLogger("klantsync.x").exception("lookup failed")
    (line,) = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert "'https://shop.example.nl/wp-json/wc/v3/customers'" in line["exception"]
    local = CANARY_EMAIL.split("@")[0].split("+")[0]  # however it is encoded
    assert local not in json.dumps(line)
    encoded = str(httpx.URL("https://x.nl/members/", params={"e": CANARY_EMAIL}).params)
    assert redact(f"GET /members/{encoded.removeprefix('e=')}") == "GET /members/<email>"


@pytest.mark.parametrize("phone", [CANARY_PHONE, CANARY_PHONE_E164, "+31 6 8765 4321"])
def test_a_phone_number_url_encoded_is_masked_as_one_in_clear_is(phone: str) -> None:
    """A phone number as a URL or a form carries it: its "+" as "%2B" and its spaces as
    "%20" or "+" (Mailchimp's webhooks post form-encoded bodies). The phone pattern took
    the "+" and the "%" for the end of the number and passed it whole, where an e-mail
    address so encoded is masked."""
    from urllib.parse import quote, urlencode

    for text in (
        f"GET /members/{quote(phone, safe='')}",
        f"GET /members/{quote(phone)}",
        f"body {urlencode({'data[merges][PHONE]': phone})}",
        f"body {urlencode({'phone': phone}, quote_via=quote)}",
    ):
        masked = redact(text)
        digits = "".join(ch for ch in phone if ch.isdigit())
        assert "<phone>" in masked, text
        assert digits[-8:] not in masked.replace("%20", "").replace("+", ""), text
    # Encoded text that is no phone keeps its form: a date, an amount, a path's words.
    for kept in ("2026-11-29%2014", "from+2026-11-29+to+2026-12-13", "EUR+1.250.000"):
        assert redact(kept) == kept


def test_a_klantsync_command_forbids_a_core_dump_of_its_memory() -> None:
    """A crash wrote the process's memory (the master key, the people it was working on, in
    clear) to disk as a core dump wherever the host keeps them: every command sets its core
    size limit to 0 first, soft and hard, whatever limit it was started with.

    Commands the other tests run in the test process leave its limit as it was: lowered for
    good by the first of them, this test was skipped in every worker that had run one."""
    from connector.cli import main

    _soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    if hard == 0:
        pytest.skip("core dumps were off when this test run started")
    assert main(["keygen", "--json"]) == 0  # in this process, as many tests run commands
    assert resource.getrlimit(resource.RLIMIT_CORE)[1] == hard
    probe = (
        "import resource, sys\n"
        "limit = resource.getrlimit(resource.RLIMIT_CORE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_CORE, (limit, limit))\n"
        "from connector.cli import main\n"
        "code = main(['keygen', '--json'])\n"
        "print(code, *resource.getrlimit(resource.RLIMIT_CORE), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stderr.split() == ["0", "0", "0"], done.stderr
