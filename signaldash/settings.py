"""Signal Dash settings. Every knob comes from the environment (see docs/architecture.md).

Production mode (`SIGNALDASH_PRODUCTION=1`) requires SECRET_KEY and turns on every
`manage.py check --deploy` protection; the default is a local, zero-config demo on SQLite.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from signaldash.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent

PRODUCTION = env_bool("SIGNALDASH_PRODUCTION", False)
DEBUG = env_bool("DEBUG", False)

_secret = env_str("SECRET_KEY")
if not _secret:
    if PRODUCTION:
        raise ImproperlyConfigured("SECRET_KEY must be set when SIGNALDASH_PRODUCTION=1")
    # Development-only key: never used in production (see the check above).
    _secret = "django-insecure-signaldash-local-development-only-key-not-for-production-use"
SECRET_KEY = _secret

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_fsm",
    "django_tasks",
    "django_tasks_db",
    "experiments",
    "tracking",
    "readouts",
    "signaldash.ratelimit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "signaldash.security_headers.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # 503 + Retry-After when the database is unavailable; 411/415 for unreadable bodies (before any read).
    "signaldash.middleware.DatabaseUnavailableMiddleware",
    "signaldash.middleware.RequestBodyGuardMiddleware",
    # Cookie-less requests to the service API (API keys) skip the browser middleware below (sessions, CSRF,
    # messages, login redirect), with the same answers and headers (signaldash/middleware.py).
    "signaldash.middleware.ServiceAPIMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
]

ROOT_URLCONF = "signaldash.urls"
WSGI_APPLICATION = "signaldash.wsgi.application"
ASGI_APPLICATION = "signaldash.asgi.application"

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
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# DATABASE_URL (postgres://user:pass@host:port/name or sqlite:///path); default: SQLite file.
DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}"
_db = dj_database_url.parse(DATABASE_URL)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent writers on the embedded default: WAL, IMMEDIATE transactions, busy timeout.
    _db["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": env_int("SQLITE_BUSY_TIMEOUT_S", 20),
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
# PostgreSQL fails fast instead of hanging when the server is down or frozen (docs/deployment.md):
# a connect timeout, a per-statement timeout (0 = none; raise it for long migrations), and TCP
# keepalives / user timeout so a silent peer is detected. Failures become 503s (signaldash/middleware.py).
DB_CONNECT_TIMEOUT_S = env_int("SIGNALDASH_DB_CONNECT_TIMEOUT_S", 3)
DB_STATEMENT_TIMEOUT_S = env_float("SIGNALDASH_DB_STATEMENT_TIMEOUT_S", 30.0)
# Connections are reused between requests (a new PostgreSQL connection costs more than a tracked event) and
# checked once per request before use; the check gives up after SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S, so a
# frozen server still means 503s within the connect timeout (signaldash/db/postgresql/base.py). In a request on
# a connection whose server answered less than SIGNALDASH_DB_HEALTH_CHECK_SKIP_S ago (0: always check) the check
# (a round trip) is skipped, and the request's first statement must then be answered within
# SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S or it ends in a 503 (a cut statement may still commit: the retry is
# a duplicate, docs/deployment.md). Keep that bound above the slowest legitimate first statement of a request;
# 0 for either turns the skip off.
DB_CONN_MAX_AGE = env_int("DB_CONN_MAX_AGE", 60)
SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S = env_float("SIGNALDASH_DB_HEALTH_CHECK_TIMEOUT_S", 1.0)
SIGNALDASH_DB_HEALTH_CHECK_SKIP_S = env_float("SIGNALDASH_DB_HEALTH_CHECK_SKIP_S", 1.0)
SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S = env_float("SIGNALDASH_DB_UNCHECKED_STATEMENT_TIMEOUT_S", 5.0)
POSTGRESQL_ENGINE = "signaldash.db.postgresql"
if _db["ENGINE"] == "django.db.backends.postgresql":
    _db.update(ENGINE=POSTGRESQL_ENGINE, CONN_MAX_AGE=DB_CONN_MAX_AGE, CONN_HEALTH_CHECKS=True)
    _pg_options = _db.setdefault("OPTIONS", {})
    _pg_options.update(
        connect_timeout=DB_CONNECT_TIMEOUT_S,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=5,
        keepalives_count=3,
        tcp_user_timeout=30_000,
    )
    _pg_options["options"] = " ".join(
        filter(None, [_pg_options.get("options"), f"-c statement_timeout={int(DB_STATEMENT_TIMEOUT_S * 1000)}"])
    )
DATABASES = {"default": _db}
# DATABASE_REPLICA_URL: a streaming replica of the same database; readout sums are read there
# (signaldash/routers.py), with the primary's timeouts. Tests mirror it onto the default database.
DATABASE_REPLICA_URL = env_str("DATABASE_REPLICA_URL")
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = {
        **dj_database_url.parse(DATABASE_REPLICA_URL),
        **{k: _db[k] for k in ("ENGINE", "CONN_MAX_AGE", "CONN_HEALTH_CHECKS")},  # same engine as the primary
        "OPTIONS": dict(_db.get("OPTIONS", {})),
        "TEST": {"MIRROR": "default"},
    }
DATABASE_ROUTERS = ["signaldash.routers.ReadoutReplicaRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache: shared by every worker and app server (never per-process memory) ------------------------
# Redis when REDIS_URL is set; otherwise Django's database cache in the table `signaldash_cache`
# (`manage.py createcachetable`, run by `make demo`; the test runner creates it in the test database).
# Rate limits count in signaldash.ratelimit (Redis INCR, or an atomic upsert in the database), not here.
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "signaldash_cache"}}

# --- Auth -----------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["signaldash.formats"]  # ISO dates in the admin and on pages (signaldash/formats/en)

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "signaldash" / "static"]
# WhiteNoise serves static files in every mode (no CDN, no separate web server needed for the demo);
# production also runs `collectstatic` so files are served compressed from STATIC_ROOT.
WHITENOISE_USE_FINDERS = True

# --- REST framework -------------------------------------------------------------------------
# Requests per API key (a batch counts once), DRF rate syntax: N/s, N/min, N/hour, N/day. Default 6000/min
# (100 requests/s per service). Counted by signaldash.ratelimit in the database (or Redis with REDIS_URL),
# so every worker and app server shares one count.
SIGNALDASH_THROTTLE_RATE = env_str("SIGNALDASH_THROTTLE_RATE", "6000/min")
# Readout API, page, CSV, bundle and narrative requests per API key or per user.
SIGNALDASH_READOUT_THROTTLE_RATE = env_str("SIGNALDASH_READOUT_THROTTLE_RATE", "120/min")
# A verified API key is remembered per process for this many seconds (0 = off): the revocation delay.
SIGNALDASH_API_KEY_CACHE_S = env_float("SIGNALDASH_API_KEY_CACHE_S", 10.0)
# Seconds a running experiment's plan (variants, metrics, start) is remembered per worker for POST /api/track
# (tracking.selectors.running_experiment_cached; the write still checks "running" under the row lock). 0 = off.
SIGNALDASH_EXPERIMENT_CACHE_S = env_float("SIGNALDASH_EXPERIMENT_CACHE_S", 5.0)
# Login attempts per user name and per client address (signaldash/ratelimit/login.py).
SIGNALDASH_LOGIN_RATE = env_str("SIGNALDASH_LOGIN_RATE", "10/15min")
SIGNALDASH_LOGIN_IP_RATE = env_str("SIGNALDASH_LOGIN_IP_RATE", "100/15min")
# Proxies whose X-Forwarded-For names the client (the login limit per address); same variable as gunicorn's.
SIGNALDASH_TRUSTED_PROXIES = env_list("FORWARDED_ALLOW_IPS", ["127.0.0.1", "::1"])
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {"api_key": SIGNALDASH_THROTTLE_RATE, "readout": SIGNALDASH_READOUT_THROTTLE_RATE},
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = {
    # One schema name per choice set that several readout fields share (`kind` and `metric_kind`).
    "ENUM_NAME_OVERRIDES": {"MetricKindEnum": ["binary", "mean"]},
    # `<slug:...>` path parameters say what the URL resolver accepts (anything else is a 404 before any view).
    "PATH_CONVERTER_OVERRIDES": {"slug": {"type": "string", "pattern": "^[-a-zA-Z0-9_]+$"}},
    "TITLE": "Signal Dash API",
    "DESCRIPTION": (
        "Tracking, assignment and readout API of Signal Dash. Service endpoints take "
        "`Authorization: Bearer <key>` (keys from `manage.py create_api_key NAME`) and are throttled per key "
        f"at {SIGNALDASH_THROTTLE_RATE} (env `SIGNALDASH_THROTTLE_RATE`, default 6000/min; 429 with Retry-After)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI assets come from the installed drf-spectacular-sidecar package, never a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    # The schema needs a session or an API key like every other endpoint.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SERVE_AUTHENTICATION": [
        "tracking.auth.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}
# Request bodies above this size are refused with 413 (a 1000-event batch fits comfortably).
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("SIGNALDASH_MAX_BODY_BYTES", 4 * 1024 * 1024)

# --- AI narrative ---------------------------------------------------------------------------
# The readout narrative (readouts/narrative.py): provider `openai`, `anthropic` or `none` (deterministic
# text only). Keys, models and base URLs are passed explicitly to the SDK clients, which never retry.
SIGNALDASH_AI_PROVIDER = (env_str("SIGNALDASH_AI_PROVIDER", "none") or "none").strip().lower()
if SIGNALDASH_AI_PROVIDER not in ("openai", "anthropic", "none"):
    raise ImproperlyConfigured(
        f"SIGNALDASH_AI_PROVIDER must be openai, anthropic or none, got {SIGNALDASH_AI_PROVIDER!r}"
    )
# --- Statistics engine settings (docs/metrics.md, "Statistics engine") ------------------------------
# Tuning N* of the always-valid confidence sequence (gbstats' default 5000: the total sample size at which
# the sequence is tightest), and an optional proper prior N(0, sd²) on the relative lift for the Bayesian
# view (unset: a flat prior, gbstats' default).
SIGNALDASH_SEQUENTIAL_TUNING = env_float("SIGNALDASH_SEQUENTIAL_TUNING", 5000.0)
if SIGNALDASH_SEQUENTIAL_TUNING <= 0:
    raise ImproperlyConfigured("SIGNALDASH_SEQUENTIAL_TUNING must be a positive number of users")
_prior_sd = env_str("SIGNALDASH_BAYES_PRIOR_SD")
SIGNALDASH_BAYES_PRIOR_SD = float(_prior_sd) if _prior_sd else None
if SIGNALDASH_BAYES_PRIOR_SD is not None and not SIGNALDASH_BAYES_PRIOR_SD > 0:
    raise ImproperlyConfigured("SIGNALDASH_BAYES_PRIOR_SD must be a positive relative lift (e.g. 0.3), or unset")
SIGNALDASH_AI_TIMEOUT_S = env_float("SIGNALDASH_AI_TIMEOUT_S", 20.0)
if not 0 < SIGNALDASH_AI_TIMEOUT_S <= 300:
    raise ImproperlyConfigured("SIGNALDASH_AI_TIMEOUT_S must be a number of seconds in (0, 300]")
OPENAI_API_KEY = env_str("OPENAI_API_KEY")
OPENAI_BASE_URL = env_str("OPENAI_BASE_URL")
OPENAI_MODEL = env_str("OPENAI_MODEL", "gpt-4o-mini")
ANTHROPIC_API_KEY = env_str("ANTHROPIC_API_KEY")
ANTHROPIC_BASE_URL = env_str("ANTHROPIC_BASE_URL")
ANTHROPIC_MODEL = env_str("ANTHROPIC_MODEL", "claude-3-5-haiku-latest")

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# --- Production hardening (manage.py check --deploy is clean with SIGNALDASH_PRODUCTION=1) ----
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

# Background work (warehouse refreshes, webhook deliveries, emails) never runs in a web request:
# tasks go through django-tasks (the backport of Django 6's tasks API) with its database backend
# (django-tasks-db), and `manage.py db_worker` runs them. See docs/architecture.md.
TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

# Warehouse readouts: a snapshot older than this many hours is marked stale on the readout.
SIGNALDASH_SNAPSHOT_STALE_HOURS = env_float("SIGNALDASH_SNAPSHOT_STALE_HOURS", 24.0)

# Outgoing notifications (docs/notifications.md). Private/loopback targets are refused unless DEBUG or asked.
SIGNALDASH_WEBHOOK_BACKOFF_S = env_float("SIGNALDASH_WEBHOOK_BACKOFF_S", 10.0)
SIGNALDASH_WEBHOOK_TIMEOUT_S = env_float("SIGNALDASH_WEBHOOK_TIMEOUT_S", 5.0)
SIGNALDASH_WEBHOOK_MAX_ATTEMPTS = env_int("SIGNALDASH_WEBHOOK_MAX_ATTEMPTS", 6)
SIGNALDASH_WEBHOOK_ALLOW_PRIVATE = env_bool("SIGNALDASH_WEBHOOK_ALLOW_PRIVATE", DEBUG)
SIGNALDASH_SITE_URL = env_str("SIGNALDASH_SITE_URL", "http://localhost:8000")

# Notification emails (docs/notifications.md): Django's SMTP mail, sent by the task worker; on once EMAIL_HOST is set.
EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
EMAIL_HOST = env_str("EMAIL_HOST", "") or ""
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER", "") or ""
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are exclusive: set one")
EMAIL_TIMEOUT = env_float("EMAIL_TIMEOUT", 10.0)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Signal Dash <signaldash@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
SIGNALDASH_EMAIL_NOTIFICATIONS = env_bool("SIGNALDASH_EMAIL_NOTIFICATIONS", bool(EMAIL_HOST))
