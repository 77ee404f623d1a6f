"""Sessions over HTTP: token versions, password change, deactivation, logout, expiry."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken as SimpleJWTAccessToken
from rest_framework_simplejwt.tokens import RefreshToken as SimpleJWTRefreshToken

from accounts.models import User
from accounts.tokens import TOKEN_VERSION_CLAIM, AccessToken, RefreshToken
from conftest import PASSWORD

pytestmark = pytest.mark.django_db

NEW_PASSWORD = "another-long-unusual-passphrase-8"


def login(client: APIClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    response = client.post(
        "/users/login", {"username": username, "password": password}, format="json"
    )
    assert response.status_code == 200, response.json()
    return response.json()


def me_status(access: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.get("/users/me").status_code


def refresh_status(refresh: str) -> int:
    return APIClient().post("/users/token/refresh", {"refresh": refresh}, format="json").status_code


def change_password(
    access: str, old: str = PASSWORD, new: str = NEW_PASSWORD, path: str = "/users/me/password"
):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.post(path, {"old_password": old, "new_password": new}, format="json")


# --- Token versions ---------------------------------------------------------------------------


def test_login_tokens_and_refreshed_access_tokens_carry_the_users_token_version(api_client, user):
    User.objects.filter(pk=user.pk).update(token_version=3)

    tokens = login(api_client, user.username)
    refreshed = api_client.post(
        "/users/token/refresh", {"refresh": tokens["refresh"]}, format="json"
    ).json()["access"]

    assert AccessToken(tokens["access"])[TOKEN_VERSION_CLAIM] == 3
    assert RefreshToken(tokens["refresh"])[TOKEN_VERSION_CLAIM] == 3
    assert AccessToken(refreshed)[TOKEN_VERSION_CLAIM] == 3
    assert me_status(refreshed) == 200


def test_for_user_includes_the_token_version(user):
    User.objects.filter(pk=user.pk).update(token_version=2)
    user.refresh_from_db()

    assert AccessToken.for_user(user)[TOKEN_VERSION_CLAIM] == 2
    assert RefreshToken.for_user(user)[TOKEN_VERSION_CLAIM] == 2
    assert RefreshToken.for_user(user).access_token[TOKEN_VERSION_CLAIM] == 2


def test_a_token_without_a_version_counts_as_version_0(user):
    """simplejwt's own for_user (tests, tokens issued before versions existed): valid while the
    user never revoked a session, refused from the first revocation on."""
    plain = str(SimpleJWTAccessToken.for_user(user))
    assert TOKEN_VERSION_CLAIM not in SimpleJWTAccessToken(plain)
    assert me_status(plain) == 200

    user.revoke_sessions()

    assert me_status(plain) == 401


@pytest.mark.parametrize("claimed", [1, -1, "0", None, True, 0.0, [0]], ids=repr)
def test_a_token_with_another_or_a_malformed_version_is_refused(user, claimed):
    token = AccessToken.for_user(user)
    token[TOKEN_VERSION_CLAIM] = claimed  # Signed with the real key: only a bug could do this.

    assert me_status(str(token)) == 401


# --- Password change ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/users/me/password", "/users/me/password/"])
def test_password_change_refuses_every_earlier_token_and_accepts_a_new_login_at_once(
    api_client, user, path, published, django_capture_on_commit_callbacks
):
    first = login(api_client, user.username)
    second = login(api_client, user.username)  # Another device, probably the same second.
    plain = str(SimpleJWTAccessToken.for_user(user))

    with django_capture_on_commit_callbacks(execute=True):
        response = change_password(first["access"], path=path)

    assert response.status_code == 204, response.content
    for tokens in (first, second):
        assert me_status(tokens["access"]) == 401
        assert refresh_status(tokens["refresh"]) == 401
    assert me_status(plain) == 401
    # A login right after (within the same second as the change, most of the time) works.
    fresh = login(api_client, user.username, NEW_PASSWORD)
    assert me_status(fresh["access"]) == 200
    assert refresh_status(fresh["refresh"]) == 200
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert user.token_version == 1
    assert published == [(f"user.{user.pk}", {"type": "user.revoked", "token_version": 1})]


def test_password_change_with_a_wrong_old_password_is_a_400_and_changes_nothing(
    user, published, django_capture_on_commit_callbacks
):
    access = str(AccessToken.for_user(user))

    with django_capture_on_commit_callbacks(execute=True):
        response = change_password(access, old="not-the-password")

    assert response.status_code == 400
    assert list(response.json()) == ["old_password"]
    assert me_status(access) == 200
    user.refresh_from_db()
    assert user.check_password(PASSWORD) and user.token_version == 0
    assert published == []


@pytest.mark.parametrize(
    "weak", ["short1", "password123", "12345678901", "user-name-alike"], ids=repr
)
def test_password_change_applies_django_password_validators(make_user, weak):
    user = make_user("user-name-alike")
    access = str(AccessToken.for_user(user))

    response = change_password(access, new=weak)

    assert response.status_code == 400
    assert list(response.json()) == ["new_password"]
    assert me_status(access) == 200


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"old_password": PASSWORD},
        {"new_password": NEW_PASSWORD},
        {"old_password": 1, "new_password": NEW_PASSWORD},
        {"old_password": PASSWORD, "new_password": ["x"]},
        {"old_password": PASSWORD, "new_password": "x" * 129},
        {"old_password": PASSWORD, "new_password": "nul\x00in-the-middle-of-it"},
    ],
    ids=repr,
)
def test_password_change_refuses_invalid_bodies_with_field_errors(auth_client, body):
    response = auth_client.post("/users/me/password", body, format="json")

    assert response.status_code == 400
    assert isinstance(response.json(), dict) and response.json()


def test_password_change_needs_an_access_token(api_client):
    response = api_client.post(
        "/users/me/password",
        {"old_password": PASSWORD, "new_password": NEW_PASSWORD},
        format="json",
    )

    assert response.status_code == 401


def test_password_change_is_throttled_per_user(client_for, user, other_user, throttle_rates):
    throttle_rates["password"] = "2/min"
    client = client_for(user)

    codes = [
        client.post(
            "/users/me/password",
            {"old_password": "wrong", "new_password": NEW_PASSWORD},
            format="json",
        ).status_code
        for _ in range(3)
    ]
    other = change_password(str(AccessToken.for_user(other_user)), old="wrong")

    assert codes == [400, 400, 429]
    assert other.status_code == 400  # Another user's budget is their own.


def test_password_change_by_staff_in_the_admin_ends_the_users_sessions(
    make_user, user, published, django_capture_on_commit_callbacks
):
    from django.test import Client

    staff = Client()
    staff.force_login(make_user(is_staff=True, is_superuser=True))
    access = str(AccessToken.for_user(user))

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(
            f"/admin/accounts/user/{user.pk}/password/",
            {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
        )

    assert response.status_code == 302, response.content.decode()[:2000]
    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)
    assert me_status(access) == 401
    assert published == [(f"user.{user.pk}", {"type": "user.revoked", "token_version": 1})]


# --- Deactivation --------------------------------------------------------------------------------


@pytest.mark.parametrize("update_fields", [None, ["is_active"]], ids=["save()", "update_fields"])
def test_deactivating_a_user_in_code_revokes_their_tokens_and_announces_it(
    user, update_fields, published, django_capture_on_commit_callbacks
):
    access = str(AccessToken.for_user(user))
    refresh = str(RefreshToken.for_user(user))

    with django_capture_on_commit_callbacks(execute=True):
        user.is_active = False
        user.save(update_fields=update_fields)

    user.refresh_from_db()
    assert user.token_version == 1
    assert published == [(f"user.{user.pk}", {"type": "user.revoked", "token_version": 1})]
    # Reactivated: the old tokens stay refused (the version moved on); a new login works.
    user.is_active = True
    user.save()
    assert me_status(access) == 401
    assert refresh_status(refresh) == 401
    assert me_status(login(APIClient(), user.username)["access"]) == 200


def test_deactivating_in_the_admin_revokes_the_users_tokens(
    make_user, user, published, django_capture_on_commit_callbacks
):
    from django.test import Client

    staff = Client()
    staff.force_login(make_user(is_staff=True, is_superuser=True))
    page = staff.get(f"/admin/accounts/user/{user.pk}/change/")
    assert page.status_code == 200
    form = {
        "username": user.username,
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "is_active": "",  # Unticked.
    }

    with django_capture_on_commit_callbacks(execute=True):
        response = staff.post(f"/admin/accounts/user/{user.pk}/change/", form)

    assert response.status_code == 302, response.content.decode()[:3000]
    user.refresh_from_db()
    assert not user.is_active and user.token_version == 1
    assert published == [(f"user.{user.pk}", {"type": "user.revoked", "token_version": 1})]


def test_saving_an_inactive_user_again_revokes_nothing_more(
    make_user, published, django_capture_on_commit_callbacks
):
    user = make_user(is_active=False)  # Created inactive: nothing to revoke.

    with django_capture_on_commit_callbacks(execute=True):
        user.first_name = "Still inactive"
        user.save()

    user.refresh_from_db()
    assert user.token_version == 0
    assert published == []


def test_a_queryset_update_bypasses_the_revocation_but_http_still_refuses(user, published):
    """Documented: `update(is_active=False)` does not bump the version or tell the sockets;
    `is_active` is checked on every request all the same."""
    access = str(AccessToken.for_user(user))

    User.objects.filter(pk=user.pk).update(is_active=False)

    user.refresh_from_db()
    assert user.token_version == 0 and published == []
    assert me_status(access) == 401


def test_a_stale_user_instance_never_writes_an_older_token_version_back(user):
    stale = User.objects.get(pk=user.pk)
    access = str(AccessToken.for_user(user))
    user.revoke_sessions()

    stale.first_name = "Saved from an old copy"
    stale.save()

    assert User.objects.get(pk=user.pk).token_version == 1
    assert me_status(access) == 401


def test_the_revocation_is_announced_only_once_committed(
    user, published, django_capture_on_commit_callbacks
):
    from django.db import transaction

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError), transaction.atomic():
            user.is_active = False
            user.save()
            raise RuntimeError("rolled back")

    assert callbacks == [] and published == []
    user.refresh_from_db()
    assert user.is_active and user.token_version == 0


# --- Logout ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/users/logout", "/users/logout/"])
def test_logout_ends_the_refresh_token_and_only_it(api_client, user, path):
    phone = login(api_client, user.username)
    laptop = login(api_client, user.username)

    response = APIClient().post(path, {"refresh": phone["refresh"]}, format="json")

    assert response.status_code == 204
    assert response.content == b""
    assert refresh_status(phone["refresh"]) == 401
    assert refresh_status(laptop["refresh"]) == 200
    # The access token in hand lives until it expires (documented).
    assert me_status(phone["access"]) == 200


def test_logout_twice_is_204_both_times(api_client, user):
    refresh = login(api_client, user.username)["refresh"]

    answers = [
        APIClient().post("/users/logout", {"refresh": refresh}, format="json").status_code
        for _ in range(2)
    ]

    assert answers == [204, 204]
    assert refresh_status(refresh) == 401


def test_logout_needs_no_access_token_and_ignores_a_bad_one(api_client, user):
    refresh = login(api_client, user.username)["refresh"]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer garbage")

    assert client.post("/users/logout", {"refresh": refresh}, format="json").status_code == 204


def test_logout_of_a_token_issued_before_a_password_change_is_still_204(api_client, user):
    """Possession of a refresh token is what logout asks; a revoked one is refused by refresh
    anyway, and ending it again does no harm."""
    refresh = login(api_client, user.username)["refresh"]
    user.revoke_sessions()

    assert APIClient().post("/users/logout", {"refresh": refresh}, format="json").status_code == 204


def _expired_refresh(user: User) -> str:
    token = RefreshToken.for_user(user)
    token.set_exp(lifetime=-timedelta(seconds=1))
    return str(token)


@pytest.mark.parametrize(
    "make_token",
    [
        lambda user: str(AccessToken.for_user(user)),
        lambda user: "garbage",
        lambda user: "a.b.c",
        _expired_refresh,
        lambda user: str(RefreshToken.for_user(user))[:-3] + "AAA",
    ],
    ids=["access token", "garbage", "three dots", "expired refresh", "bad signature"],
)
def test_logout_with_anything_but_a_valid_refresh_token_is_a_401(user, make_token):
    response = APIClient().post("/users/logout", {"refresh": make_token(user)}, format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "token_not_valid"
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


@pytest.mark.parametrize(
    "body", [{}, {"refresh": ""}, {"refresh": 5}, {"refresh": None}, {"token": "x"}], ids=repr
)
def test_logout_with_a_missing_or_malformed_field_is_a_400(body):
    response = APIClient().post("/users/logout", body, format="json")

    assert response.status_code == 400
    assert "refresh" in response.json()


def test_logout_refuses_a_body_that_is_not_json():
    response = APIClient().post("/users/logout", "{", content_type="application/json")

    assert response.status_code == 400


# --- Refresh ------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [{}, {"refresh": 5}, {"refresh": ""}], ids=repr)
def test_refresh_with_a_missing_or_malformed_field_is_a_400(body):
    response = APIClient().post("/users/token/refresh", body, format="json")

    assert response.status_code == 400
    assert "refresh" in response.json()


def test_refresh_answers_only_an_access_token(api_client, user):
    response = api_client.post(
        "/users/token/refresh",
        {"refresh": str(SimpleJWTRefreshToken.for_user(user))},
        format="json",
    )

    assert response.status_code == 200
    assert list(response.json()) == ["access"]


# --- Expiry --------------------------------------------------------------------------------------


def test_an_access_token_with_a_short_lifetime_stops_working_when_it_expires(
    api_client, user, monkeypatch
):
    """A two-second lifetime instead of a one-minute one (`exp` has whole seconds, so the
    token lasts one to two seconds)."""
    monkeypatch.setattr(AccessToken, "lifetime", timedelta(seconds=2))
    access = login(api_client, user.username)["access"]
    expires_at = jwt.decode(access, options={"verify_signature": False})["exp"]
    assert me_status(access) == 200

    time.sleep(max(0.0, expires_at - time.time()) + 0.05)

    assert me_status(access) == 401


def test_deleting_users_tells_their_sockets_to_close(
    make_user, published, django_capture_on_commit_callbacks
):
    one, two = make_user(), make_user()
    one.revoke_sessions()
    published.clear()

    with django_capture_on_commit_callbacks(execute=True):
        User.objects.filter(pk__in=[one.pk, two.pk]).delete()

    assert sorted(published, key=lambda sent: sent[0]) == sorted(
        [
            (f"user.{one.pk}", {"type": "user.revoked", "token_version": 2}),
            (f"user.{two.pk}", {"type": "user.revoked", "token_version": 1}),
        ],
        key=lambda sent: sent[0],
    )
