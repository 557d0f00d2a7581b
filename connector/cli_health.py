"""``klantsync health``: ask the running daemon's own listener whether it is alive (or ready).

For a container's HEALTHCHECK or a service manager's probe, from beside the daemon. A fixed
``http://127.0.0.1:8787/healthz`` cannot be right for every config: a daemon that listens
beyond loopback (a published container port) must terminate TLS itself, and its certificate
names the host vendors call, issued by whatever CA, not 127.0.0.1. So the listener's address
and scheme come from the config, and over TLS the daemon's own certificate (the first in
``daemon.tls_cert``, which may hold its chain too) is pinned: the check verifies it is
talking to this daemon, without the system's CAs and without a host name that loopback
cannot match.

Exit status: 0 the daemon answered 200; 1 it did not (refused, timed out, another status);
2 bad configuration.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from connector.cliargs import EXIT_FAILED, EXIT_OK
from connector.config import Config

__all__ = ["Probe", "probe", "register", "run"]

#: Seconds the check waits for the listener; a container's HEALTHCHECK allows a few more.
HEALTH_TIMEOUT_SECONDS = 5.0


def register(subparsers: Any) -> None:
    """Add ``health`` to the CLI's subparsers."""
    health = subparsers.add_parser(
        "health",
        help="ask the running daemon's listener whether it is alive (exit 0) or not (exit 1)",
        description="GET /healthz (or /readyz with --ready) from the daemon's own listener, "
        "at the address [daemon] listen names, over TLS accepting only the daemon's own "
        "certificate (the first in daemon.tls_cert) when the daemon terminates TLS. For a "
        "container's HEALTHCHECK.",
    )
    health.add_argument(
        "--ready", action="store_true", help="ask /readyz: the store answers and flows succeed"
    )
    health.add_argument("--json", action="store_true", help="machine-readable output")


@dataclass(frozen=True)
class Probe:
    """What the daemon's listener answered: the status, or why there was none."""

    url: str
    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def run(args: argparse.Namespace, console: Console, config: Config) -> int | None:
    """Handle ``health``; ``None`` for any other command."""
    if args.command != "health":
        return None
    found = probe(config, "/readyz" if args.ready else "/healthz")
    if args.json:
        print(
            json.dumps(
                {"ok": found.ok, "url": found.url, "status": found.status, "error": found.error}
            )
        )
    elif found.ok:
        console.print(f"{escape(found.url)}: {found.status}", markup=False)
    else:
        why = f"answered {found.status}" if found.status is not None else found.error
        console.print(f"{escape(found.url)}: {escape(str(why))}", markup=False)
    return EXIT_OK if found.ok else EXIT_FAILED


def probe(config: Config, path: str) -> Probe:
    """GET ``path`` from the daemon's public listener, as the config says it listens."""
    settings = config.daemon
    host, port = _loopback_host(settings.listen)
    tls = settings.tls_cert is not None and settings.tls_key is not None
    shown = f"[{host}]" if ":" in host else host
    url = f"{'https' if tls else 'http'}://{shown}:{port}{path}"
    connection: http.client.HTTPConnection
    leaf: bytes | None = None
    if tls:
        assert settings.tls_cert is not None
        leaf = _leaf_certificate(settings.tls_cert)
        if leaf is None:
            return Probe(url, None, "TLS: daemon.tls_cert holds no certificate")
        connection = http.client.HTTPSConnection(
            host, port, timeout=HEALTH_TIMEOUT_SECONDS, context=_trusting(leaf)
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=HEALTH_TIMEOUT_SECONDS)
    try:
        connection.connect()
        if leaf is not None and _served_certificate(connection) != leaf:
            return Probe(url, None, "TLS: the listener serves another certificate")
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
        return Probe(url, response.status)
    except ssl.SSLError as exc:
        # The reason (an expired certificate, another one served) without the library's
        # noise; no personal data is involved either way.
        return Probe(url, None, f"TLS: {exc.reason or type(exc).__name__}")
    except (OSError, http.client.HTTPException) as exc:
        return Probe(url, None, getattr(exc, "strerror", None) or type(exc).__name__)
    finally:
        connection.close()


def _loopback_host(listen: str) -> tuple[str, int]:
    """Where to reach the listener from beside it: a wildcard address is asked on loopback."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - a listen address, read
    return wildcard.get(host, host), int(port)


def _leaf_certificate(cert_file: Path) -> bytes | None:
    """The first certificate in ``cert_file`` (DER): the daemon's own, its chain after it.

    Only that one identifies the daemon: its issuer, trusted too, would let any server
    holding another certificate from it (for a public CA's intermediate: anyone) pass.
    """
    try:
        pem = cert_file.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = pem.find(begin)
    stop = pem.find(end, start)
    if start < 0 or stop < 0:
        return None
    try:
        return ssl.PEM_cert_to_DER_cert(pem[start : stop + len(end)])
    except ValueError:
        return None


def _served_certificate(connection: http.client.HTTPConnection) -> bytes | None:
    """The certificate the listener presented (DER), once connected."""
    sock = connection.sock
    return sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None


def _trusting(leaf: bytes) -> ssl.SSLContext:
    """A client context that trusts the daemon's own certificate, and nothing else.

    The certificate alone is the trust anchor, so verification does not need its issuer
    (partial chain); the host name is not checked, since the certificate names the public
    host and the check asks loopback: being that certificate is what the check verifies
    (and :func:`probe` compares it with the one served besides).
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_verify_locations(cadata=leaf)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    return context
