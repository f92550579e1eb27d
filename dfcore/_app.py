"""The App: settings, the registry of workflows and activities, and the entry points."""

from __future__ import annotations

import asyncio
import difflib
import functools
import os
import weakref
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from ._client import Client, IfExists, PreparedStart, WorkflowHandle, WorkflowStatus, prepare_start
from ._codec import IdentityCodec, PayloadCodec
from ._config import Advice, Settings, read_config_object, resolve_settings
from ._convert import check_call_args, return_hint
from ._definitions import ActivityDefinition, ActivityOptions, RetryPolicy, WorkflowDefinition
from ._dlq import DeadLetter
from ._errors import ConfigurationError, DFError, RegistrationError
from ._inspect import list_workflows
from ._loopthread import SYNC_LOOP, on_exit, run_sync
from ._naming import check_queue

if TYPE_CHECKING:
    from ._worker import Worker
    from .activity import ActivityInfo

DEFAULT_MAX_PAYLOAD = 1024 * 1024  # nats-server's default max_payload

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class WorkflowFunction(Generic[P, R]):
    """A registered workflow. Call ``start``/``astart``/``delay`` to run it durably.

    Calling it directly runs the function as plain Python (useful in unit tests).
    """

    def __init__(self, app: App, definition: WorkflowDefinition) -> None:
        self._app = app
        self.definition = definition
        self._result_hint = return_hint(definition.fn)
        functools.update_wrapper(self, definition.fn)

    @property
    def app(self) -> App:
        """The App this workflow is started on (a framework integration may pick it per call)."""
        return self._app

    @property
    def name(self) -> str:
        return self.definition.name

    def __call__(self, ctx: Any, *args: P.args, **kwargs: P.kwargs) -> Any:
        return self.definition.fn(ctx, *args, **kwargs)

    def __repr__(self) -> str:
        return f"<workflow {self.name!r}>"

    async def astart(
        self,
        *args: Any,
        workflow_id: str | None = None,
        task_queue: str | None = None,
        if_exists: IfExists = "use_existing",
        execution_timeout: float | None = None,
    ) -> WorkflowHandle[R]:
        """Start the workflow and return a handle to it (async).

        Args:
            *args: the workflow's arguments (after ``ctx``), JSON-serialisable.
            workflow_id: makes the start idempotent: starting the same id again returns the
                existing workflow's handle (or raises, with ``if_exists="fail"``).
            task_queue: run it on workers of this queue.
            if_exists: ``"use_existing"`` (default) or ``"fail"`` (raise WorkflowAlreadyStarted).
            execution_timeout: fail the workflow if it runs longer than this many seconds.
        """
        return await self.app._astart(
            self.name,
            args,
            self.definition,
            workflow_id=workflow_id,
            task_queue=task_queue,
            if_exists=if_exists,
            execution_timeout=execution_timeout,
        )

    def start(
        self,
        *args: Any,
        workflow_id: str | None = None,
        task_queue: str | None = None,
        if_exists: IfExists = "use_existing",
        execution_timeout: float | None = None,
    ) -> WorkflowHandle[R]:
        """Start the workflow from sync code; same arguments as :meth:`astart`."""
        return run_sync(
            self.astart(
                *args,
                workflow_id=workflow_id,
                task_queue=task_queue,
                if_exists=if_exists,
                execution_timeout=execution_timeout,
            )
        )

    delay = start  # Celery-style alias

    def get_handle(self, workflow_id: str) -> WorkflowHandle[R]:
        """A handle to an existing run of this workflow, typed with its result."""
        return WorkflowHandle(self.app, workflow_id, result_hint=self._result_hint)


class ActivityFunction(Generic[P, T]):
    """A registered activity. Calling it runs the function directly (not durably)."""

    def __init__(self, definition: ActivityDefinition) -> None:
        self.definition = definition
        functools.update_wrapper(self, definition.fn)

    @property
    def name(self) -> str:
        return self.definition.name

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.definition.fn(*args, **kwargs)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"<activity {self.name!r}>"


class App:
    """A DurableFuture application: settings plus registered workflows and activities.

    Settings come from, in order of precedence: keyword arguments, ``config_from_object``,
    ``DF_*`` environment variables, defaults. See :class:`dfcore.Settings` for every key.

    Example::

        app = App("shop", nats_url="nats://127.0.0.1:4222")

        @app.activity(timeout=30)
        def charge(customer: str, amount: float) -> dict: ...

        @app.workflow
        async def order(ctx, customer: str, amount: float) -> dict:
            return await ctx.activity(charge, customer, amount)
    """

    def __init__(
        self, name: str = "default", *, codec: PayloadCodec | str | None = None, **settings: Any
    ) -> None:
        self.name = name
        self._kwargs = dict(settings)
        if codec is not None:
            self._kwargs["codec"] = codec
        self._from_object: dict[str, Any] | None = None
        self._advice: Advice | None = None
        self._settings: Settings | None = None
        self._codec: PayloadCodec | None = None
        self.workflows: dict[str, WorkflowDefinition] = {}
        self.activities: dict[str, ActivityDefinition] = {}
        self._by_fn: dict[Any, ActivityDefinition] = {}
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Client] = (
            weakref.WeakKeyDictionary()
        )
        self._loops_are_short_lived = False
        self.activity_contexts: list[Callable[[ActivityInfo], AbstractContextManager[Any]]] = []
        _ = self.settings  # validate now: a bad value fails at start-up, naming the key
        on_exit(self.aclose)

    def __repr__(self) -> str:
        return f"<App {self.name!r} namespace={self.settings.namespace!r}>"

    # -- settings ---------------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = resolve_settings(
                kwargs=self._kwargs,
                from_object=self._from_object,
                environ=os.environ,
                advice=self._advice,
            )
        return self._settings

    def configure(self, **settings: Any) -> None:
        """Override settings given as keyword arguments (validated at once)."""
        self._kwargs.update(settings)
        self._reload()

    def _reload(self) -> None:
        self._settings = None
        self._codec = None
        _ = self.settings
        self._drop_clients()

    def config_from_object(
        self,
        obj: object | str,
        namespace: str | None = "DF",
        *,
        source: str | None = None,
        advice: Advice | None = None,
    ) -> None:
        """Read settings from a module, class, object or dict (keys ``DF_NATS_URL`` ...).

        Args:
            obj: the object, or an import path to it.
            namespace: the key prefix; with ``None``, keys are the bare setting names
                (``nats_url`` or ``NATS_URL``).
            source: how error messages name ``obj`` (``"settings.DFCORE"``).
            advice: the commands and setting names error messages suggest, for a framework
                integration (``python manage.py df_dev``, ``DFCORE["NATS_URL"]``).

        Raises:
            ConfigurationError: a value is invalid; the message names its key.
        """
        self._from_object = read_config_object(obj, namespace, source=source)
        self._advice = advice or self._advice
        self._reload()

    def derive(self, name: str | None = None, **settings: Any) -> App:
        """A new App with this App's workflows and activities, and its own settings.

        The registry is shared, not copied: whatever is registered on either App later is on
        both. Settings start from this App's keyword arguments (``settings`` override them);
        connections and activity contexts are the new App's own. The Flask extension gives
        each Flask application its own App this way.
        """
        other = App(name or self.name, **{**self._kwargs, **settings})
        other.workflows = self.workflows
        other.activities = self.activities
        other._by_fn = self._by_fn
        return other

    @property
    def _max_payload(self) -> int:
        """The connected server's max_payload, or the NATS default before any connection."""
        for client in list(self._clients.values()):
            if client.nc is not None:
                return int(client.nc.max_payload)
        return DEFAULT_MAX_PAYLOAD

    @property
    def codec(self) -> PayloadCodec:
        if self._codec is None:
            self._codec = self.settings.load_codec() or IdentityCodec()
        return self._codec

    # -- registration -----------------------------------------------------------------------

    @overload
    def workflow(self, fn: Callable[..., Awaitable[R]]) -> WorkflowFunction[..., R]: ...
    @overload
    def workflow(self, fn: Callable[..., R]) -> WorkflowFunction[..., R]: ...
    @overload
    def workflow(
        self,
        *,
        name: str | None = None,
        task_queue: str | None = None,
        execution_timeout: float | None = None,
    ) -> Callable[[Callable[..., Any]], WorkflowFunction[..., Any]]: ...
    def workflow(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        task_queue: str | None = None,
        execution_timeout: float | None = None,
    ) -> Any:
        """Register a workflow: ``@app.workflow`` or ``@app.workflow(name=..., task_queue=...)``.

        The first parameter receives the :class:`WorkflowContext`.
        """

        def register(fn: Callable[..., Any]) -> WorkflowFunction[..., Any]:
            wf_name = name or fn.__name__
            defn = WorkflowDefinition(
                wf_name,
                fn,
                task_queue=check_queue(task_queue) if task_queue else None,
                execution_timeout=execution_timeout,
            )
            _register(self.workflows, wf_name, defn, "workflow")
            return WorkflowFunction(self, defn)

        return register(fn) if fn is not None else register

    @overload
    def activity(self, fn: Callable[P, T]) -> ActivityFunction[P, T]: ...
    @overload
    def activity(
        self,
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        schedule_to_close: float | None = None,
        heartbeat_timeout: float | None = None,
        task_queue: str | None = None,
    ) -> Callable[[Callable[P, T]], ActivityFunction[P, T]]: ...
    def activity(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        schedule_to_close: float | None = None,
        heartbeat_timeout: float | None = None,
        task_queue: str | None = None,
    ) -> Any:
        """Register an activity: ``@app.activity`` or ``@app.activity(retry=..., timeout=...)``.

        ``def`` activities run in a thread pool, ``async def`` ones on the worker's loop.
        ``timeout`` is the start-to-close timeout of each attempt, in seconds.
        """
        options = ActivityOptions(
            retry=retry,
            start_to_close=timeout,
            schedule_to_close=schedule_to_close,
            heartbeat_timeout=heartbeat_timeout,
            task_queue=check_queue(task_queue) if task_queue else None,
        )

        def register(fn: Callable[..., Any]) -> ActivityFunction[..., Any]:
            act_name = name or fn.__name__
            options.validate(act_name)
            defn = ActivityDefinition(act_name, fn, options)
            _register(self.activities, act_name, defn, "activity")
            wrapper: ActivityFunction[..., Any] = ActivityFunction(defn)
            self._by_fn[fn] = defn
            self._by_fn[wrapper] = defn
            return wrapper

        return register(fn) if fn is not None else register

    def lookup_activity(self, ref: Any) -> tuple[str, ActivityOptions, Any]:
        """Resolve what workflow code passed to ``ctx.activity``: name, options, result type."""
        if isinstance(ref, ActivityFunction):
            defn = ref.definition
        elif isinstance(ref, str):
            found = self.activities.get(ref)
            if found is None:
                return ref, ActivityOptions(), None  # may live on other workers
            defn = found
        elif (found := _hashable_get(self._by_fn, ref)) is not None:
            defn = found
        else:
            raise RegistrationError(
                f"{getattr(ref, '__qualname__', ref)!r} is not an activity: decorate it with "
                "@app.activity, or pass the registered activity name as a string"
            )
        return defn.name, defn.options, return_hint(defn.fn)

    # -- clients ----------------------------------------------------------------------------

    def _client(self) -> Client:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = Client(self)
            client.watch_loop()  # a short-lived loop drops its client when it ends
        return client

    async def _on_client_loop(
        self, call: Callable[[Client], Awaitable[T]], action: str | None, note: str = ""
    ) -> T:
        """Run ``call(client)`` with this loop's client, or on the shared sync loop.

        With an ``action`` (what the call does, for the error), the call is given up with
        :class:`DFConnectionError` after ``connect_timeout`` seconds (``Client.bounded``).

        Async calls use a connection on the caller's loop, which suits long-lived loops (an
        ASGI server, a worker). Once a loop that held a connection has ended, this process
        runs loops per call (``asyncio.run`` in a script, asgiref's ``async_to_sync`` for an
        async Django view under WSGI); from then on, a new loop borrows the shared
        connection of the sync loop instead of opening one per call.
        """

        async def run() -> T:
            client = self._client()
            if action is None:
                return await call(client)
            return await client.bounded(call, action, note)

        loop = asyncio.get_running_loop()
        if not self._loops_are_short_lived or loop in self._clients or SYNC_LOOP.owns(loop):
            return await run()

        future = asyncio.run_coroutine_threadsafe(run(), SYNC_LOOP.loop)
        return await asyncio.wrap_future(future)

    def _loop_ended(self, loop: asyncio.AbstractEventLoop, client: Client) -> None:
        if self._clients.get(loop) is client:
            del self._clients[loop]
        self._loops_are_short_lived = True

    def _drop_clients(self) -> None:
        """Close every connection (after a settings change): the next call reconnects."""
        for loop, client in list(self._clients.items()):
            del self._clients[loop]
            if loop.is_closed():
                continue
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                loop.create_task(client.close())
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(client.close(), loop)

    def add_activity_context(
        self, factory: Callable[[ActivityInfo], AbstractContextManager[Any]]
    ) -> None:
        """Enter ``factory(info)`` around every activity attempt this app's workers run.

        A framework integration uses it to give activities what a request would have: Flask's
        ``app.app_context()``, fresh Django database connections. The context is entered on the
        thread that runs a ``def`` activity, and in the task of an ``async def`` one.
        """
        self.activity_contexts.append(factory)

    async def aclose(self) -> None:
        """Close this loop's connection (sync callers' connection closes at exit)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def close(self) -> None:
        """Close the sync callers' connection now rather than at exit (the next call reopens it)."""
        run_sync(self.aclose())

    def get_handle(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to the workflow with this id (whatever its type)."""
        return WorkflowHandle(self, workflow_id)

    async def astart(
        self,
        workflow: str | WorkflowFunction[..., Any],
        *args: Any,
        workflow_id: str | None = None,
        task_queue: str | None = None,
        if_exists: IfExists = "use_existing",
        execution_timeout: float | None = None,
    ) -> WorkflowHandle[Any]:
        """Start a workflow by function or registered name (async); see WorkflowFunction.astart.

        A name this App does not have raises :class:`RegistrationError`, with the nearest
        name it has. Only an App with no workflows at all (a process that starts workflows it
        does not define) starts any name: its workers may know it.

        Raises:
            RegistrationError: the name is not one of this App's workflows.
            TypeError: the arguments do not fit the workflow's parameters.
        """
        name = workflow.name if isinstance(workflow, WorkflowFunction) else workflow
        return await self._astart(
            name,
            args,
            self.workflows.get(name),
            workflow_id=workflow_id,
            task_queue=task_queue,
            if_exists=if_exists,
            execution_timeout=execution_timeout,
        )

    async def _astart(
        self,
        name: str,
        args: Sequence[Any],
        defn: WorkflowDefinition | None,
        *,
        workflow_id: str | None,
        task_queue: str | None,
        if_exists: IfExists,
        execution_timeout: float | None,
    ) -> WorkflowHandle[Any]:
        """The one start path: prepare the record, then append it."""
        start = self._prepare(
            name,
            args,
            defn,
            workflow_id=workflow_id,
            task_queue=task_queue,
            execution_timeout=execution_timeout,
        )
        return await self._apublish(start, if_exists)

    async def _apublish(self, start: PreparedStart, if_exists: IfExists) -> WorkflowHandle[Any]:
        defn = self.workflows.get(start.workflow_type)
        hint = return_hint(defn.fn) if defn else None
        return await self._on_client_loop(
            lambda client: client.start(start, if_exists=if_exists, result_hint=hint),
            f"start workflow {start.workflow_id!r}",
            "It may or may not have started: starting it again with the same workflow_id is "
            "safe (it runs once). ",
        )

    def _prepare(
        self,
        name: str,
        args: Sequence[Any],
        defn: WorkflowDefinition | None,
        *,
        workflow_id: str | None,
        task_queue: str | None,
        execution_timeout: float | None,
    ) -> PreparedStart:
        """Fill in the definition's and the settings' defaults and encode the start.

        Raises:
            RegistrationError: this App has workflows, and none of them is called ``name``.
            TypeError: the arguments do not fit the workflow's parameters.
        """
        if defn is None and self.workflows:
            raise RegistrationError(self._unknown_workflow(name))
        if defn is not None:
            check_call_args(defn.fn, args, skip_first=True, what=f"workflow {name!r}")
        queue = task_queue or (defn.task_queue if defn else None) or self.settings.task_queue
        return prepare_start(
            self.codec,
            name,
            args,
            workflow_id=workflow_id,
            task_queue=check_queue(queue),
            execution_timeout=execution_timeout or (defn.execution_timeout if defn else None),
            max_payload=self._max_payload,
        )

    def _unknown_workflow(self, name: str) -> str:
        known = sorted(self.workflows)
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        shown = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        return (
            f"App {self.name!r} has no workflow named {name!r}{hint}; its workflows are: "
            f"{shown}. Define it with @app.workflow in a module this process imports, or "
            "start it by its function"
        )

    def prepare_start(
        self,
        workflow: str | WorkflowFunction[..., Any],
        *args: Any,
        workflow_id: str | None = None,
        task_queue: str | None = None,
        execution_timeout: float | None = None,
    ) -> PreparedStart:
        """Encode a start without sending it, for a transactional outbox (no I/O).

        Store the result with the transaction that decides the work, then send it with
        :meth:`publish_start` after the commit. Sending it more than once starts the
        workflow once. Arguments are checked here, so a bad one fails inside the caller's
        transaction, not later in a relay.

        Raises:
            RegistrationError: the name is not one of this App's workflows (see :meth:`astart`).
            TypeError: the arguments do not fit the workflow's parameters.
            SerializationError: an argument cannot be encoded (the error names it).
            PayloadTooLargeError: the start exceeds the server's max_payload.
        """
        name = workflow.name if isinstance(workflow, WorkflowFunction) else workflow
        return self._prepare(
            name,
            args,
            self.workflows.get(name),
            workflow_id=workflow_id,
            task_queue=task_queue,
            execution_timeout=execution_timeout,
        )

    async def apublish_start(self, start: PreparedStart) -> WorkflowHandle[Any]:
        """Send a start made by :meth:`prepare_start`; idempotent (a repeat starts nothing)."""
        return await self._apublish(start, "use_existing")

    def publish_start(self, start: PreparedStart) -> WorkflowHandle[Any]:
        """Sync twin of :meth:`apublish_start`."""
        return run_sync(self.apublish_start(start))

    def start(
        self, workflow: str | WorkflowFunction[..., Any], *args: Any, **options: Any
    ) -> WorkflowHandle[Any]:
        """Sync twin of :meth:`astart`."""
        return run_sync(self.astart(workflow, *args, **options))

    async def alist_workflows(self, limit: int = 50) -> list[WorkflowStatus]:
        """The most recently active workflows, newest first."""

        async def run(client: Client) -> list[WorkflowStatus]:
            return await list_workflows(await client.store(), limit)

        return await self._on_client_loop(run, "list workflows")

    def list_workflows(self, limit: int = 50) -> list[WorkflowStatus]:
        """Sync twin of :meth:`alist_workflows`."""
        return run_sync(self.alist_workflows(limit))

    async def adead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """The newest messages workers could not use (oldest of them first), with reasons."""

        async def run(client: Client) -> list[DeadLetter]:
            return await (await client.store()).dead_letters(limit)

        return await self._on_client_loop(run, "list dead letters")

    def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """Sync twin of :meth:`adead_letters`."""
        return run_sync(self.adead_letters(limit))

    async def adead_letter(self, seq: int) -> DeadLetter:
        """One dead letter by its sequence (as listed by :meth:`adead_letters`).

        Raises:
            DFError: there is no dead letter ``seq`` (it never existed or has expired).
        """

        async def run(client: Client) -> DeadLetter:
            store = await client.store()
            letter = await store.dead_letter_at(seq)
            if letter is None:
                raise DFError(
                    f"there is no dead letter {seq} in {store.layout.dlq_stream}; "
                    f"{self.settings.advice.run('dlq list')} shows the ones kept"
                )
            return letter

        return await self._on_client_loop(run, f"read dead letter {seq}")

    def dead_letter(self, seq: int) -> DeadLetter:
        """Sync twin of :meth:`adead_letter`."""
        return run_sync(self.adead_letter(seq))

    # -- workers ----------------------------------------------------------------------------

    def worker(self, **options: Any) -> Worker:
        """A worker for this app; see :class:`dfcore.Worker` for the options."""
        from ._worker import Worker

        return Worker(self, **options)

    async def arun_worker(self, **options: Any) -> None:
        """Run a worker on the current loop until cancelled or SIGTERM/SIGINT."""
        await self.worker(**options).run(handle_signals=True)

    def run_worker(self, **options: Any) -> None:
        """Run a worker in the foreground until SIGTERM/SIGINT.

        It runs on uvloop where installed (``worker_event_loop`` setting): ``bench/burst.py``
        measured about 10% less worker CPU per workflow than asyncio's own loop.
        """
        with asyncio.Runner(loop_factory=_worker_loop_factory(self.settings)) as runner:
            runner.run(self.arun_worker(**options))


def _worker_loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None for asyncio's, as ``worker_event_loop`` says."""
    choice = settings.worker_event_loop
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigurationError(
                "worker_event_loop is 'uvloop' but uvloop is not installed; "
                "pip install uvloop, or set worker_event_loop to 'auto'"
            ) from None
        return None
    return uvloop.new_event_loop


def _register(registry: dict[str, Any], name: str, defn: Any, kind: str) -> None:
    existing = registry.get(name)
    if existing is not None and existing.fn is not defn.fn:
        where = f"{existing.fn.__module__}.{existing.fn.__qualname__}"
        raise RegistrationError(
            f"{kind} name {name!r} is already registered by {where}; "
            f"pass name='...' to @app.{kind} to give one of them another name"
        )
    registry[name] = defn


def _hashable_get(mapping: dict[Any, ActivityDefinition], key: Any) -> ActivityDefinition | None:
    try:
        return mapping.get(key)
    except TypeError:
        return None


__all__ = ["ActivityFunction", "App", "WorkflowFunction"]
