"""ASGI entry point: HTTP through Django, WebSockets through the origin allowlist and session auth.

Served by uvicorn in production (`--ws-max-size 1048576`, see config/devservers.py) and by daphne under
`manage.py runserver` (daphne >= 4.2.2 limits frames to 1 MiB by default).
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup(set_prefix=False)

from config.http import ThreadedASGIHandler  # noqa: E402

# Each HTTP request to a sync view is served in one thread of the HTTP pool (config/http.py).
django_asgi_app = ThreadedASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from config.realtime.middleware import OriginAllowlistMiddleware, SessionUserMiddleware  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": OriginAllowlistMiddleware(SessionUserMiddleware(URLRouter(websocket_urlpatterns))),
    }
)

from config.gctuning import tune_server_process  # noqa: E402

tune_server_process()  # start-up objects frozen, larger GC thresholds (config/gctuning.py)

from moderation.pipeline import warm  # noqa: E402

warm()  # the moderation classifier loads in the background; until then chat is screened by patterns only
