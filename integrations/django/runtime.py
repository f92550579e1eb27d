"""The project's App, configured from ``settings.DFCORE`` and kept in step with it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from dfcore import Advice, App, ConfigurationError
from dfcore.activity import ActivityInfo

from .conf import SETTING, DjangoSettings, read_settings

#: The built-in project App. Decorate workflows and activities in your apps' ``workflows.py``
#: with ``@app.workflow`` / ``@app.activity``; ``settings.DFCORE`` configures it.
app = App("django")

_lock = threading.RLock()
_current: tuple[DjangoSettings, App] | None = None


#: What DurableFuture's messages suggest in a Django project.
ADVICE = Advice(
    command="python manage.py df_{}",
    setting=SETTING + '["{upper}"] in settings.py',
    web="python manage.py runserver",
)


def get_app() -> App:
    """The App this project runs: ``DFCORE["APP"]`` if set, else the built-in ``app``.

    Its settings are read from ``settings.DFCORE`` on first use and after every change.

    Raises:
        ImproperlyConfigured: ``DFCORE`` is invalid; the message names the key.
    """
    return _configured()[1]


def get_settings() -> DjangoSettings:
    """``settings.DFCORE``, validated (read on first use and after every change)."""
    return _configured()[0]


def _configured() -> tuple[DjangoSettings, App]:
    global _current
    with _lock:
        if _current is None:
            conf = read_settings()
            target = _load_app(conf.app)
            try:
                target.config_from_object(
                    conf.core, namespace=None, source=f"settings.{SETTING}", advice=ADVICE
                )
            except ConfigurationError as exc:
                raise ImproperlyConfigured(str(exc)) from exc
            if _close_stale_connections not in target.activity_contexts:
                target.add_activity_context(_close_stale_connections)
            _current = (conf, target)
        return _current


def reset(**kwargs: Any) -> None:
    """Forget the settings read so far (``setting_changed`` calls it for ``DFCORE``)."""
    global _current
    with _lock:
        _current = None


def _load_app(path: str | None) -> App:
    if path is None:
        return app
    try:
        found = import_string(path.replace(":", "."))
    except ImportError as exc:
        raise ImproperlyConfigured(
            f'settings.{SETTING}["APP"] is invalid: cannot import {path!r} ({exc}); '
            "expected the import path of your App, such as 'proj.df.app'"
        ) from exc
    found = getattr(found, "df_app", found)  # a facade's app stands for its App (Celery's)
    if not isinstance(found, App):
        raise ImproperlyConfigured(
            f'settings.{SETTING}["APP"] is invalid: {path!r} is an object of type '
            f"{type(found).__name__}, not a dfcore.App; point it at your App, such as "
            "'proj.df:app'"
        )
    return found


@contextlib.contextmanager
def _close_stale_connections(info: ActivityInfo) -> Iterator[None]:
    """Around a ``def`` activity, do what Django does around a request: close database
    connections that are broken or past ``CONN_MAX_AGE``, so a long-lived worker thread never
    uses a connection the database has dropped."""
    if _in_event_loop():  # async activities reach the ORM through sync_to_async threads
        yield
        return
    from django.db import close_old_connections

    close_old_connections()
    try:
        yield
    finally:
        close_old_connections()


def _in_event_loop() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
