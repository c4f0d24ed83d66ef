"""The client's address: the connection's peer, or behind a trusted proxy the address that proxy saw.

Behind a TLS-ending proxy (README, "Operations") every connection comes from the proxy. Taken for
the client, its address would be every client's: one client's flood would spend everyone's address
rate limit (handlers/ratelimit.py), one client's failed logins would start everyone's address
back-off, and the audit trail would name the proxy as the source of every access.

``service.trusted_proxies`` names the proxies (addresses or networks). When a request's peer is one
of them, its client is read from ``X-Forwarded-For`` from the right, where each proxy appends the
address it saw: the first address that is no trusted proxy (or the leftmost, if all are). What
lies left of it was written by the client and is never believed. A peer that is no trusted proxy
is the client whatever the header says, since anyone can send one; with no trusted proxies (the
default) the header is never read.

:func:`forwarded_client` decides once per request, before the rate limits; everything that needs
the address asks :func:`client_address`. Where a trusted proxy should have written an address and
something else stands (a proxy always appends a valid one, so the trust setting does not match the
deployment), the request is refused: 400 ``malformed_request`` naming ``X-Forwarded-For``, the value
never echoed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from engine.errors import FieldError, MalformedRequest
from handlers.keys import client_address_key
from handlers.routing import Contract, Status, declares

FORWARDED_FOR = "X-Forwarded-For"
#: What the middleware adds to every operation: a refusal. The header itself is not the API's: a
#: proxy writes it, a client's own is never believed (so it is no parameter of the document).
CLIENT_ADDRESS = Contract(
    "client address",
    statuses=(
        Status(400, f"A trusted proxy's {FORWARDED_FOR} holds no address where the client's should be"),
    ),
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(request: web.Request) -> str | None:
    """The request's client, as :func:`forwarded_client` decided it (the peer without it)."""
    client: str | None = request.get(client_address_key, request.remote)
    return client


def forwarded_client(trusted: Sequence[Network]) -> Middleware:
    """The middleware deciding :func:`client_address`; put it after ``request_context`` (its refusal is
    problem+json with the request's id) and before everything that reads the address. Without
    trusted proxies it has nothing to decide: the app installs it only with some."""

    @web.middleware
    @declares(CLIENT_ADDRESS)
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            client = resolve(request.remote, request.headers.getall(FORWARDED_FOR, ()), trusted)
        except ValueError:
            message = (
                "A trusted proxy's list holds something that is no IP address where the client's should be."
            )
            raise MalformedRequest([FieldError(FORWARDED_FOR, message, "header_invalid")]) from None
        if client is not None:
            request[client_address_key] = client
        return await handler(request)

    return middleware


def resolve(peer: str | None, forwarded: Iterable[str], trusted: Sequence[Network]) -> str | None:
    """The client of a request from ``peer`` carrying the ``X-Forwarded-For`` fields ``forwarded``.

    Raises ValueError when the entry that names the client is no address."""
    if not trusted or not peer:
        return peer
    try:
        hop = _address(peer)
    except ValueError:
        return peer  # not an IP peer (a Unix socket): no proxy of ours
    hops = [entry for field in forwarded for entry in field.split(",")]
    while _is_trusted(hop, trusted) and hops:
        hop = _address(hops.pop())
    return str(hop)


def is_trusted_peer(peer: str | None, trusted: Sequence[Network]) -> bool:
    """Whether the connection came from one of the ``trusted`` proxies."""
    try:
        return peer is not None and _is_trusted(_address(peer), trusted)
    except ValueError:
        return False


def _is_trusted(address: Address, trusted: Sequence[Network]) -> bool:
    return any(address in network for network in trusted)


def _address(entry: str) -> Address:
    """An address as proxies write it: ``192.0.2.1``, ``192.0.2.1:443``, ``[2001:db8::1]:443`` or
    ``2001:db8::1``; an IPv4 address written as IPv6 (``::ffff:192.0.2.1``) is the IPv4 one. At most
    39 characters as text."""
    text = entry.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    # A zone index (``fe80::1%eth0``) means something only on the host that wrote it, and would let
    # a written address run to any length: dropped.
    address = ipaddress.ip_address(text.partition("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
