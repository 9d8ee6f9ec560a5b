"""Whether an address stays on this machine: the one loopback rule for listen hosts and heads."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def host_of(address: str) -> str:
    """The host an address names: a bare host, ``[v6]``, ``host:port`` or a URL; lower-case."""
    text = address.strip()
    bare = text.strip("[]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    try:
        host = urlsplit(text if "://" in text else f"//{text}").hostname
    except ValueError:
        return ""
    return (host or "").lower()


def is_loopback(address: str) -> bool:
    """Whether an address names this machine only: ``localhost``, all of 127.0.0.0/8 and ``::1``
    (an IPv4-mapped loopback too), given as a bare host, ``[v6]``, ``host:port`` or a URL."""
    host = host_of(address)
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
