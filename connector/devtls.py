"""Throw-away certificates for loopback TLS: a private CA and server certificates it signs.

Used by the demo, the sandboxes and the tests, so that local traffic is real HTTPS with
verification on, exactly like production. Also makes the *bad* certificates (expired, wrong
host, unknown CA) the tests need to prove the TLS policy refuses them.

The certificates carry what strict X.509 verification requires (Python 3.13's default
context sets ``VERIFY_X509_STRICT``): key identifiers on both (the subject's, and on the
server certificate the CA's, by which it is chained) and the CA's critical basic
constraints and key usage.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from connector.privatefile import write_private

__all__ = ["DevCA", "ServerCert"]


@dataclass(frozen=True)
class ServerCert:
    """Paths of a PEM certificate and its unencrypted PEM key."""

    cert_path: Path
    key_path: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    # Owner-only from the start: the key of a server the config trusts, never 0644 a moment.
    write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


class DevCA:
    """A private certificate authority written to ``directory``.

    Args:
        directory: where ``ca.pem`` and issued certificates go.
        name: the CA's common name.
    """

    def __init__(self, directory: Path, name: str = "klantsync local CA") -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            # Past the 30 days within which `check` warns of a ca_bundle expiring: the
            # sandbox makes its CA afresh at each start (the key is never written), and the
            # example config trusting it drew that warning on every check.
            .not_valid_after(now + dt.timedelta(days=90))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_path = directory / "ca.pem"
        self.ca_path.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str = "localhost",
        hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
        *,
        expired: bool = False,
    ) -> ServerCert:
        """Issue a server certificate for ``hosts`` (DNS names or IPs), optionally expired."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        if expired:
            start, end = now - dt.timedelta(days=10), now - dt.timedelta(days=1)
        else:
            start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=7)
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(hosts[0] if hosts else name))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
            .sign(self._key, hashes.SHA256())
        )
        cert_path = self.directory / f"{name}.pem"
        key_path = self.directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return ServerCert(cert_path, key_path)
