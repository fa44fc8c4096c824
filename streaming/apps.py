from django.apps import AppConfig


class StreamingConfig(AppConfig):
    name = "streaming"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from streaming import notifications  # noqa: F401  (connects the live-notice receiver, registers tasks)
