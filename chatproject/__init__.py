"""The Django project's configuration: settings (environment-driven), URLs, the ASGI entry point
(`asgi.py`, which assembles the serving layer, the WebSocket stack and Django), the application
error type and its HTTP translation, the OpenAPI error responses, logging, `/healthz`, system
checks and the deployment management commands. The server itself lives in `serving/`."""
