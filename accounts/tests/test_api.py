"""HTTP API of accounts: register, login, token refresh, me."""

from datetime import timedelta

import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts.models import User
from conftest import PASSWORD

pytestmark = pytest.mark.django_db

STRONG = "a-long-and-unusual-passphrase-7"


def register(client: APIClient, path: str = "/users/register", **body: object):
    return client.post(path, body, format="json")


@pytest.mark.parametrize("path", ["/users/register", "/users/register/"])
def test_register_creates_a_user_with_or_without_trailing_slash(api_client, path):
    response = register(api_client, path, username="alice", password=STRONG)

    assert response.status_code == 201
    created = User.objects.get(username="alice")
    assert response.json() == {"id": created.pk, "username": "alice"}
    assert created.check_password(STRONG)


def test_register_accepts_an_optional_email(api_client):
    response = register(api_client, username="bob", password=STRONG, email="bob@example.com")

    assert response.status_code == 201
    assert User.objects.get(username="bob").email == "bob@example.com"


def test_register_refuses_a_taken_username_in_any_case(api_client, make_user):
    make_user("carol")

    response = register(api_client, username="Carol", password=STRONG)

    assert response.status_code == 400
    assert "username" in response.json()


@pytest.mark.parametrize(
    "password", ["short1", "password123", "12345678901", "carol-the-user"], ids=repr
)
def test_register_applies_django_password_validators(api_client, password):
    response = register(api_client, username="carol-the-user", password=password)

    assert response.status_code == 400
    assert "password" in response.json()
    assert not User.objects.filter(username="carol-the-user").exists()


def test_each_reason_a_password_is_refused_is_an_item_of_its_own(api_client):
    response = register(api_client, username="erin-the-user", password="123")

    reasons = response.json()["password"]
    assert response.status_code == 400 and len(reasons) == 3, reasons  # Short, common, digits.
    assert "This password is too common." in reasons


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"username": "dave"},
        {"password": STRONG},
        {"username": "", "password": STRONG},
        {"username": "has space", "password": STRONG},
        {"username": "x" * 151, "password": STRONG},
        {"username": 5, "password": STRONG},
        {"username": "dave", "password": STRONG, "email": "not-an-email"},
    ],
    ids=repr,
)
def test_register_refuses_invalid_bodies_with_field_errors(api_client, body):
    response = api_client.post("/users/register", body, format="json")

    assert response.status_code == 400
    assert isinstance(response.json(), dict) and response.json()


def test_register_refuses_a_body_that_is_not_json(api_client):
    response = api_client.post("/users/register", "{not json", content_type="application/json")

    assert response.status_code == 400
    assert "detail" in response.json()


def test_register_refuses_form_encoded_bodies_with_415(api_client):
    response = api_client.post("/users/register", {"username": "x", "password": STRONG})

    assert response.status_code == 415


def test_register_is_throttled_per_client_ip(api_client, throttle_rates):
    throttle_rates["register"] = "2/min"

    codes = [register(api_client, username=f"t{i}", password=STRONG).status_code for i in range(3)]

    assert codes == [201, 201, 429]


@pytest.mark.parametrize("path", ["/users/login", "/users/login/"])
def test_login_returns_access_and_refresh_tokens(api_client, make_user, path):
    user = make_user("erin")

    response = api_client.post(path, {"username": "erin", "password": PASSWORD}, format="json")

    assert response.status_code == 200
    body = response.json()
    assert AccessToken(body["access"])["user_id"] == str(user.pk)
    assert RefreshToken(body["refresh"])["user_id"] == str(user.pk)


def test_login_answers_the_same_401_for_unknown_user_and_wrong_password(api_client, make_user):
    make_user("frank")

    wrong_password = api_client.post(
        "/users/login", {"username": "frank", "password": "nope"}, format="json"
    )
    unknown_user = api_client.post(
        "/users/login", {"username": "nobody", "password": "nope"}, format="json"
    )

    assert wrong_password.status_code == unknown_user.status_code == 401
    assert wrong_password.json() == unknown_user.json()


def test_login_refuses_an_inactive_user(api_client, make_user):
    make_user("gina", is_active=False)

    response = api_client.post(
        "/users/login", {"username": "gina", "password": PASSWORD}, format="json"
    )

    assert response.status_code == 401


def test_a_password_with_spaces_at_its_ends_logs_in_as_registered(api_client):
    password = " spaces at both ends "
    api_client.post("/users/register", {"username": "hal", "password": password}, format="json")

    as_registered = api_client.post(
        "/users/login", {"username": "hal", "password": password}, format="json"
    )
    trimmed = api_client.post(
        "/users/login", {"username": "hal", "password": password.strip()}, format="json"
    )

    assert (as_registered.status_code, trimmed.status_code) == (200, 401)


@pytest.mark.parametrize(
    "body",
    [
        {"username": "\u00a0", "password": "x"},  # White space alone: blank.
        {"username": 7, "password": "x"},
        {"username": "x", "password": 7},
        {"username": "x", "password": ""},
    ],
)
def test_login_refuses_bodies_that_are_not_credentials_with_400(api_client, body):
    response = api_client.post("/users/login", body, format="json")

    assert response.status_code == 400
    assert set(response.json()) <= {"username", "password"}


def test_login_with_missing_fields_is_a_400(api_client):
    response = api_client.post("/users/login", {"username": "x"}, format="json")

    assert response.status_code == 400
    assert "password" in response.json()


def test_login_is_throttled_per_client_ip(api_client, throttle_rates):
    throttle_rates["login"] = "2/min"

    codes = [
        api_client.post(
            "/users/login", {"username": "x", "password": "y"}, format="json"
        ).status_code
        for _ in range(3)
    ]

    assert codes == [401, 401, 429]


@pytest.mark.parametrize("path", ["/users/token/refresh", "/users/token/refresh/"])
def test_refresh_returns_a_new_access_token(api_client, user, path):
    refresh = RefreshToken.for_user(user)

    response = api_client.post(path, {"refresh": str(refresh)}, format="json")

    assert response.status_code == 200
    assert AccessToken(response.json()["access"])["user_id"] == str(user.pk)


def test_refresh_refuses_an_access_token(api_client, user):
    response = api_client.post(
        "/users/token/refresh", {"refresh": str(AccessToken.for_user(user))}, format="json"
    )

    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/users/me", "/users/me/"])
def test_me_returns_the_caller(client_for, user, path):
    response = client_for(user).get(path)

    assert response.status_code == 200
    assert response.json() == {"id": user.pk, "username": user.username}


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer garbage", "Token abc", "Bearer a.b.c"],
    ids=repr,
)
def test_me_without_a_valid_token_is_a_401(api_client, header):
    if header:
        api_client.credentials(HTTP_AUTHORIZATION=header)

    response = api_client.get("/users/me")

    assert response.status_code == 401
    assert "detail" in response.json()


def test_me_refuses_an_expired_token(api_client, user):
    token = AccessToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    assert api_client.get("/users/me").status_code == 401


def test_me_refuses_a_refresh_token(api_client, user):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user)}")

    assert api_client.get("/users/me").status_code == 401


def test_me_refuses_the_token_of_a_deactivated_user(client_for, user):
    client = client_for(user)
    user.is_active = False
    user.save()

    assert client.get("/users/me").status_code == 401
