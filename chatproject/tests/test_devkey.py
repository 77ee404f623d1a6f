"""DEBUG=1 without SECRET_KEY: a random key per checkout, kept; the old public key nowhere."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt

from chatproject.devkey import PUBLIC_DEVELOPMENT_KEY, development_secret_key

PROJECT_DIR = Path(__file__).resolve().parents[2]
SETTINGS_PROBE = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.SECRET_KEY); print(settings.SIMPLE_JWT['SIGNING_KEY'])"
)


def development_settings(key_file: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The real settings in a new process, as `make run` loads them (DEBUG=1, no SECRET_KEY)."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name not in {"SECRET_KEY", "JWT_SIGNING_KEY", "DATABASE_URL", "REDIS_URL"}
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="chatproject.settings",
        DEBUG="1",
        ENV_FILE="",
        DEV_SECRET_KEY_FILE=str(key_file),
    )
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE],
        cwd=PROJECT_DIR,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_key_is_made_once_kept_private_and_read_back(tmp_path):
    path = tmp_path / "key"

    first = development_secret_key(path)
    again = development_secret_key(path)

    assert first == again and len(first) >= 50
    assert path.read_text().strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(tmp_path.iterdir()) == [path]  # No draft left behind.


def test_two_checkouts_get_two_keys(tmp_path):
    assert development_secret_key(tmp_path / "one") != development_secret_key(tmp_path / "two")


def test_instances_starting_at_once_share_the_first_key_written(tmp_path):
    path = tmp_path / "key"

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: development_secret_key(path), range(32)))

    assert keys == {path.read_text().strip()}


def test_an_empty_key_file_is_replaced(tmp_path):
    path = tmp_path / "key"
    path.write_text("")

    key = development_secret_key(path)

    assert key and path.read_text().strip() == key


def test_a_checkout_that_cannot_be_written_gets_a_key_of_its_process(tmp_path):
    missing_dir = tmp_path / "no" / "such" / "dir" / "key"

    assert development_secret_key(missing_dir) != development_secret_key(missing_dir)


def test_debug_without_secret_key_uses_the_checkouts_key_never_the_public_one(tmp_path):
    key_file = tmp_path / "dev-key"

    first = development_settings(key_file)
    second = development_settings(key_file)

    assert first.returncode == 0, first.stderr
    secret_key, signing_key = first.stdout.split()
    assert secret_key == key_file.read_text().strip() != PUBLIC_DEVELOPMENT_KEY
    assert second.stdout == first.stdout  # Kept across restarts.
    assert signing_key != secret_key  # JWTs are signed with a key derived from it.


def test_the_public_development_key_is_refused_in_every_mode(tmp_path):
    for debug in ("1", "0"):
        result = development_settings(
            tmp_path / "unused", DEBUG=debug, SECRET_KEY=PUBLIC_DEVELOPMENT_KEY
        )
        assert result.returncode != 0
        assert "public development key" in result.stderr
    assert not (tmp_path / "unused").exists()


def test_a_token_signed_with_the_public_key_opens_nothing(api_client, user, db):
    from rest_framework_simplejwt.tokens import AccessToken

    payload = dict(AccessToken.for_user(user).payload)
    forged = jwt.encode(payload, PUBLIC_DEVELOPMENT_KEY, algorithm="HS256")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")

    assert api_client.get("/users/me").status_code == 401


def test_git_and_docker_ignore_the_key_file():
    assert ".dev-secret-key" in (PROJECT_DIR / ".gitignore").read_text().split()
    assert any(
        line.startswith(".dev-secret-key")
        for line in (PROJECT_DIR / ".dockerignore").read_text().split()
    )
