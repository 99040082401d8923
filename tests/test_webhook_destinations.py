"""Webhooks go to the open internet, and to internal addresses only when the operator lists them."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path

import pytest

from service.lib.settings import Settings, SettingsError
from service.rules.loader import RuleSetError, load_rule_set
from service.webhooks import destinations
from service.webhooks.destinations import Refused, allowed_networks, check_url, resolve

INTERNAL = [
    "127.0.0.1",
    "127.8.9.10",
    "[::1]",
    "169.254.169.254",  # a cloud's metadata service
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "0.0.0.0",  # noqa: S104 - an address refused, not bound
    "[::ffff:127.0.0.1]",
    "[fe80::1]",
    "[fc00::1]",
    "224.0.0.1",
    "localhost",
    "api.localhost",
]


@pytest.mark.parametrize("host", INTERNAL)
def test_an_internal_address_is_refused_unless_listed(host: str) -> None:
    with pytest.raises(Refused, match="DELIGHT_WEBHOOK_ALLOW"):
        check_url(f"http://{host}:8000/v1/keys", [])
    everything = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    check_url(f"http://{host}:8000/v1/keys", everything)


@pytest.mark.parametrize("host", ["93.184.216.34", "[2606:4700:4700::1111]", "crm.example.com"])
def test_a_public_address_or_a_name_passes_the_url_check(host: str) -> None:
    check_url(f"https://{host}/hooks", [])


def test_credentials_in_a_url_are_refused_even_where_the_address_is_allowed() -> None:
    with pytest.raises(Refused, match="user name or password"):
        check_url("http://user:pass@[::1]:6379/", [ipaddress.ip_network("::1/128")])


def test_the_allow_list_takes_addresses_and_ranges() -> None:
    allow = allowed_networks({"DELIGHT_WEBHOOK_ALLOW": "10.20.0.0/16, 127.0.0.1"})
    check_url("http://10.20.3.4/hooks", allow)
    check_url("http://127.0.0.1:9000/hooks", allow)
    with pytest.raises(Refused):
        check_url("http://10.21.0.1/hooks", allow)
    with pytest.raises(ValueError, match="intranet"):
        allowed_networks({"DELIGHT_WEBHOOK_ALLOW": "intranet"})


async def test_a_name_is_judged_by_the_addresses_it_resolves_to_and_sent_to_the_one_checked() -> None:
    name = socket.gethostname()
    [address, *_] = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    assert destinations.internal(ipaddress.ip_address(address)), f"{name} resolves to {address}, not internal"
    with pytest.raises(Refused, match=f"{address} is a"):
        await resolve(f"http://{name}:8080/hooks?x=1", [])
    target, host = await resolve(f"http://{name}:8080/hooks?x=1", [ipaddress.ip_network(address)])
    assert (target, host) == (f"http://{address}:8080/hooks?x=1", name)


SETTINGS = """\
seed: hooks
webhooks:
  - {{id: crm, url: '{url}', secret_env: {secret}, events: [award.issued]}}
"""


@pytest.mark.parametrize(
    ("url", "secret", "message"),
    [
        ("http://169.254.169.254/latest/meta-data", "WEBHOOK_SECRET_CRM", "169.254.169.254 is a link-local address"),
        ("http://127.0.0.1:8000/v1/keys", "WEBHOOK_SECRET_CRM", "127.0.0.1 is a loopback address"),
        ("http://user:pass@[::1]:6379/", "WEBHOOK_SECRET_CRM", "may not hold a user name or password"),
        ("https://crm.example.com/hooks", "DELIGHT_DATABASE_URL", "WEBHOOK_SECRET_"),
    ],
)
def test_rules_check_refuses_a_webhook_to_an_internal_address_or_signed_with_another_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, secret: str, message: str
) -> None:
    monkeypatch.delenv("DELIGHT_WEBHOOK_ALLOW", raising=False)
    (tmp_path / "settings.yaml").write_text(SETTINGS.format(url=url, secret=secret))
    with pytest.raises(RuleSetError) as caught:
        load_rule_set(tmp_path)
    [error] = caught.value.errors
    assert error.line == 3
    assert message in error.message, error.message


def test_a_malformed_allow_list_stops_the_service_before_it_starts() -> None:
    with pytest.raises(SettingsError, match="DELIGHT_WEBHOOK_ALLOW"):
        Settings.from_env({"DELIGHT_WEBHOOK_ALLOW": "10.0.0.0/8,intranet"})
