"""What a source address is counted as (engine/sources.py): IPv4 itself, IPv6 by its /64."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.sources import counted_source


@pytest.mark.parametrize(
    ("address", "counted"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unknown", "unknown"),
    ],
)
def test_a_source_is_counted_as(address: str, counted: str) -> None:
    assert counted_source(address) == counted


@given(network=st.integers(0, 2**64 - 1), first=st.integers(0, 2**64 - 1), second=st.integers(0, 2**64 - 1))
def test_every_address_of_one_ipv6_subscriber_is_one_source(network: int, first: int, second: int) -> None:
    prefix = (0x2001_0DB8 << 96) | (network & (2**32 - 1)) << 64  # within 2001:db8::/32
    one, other = (str(ipaddress.IPv6Address(prefix | host)) for host in (first, second))
    assert counted_source(one) == counted_source(other)
    neighbour = str(ipaddress.IPv6Address(prefix ^ (1 << 64) | first))  # the next /64 along
    assert counted_source(neighbour) != counted_source(one)
