# The chat service: daphne on port 8000, behind the reverse proxy of docker-compose.yml.
# Build: docker build -t chat-service .   Walkthrough: docs/deployment.md.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=chatproject.settings \
    PORT=8000

WORKDIR /app

# Dependencies in their own layer: rebuilt only when requirements.txt changes. Every runtime
# dependency ships wheels for this platform, so no compiler is needed.
COPY requirements.txt .
RUN pip install --no-compile -r requirements.txt

COPY . .

# Static files (admin, Swagger UI) collected and compressed at build time; whitenoise serves
# them. The key below exists only for this command (settings refuse to load without one): it is
# not stored in the image's environment, and nothing it would sign outlives the build.
RUN SECRET_KEY=collectstatic-at-build-time-only-never-used-to-sign-anything-at-run-time \
    ENV_FILE= python manage.py collectstatic --noinput --verbosity 0

# The code and static files stay owned by root, read-only for the user that runs the service.
RUN useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
USER app

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=6s --start-period=60s --retries=3 \
    CMD ["python", "deploy/healthcheck.py"]
# daphne (exec'd by the entrypoint) closes WebSockets with 1001 on SIGTERM; see serving/server.py.
STOPSIGNAL SIGTERM
ENTRYPOINT ["deploy/entrypoint.sh"]
