"""Per-IP throttles and X-Forwarded-For: believed only behind a trusted proxy, and then only
the address that proxy appended (the last one), never what the client wrote before it."""

from __future__ import annotations

import pytest
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db

BAD_LOGIN = {"username": "nobody", "password": "wrong"}


def bad_logins(client: APIClient, forwarded_for: list[str | None]) -> list[int]:
    codes = []
    for header in forwarded_for:
        extra = {} if header is None else {"HTTP_X_FORWARDED_FOR": header}
        codes.append(client.post("/users/login", BAD_LOGIN, format="json", **extra).status_code)
    return codes


@pytest.fixture
def login_5_per_minute(throttle_rates) -> None:
    throttle_rates["login"] = "5/min"


def test_without_trusted_proxies_the_header_is_ignored(settings):
    """The measured attack: 8 bad logins from one client, each with another forged header."""
    assert settings.REST_FRAMEWORK["NUM_PROXIES"] == 0  # TRUST_PROXY_HEADERS off by default.
    assert api_settings.NUM_PROXIES == 0


def test_forged_forwarded_for_headers_do_not_dodge_the_login_throttle(
    api_client, login_5_per_minute
):
    codes = bad_logins(api_client, [f"203.0.113.{n}" for n in range(8)])

    assert codes == [401] * 5 + [429] * 3


def test_behind_a_trusted_proxy_the_address_it_appended_is_counted(
    api_client, login_5_per_minute, monkeypatch
):
    monkeypatch.setattr(api_settings, "NUM_PROXIES", 1)  # TRUST_PROXY_HEADERS=1.
    # One real client (198.51.100.7, appended by the proxy) forging a new leftmost each time.
    codes = bad_logins(api_client, [f"203.0.113.{n}, 198.51.100.7" for n in range(8)])
    # Another real client behind the same proxy has a budget of its own.
    other = bad_logins(api_client, ["203.0.113.1, 198.51.100.8"])

    assert codes == [401] * 5 + [429] * 3
    assert other == [401]


def test_behind_a_trusted_proxy_a_request_without_the_header_counts_its_connection(
    api_client, login_5_per_minute, monkeypatch
):
    monkeypatch.setattr(api_settings, "NUM_PROXIES", 1)

    codes = bad_logins(api_client, [None] * 6)

    assert codes == [401] * 5 + [429]
