from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from accounts.views import UserViewSet
from chatproject import health
from messaging.views import ChatViewSet
from webclient.views import index as webclient_index

# "/?": every API path answers with and without a trailing slash, without a redirect.
router = SimpleRouter()
router.trailing_slash = "/?"
router.register("users", UserViewSet, basename="user")
router.register("chats", ChatViewSet, basename="chat")

urlpatterns = [
    path("", webclient_index, name="webclient"),  # The chat page (webclient/).
    path("", include(router.urls)),
    path("admin/", admin.site.urls),
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    re_path(r"^healthz/?$", health.healthz, name="healthz"),  # Not in the API schema.
]


def json_not_found(request: HttpRequest, exception: Exception) -> JsonResponse:
    """Unknown paths answer in the API's error shape, never an HTML page."""
    return JsonResponse({"detail": "Not found."}, status=404)


def json_server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error."}, status=500)


handler404 = json_not_found
handler500 = json_server_error
