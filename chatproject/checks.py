"""System checks of the project's own settings."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register(deploy=True)
def secret_key_is_set(app_configs: Any, **kwargs: Any) -> list[Error]:
    """`check --deploy` fails without a SECRET_KEY when DEBUG is off (see settings.py); the
    server itself refuses to start (asgi.py)."""
    if getattr(settings, "SECRET_KEY_MISSING", False):
        return [Error(settings.MISSING_SECRET_KEY_MESSAGE, id="chatproject.E001")]
    return []
