#!/bin/sh
# Container entrypoint (also runs outside Docker: the deployment tests start it directly).
#   1. wait for the database (compose starts PostgreSQL and the web instances together);
#   2. migrate, one instance at a time (a PostgreSQL advisory lock; see migrate_with_lock.py);
#   3. exec daphne (our entry point: 1001 close on SIGTERM, access log without query secrets),
#      or, given arguments, exec those instead: `entrypoint.sh python manage.py createsuperuser`.
# `exec` makes daphne this process, so `docker stop` (SIGTERM) reaches it directly.
# Variables (all optional; .env.example): PORT, BIND_HOST, DB_WAIT_SECONDS, RUN_MIGRATIONS,
# MIGRATION_LOCK_SECONDS, TRUST_PROXY_HEADERS, ACCESS_LOG, SHUTDOWN_GRACE_SECONDS.
set -eu
cd "$(dirname "$0")/.."

# The same spellings of "true" as django-environ's env.bool, which settings.py uses.
is_true() {
    case "$1" in
        1 | [Tt]rue | TRUE | [Yy]es | YES | [Yy] | [Oo]n | ON) return 0 ;;
        *) return 1 ;;
    esac
}

python manage.py wait_for_database --timeout "${DB_WAIT_SECONDS:-60}"
if is_true "${RUN_MIGRATIONS:-1}"; then
    python manage.py migrate_with_lock --lock-timeout "${MIGRATION_LOCK_SECONDS:-300}"
fi

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

set -- --bind "${BIND_HOST:-0.0.0.0}" --port "${PORT:-8000}"
if is_true "${TRUST_PROXY_HEADERS:-0}"; then
    # Client address from X-Forwarded-For (per-IP login throttles need the real client).
    set -- "$@" --proxy-headers
fi
if ! is_true "${ACCESS_LOG:-1}"; then
    set -- "$@" --verbosity 0
fi
exec python -m serving.server "$@" chatproject.asgi:application
