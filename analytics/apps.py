from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "analytics"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from analytics import receivers, tasks  # noqa: F401  (connects signal receivers, registers tasks)
