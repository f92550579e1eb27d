"""The ``DurableFuture`` Flask extension."""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from flask import Flask, current_app

from dfcore import Advice, App, ConfigurationError, Settings, WorkflowFunction, WorkflowHandle
from dfcore.activity import ActivityInfo

from .config import FlaskSettings, read_config, set_defaults

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from dfcore.outbox import OutboxRelay

P = ParamSpec("P")
R = TypeVar("R")

EXTENSION = "dfcore"

#: What DurableFuture's messages suggest in a Flask app.
ADVICE = Advice(command="flask df {}", setting="DF_{upper} in the Flask config", web="flask run")


@dataclass
class DFState:
    """What the extension keeps per Flask app, in ``app.extensions["dfcore"]``.

    Attributes:
        extension: the :class:`DurableFuture` registered on the app.
        app: the DurableFuture App this Flask app starts workflows on and runs workers for.
        settings: the app's ``DF_*`` config, validated.
    """

    extension: DurableFuture
    app: App
    settings: FlaskSettings
    _outbox_engine: Engine | None = None

    def outbox_engines(self) -> list[Engine]:
        """The database whose outbox the relay watches, if there is one (see
        ``DF_OUTBOX_DATABASE_URI``). Call inside the app context."""
        engine = self._outbox_engine or _configured_engine(self.settings.outbox_database_uri)
        if engine is None:
            return []
        self._outbox_engine = engine
        return [engine]

    def make_relay(self) -> OutboxRelay:
        """A relay over :meth:`outbox_engines`, timed by the ``DF_RELAY_*`` config."""
        from .outbox import make_relay

        return make_relay(self.app, self.outbox_engines(), self.settings.outbox)

    def start_relay(self, stop: threading.Event) -> bool:
        """Relay on a background thread until ``stop`` is set, if there is an outbox database
        with the outbox tables (a missing table is logged); return whether it started."""
        engines = self.outbox_engines()
        if not engines:
            return False  # nothing to relay (and SQLAlchemy may not even be installed)
        from .outbox import make_relay, relayable

        engines = relayable(engines)
        if engines:
            make_relay(self.app, engines, self.settings.outbox).start_thread(stop)
        return bool(engines)


class DurableFuture:
    """Durable workflows for a Flask app: ``df = DurableFuture(app)``, or ``DurableFuture()``
    then ``df.init_app(app)`` in an app factory.

    Define workflows and activities with ``@df.workflow`` and ``@df.activity``. Each Flask app
    the extension is registered on gets its own :class:`dfcore.App` configured from that app's
    config; ``order.start(...)`` uses the current app's (inside a request, a CLI command or an
    ``app.app_context()``). Activities run inside ``app.app_context()``.

    Configuration keys, each ``setdefault`` on ``app.config`` by :meth:`init_app` (a core
    setting's default comes from the ``DF_*`` environment variable when one is set):

    ``DF_NATS_URL``
        NATS server URL(s), comma-separated. Default ``nats://127.0.0.1:4222``.
    ``DF_NAMESPACE``
        Prefix of every stream and subject; apps sharing a server use different ones.
        Default ``df``.
    ``DF_TASK_QUEUE``
        The queue starts go to and workers poll. Default ``default``.
    ``DF_CONNECT_TIMEOUT``, ``DF_ACTIVITY_CONCURRENCY``, ``DF_WORKFLOW_CONCURRENCY``,
    ``DF_WORKFLOW_CACHE_SIZE``, ``DF_ACTIVITY_ACK_WAIT``, ``DF_WORKFLOW_ACK_WAIT``,
    ``DF_STREAM_REPLICAS``, ``DF_WORKER_EVENT_LOOP``, ``DF_WORKER_GC_THRESHOLD``,
    ``DF_STORAGE``, ``DF_CODEC``, ``DF_DEFAULT_ACTIVITY_TIMEOUT``, ``DF_HISTORY_RETENTION``
        The other core settings; see :class:`dfcore.Settings`.
    ``DF_SCHEDULES``
        Schedules by id, each a dict such as ``{"workflow": "report", "cron": "0 3 * * *",
        "timezone": "Europe/Berlin"}``; workers create them (``docs/schedules.md``).
    ``DF_NATS_TOKEN``, ``DF_NATS_USER``, ``DF_NATS_PASSWORD``, ``DF_NATS_NKEY_SEED``,
    ``DF_NATS_NKEY_SEED_FILE``, ``DF_NATS_CREDS_FILE``, ``DF_NATS_TLS_CA_FILE``,
    ``DF_NATS_TLS_CERT_FILE``, ``DF_NATS_TLS_KEY_FILE``, ``DF_NATS_TLS_HOSTNAME``
        NATS authentication and TLS, default ``None``; see ``docs/security.md``.
    ``DF_OUTBOX_DATABASE_URI``
        The database of the outbox the relay watches: a SQLAlchemy URL or Engine. Default
        ``None``: Flask-SQLAlchemy's default engine, if the app uses Flask-SQLAlchemy.
    ``DF_WORKER_RELAY``
        Run the outbox relay inside ``flask df worker``. Default ``True``.
    ``DF_PUBLISH_ON_COMMIT``
        Publish an outbox row right after its transaction commits. Default ``True``.
    ``DF_RELAY_INTERVAL``
        Seconds between relay passes. Default ``1.0``.
    ``DF_RELAY_MIN_AGE``
        A relay pass leaves rows younger than this to their commit's fast path. Default ``2.0``.
    ``DF_OUTBOX_RETENTION``
        Seconds published outbox rows are kept; ``None`` keeps them. Default 7 days.

    A ``DF_*`` key that is none of these (a typo) raises :class:`dfcore.ConfigurationError`.

    Args:
        app: the Flask app, or ``None`` to call :meth:`init_app` later.
        dfapp: an App of your own whose workflows and activities to serve (usable with plain
            ``dfcore worker`` too). It is configured from the Flask config by :meth:`init_app`, so
            every Flask app it is registered on must give it the same settings; for several
            apps with different settings, use ``@df.workflow`` instead.
    """

    def __init__(self, app: Flask | None = None, *, dfapp: App | None = None) -> None:
        # Registers what @df.workflow and @df.activity define; each Flask app gets an App of
        # its own over the same registry, with a client configured from its config.
        self._base = dfapp or App("flask")
        self._wraps_app = dfapp is not None
        self._bound: weakref.WeakValueDictionary[int, Flask] = weakref.WeakValueDictionary()
        #: Register an activity: ``@df.activity`` or ``@df.activity(retry=..., timeout=...)``.
        self.activity = self._base.activity
        #: Declare a schedule of a workflow, above ``@df.workflow``:
        #: ``@df.schedule("nightly", cron="0 3 * * *", timezone="Europe/Berlin")``.
        self.schedule = self._base.schedule
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<DurableFuture on {self._base!r}>"

    # -- registration -----------------------------------------------------------------------

    @overload
    def workflow(self, fn: Callable[..., Any]) -> FlaskWorkflow[..., Any]: ...
    @overload
    def workflow(
        self,
        *,
        name: str | None = None,
        task_queue: str | None = None,
        execution_timeout: float | None = None,
    ) -> Callable[[Callable[..., Any]], FlaskWorkflow[..., Any]]: ...
    def workflow(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        task_queue: str | None = None,
        execution_timeout: float | None = None,
    ) -> Any:
        """Register a workflow: ``@df.workflow`` or ``@df.workflow(name=..., task_queue=...)``.

        The result starts on the current Flask app's App: ``order.start(...)``,
        ``await order.astart(...)``, ``order.delay(...)``.
        """
        register = self._base.workflow(
            name=name, task_queue=task_queue, execution_timeout=execution_timeout
        )

        def bind(fn: Callable[..., Any]) -> FlaskWorkflow[..., Any]:
            return FlaskWorkflow(self, register(fn))

        return bind(fn) if fn is not None else bind

    # -- Flask apps -------------------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Register on a Flask app: read and validate its ``DF_*`` config, add ``flask df``.

        Raises:
            RuntimeError: a DurableFuture extension is already registered on this app.
            ConfigurationError: a ``DF_*`` key is unknown or has an invalid value.
        """
        if EXTENSION in app.extensions:
            raise RuntimeError(
                f"A DurableFuture extension is already registered on the Flask app "
                f"{app.name!r}; import and use that instance instead of registering another"
            )
        where = f"the config of Flask app {app.name!r}"
        set_defaults(app.config, Settings.from_environment())
        settings = read_config(app.config, where)
        dfapp = self._base if self._wraps_app else App(app.name, registry=self._base.registry)
        if self._wraps_app:
            self._configure_shared(app, dfapp, where)
        else:
            dfapp.config_from_object(app.config, namespace="DF", source=where, advice=ADVICE)
        _enter_app_context(dfapp, app)
        app.extensions[EXTENSION] = DFState(self, dfapp, settings)
        self._bound[id(app)] = app

        from .cli import df_group

        app.cli.add_command(df_group)

    def _configure_shared(self, app: Flask, dfapp: App, where: str) -> None:
        """Configure the user's App from ``app``: fine when it is new to the extension or the
        other Flask apps it serves give the same settings, an error otherwise."""
        others = [other for other in self._bound.values() if EXTENSION in other.extensions]
        before = dfapp.settings
        dfapp.config_from_object(app.config, namespace="DF", source=where, advice=ADVICE)
        if not others or dfapp.settings == before:
            return
        other = others[-1]
        dfapp.config_from_object(
            other.config, namespace="DF", source=f"Flask app {other.name!r}", advice=ADVICE
        )
        raise ConfigurationError(
            f"the App {dfapp.name!r} is already configured by Flask app {other.name!r} with "
            f"other DF_* settings than Flask app {app.name!r}'s; an App has one set of "
            "settings. Give both apps the same DF_* config, or define workflows with "
            "@df.workflow on DurableFuture() without dfapp=, so each Flask app gets its own App"
        )

    def get_state(self, app: Flask | None = None) -> DFState:
        """The extension's state on ``app`` (default: the current app).

        Raises:
            RuntimeError: no app is given and there is no application context, or the
                extension is not registered on the app.
        """
        if app is None:
            if not current_app:
                raise RuntimeError(
                    "DurableFuture needs a Flask application to pick its settings: call this "
                    "inside a request or a `flask` command, or inside `with app.app_context():`"
                )
            app = current_app._get_current_object()  # type: ignore[attr-defined]
        state = app.extensions.get(EXTENSION)
        if state is None or state.extension is not self:
            raise RuntimeError(
                f"this DurableFuture extension is not registered on the Flask app {app.name!r}; "
                "call df.init_app(app) in your app factory"
            )
        return state  # type: ignore[no-any-return]

    def get_app(self, app: Flask | None = None) -> App:
        """The :class:`dfcore.App` of ``app`` (default: the current Flask app)."""
        return self.get_state(app).app

    # -- starting ---------------------------------------------------------------------------

    def start_in_transaction(
        self,
        session: Any,
        workflow: WorkflowFunction[..., R] | str,
        *args: Any,
        workflow_id: str | None = None,
        task_queue: str | None = None,
        execution_timeout: float | None = None,
    ) -> WorkflowHandle[R]:
        """Start a workflow if and only if ``session``'s transaction commits (the outbox).

        Adds an outbox row to the session (``db.session`` with Flask-SQLAlchemy) and returns
        the handle at once. After the commit the start is published; if the process dies
        first, the relay publishes it; a rollback starts nothing.

        Args:
            session: a SQLAlchemy ``Session`` or ``scoped_session``.
            workflow: the workflow, or its registered name.
            *args: the workflow's arguments; checked now, so a bad one fails before commit.
            workflow_id: the id (a new UUID if omitted); starting an id twice runs it once.
            task_queue: the queue whose workers run it.
            execution_timeout: fail the workflow if it runs longer than this many seconds.

        Raises:
            SerializationError: an argument cannot be encoded.
            PayloadTooLargeError: the arguments are too large for the server.
        """
        from .outbox import start_in_transaction

        state = self.get_state()
        return start_in_transaction(
            session,
            state.app,
            workflow,
            *args,
            workflow_id=workflow_id,
            task_queue=task_queue,
            execution_timeout=execution_timeout,
            settings=state.settings.outbox,
        )


class FlaskWorkflow(WorkflowFunction[P, R]):
    """A workflow registered with ``@df.workflow``: it starts on the current Flask app's App."""

    def __init__(self, extension: DurableFuture, registered: WorkflowFunction[P, R]) -> None:
        super().__init__(registered.app, registered.definition)
        self._extension = extension

    @property
    def app(self) -> App:
        return self._extension.get_app()


class _FlaskAppContext:
    """Enters a Flask app's context around each activity (``current_app``, ``g``, the config,
    Flask-SQLAlchemy's session, which it removes afterwards)."""

    def __init__(self, app: Flask) -> None:
        self.app = weakref.ref(app)

    @contextlib.contextmanager
    def __call__(self, info: ActivityInfo) -> Iterator[None]:
        app = self.app()
        if app is None:  # the Flask app is gone; nothing to enter
            yield
            return
        with app.app_context():
            yield


def _enter_app_context(dfapp: App, app: Flask) -> None:
    # With a shared App (dfapp=), the latest Flask app registered provides the context.
    dfapp.activity_contexts[:] = [
        ctx for ctx in dfapp.activity_contexts if not isinstance(ctx, _FlaskAppContext)
    ]
    dfapp.add_activity_context(_FlaskAppContext(app))


def _configured_engine(uri: object | None) -> Engine | None:
    """The outbox engine: the configured URL or Engine, else Flask-SQLAlchemy's engine."""
    if uri is None:
        sqlalchemy_ext = current_app.extensions.get("sqlalchemy")
        return getattr(sqlalchemy_ext, "engine", None)
    from sqlalchemy import Engine, create_engine

    return uri if isinstance(uri, Engine) else create_engine(str(uri))
