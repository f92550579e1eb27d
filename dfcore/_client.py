"""Starting and following workflows. The async methods are the implementation; each sync method
runs its async twin on the process's background loop (see ``_loopthread``)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, cast

from nats.aio.client import Client as NATS

from . import _history as h
from ._codec import JSONConverter, PayloadCodec, check_size, safe_encode
from ._config import Settings
from ._connection import close_connection, connect, is_unreachable
from ._convert import convert
from ._errors import (
    DFConnectionError,
    DFError,
    SerializationError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
)
from ._history import now_ms
from ._loopthread import SYNC_LOOP, run_sync
from ._naming import workflow_token
from ._outcomes import OutcomeWatcher
from ._store import HEADROOM, AppendConflict, Store

if TYPE_CHECKING:
    from ._app import App

R = TypeVar("R")
T = TypeVar("T")
IfExists = Literal["use_existing", "fail"]


class Client:
    """An App's connection and store on one event loop (created lazily, shared by callers).

    It is also the circuit breaker of the calls made through it. While NATS is unreachable a
    call waits at most ``connect_timeout`` seconds for it, counted from when the outage began,
    so once an outage has lasted that long every call fails at once with
    :class:`DFConnectionError`, and calls go through again as soon as the server is back:
    nats-py reconnects a dropped connection in the background, a first connect that failed is
    retried in the background every :attr:`RETRY_INTERVAL` seconds, and a server that keeps
    the connection open but stopped answering (a frozen process) is pinged as often.
    """

    RETRY_INTERVAL = 1.0
    """Seconds between background attempts at a first connect that failed, and between pings
    of a server that stopped answering."""

    def __init__(self, app: App) -> None:
        self.app = app
        self._store: Store | None = None
        self._opening: Store | None = None  # made, not yet ready: refusals still reach it
        self._outcomes: OutcomeWatcher | None = None
        self._guard: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[Store] | None = None
        self._failure: DFConnectionError | None = None  # why the last first connect failed
        self._down_since: float | None = None  # loop time the connection dropped
        self._up = asyncio.Event()
        self._silent_since: float | None = None  # loop time a call began that got no answer
        self._pinging: asyncio.Task[None] | None = None

    async def store(self) -> Store:
        """The store, connected.

        Raises:
            DFConnectionError: NATS cannot be reached (see the class docstring for how long
                this waits).
        """
        store = self._store
        if store is not None and store.nc.is_connected:
            if self._silent_since is not None:
                self._check_silence()
            return store
        if store is not None:
            return await self._reconnected(store)
        if self._failure is not None and self._connecting is not None:
            raise DFConnectionError(f"{self._failure} [{_FAILING_FAST}]")
        if self._connecting is None:
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add_done_callback(_consume)
        # Shielded: a caller that gives up does not abort the connect the others wait for.
        return await asyncio.shield(self._connecting)

    async def _connect(self) -> Store:
        try:
            store = await self._open()
        except DFConnectionError as exc:
            self._connecting, self._failure = None, exc
            if is_unreachable(exc):  # a refused login or TLS handshake is not retried
                self._retry_in_background()
            raise
        except BaseException:
            self._connecting = None
            raise
        self._connecting, self._store, self._failure = None, store, None
        self._up.set()
        self._outcomes = OutcomeWatcher(store)
        return store

    async def _open(self) -> Store:
        settings = self.app.settings
        nc = await connect(settings, f"dfcore-client:{self.app.name}", self)
        store = self._opening = Store(nc, settings, self.app.codec)
        try:
            await store.ensure()
        except BaseException:
            await close_connection(nc)
            raise
        finally:
            self._opening = None
        return store

    def _retry_in_background(self) -> None:
        if self._connecting is not None or self._store is not None:
            return

        async def retry() -> Store:
            await asyncio.sleep(self.RETRY_INTERVAL)
            return await self._connect()

        self._connecting = task = asyncio.get_running_loop().create_task(retry())
        task.add_done_callback(_consume)

    async def _reconnected(self, store: Store) -> Store:
        """Wait for a dropped connection to come back, within the outage's time."""
        loop = asyncio.get_running_loop()
        if self._down_since is None:  # dropped, and nats-py has not told us yet
            self._down_since = loop.time()
            self._up.clear()
        left = self._down_since + self.app.settings.connect_timeout - loop.time()
        if left > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._up.wait()
        if store.nc.is_connected:
            return store
        raise DFConnectionError(
            f"NATS at {self.app.settings.display_url} is unreachable: the connection dropped "
            f"{loop.time() - self._down_since:.1f}s ago and has not come back "
            f"[{_FAILING_FAST}]. {_UNREACHABLE_HINT}"
        )

    def _check_silence(self) -> None:
        """Fail at once if the connected server has not answered for ``connect_timeout``."""
        assert self._silent_since is not None
        settings = self.app.settings
        silent_for = asyncio.get_running_loop().time() - self._silent_since
        if silent_for >= settings.connect_timeout:
            raise DFConnectionError(
                f"NATS at {settings.display_url} is not answering: the connection is open, "
                f"but nothing has come back for {silent_for:.1f}s [{_FAILING_FAST}]. "
                f"{_UNREACHABLE_HINT}"
            )

    def _went_silent(self, since: float) -> None:
        """A call got no answer while connected: ping until the server answers again."""
        store = self._store
        if store is None or not store.nc.is_connected:
            return  # a dropped connection has its own wait (``_reconnected``)
        if self._silent_since is None:
            self._silent_since = since
        if self._pinging is not None:
            return

        async def ping() -> None:
            timeout = self.app.settings.connect_timeout
            while self._silent_since is not None:
                try:
                    await store.nc.flush(timeout=timeout)  # type: ignore[arg-type]  # float works
                except Exception:
                    await asyncio.sleep(self.RETRY_INTERVAL)
                else:
                    self._silent_since = None
            self._pinging = None

        self._pinging = asyncio.get_running_loop().create_task(ping())
        self._pinging.add_done_callback(_consume)

    async def bounded(
        self, call: Callable[[Client], Awaitable[T]], action: str, note: str = ""
    ) -> T:
        """``call(self)``, given up with DFConnectionError after ``connect_timeout`` seconds.

        Args:
            action: what the call does, for the message (``"signal workflow 'order-7'"``).
            note: what the caller should know when it was given up (whether to retry).
        """
        settings = self.app.settings
        began = asyncio.get_running_loop().time()
        timer = asyncio.timeout(settings.connect_timeout)
        try:
            async with timer:
                return await call(self)
        except TimeoutError:
            if not timer.expired():
                raise
            self._went_silent(began)
            raise DFConnectionError(
                f"could not {action}: no answer from NATS at {settings.display_url} within "
                f"{settings.connect_timeout}s (the connect_timeout). {note}{_UNREACHABLE_HINT}"
            ) from None

    def watch_loop(self) -> None:
        """Close the connection when its event loop shuts down.

        ``asyncio.run`` (and asgiref's ``async_to_sync``) cancel the tasks left on a loop
        before closing it; this task uses that moment to close the connection, so a loop
        per call does not leak a connection per call. The sync API's own loop lives as long as
        the process and is closed at exit.
        """
        loop = asyncio.get_running_loop()
        if SYNC_LOOP.owns(loop):
            return

        async def guard() -> None:
            try:
                await loop.create_future()  # until cancelled
            except asyncio.CancelledError:
                self.app._loop_ended(loop, self)
                await self.close()
                raise

        self._guard = loop.create_task(guard(), name="dfcore-connection-guard")

    # -- the connection's listener (``_connection.Listener``) -------------------------------

    def refused(self, subject: str) -> None:
        store = self._store or self._opening
        if store is not None:
            store.refused(subject)

    def connection_lost(self) -> None:
        if self._down_since is None:
            self._down_since = asyncio.get_running_loop().time()
        self._up.clear()
        if self._store is not None:
            self._store.connection_lost()

    async def reconnected(self) -> None:
        self._down_since = self._silent_since = None
        self._up.set()
        if self._store is not None:
            self._store.reconnected()
        if self._outcomes is not None:
            self._outcomes.recheck_all()  # outcomes published meanwhile were not delivered

    async def outcome(self, history_subject: str) -> h.Record:
        """Wait for the record that ended the workflow of ``history_subject``."""
        store = await self.store()
        assert self._outcomes is not None
        return await self._outcomes.wait(store.layout.status_for(history_subject))

    @property
    def nc(self) -> NATS | None:
        return self._store.nc if self._store else None

    async def close(self) -> None:
        for task in (self._connecting, self._pinging):
            if task is not None:
                task.cancel()
        self._connecting = self._pinging = None
        guard, self._guard = self._guard, None
        if guard is not None and guard is not asyncio.current_task():
            guard.cancel()
        outcomes, self._outcomes = self._outcomes, None
        if outcomes is not None:
            await outcomes.close()
        if self._store is not None:
            nc, self._store = self._store.nc, None
            await close_connection(nc)

    async def start(
        self, start: PreparedStart, *, if_exists: IfExists, result_hint: Any
    ) -> WorkflowHandle[Any]:
        """Append a prepared start record; a second start of the same id starts nothing."""
        store = await self.store()
        check_size(len(start.data) + HEADROOM, store.nc.max_payload, start.what)
        lay = store.layout
        subject = lay.history_subject(start.task_queue, start.workflow_id)
        token = workflow_token(start.workflow_id)
        try:
            await store.append(
                subject,
                {"t": h.WORKFLOW_STARTED},
                msg_id=f"{token}:start" if if_exists == "use_existing" else None,
                expected_seq=0,
                expected_subject=lay.history_any_queue(start.workflow_id),
                data=start.data,
            )
        except AppendConflict:
            started = await store.started_subject(start.workflow_id)
            if started is None:
                raise DFError(
                    f"workflow {start.workflow_id!r} was not started: its history already holds "
                    "a message that is not a workflow start (stray or forged; "
                    f"{store.settings.advice.run('dlq list')} shows it once a worker has seen "
                    "it), so nothing would run it. Start it "
                    "under another id, and see docs/security.md on who may publish."
                ) from None
            if if_exists == "fail":
                raise WorkflowAlreadyStartedError(start.workflow_id) from None
            subject = started
        return WorkflowHandle(self.app, start.workflow_id, subject=subject, result_hint=result_hint)


_FAILING_FAST = "calls fail at once until it answers again"
_UNREACHABLE_HINT = "Check that the NATS server is running and reachable from this process."


def _not_found(workflow_id: str, settings: Settings) -> WorkflowNotFoundError:
    setting = settings.advice.name("namespace")
    return WorkflowNotFoundError(workflow_id, settings.namespace, setting)


def _consume(task: asyncio.Task[Any]) -> None:
    """Retrieve a background connect's error: its callers were told, or none is waiting."""
    if not task.cancelled():
        task.exception()


class UnsentStarts:
    """The workflow starts this process committed to an outbox and has not sent yet.

    The outbox's publishing thread sends them moments after their commit. Until it has, a
    handle that does not find one of those workflows waits for the thread rather than raise
    :class:`WorkflowNotFoundError` for a workflow its own process has just started.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the parent's thread sends them

    def _reset(self) -> None:
        self._changed = threading.Condition()
        self._ids: collections.Counter[str] = collections.Counter()

    def add(self, workflow_ids: Iterable[str]) -> None:
        with self._changed:
            self._ids.update(workflow_ids)

    def discard(self, workflow_ids: Iterable[str]) -> None:
        """These were sent, or left to the relay: nobody should wait for them any longer."""
        with self._changed:
            self._ids.subtract(workflow_ids)
            self._ids += collections.Counter()  # drops the ids counted down to zero
            self._changed.notify_all()

    def holds(self, workflow_id: str) -> bool:
        return workflow_id in self._ids

    def wait(self, workflow_id: str, timeout: float) -> bool:
        """Block until ``workflow_id`` is no longer unsent; False after ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: workflow_id not in self._ids, timeout)


UNSENT = UnsentStarts()


@dataclass(frozen=True)
class PreparedStart:
    """A workflow start, encoded but not yet sent: what a transactional outbox stores.

    Made by :meth:`dfcore.App.prepare_start`, sent by :meth:`dfcore.App.publish_start`.
    Sending the same prepared start again (a relay retrying) starts the workflow once.

    Attributes:
        workflow_id: the id of the workflow it starts.
        workflow_type: the registered workflow name.
        task_queue: the queue whose workers run it.
        data: the encoded start record (the app's codec applied).
    """

    workflow_id: str
    workflow_type: str
    task_queue: str
    data: bytes

    @property
    def what(self) -> str:
        return f"the start of workflow {self.workflow_type!r}"


def prepare_start(
    codec: PayloadCodec,
    workflow: str,
    args: Sequence[Any],
    *,
    workflow_id: str | None,
    task_queue: str,
    execution_timeout: float | None,
    max_payload: int,
) -> PreparedStart:
    """Build and encode a start record (no I/O); an unserialisable argument is named."""
    body: dict[str, Any] = {
        "t": h.WORKFLOW_STARTED,
        "ts": now_ms(),
        "workflow": workflow,
        "args": list(args),
        "task_queue": task_queue,
        "run_id": uuid.uuid4().hex,
        "prev": 0,
    }
    if execution_timeout:
        body["execution_timeout"] = execution_timeout
    start = PreparedStart(workflow_id or str(uuid.uuid4()), workflow, task_queue, b"")
    converter = JSONConverter()
    try:
        raw = converter.dumps(body, what=start.what)
    except SerializationError:
        for i, arg in enumerate(body["args"], 1):
            converter.dumps(arg, what=f"argument {i} of workflow {workflow!r}")
        raise
    data = safe_encode(codec, raw, start.what)
    check_size(len(data) + HEADROOM, max_payload, start.what)
    return dataclasses.replace(start, data=data)


H = TypeVar("H", bound="WorkflowHandle[Any]")
P = ParamSpec("P")


def _client_call(
    action: str | None, note: str = ""
) -> Callable[
    [Callable[Concatenate[H, P], Coroutine[Any, Any, T]]],
    Callable[Concatenate[H, P], Coroutine[Any, Any, T]],
]:
    """Run a handle method where its App's connection lives (see ``App._on_client_loop``).

    Args:
        action: what the method does (``"signal workflow {id}"``, where ``{id}`` is the
            workflow id), for the error when it is given up after ``connect_timeout``; ``None``
            leaves the method unbounded.
        note: what the caller should know when it was given up.
    """

    def decorate(
        method: Callable[Concatenate[H, P], Coroutine[Any, Any, T]],
    ) -> Callable[Concatenate[H, P], Coroutine[Any, Any, T]]:
        @functools.wraps(method)
        async def run(handle: H, /, *args: P.args, **kwargs: P.kwargs) -> T:
            return await handle.app._on_client_loop(
                lambda _client: method(handle, *args, **kwargs),
                action and action.format(id=repr(handle.workflow_id)),
                note,
            )

        return run

    return decorate


@dataclass(frozen=True)
class WorkflowStatus:
    """Where a workflow stands (``handle.status()``)."""

    workflow_id: str
    workflow_type: str | None
    status: str  # "running", "failing", "completed", "failed", "cancelled", "timed_out"
    last_event_time: datetime | None
    failure: str | None = None
    """``"Type: message"``: while ``status`` is ``"failing"``, the error the workflow keeps
    hitting; once it is ``"failed"`` or ``"timed_out"``, the error that ended it."""


def status_of(
    workflow_id: str, kind: str | None, last: h.Record, ended: h.Record | None
) -> WorkflowStatus:
    """A workflow's status from the last record of its history and its outcome, if any.

    A workflow whose history ends with a ``WorkflowTaskFailed`` note is ``"failing"``: its
    code raised a bug (or no longer matches its history), and the step is being retried.
    """
    status = h.terminal_status(ended.commands) if ended is not None else None
    failure = None
    if status is None and last.type == h.WORKFLOW_TASK_FAILED:
        error = last.body.get("error") or {}
        status, failure = "failing", f"{error.get('type')}: {error.get('message')}"
    elif status in ("failed", "timed_out") and ended is not None:
        ending = next((cmd for cmd in ended.commands if cmd.get("error")), None)
        if ending is not None:
            failure = f"{ending['error'].get('type')}: {ending['error'].get('message')}"
    when = datetime.fromtimestamp(last.time_ms / 1000, tz=UTC) if last.time_ms else None
    return WorkflowStatus(workflow_id, kind, status or "running", when, failure)


class WorkflowHandle(Generic[R]):
    """A reference to a workflow by id: wait for its result, inspect, signal or cancel it.

    Every method has a sync form and an async twin (``result`` / ``aresult``...).

    Args:
        app: the App whose connection the calls use.
        workflow_id: the workflow's id.
        subject: its history subject, when known.
        result_hint: the type :meth:`result` converts the result to.
    """

    def __init__(
        self,
        app: App,
        workflow_id: str,
        *,
        subject: str | None = None,
        result_hint: Any = None,
    ) -> None:
        self.app = app
        self.workflow_id = workflow_id
        self._subject = subject
        self._result_hint = result_hint

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.workflow_id!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkflowHandle) and other.workflow_id == self.workflow_id

    def __hash__(self) -> int:
        return hash(self.workflow_id)

    async def _locate(self) -> tuple[Store, str]:
        store = await self.app._client().store()
        if self._subject is None:
            subjects = store.layout.history_any_queue(self.workflow_id)
            found = await store.last_subject(subjects)
            if found is None and UNSENT.holds(self.workflow_id):
                # Committed to an outbox moments ago: wait for the thread that sends it, for
                # half the call's time at most (the look that follows needs some).
                timeout = store.settings.connect_timeout / 2
                await asyncio.to_thread(UNSENT.wait, self.workflow_id, timeout)
                found = await store.last_subject(subjects)
            if found is None:
                raise _not_found(self.workflow_id, store.settings)
            self._subject = found
        return store, self._subject

    # -- result -----------------------------------------------------------------------------

    @_client_call(None)  # waiting is what it is for; finding the workflow is bounded
    async def aresult(self, timeout: float | None = None) -> R:
        """Wait for the workflow to finish and return its result.

        Raises:
            WorkflowFailureError: it failed, timed out or was cancelled.
            TimeoutError: it did not finish within ``timeout`` seconds.
        """
        client = self.app._client()
        _, subject = await client.bounded(
            lambda _: self._locate(), f"find workflow {self.workflow_id!r}"
        )
        try:
            async with asyncio.timeout(timeout):
                ended = await client.outcome(subject)  # always a terminal decision
        except TimeoutError:
            raise TimeoutError(
                f"workflow {self.workflow_id!r} did not finish within {timeout}s "
                "(it keeps running; call result() again to keep waiting)"
            ) from None
        return cast(R, self._outcome(ended)())

    def result(self, timeout: float | None = None) -> R:
        """Sync twin of :meth:`aresult`."""
        return run_sync(self.aresult(timeout))

    def _outcome(self, record: h.Record) -> Any:
        """A thunk returning the result (or raising the failure) if ``record`` ends the run."""
        for cmd in record.commands:
            kind = cmd["t"]
            if kind == h.WORKFLOW_COMPLETED:
                return lambda: convert(cmd.get("result"), self._result_hint)
            if kind in h.TERMINAL_STATUS:
                error = cmd.get("error") or {}
                failure = WorkflowFailureError(
                    self.workflow_id,
                    h.TERMINAL_STATUS[kind],
                    error.get("type"),
                    error.get("message", "cancelled" if kind == h.WORKFLOW_CANCELLED else ""),
                )

                def fail(failure: WorkflowFailureError = failure) -> Any:
                    raise failure

                return fail
        return None

    # -- inspection -------------------------------------------------------------------------

    @_client_call("read the status of workflow {id}")
    async def astatus(self) -> WorkflowStatus:
        """The workflow's status, read from the last record of its history."""
        store, subject = await self._locate()
        last, ended, first = await asyncio.gather(
            store.last_readable(subject), store.outcome(subject), store.first(subject)
        )
        if last is None:
            raise _not_found(self.workflow_id, store.settings)
        kind = str(first.body.get("workflow")) if first is not None else None
        return status_of(self.workflow_id, kind, last, ended)

    def status(self) -> WorkflowStatus:
        """Sync twin of :meth:`astatus`."""
        return run_sync(self.astatus())

    @_client_call("read the history of workflow {id}")
    async def ahistory(self) -> list[h.HistoryEvent]:
        """Every event of the workflow, in order (decisions expanded into their commands)."""
        store, subject = await self._locate()
        return h.flatten(await store.load(subject))

    def history(self) -> list[h.HistoryEvent]:
        """Sync twin of :meth:`ahistory`."""
        return run_sync(self.ahistory())

    # -- interaction ------------------------------------------------------------------------

    @_client_call(
        "signal workflow {id}",
        "The signal may have been delivered: send it again with the same signal_id to have it "
        "delivered once. ",
    )
    async def asignal(
        self, name: str, payload: Any = None, *, signal_id: str | None = None
    ) -> None:
        """Deliver a signal; the workflow receives it with ``await ctx.wait_signal(name)``.

        ``signal_id`` makes a retried send idempotent (within the dedup window).
        """
        store, subject = await self._locate()
        last = await self._ensure_open(store, subject, "signal")
        body = {"t": h.SIGNAL_RECEIVED, "ts": now_ms(), "name": name, "payload": payload}
        msg_id = f"{workflow_token(self.workflow_id)}:signal:{signal_id or uuid.uuid4().hex}"
        await store.append_fact(subject, body, msg_id=msg_id, after_seq=last)

    def signal(self, name: str, payload: Any = None, *, signal_id: str | None = None) -> None:
        """Sync twin of :meth:`asignal`."""
        run_sync(self.asignal(name, payload, signal_id=signal_id))

    @_client_call("cancel workflow {id}", "Cancelling it again is safe. ")
    async def acancel(self, reason: str = "") -> None:
        """Request cancellation: the workflow sees ``CancelledError`` at its next await."""
        store, subject = await self._locate()
        last = await self._ensure_open(store, subject, "cancel")
        body = {"t": h.CANCEL_REQUESTED, "ts": now_ms(), "reason": reason}
        msg_id = f"{workflow_token(self.workflow_id)}:cancel"
        await store.append_fact(subject, body, msg_id=msg_id, after_seq=last)

    def cancel(self, reason: str = "") -> None:
        """Sync twin of :meth:`acancel`."""
        run_sync(self.acancel(reason))

    async def _ensure_open(self, store: Store, subject: str, action: str) -> int:
        """The history's last sequence; raises if the workflow already ended."""
        last, ended = await asyncio.gather(store.last_seq(subject), store.outcome(subject))
        if last == 0:
            raise _not_found(self.workflow_id, store.settings)
        if ended is not None and (status := h.terminal_status(ended.commands)):
            raise DFError(
                f"cannot {action} workflow {self.workflow_id!r}: it already ended ({status}); "
                "its outcome is final, so start a new workflow to act again"
            )
        return last
