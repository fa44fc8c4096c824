from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "config.realtime"
    label = "realtime"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from config import checks  # noqa: F401  (registers the deploy checks)
