"""The daemon's listener addresses: what is wrong with a ``host:port``, whether it is
reachable from this machine only, and whether two would bind one port.

The words for a host and what counts as loopback are connector/http.py's, where the same
rules decide which base URLs may go without TLS: a listener and a URL agree on both.
"""

from __future__ import annotations

import ipaddress
import re

from connector.http import LOOPBACK_NAMES, host_problem, is_loopback

__all__ = ["listen_problem", "listener_is_loopback", "listeners_overlap"]


def listen_problem(listen: str) -> str | None:
    """What is wrong with ``listen`` as a listener's ``host:port``, in words; ``None`` when
    nothing is. A blank, a URL or a host that is none is said as such, not taken for an
    address beyond loopback."""
    example = 'e.g. "127.0.0.1:8787"'
    if any(ch.isspace() or not ch.isprintable() for ch in listen):
        if listen.strip() != listen and not any(ch.isspace() for ch in listen.strip()):
            return f"has a blank before or after the address; write it without, {example}"
        return (
            "holds a blank or an invisible character (a tab, a no-break space?); write "
            f'"host:port" without any, {example}'
        )
    if "://" in listen or "/" in listen:
        return f'is a URL; give "host:port" alone, {example}'
    host, sep, port = listen.rpartition(":")
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 0 < int(port) < 65536:
        return f'must be "host:port" with a port from 1 to 65535, {example}'
    if not host:
        return f"must name a host, {example}"
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        # "::1:8787" is read as ::1 on port 8787, as the listeners always bound it: refused,
        # a config that served for years left the daemon down after an upgrade. Only what
        # is no IPv6 address then is told, with the form that cannot be misread.
        if host_problem(host) is not None:
            return 'an IPv6 address goes in brackets before the port, e.g. "[::1]:8787"'
        return None
    problem = host_problem(host)
    return f"the host {problem}" if problem else None


def listener_is_loopback(listen: str) -> bool:
    """Whether a ``host:port`` listener is reachable from this machine only."""
    host = listen.rpartition(":")[0] if ":" in listen else listen
    return is_loopback(host)


#: The wildcard addresses a listener may bind: every IPv4 address, and every address.
_ANY_IPV4, _ANY_ADDRESS = ipaddress.IPv4Address(0).compressed, ipaddress.IPv6Address(0).compressed


def listeners_overlap(first: str, second: str) -> bool:
    """Whether two ``host:port`` listeners would bind one port twice, so the second fails
    ("Address already in use").

    So they do on one address however it is written (``localhost`` is bound as 127.0.0.1,
    ``::ffff:127.0.0.1`` reaches it too), and beside a wildcard address, which takes the
    port on every address it stands for: ``0.0.0.0`` on every IPv4 one (a host name
    included: it is bound as one), ``::`` on every one, IPv4 too (an IPv6 socket is dual
    stack unless the system says otherwise). Two different names are taken to differ.
    """
    (first_host, _, first_port), (second_host, _, second_port) = (
        first.rpartition(":"),
        second.rpartition(":"),
    )
    if int(first_port) != int(second_port):
        return False
    hosts = {_bound_address(first_host), _bound_address(second_host)}
    if len(hosts) == 1 or _ANY_ADDRESS in hosts:
        return True
    return _ANY_IPV4 in hosts and not any(":" in host for host in hosts)


def _bound_address(host: str) -> str:
    """A listener's host as the address its socket binds, so two spellings compare."""
    host = host.strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return "127.0.0.1"  # no ':' in it: an IPv4 socket, which binds it there
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # a name: bound to what it resolves to, unknown here
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).compressed
