"""The chat page at `/`: one HTML shell; everything else is static ES modules and the API."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe


def content_security_policy(request: HttpRequest) -> str:
    """Scripts, styles and images only from this origin, no inline script, no eval; the
    page talks to its own origin only (HTTP and the WebSocket of the same host)."""
    host = request.get_host()  # Validated against ALLOWED_HOSTS.
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            # 'self' covers ws:/wss: of the same host in CSP 3 browsers; older ones need them.
            f"connect-src 'self' ws://{host} wss://{host}",
            "manifest-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


@require_safe
def index(request: HttpRequest) -> HttpResponse:
    response = render(request, "webclient/index.html")
    response["Content-Security-Policy"] = content_security_policy(request)
    # The shell names the hashed static files of the running version: always revalidate it.
    response["Cache-Control"] = "no-cache"
    response["Referrer-Policy"] = "no-referrer"
    return response
