"""ASGI entry point: Django for HTTP, the chat consumer for WebSockets."""

import gc
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")

from serving.asgi_http import get_http_application  # noqa: E402

# Django must be set up before anything imports models (the routing below does). Django's
# handler, with the request in one thread hop (serving/asgi_http.py).
django_asgi_app = get_http_application()

from django.conf import settings  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

if settings.SECRET_KEY_MISSING:  # Never serve on a throwaway key.
    raise ImproperlyConfigured(settings.MISSING_SECRET_KEY_MESSAGE)

# Fewer collections of young objects than Python's default: see GC_THRESHOLDS in settings.py.
gc.set_threshold(*settings.GC_THRESHOLDS)

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from accounts.auth import JWTQueryAuthMiddleware  # noqa: E402
from chatproject import metrics  # noqa: E402
from messaging.routing import websocket_urlpatterns  # noqa: E402
from serving.origin import OriginValidator  # noqa: E402

# Prometheus metrics on a port of their own, when METRICS_PORT is set (chatproject/metrics.py).
metrics.serve()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # No AuthMiddlewareStack: a session cookie must never open a socket, only a token.
        "websocket": OriginValidator(JWTQueryAuthMiddleware(URLRouter(websocket_urlpatterns))),
    }
)
