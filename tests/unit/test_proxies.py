"""Which address a request comes from, behind trusted proxies (handlers/proxies.py)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.proxies import Network, resolve
from handlers.settings import PROJECT_ROOT, SettingsError, load_settings

TRUSTED: list[Network] = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]


def _outside(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return False  # read as the IPv4 address it maps (test_addresses_as_proxies_write_them)
    return not any(address in network for network in TRUSTED)


#: Client addresses: any the trusted networks do not hold.
untrusted = st.ip_addresses().filter(_outside)
proxies = st.ip_addresses(network="10.0.0.0/8") | st.ip_addresses(network="fd00::/8")
#: Whatever a client may put in the header itself: text without the list's commas.
made_up = st.text(st.characters(exclude_characters=",", codec="latin-1"), max_size=40)


@given(
    client=untrusted, chain=st.lists(proxies, min_size=1, max_size=4), written=st.lists(made_up, max_size=3)
)
def test_the_client_is_the_address_the_first_trusted_proxy_saw(
    client: ipaddress.IPv4Address | ipaddress.IPv6Address,
    chain: list[ipaddress.IPv4Address],
    written: list[str],
) -> None:
    """The client writes what it likes; each proxy appends the address it saw; the last one
    connects. Whatever was written, the answer is the client's real address."""
    seen = [client, *chain[:-1]]  # what each proxy saw: the client, then the proxy before it
    header = ", ".join([*written, *map(str, seen)])

    assert resolve(str(chain[-1]), [header], TRUSTED) == str(client)


@given(peer=untrusted, header=made_up)
def test_a_peer_that_is_no_trusted_proxy_is_the_client(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, header: str
) -> None:
    assert resolve(str(peer), [header], TRUSTED) == str(peer)


@given(peer=proxies | untrusted, header=made_up)
def test_with_no_trusted_proxy_the_header_is_never_read(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, header: str
) -> None:
    assert resolve(str(peer), [header], []) == str(peer)


@pytest.mark.parametrize(
    ("header", "client"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("192.0.2.1:51234", "192.0.2.1"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        (" 198.51.100.7 ,192.0.2.1 ", "192.0.2.1"),
        ("192.0.2.1, 10.1.1.1", "192.0.2.1"),  # a second proxy of ours in between
        ("10.2.2.2, 10.1.1.1", "10.2.2.2"),  # only proxies: the leftmost
        ("fe80::1%eth0", "fe80::1"),  # a zone index means nothing here
        ("fe80::2%" + "x" * 200 + ", 10.1.1.1", "fe80::2"),
    ],
)
def test_addresses_as_proxies_write_them(header: str, client: str) -> None:
    assert resolve("10.0.0.1", [header], TRUSTED) == client


def test_several_header_fields_are_one_list() -> None:
    assert resolve("10.0.0.1", ["198.51.100.7", "192.0.2.1, 10.1.1.1"], TRUSTED) == "192.0.2.1"


def test_a_trusted_peer_without_the_header_is_the_client() -> None:
    assert resolve("10.0.0.1", [], TRUSTED) == "10.0.0.1"


@pytest.mark.parametrize("header", ["Ada Lovelace", "", "192.0.2.1, ", "[2001:db8::1", "300.1.1.1"])
def test_no_address_where_a_trusted_proxy_wrote_one_is_an_error(header: str) -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        resolve("10.0.0.1", [header], TRUSTED)


def test_a_peer_that_is_no_ip_address_is_itself() -> None:
    assert resolve("", ["192.0.2.1"], TRUSTED) == ""
    assert resolve(None, ["192.0.2.1"], TRUSTED) is None


# --- the setting ------------------------------------------------------------------------------------


def test_the_shipped_config_trusts_no_proxy() -> None:
    assert load_settings(PROJECT_ROOT / "config.toml", env={}).service.trusted_proxies == ()


def test_the_environment_names_proxies_separated_by_commas() -> None:
    settings = load_settings(env={"CAREMSG_SERVICE_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7,fd00::/8"})
    assert settings.service.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("fd00::/8"),
    )


@pytest.mark.parametrize("proxies", ["10.0.0.1/8", "proxy.internal", "10.0.0.0/33"])
def test_a_proxy_that_is_no_address_or_network_is_refused_naming_the_setting(proxies: str) -> None:
    with pytest.raises(SettingsError, match=r"service\.trusted_proxies"):
        load_settings(env={"CAREMSG_SERVICE_TRUSTED_PROXIES": proxies})
