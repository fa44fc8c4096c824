from analytics import admin_health  # noqa: F401  (room health and alerts)
