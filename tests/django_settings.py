"""Settings for the Django tests: the django_shop example project itself, plus a test app.

The SQLite database is a file, and PostgreSQL (alias ``pg``, when reachable or under CI) a
named test database, so that ``manage.py df_worker`` subprocesses see what the tests write;
``DF_TEST_DB_TAG`` gives a subprocess the same names as the test run that spawned it.
"""

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHOP = ROOT / "example_projects" / "django_shop"
if str(SHOP) not in sys.path:
    sys.path.insert(0, str(SHOP))

from shop.settings import *  # noqa: E402,F403 - the example project, not a copy of it
from shop.settings import INSTALLED_APPS  # noqa: E402

INSTALLED_APPS = [*INSTALLED_APPS, "tests.djangoapp"]

_TAG = os.environ.setdefault("DF_TEST_DB_TAG", str(os.getpid()))
_SQLITE = str(Path(tempfile.gettempdir()) / f"dfcore-test-{_TAG}.sqlite3")
_PG_NAME = f"test_dfcore_{_TAG}"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": _SQLITE,
        "TEST": {"NAME": _SQLITE},
        "OPTIONS": {"timeout": 20},
    },
}


def _postgres_reachable() -> bool:
    try:
        import psycopg

        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2):
            return True
    except Exception:
        return False


if os.environ.get("CI") == "true" or _postgres_reachable():
    DATABASES["pg"] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": "5432",
        "USER": "postgres",
        "NAME": _PG_NAME,
        "TEST": {"NAME": _PG_NAME},
    }

# Tests set DFCORE per test (override_settings); subprocesses (df_worker, df_relay) get their
# server and namespace from DF_NATS_URL and DF_NAMESPACE, which DFCORE must not shadow.
DFCORE: dict[str, object] = {}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast test logins
