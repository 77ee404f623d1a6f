"""Settings for the test suite: the real settings, with fast password hashing and a fixed key.

DATABASE_URL and REDIS_URL are honoured as in production, so `make test` runs on PostgreSQL
and Redis when they are set.
"""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-000000000")

from chatproject.settings import *  # noqa: E402,F403

# Hashing passwords the production way costs ~0.3 s a user; tests make hundreds.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Throttle state lives in this process only, cleared between tests (see conftest.py).
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
# No collectstatic before tests: serve from the apps' folders, without a manifest.
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# The test client speaks plain http; the production default (redirect to https) is checked by
# chatproject/tests/test_deploy.py against the real settings.
SECURE_SSL_REDIRECT = False
# Concurrent test runs on one Redis server must not hear each other's chat ids.
if REDIS_URL:  # noqa: F405
    CHANNEL_LAYERS["default"]["CONFIG"]["prefix"] += f"-test{os.getpid()}"  # noqa: F405
# SQLite: a file, not the in-memory database Django would use. Its shared cache locks whole
# tables ("database table is locked", at once, no waiting) when the writer threads and the
# sync thread of the sockets use the database at the same time, which production (a file with
# a busy timeout) never does.
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": os.path.join(tempfile.gettempdir(), f"chat-test-{os.getpid()}.sqlite3")
    }
