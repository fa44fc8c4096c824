from django.apps import AppConfig


class StreamingConfig(AppConfig):
    name = "streaming"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from streaming import notifications, screening  # noqa: F401  (notifications connects its receiver)

        screening.register()  # stream chat, as the moderation queue sees it
