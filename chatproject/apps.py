from django.apps import AppConfig


class ChatProjectConfig(AppConfig):
    name = "chatproject"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from chatproject import checks  # noqa: F401  (registers the system checks)
