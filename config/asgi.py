"""ASGI entry point: HTTP through Django, WebSockets through the origin allowlist and session auth.

Served by uvicorn in production (`--ws-max-size 1048576`, see config/devservers.py) and by daphne under
`manage.py runserver` (daphne >= 4.2.2 limits frames to 1 MiB by default).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from config.realtime.middleware import OriginAllowlistMiddleware, SessionUserMiddleware  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginAllowlistMiddleware(SessionUserMiddleware(URLRouter(websocket_urlpatterns))),
    }
)
