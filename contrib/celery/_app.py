"""``Celery``: a Celery-compatible app whose tasks run as durable workflows."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dfcore import App

from ._canvas import CANVAS, run_canvas
from ._result import AsyncResult as Result
from ._task import WORKFLOW, Task, run_task
from .exceptions import unsupported

log = logging.getLogger("dfcore.contrib.celery")

#: Celery settings that become DurableFuture settings (the rest are read and ignored).
_SETTINGS = {"task_default_queue": "task_queue"}
_apps: list[Celery] = []
_shared: list[tuple[Callable[..., Any], dict[str, Any], list[Task]]] = []


class Celery:
    """``Celery("proj")``: the app of a Celery project, on DurableFuture.

    Tasks are registered on :attr:`df_app`, a :class:`dfcore.App`; run them with
    ``dfcore -A proj.celery:app.df_app worker`` (or point ``DFCORE["APP"]`` at it in Django).
    Settings: the DurableFuture ones (``DF_*`` environment variables, or ``df_settings=``);
    ``config_from_object`` reads Celery's and uses those it can (``broker_url`` when it is a
    ``nats://`` URL, ``task_default_queue``).
    """

    def __init__(self, main: str | None = None, *, df_app: App | None = None, **_: Any) -> None:
        self.main = main or "celery"
        self.df_app = df_app or App(self.main)
        self.conf: dict[str, Any] = {}
        self.tasks: dict[str, Task] = {}
        self.df_app.workflow(name=WORKFLOW)(run_task)
        self.df_app.workflow(name=CANVAS)(run_canvas)
        _apps.append(self)
        for fn, options, made in _shared:
            made.append(self._register(fn, options))

    def __repr__(self) -> str:
        return f"<Celery {self.main} on {self.df_app!r}>"

    # -- configuration ----------------------------------------------------------------------

    def config_from_object(self, obj: object | str, namespace: str | None = None, **_: Any) -> None:
        """Read Celery settings (``"django.conf:settings", namespace="CELERY"`` reads its
        ``CELERY_*`` names) into :attr:`conf`, and take over the ones DurableFuture has."""
        source = _import(obj) if isinstance(obj, str) else obj
        prefix = f"{namespace}_" if namespace else ""
        items = source.items() if isinstance(source, Mapping) else _attributes(source)
        for key, value in items:
            if (key.startswith(prefix) and key.isupper()) or (not prefix and key.islower()):
                self.conf[key[len(prefix) :].lower()] = value
        settings = {
            ours: self.conf[theirs] for theirs, ours in _SETTINGS.items() if theirs in self.conf
        }
        broker = str(self.conf.get("broker_url") or "")
        if broker.startswith(("nats://", "tls://")):
            settings["nats_url"] = broker
        if settings:
            self.df_app.configure(**settings)

    def autodiscover_tasks(
        self,
        packages: Iterable[str] | Callable[[], Iterable[str]] | None = None,
        related_name: str = "tasks",
        **_: Any,
    ) -> None:
        """Import ``<package>.tasks`` of each package (Django's installed apps by default)."""
        if callable(packages):
            packages = packages()
        if packages is None:
            from django.apps import apps

            packages = [config.name for config in apps.get_app_configs()]
        for package in packages:
            try:
                importlib.import_module(f"{package}.{related_name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{related_name}":
                    raise

    # -- tasks ------------------------------------------------------------------------------

    def task(self, *args: Any, **options: Any) -> Any:
        """``@app.task`` or ``@app.task(bind=True, autoretry_for=(...), max_retries=5, ...)``."""
        if args and callable(args[0]) and not options:
            return self._register(args[0], {})
        return lambda fn: self._register(fn, options)

    def _register(self, fn: Callable[..., Any], options: dict[str, Any]) -> Task:
        made = Task(self, fn, options)
        self.tasks[made.name] = made
        return made

    def AsyncResult(self, task_id: str, **options: Any) -> Result:  # noqa: N802
        """The result of the call ``task_id``."""
        return Result(task_id, app=self)

    def send_task(self, name: str, args: Any = None, kwargs: Any = None, **options: Any) -> Result:
        """Call a task by name (it must be registered here)."""
        task = self.tasks.get(name)
        if task is None:
            raise unsupported(f"send_task to {name!r}, which is not a task of this app,")
        return task.apply_async(args, kwargs, **options)

    # -- what Celery has and this facade does not ----------------------------------------------

    @property
    def control(self) -> Any:
        raise unsupported("remote control (app.control)")

    def worker_main(self, *_: Any, **__: Any) -> None:
        raise unsupported("app.worker_main (run 'dfcore -A proj.celery:app.df_app worker')")


def current_app() -> Celery:
    """The last Celery app made (one is made when there is none)."""
    return _apps[-1] if _apps else Celery()


def shared_task(*args: Any, **options: Any) -> Any:
    """``@shared_task``: a task of every Celery app, those made already and those to come."""

    def register(fn: Callable[..., Any]) -> SharedTask:
        made: list[Task] = [app._register(fn, options) for app in _apps]
        _shared.append((fn, options, made))
        return SharedTask(made)

    if args and callable(args[0]) and not options:
        return register(args[0])
    return register


class SharedTask:
    """A shared task: calls go to its task on the current app."""

    def __init__(self, made: list[Task]) -> None:
        self._made = made

    def _task(self) -> Task:
        app = current_app()
        for task in reversed(self._made):
            if task.app is app:
                return task
        return self._made[-1]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task(), name)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._task()(*args, **kwargs)


def _import(path: str) -> Any:
    module, _, attribute = path.partition(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, attribute) if attribute else loaded


def _attributes(source: Any) -> list[tuple[str, Any]]:
    return [(key, getattr(source, key)) for key in dir(source) if not key.startswith("_")]
