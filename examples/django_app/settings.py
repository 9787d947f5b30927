"""Settings of the Django example: PostgreSQL from ``SPAKTOK_DATABASE_URL``.

The ledger lives in Django's own database (the one in ``DATABASES``), so a
view can write a host row and a ledger entry in one transaction. The other
variables are the ones every example app reads (``examples/README.md``).
"""

from __future__ import annotations

import os

import sqlalchemy as sa

DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/spaktok_django_example"

_url = sa.make_url(os.environ.get("SPAKTOK_DATABASE_URL") or DEFAULT_DATABASE_URL)
if _url.get_backend_name() != "postgresql":
    raise SystemExit(
        "the Django example needs PostgreSQL (it joins the ledger to Django's transactions): "
        f"SPAKTOK_DATABASE_URL is {_url.render_as_string()}"
    )

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "examples.django_app.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["spaktok_ledger.contrib.django", "examples.django_app.gifts"]
MIDDLEWARE = ["examples.django_app.views.ProblemMiddleware"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.database,
        "USER": _url.username or "",
        "PASSWORD": _url.password or "",
        "HOST": _url.host or "",
        "PORT": str(_url.port or ""),
    }
}
SPAKTOK_LEDGER = {
    "DATABASE": "default",
    "PREFIX": os.environ.get("SPAKTOK_TABLE_PREFIX") or "spaktok_",
}
LOGGING = {
    "version": 1,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"examples": {"handlers": ["console"], "level": "INFO"}},
}
