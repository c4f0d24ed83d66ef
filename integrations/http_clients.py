"""Outbound HTTP clients (Sendbird, Twilio, and the tests' and benches' own), built with one TLS
context per process: reading the CA bundle costs ~40 ms of CPU, which every ``httpx.AsyncClient()``
pays again when it is not handed a context (twice per app start before, and once per test for the
tests that talk to the emulators)."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The verifying TLS client context (httpx's defaults: the certifi bundle), made once."""
    return httpx.create_ssl_context()


def http_client(**options: Any) -> httpx.AsyncClient:
    """``httpx.AsyncClient(**options)`` with the process's TLS context."""
    return httpx.AsyncClient(verify=tls_context(), **options)
