from django.apps import AppConfig


class ComplianceConfig(AppConfig):
    name = "compliance"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from compliance import audit
        from config import api_schema  # noqa: F401  (registers the OpenAPI auth extension)

        audit.install_bulk_write_policy()  # FERPA: bulk writes on audited models logged or refused
