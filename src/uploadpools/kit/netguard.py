"""Refuse outbound requests to internal addresses (SSRF guard).

Whenever the server fetches a URL a user gave it, ``resolve_and_check`` must
approve the URL first: only ``http``/``https`` are allowed, and every address
the host name resolves to must be publicly routable.  Loopback, private
(RFC 1918 / ULA), link-local (including the cloud metadata address
169.254.169.254), multicast, reserved, unspecified and shared (CGNAT,
100.64.0.0/10) addresses are refused, including when they hide inside IPv6
forms (IPv4-mapped ``::ffff:a.b.c.d``, 6to4 ``2002::/16``, Teredo, NAT64
``64:ff9b::/96``).  An operator can open specific ranges (for example a NAS on
the LAN) with an allowlist of networks, parsed by ``parse_networks``.

Residual risk, DNS rebinding: this module resolves the name, but the HTTP
client resolves it again when it connects, so a hostile DNS server could
answer with a public address here and a private one a moment later.  Callers
narrow the window by checking every redirect hop (a redirect cannot escape the
check), and the time between check and connect is milliseconds, but it is not
closed.  Closing it fully needs connecting to the checked address itself (a
custom transport that pins the IP and sends the original Host/SNI) or an
egress proxy/firewall that enforces the same policy.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

__all__ = [
    "ALLOWLIST_SETTING",
    "DestinationRefused",
    "check_address",
    "parse_networks",
    "resolve_and_check",
]

# Name of the setting that feeds ``allowed``; used in messages so an operator
# knows what to change.
ALLOWLIST_SETTING = "UPLOADPOOLS_PRIVATE_NETWORKS_ALLOWED"

_ALLOWED_SCHEMES = frozenset({"http", "https"})
_SHARED_ADDRESS_SPACE = IPv4Network("100.64.0.0/10")
_NAT64_PREFIX = IPv6Network("64:ff9b::/96")

Network = IPv4Network | IPv6Network
Address = IPv4Address | IPv6Address


class DestinationRefused(Exception):
    """The URL may not be fetched; the message names the host and the reason."""


def parse_networks(value: str | Iterable[str]) -> tuple[Network, ...]:
    """Parse ``"10.0.0.0/8, 192.168.1.20, fd00::/8"`` (or an iterable of such items).

    Bare addresses become single-host networks; host bits in a CIDR are
    ignored (``10.1.2.3/8`` means ``10.0.0.0/8``).  Empty items are skipped.
    Raises ``ValueError`` naming the offending item.
    """
    items = value.split(",") if isinstance(value, str) else list(value)
    networks: list[Network] = []
    for raw in items:
        item = raw.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ValueError(
                f"invalid network {item!r} in {ALLOWLIST_SETTING}: expected an IP address "
                f"or CIDR such as 10.0.0.0/8 ({exc})"
            ) from None
    return tuple(networks)


def _classify(ip: Address) -> str | None:
    """Why ``ip`` is not a public destination, or ``None`` if it is."""
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, IPv4Address) and ip in _SHARED_ADDRESS_SPACE:
        return "shared (100.64.0.0/10)"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "non-public"
    return None


def _embedded_ipv4(ip: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address carried inside an IPv6 transition form, if any."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]
    if ip in _NAT64_PREFIX:
        return "NAT64", IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _refusal(ip: Address) -> str | None:
    """A description of why ``ip`` is refused, or ``None``."""
    if isinstance(ip, IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            form, inner = embedded
            reason = _classify(inner)
            if reason is not None:
                return f"{form} {reason}"
    return _classify(ip)


def _is_allowed(ip: Address, allowed: Sequence[Network]) -> bool:
    candidates: list[Address] = [ip]
    if isinstance(ip, IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            candidates.append(embedded[1])
    return any(candidate in net for candidate in candidates for net in allowed)


def check_address(host: str, address: str, allowed: Sequence[Network]) -> None:
    """Raise ``DestinationRefused`` if ``address`` (resolved from ``host``) is off limits."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if _is_allowed(ip, allowed):
        return
    reason = _refusal(ip)
    if reason is None:
        return
    raise DestinationRefused(
        f"host {host!r} resolves to {reason} address {address}, which is not allowed; "
        f"add it to {ALLOWLIST_SETTING} to permit it"
    )


async def resolve_and_check(url: str, allowed: Sequence[Network]) -> list[str]:
    """Validate ``url`` and return the addresses its host resolves to.

    Raises ``DestinationRefused`` for a non-http(s) scheme, a missing host, a
    host that does not resolve, or if *any* resolved address is non-public and
    outside ``allowed`` (one bad answer is enough: the client may pick it).
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        # Not the URL itself: it may carry credentials or a signed query.
        raise DestinationRefused(f"invalid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in _ALLOWED_SCHEMES:
        shown = f"{scheme}://" if scheme else "a missing scheme"
        raise DestinationRefused(f"only http:// and https:// URLs can be fetched, not {shown}")
    host = parts.hostname
    if not host:
        raise DestinationRefused(f"the URL has no host ({scheme}://…)")
    if port is None:
        port = 443 if scheme == "https" else 80

    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        # An IP literal needs no resolver round trip (a thread hop per request).
        check_address(host, host, allowed)
        return [host]

    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationRefused(f"could not resolve host {host!r}: {exc}") from None

    addresses: list[str] = []
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise DestinationRefused(f"host {host!r} did not resolve to any IP address")
    for address in addresses:
        check_address(host, address, allowed)
    return addresses
