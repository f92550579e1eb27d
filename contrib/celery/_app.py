"""``Celery``: a Celery-compatible app whose tasks run as durable workflows."""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from dfcore import App, ScheduleSpec

from ._beat import beat_spec
from ._canvas import CANVAS, WORKFLOW, Signature, run_canvas
from ._conf import Settings, Signal
from ._result import AsyncResult as Result
from ._task import Task, run_task
from .exceptions import unsupported

log = logging.getLogger("dfcore.contrib.celery")

#: Celery settings that become DurableFuture settings (the rest are read and ignored).
_SETTINGS = {"task_default_queue": "task_queue"}
_apps: list[Celery] = []
_shared: list[tuple[Callable[..., Any], dict[str, Any], list[Task]]] = []
_Packages = Iterable[str] | Callable[[], Iterable[str]] | None


class Celery:
    """``Celery("proj")``: the app of a Celery project, on DurableFuture.

    Tasks are registered on :attr:`df_app`, a :class:`dfcore.App`; run them with
    ``dfcore -A proj.celery:app worker`` (or point ``DFCORE["APP"]`` at it in Django).
    Settings: the DurableFuture ones (``DF_*`` environment variables, or ``df_settings=``);
    :attr:`conf` holds Celery's, and those DurableFuture has are used (``broker_url`` when it
    is a ``nats://`` URL, ``task_default_queue``, ``beat_schedule`` and ``timezone``).
    """

    def __init__(
        self,
        main: str | None = None,
        *,
        df_app: App | None = None,
        broker: str | None = None,
        include: Iterable[str] = (),
        **_: Any,
    ) -> None:
        self.main = main or "celery"
        self._df_app = df_app or App(self.main)
        self._lock = threading.RLock()
        self._finalized = False
        self._discovery: list[tuple[_Packages, str]] = []
        if include:
            self._discovery.append((list(include), ""))
        self._beat_ids: list[str] = []
        self.conf = Settings(self._changed)
        self.tasks: dict[str, Task] = {}
        self.on_after_configure = Signal("app.on_after_configure")
        self.on_after_finalize = Signal("app.on_after_finalize")
        self._task_workflow = self._df_app.workflow(name=WORKFLOW)(run_task)
        self._df_app.workflow(name=CANVAS)(run_canvas)
        if broker:
            self.conf.broker_url = broker
        _apps.append(self)
        for fn, options, made in _shared:
            made.append(self._register(fn, options))

    def __repr__(self) -> str:
        return f"<Celery {self.main} on {self._df_app!r}>"

    @property
    def df_app(self) -> App:
        """The :class:`dfcore.App` the tasks run on. Reading it finalizes this app first
        (:meth:`finalize`), as a worker or a task call does."""
        if not self._finalized or self._discovery:
            self.finalize()
        return self._df_app

    def close(self) -> None:
        """Close the connections this app's calls opened (``app.close()``, as in Celery)."""
        self._df_app.close()

    def finalize(self, auto: bool = False) -> None:
        """Import the task modules ``autodiscover_tasks`` named, send ``on_after_configure``
        and ``on_after_finalize``, and declare the ``beat_schedule`` entries as schedules;
        once (discovery waits until Django's apps are loaded)."""
        with self._lock:
            self._discover()
            if self._finalized:
                return
            self._finalized = True
            self.on_after_configure.send(sender=self, source=self.conf)
            self.on_after_finalize.send(sender=self)
            self._declare_beat()

    # -- configuration ----------------------------------------------------------------------

    def config_from_object(self, obj: object | str, namespace: str | None = None, **_: Any) -> None:
        """Read Celery settings (``"django.conf:settings", namespace="CELERY"`` reads its
        ``CELERY_*`` names) into :attr:`conf`, and take over the ones DurableFuture has."""
        source = _import(obj) if isinstance(obj, str) else obj
        prefix = f"{namespace}_" if namespace else ""
        items = source.items() if isinstance(source, Mapping) else _attributes(source)
        self.conf.update(
            {
                key[len(prefix) :].lower(): value
                for key, value in items
                if (key.startswith(prefix) and key.isupper()) or (not prefix and key.islower())
            }
        )

    def _changed(self, name: str) -> None:
        """A setting changed: apply those DurableFuture has."""
        if name in _SETTINGS or name == "broker_url":
            settings = {
                ours: self.conf[theirs] for theirs, ours in _SETTINGS.items() if theirs in self.conf
            }
            broker = str(self.conf.get("broker_url") or "")
            if broker.startswith(("nats://", "tls://")):
                settings["nats_url"] = broker
            if settings:
                self._df_app.configure(**settings)
        if name in ("beat_schedule", "timezone"):
            if self._finalized:
                self._declare_beat()
            else:
                self._beat_specs()  # a mistake is refused where it is written

    def autodiscover_tasks(
        self,
        packages: _Packages = None,
        related_name: str = "tasks",
        force: bool = False,
        **_: Any,
    ) -> None:
        """Import ``<package>.tasks`` of each package (Django's installed apps by default)
        when the app is finalized (at once with ``force=True``), as Celery does."""
        with self._lock:
            self._discovery.append((packages, related_name))
            if force or self._finalized:
                self._discover()

    def _discover(self) -> None:
        pending, self._discovery = self._discovery, []
        for packages, related_name in pending:
            names = _package_names(packages)
            if names is None:  # Django's apps are not loaded yet: later
                self._discovery.append((packages, related_name))
                continue
            for package in names:
                module = f"{package}.{related_name}" if related_name else package
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as exc:
                    if exc.name != module or not related_name:
                        raise

    # -- periodic tasks ---------------------------------------------------------------------

    def add_periodic_task(
        self,
        schedule: Any,
        sig: Signature,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        name: str | None = None,
        **options: Any,
    ) -> str:
        """Add an entry to ``beat_schedule``: run ``sig`` on ``schedule`` (a crontab, a
        schedule, a timedelta or seconds). Its key is ``name``, else the signature's repr."""
        if not isinstance(sig, Signature):
            raise TypeError(
                f"add_periodic_task takes a signature, such as task.s(...); got {sig!r}"
            )
        called = Signature(
            sig.task,
            sig.args if sig.immutable else [*args, *sig.args],
            sig.kwargs if sig.immutable else {**sig.kwargs, **(kwargs or {})},
            immutable=sig.immutable,
        )
        key = name or repr(called)
        self.conf.beat_schedule[key] = {
            "schedule": schedule,
            "task": called.task.name,
            "args": called.args,
            "kwargs": called.kwargs,
            "options": options,
        }
        self._changed("beat_schedule")
        return key

    def _beat_specs(self) -> list[ScheduleSpec]:
        entries = self.conf.get("beat_schedule") or {}
        timezone = self.conf.get("timezone")

        def queue_of(task: str) -> str | None:
            found = self.tasks.get(task)
            return found.queue if found is not None else None

        return [beat_spec(str(key), entry, timezone, queue_of) for key, entry in entries.items()]

    def _declare_beat(self) -> None:
        """Declare the beat entries on :attr:`df_app` (in place of those declared before);
        its workers create and update them."""
        specs = self._beat_specs()
        registry = self._df_app.registry
        ours = set(self._beat_ids)
        registry.schedules[:] = [s for s in registry.schedules if s.schedule_id not in ours]
        for spec in specs:
            registry.add_schedule(spec)
        self._beat_ids = [spec.schedule_id for spec in specs]
        if not self._discovery:
            for key, entry in (self.conf.get("beat_schedule") or {}).items():
                if entry.get("task") not in self.tasks:
                    log.warning(
                        "beat_schedule entry %r runs %r, which is not a task of this app: "
                        "check its name, or that autodiscover_tasks() finds its module",
                        key,
                        entry.get("task"),
                    )

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
        self.finalize()
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


def _package_names(packages: _Packages) -> list[str] | None:
    """The packages to discover tasks in; by default Django's installed apps (None while they
    are not loaded yet, [] outside a Django project)."""
    if callable(packages):
        packages = packages()
    if packages is not None:
        return list(packages)
    try:
        from django.apps import apps
        from django.conf import settings
    except ImportError:
        return []
    if not settings.configured:
        return []
    if not apps.apps_ready:
        return None
    return [config.name for config in apps.get_app_configs()]
