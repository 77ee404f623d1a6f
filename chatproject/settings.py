"""Settings for the chat service, read from the environment (and `.env` when present).

Every variable read here is listed in `.env.example` with a line on what it does.
"""

import hashlib
import hmac
import secrets
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from chatproject.devkey import PUBLIC_DEVELOPMENT_KEY, development_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Values already in the environment win over `.env`, so CI and containers can override it.
# ENV_FILE names another file, or none when empty (the deployment tests read none).
ENV_FILE = env.str("ENV_FILE", default=str(BASE_DIR / ".env"))
if ENV_FILE and Path(ENV_FILE).is_file():
    environ.Env.read_env(ENV_FILE, overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

MISSING_SECRET_KEY_MESSAGE = (
    "SECRET_KEY is not set. Set it in the environment or in .env "
    "(for example: python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
    "or set DEBUG=1 for local development."
)
SECRET_KEY = env.str("SECRET_KEY", default="")
if SECRET_KEY == PUBLIC_DEVELOPMENT_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is the public development key of earlier versions: anyone can sign "
        "tokens with it. Remove it (with DEBUG=1 a key of this checkout's own is made) or set "
        "a secret one."
    )
# Without a key and with DEBUG off, commands that sign nothing (makemigrations, collectstatic)
# still run, on a throwaway random key; serving refuses to start with the message above
# (chatproject/asgi.py), and so does `manage.py check --deploy` (chatproject/checks.py).
SECRET_KEY_MISSING = not SECRET_KEY and not DEBUG
if SECRET_KEY_MISSING:
    SECRET_KEY = secrets.token_urlsafe(50)
elif not SECRET_KEY:
    # DEBUG=1 (`make run`): a random key of this checkout, kept in a file git ignores.
    SECRET_KEY = development_secret_key(
        Path(env.str("DEV_SECRET_KEY_FILE", default=str(BASE_DIR / ".dev-secret-key")))
    )

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
# Browser origins allowed to open the WebSocket. Empty: derived from ALLOWED_HOSTS. The
# CORS_ALLOWED_ORIGINS below are allowed too (serving/origin.py).
WS_ALLOWED_ORIGINS = env.list("WS_ALLOWED_ORIGINS", default=[])
# Browser apps on these origins (full origins: `https://app.example.com`) may call the HTTP API
# (django-cors-headers) and open the WebSocket. Tokens travel in headers, never in cookies, so
# no credentials mode.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "corsheaders",
    "rest_framework",
    "rest_framework_simplejwt",
    # Logout: refresh tokens put on its blacklist are refused (docs/deployment.md for upkeep).
    "rest_framework_simplejwt.token_blacklist",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "accounts",
    "messaging",
    # The chat page at / (an HTML shell, static ES modules; its CSP is set by its view).
    "webclient",
    # Its management commands (wait_for_database, migrate_with_lock) and system checks.
    "chatproject.apps.ChatProjectConfig",
]

MIDDLEWARE = [
    # Times every request by URL pattern when METRICS_PORT is set (else a plain call).
    "chatproject.metrics.HTTPMetricsMiddleware",
    # It answers preflight requests, and its headers must be on every answer.
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "chatproject.urls"
# Every API path answers with and without a trailing slash, without redirects.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = None
ASGI_APPLICATION = "chatproject.asgi.application"

# --- Database ---------------------------------------------------------------------------------
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Under ASGI every sync_to_async call may run on a different thread, so persistent
    # per-thread connections would leak; psycopg's pool hands connections back instead.
    # With CONN_HEALTH_CHECKS, Django makes the pool check each connection (an empty query)
    # before handing it out; without it, after a PostgreSQL restart every pooled connection
    # would fail one request with a 500 before being dropped.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DB_POOL_MAX_SIZE", default=10),
        "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
    }
else:
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    # SQLite (the embedded mode of `make run`) under concurrent writers: the writer threads,
    # HTTP requests and the admin each write from a connection of their own.
    # - transaction_mode IMMEDIATE: a transaction takes the write lock at BEGIN. In SQLite's
    #   default (DEFERRED) it starts as a reader and upgrades at its first write; when another
    #   connection writes meanwhile, the upgrade fails at once with "database is locked" (the
    #   busy timeout cannot help: waiting would deadlock), which became 500s and server_errors
    #   (docs/performance.md, "The embedded mode").
    # - WAL: readers never wait for the writer, nor the writer for readers; synchronous=NORMAL
    #   is the setting SQLite recommends with WAL (durable across crashes of the process, a
    #   power loss may drop the last commits: a development database).
    # - timeout: how long a connection waits for the write lock (seconds) before giving up.
    sqlite_options = DATABASES["default"].setdefault("OPTIONS", {})
    sqlite_options.setdefault("timeout", 20)
    sqlite_options.setdefault("transaction_mode", "IMMEDIATE")
    sqlite_options.setdefault("init_command", "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# --- Redis: channel layer and cache -------------------------------------------------------------
# One Redis server, or several: a comma-separated list. The channel layer spreads its channels
# over all of them (each chat's and user's group lives on one, by a hash of its name); the
# cache (throttles) and the WebSocket event budgets use the first (docs/deployment.md).
REDIS_URLS = [url.strip() for url in env.str("REDIS_URL", default="").split(",") if url.strip()]
REDIS_URL = REDIS_URLS[0] if REDIS_URLS else ""
# Names this deployment's channels in Redis; the default follows REDIS_URL's database number.
CHANNEL_LAYER_PREFIX = env.str(
    "CHANNEL_LAYER_PREFIX", default=f"chat-db{urlsplit(REDIS_URL).path.strip('/') or 0}"
)
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {
            # Redis pub/sub: one PUBLISH per group_send, no per-channel capacity that drops
            # messages under bursts; pipelined, since one-at-a-time publishing times out under
            # fan-out load; sharded over REDIS_URL's servers. docs/performance.md.
            "BACKEND": "messaging.channel_layer.ShardedRedisPubSubLayer",
            # Pub/sub channels ignore Redis's database number: without a prefix of their own,
            # two deployments (or test runs) on one Redis server would hear each other.
            "CONFIG": {"hosts": REDIS_URLS, "prefix": CHANNEL_LAYER_PREFIX},
        }
    }
    CACHES = {
        "default": {
            # Shared by every instance, so throttles count across the whole service.
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # A Redis that does not answer fails a request's throttle check in a second
            # (chatproject/throttling.py lets it through), instead of hanging it.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels.layers.InMemoryChannelLayer",
            # One channel per process carries every chat's events (messaging/fanout.py); the
            # default capacity of 100 would drop a burst's events silently.
            "CONFIG": {"capacity": 100_000},
        }
    }
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Internationalization and static files -------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "chatproject.staticfiles.StaticFilesStorage"
        )
    },
}
# Serve files straight from the apps' static folders when collectstatic has not run.
WHITENOISE_USE_FINDERS = True

# --- HTTPS behind the reverse proxy ------------------------------------------------------------
# Secure by default with DEBUG off, so `manage.py check --deploy` reports nothing. A site served
# over plain http (the compose demo on http://localhost:8080) sets SECURE_SSL_REDIRECT and the
# two *_COOKIE_SECURE to 0 in its .env, and check --deploy then rightly warns about exactly
# those. See docs/deployment.md.
# Only behind a proxy that overwrites X-Forwarded-Proto (deploy/nginx.conf does); a client that
# reaches daphne directly could otherwise claim https. Also decides whom throttles count
# (REST_FRAMEWORK's NUM_PROXIES below).
TRUST_PROXY_HEADERS = env.bool("TRUST_PROXY_HEADERS", default=False)
if TRUST_PROXY_HEADERS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Health probes (Docker's, a load balancer's) speak plain http to the instance itself.
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$"]
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
# Sent with https responses only. A browser that saw it refuses plain http to the site for that
# long: start with an hour, raise it (e.g. to 31536000) once https is known to work everywhere.
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 3600)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)

# --- REST framework, JWT, OpenAPI ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # simplejwt's, plus the token version check (revocation).
        "accounts.auth.JWTAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "chatproject.openapi.AutoSchema",  # Documents the error answers too.
    "EXCEPTION_HANDLER": "chatproject.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "register": env.str("THROTTLE_REGISTER", default="100/min"),
        "login": env.str("THROTTLE_LOGIN", default="100/min"),
        "send": env.str("THROTTLE_SEND", default="600/min"),
        # Per user. Spam chats are the abuse of a chat service: creating chats (groups and
        # direct) and changing members are throttled well above what a person does (Slack's
        # conversations.create allows about 20 a minute), as is the people search, which
        # could otherwise list every username (docs/deployment.md).
        "chat_create": env.str("THROTTLE_CHAT_CREATE", default="20/min"),
        "chat_change": env.str("THROTTLE_CHAT_CHANGE", default="60/min"),
        "user_search": env.str("THROTTLE_USER_SEARCH", default="60/min"),
        # Password changes per user: guesses of the old password with a stolen access token.
        "password": env.str("THROTTLE_LOGIN", default="100/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Whom per-IP throttles count. 0: the connection's address (REMOTE_ADDR), X-Forwarded-For
    # ignored. 1 (behind a trusted proxy): the last X-Forwarded-For entry, the address that
    # proxy saw and appended, never the leftmost ones, which the client writes itself. DRF's
    # default (None) would count the whole header as sent: a forged one per request was a
    # fresh budget per request.
    "NUM_PROXIES": 1 if TRUST_PROXY_HEADERS else 0,
}


def _derived_key(purpose: str) -> str:
    """A key of its own for one purpose, derived from SECRET_KEY when not given explicitly."""
    return hmac.new(SECRET_KEY.encode(), purpose.encode(), hashlib.sha256).hexdigest()


SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("ACCESS_TOKEN_MINUTES", default=30)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("REFRESH_TOKEN_DAYS", default=7)),
    # Tokens are not signed with SECRET_KEY itself: a key of their own, or one derived from it.
    "SIGNING_KEY": env.str("JWT_SIGNING_KEY", default="") or _derived_key("jwt-signing-key"),
    "ALGORITHM": "HS256",
    "AUTH_HEADER_TYPES": ("Bearer",),
    "UPDATE_LAST_LOGIN": False,
    # Our tokens carry the user's token version ("tv"; accounts/tokens.py, accounts/auth.py).
    "AUTH_TOKEN_CLASSES": ("accounts.tokens.AccessToken",),
    "TOKEN_OBTAIN_SERIALIZER": "accounts.serializers.LoginSerializer",
    "TOKEN_REFRESH_SERIALIZER": "accounts.serializers.RefreshSerializer",
    # RefreshSerializer issues no new refresh token: rotation stays off.
    "ROTATE_REFRESH_TOKENS": False,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Chat service API",
    "VERSION": "1.0.0",
    "DESCRIPTION": (BASE_DIR / "docs" / "api-description.md").read_text(encoding="utf-8"),
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",  # The default hook, kept.
        "chatproject.openapi.require_whole_patch_bodies",
    ],
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True},
}

# --- Chats and realtime -------------------------------------------------------------------------
# Most members a chat may have, however they are added (API, admin, code).
CHAT_MAX_MEMBERS = env.int("CHAT_MAX_MEMBERS", default=1000)
# How often each instance re-reads the token version and active flag of the users with a socket
# on it, so that a revoked session ends within this bound even if its announcement through
# Redis was lost (messaging/sessions.py).
SESSION_RECHECK_SECONDS = env.float("SESSION_RECHECK_SECONDS", default=10.0)
# Per-user token bucket for WebSocket events: a burst of WS_RATE_BURST, refilled at
# WS_RATE_PER_SECOND.
WS_RATE_BURST = env.int("WS_RATE_BURST", default=200)
WS_RATE_PER_SECOND = env.float("WS_RATE_PER_SECOND", default=20.0)
# Largest incoming WebSocket frame, in bytes; a larger one closes the socket with 1009.
WS_MAX_FRAME_BYTES = env.int("WS_MAX_FRAME_BYTES", default=64 * 1024)
# Most sockets one user may hold open on one instance.
WS_MAX_SOCKETS_PER_USER = env.int("WS_MAX_SOCKETS_PER_USER", default=20)
# Most bytes daphne may queue for a WebSocket client that has stopped reading (beyond the
# 64 KiB after which Twisted reports it behind); past it the connection is aborted, and the
# client catches up with `after` when it returns (serving/backpressure.py).
WS_MAX_OUTGOING_BUFFER_BYTES = env.int("WS_MAX_OUTGOING_BUFFER_BYTES", default=4 * 1024 * 1024)

# The garbage collector's thresholds in the serving process (chatproject/asgi.py applies them).
# Python's default, 700,10,10, collects the young objects every 700 allocations and re-scans
# what survives; a server holding thousands of sockets spent a third of its handshakes' CPU
# there. The older generations keep Python's pace: collected less often, the garbage of closed
# sockets piles up (docs/performance.md, "The second session of 1 December"). 700,10,10
# restores Python's default.
_gc_thresholds = env.str("GC_THRESHOLDS", default="20000,10,10")
try:
    GC_THRESHOLDS = tuple(int(part) for part in _gc_thresholds.split(","))
except ValueError:
    GC_THRESHOLDS = ()
if not 1 <= len(GC_THRESHOLDS) <= 3 or min(GC_THRESHOLDS) < 0:
    raise ImproperlyConfigured(
        "GC_THRESHOLDS must be one to three integers >= 0, comma-separated (Python's default: "
        f"700,10,10), not {_gc_thresholds!r}."
    )

# --- Logging ------------------------------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# JSON lines (one object per line, for log shippers) in production, text for a terminal. Both
# scrub tokens and passwords from every line (chatproject/logs.py).
LOG_FORMAT = env.str("LOG_FORMAT", default="text" if DEBUG else "json")
if LOG_FORMAT not in {"json", "text"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be json or text, not {LOG_FORMAT!r}.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"class": "chatproject.logs.JsonLinesFormatter"},
        "text": {
            "class": "chatproject.logs.ScrubbedFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": LOG_FORMAT,
        }
    },
    "root": {"handlers": ["stdout"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
    },
}
