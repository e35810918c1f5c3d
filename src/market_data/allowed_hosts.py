"""API_ALLOWED_HOSTS: the Host header values the HTTP API answers (a DNS-rebinding guard).

A web page the user visits can make the browser send requests to 127.0.0.1 under a name the
page's author controls (DNS rebinding); the browser then lets that page read the answers. A
server that answers only the names it is really reached by defeats this, since such requests
carry the attacker's name in Host. Starlette's TrustedHostMiddleware does the checking; this
module turns the setting into its list: lower-case names, IPv6 literals in brackets (as Host
spells them), `*.example.com` patterns, or `*` for any. Ports are not part of an entry: any port
matches.
"""

from __future__ import annotations

import ipaddress
import re

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_NAME = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)(\.(?!-)[a-z0-9_-]{1,63}(?<!-))*")


def default_allowed_hosts(api_host: str) -> list[str]:
    """The loopback names and API_HOST (the name or address the API listens on)."""
    hosts = list(LOOPBACK_HOSTS)
    own = allowed_host(api_host)
    if own not in hosts:
        hosts.append(own)
    return hosts


def allowed_host(entry: str) -> str:
    """One entry in the form Host headers are compared in; ValueError saying what is wrong."""
    text = entry.strip().lower().removesuffix(".")
    if text == "*":
        return text
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        return f"[{address.compressed}]" if address.version == 6 else address.compressed
    name = text.removeprefix("*.")
    if len(name) > 253 or not _NAME.fullmatch(name):
        if re.fullmatch(r"[^:/@]+:[0-9]*|\[[^]/@]*\]:[0-9]*", text):
            raise ValueError(
                f"{entry.strip()[:60]!r}: give the host without a port (any port matches)"
            )
        raise ValueError(f"{entry.strip()[:60]!r} is not a host name, IP address or *.domain")
    return text
