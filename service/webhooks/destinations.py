"""Where a webhook may be sent: the open internet, and the internal addresses an operator names.

A rule author writes webhook URLs, and the service sends to them from inside
the operator's network, so without a check a URL such as
``http://169.254.169.254/...`` (a cloud's metadata service) or
``http://127.0.0.1:8000/v1/keys`` would be reached from there, and
``GET /v1/webhooks`` would show what answered. So loopback, private,
link-local, carrier-grade NAT, multicast, reserved and unspecified addresses
are refused, unless ``DELIGHT_WEBHOOK_ALLOW`` lists them (addresses or CIDR
ranges, comma-separated, e.g. ``10.20.0.0/16,127.0.0.1``).

The check is made on the addresses a host name resolves to, at each
delivery, and the request then goes to the address that was checked (with
the name in ``Host`` and, for HTTPS, in the TLS handshake), so a name that
resolves to a public address when checked and to an internal one a moment
later (DNS rebinding) gains nothing. A literal internal address, or a URL
with a user name or password in it, is refused when the rules load, too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Mapping
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOW_ENV = "DELIGHT_WEBHOOK_ALLOW"
SECRET_PREFIX = "WEBHOOK_SECRET_"  # noqa: S105 - the prefix of a variable's name, not a secret
"""The signing secret's environment variable must start with this, so that a rule file cannot have another of the
server's variables (``DELIGHT_DATABASE_URL``, say) used as a signing key."""


class Refused(ValueError):
    """The destination is not one webhooks may go to; the message says why."""


def allowed_networks(env: Mapping[str, str] | None = None) -> list[Network]:
    """The networks ``DELIGHT_WEBHOOK_ALLOW`` opens (raises ``ValueError`` on a malformed entry)."""
    env = os.environ if env is None else env
    text = env.get(ALLOW_ENV) or ""
    return [ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()]


def internal(address: Address) -> str | None:
    """Why ``address`` is internal (``"loopback"``, ``"private"`` ...), or ``None`` for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for kind in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10"):
        return "carrier-grade NAT"
    if not address.is_global:
        return "not global"
    return None


def check_address(address: Address, allow: list[Network]) -> None:
    kind = internal(address)
    if kind is not None and not any(address in network for network in allow):
        raise Refused(f"{address} is a {kind} address; list it in {ALLOW_ENV} to send webhooks there")


def check_url(url: str, allow: list[Network]) -> None:
    """What can be told from the URL alone: credentials, and a literal internal address."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise Refused("a webhook URL may not hold a user name or password; messages are signed with `secret_env`")
    host = parts.hostname
    if not host:
        raise Refused("the URL names no host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            check_address(ipaddress.ip_address("127.0.0.1"), allow)
        return
    check_address(address, allow)


async def resolve(url: str, allow: list[Network]) -> tuple[str, str]:
    """The URL to send to, its host replaced by a checked address, and the host name it had (for ``Host``).

    Raises ``Refused`` when the URL or any address its host resolves to may not be sent to.
    """
    check_url(url, allow)
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"{host} does not resolve ({exc.strerror or exc})") from None
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:  # every one: a name with one internal address among public ones is refused
        check_address(address, allow)
    first = addresses[0]
    literal = f"[{first}]" if isinstance(first, ipaddress.IPv6Address) else str(first)
    netloc = literal if parts.port is None else f"{literal}:{parts.port}"
    return parts._replace(netloc=netloc).geturl(), host
