"""Handles: follow a workflow by id (its result, status and history), signal or cancel it."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, cast

from dfcore.client._loop_client import LoopClient
from dfcore.client._loopthread import run_sync
from dfcore.client._start import UNSENT
from dfcore.client._storage import ClientStore
from dfcore.core import _history as h
from dfcore.core._config import Settings
from dfcore.core._convert import convert
from dfcore.core._errors import DFError, WorkflowFailureError, WorkflowNotFoundError
from dfcore.core._facts import CancelRequested, SignalReceived, run_of
from dfcore.core._replay import export_history
from dfcore.jetstream._naming import workflow_token

R = TypeVar("R")
T = TypeVar("T")


class HandleClient(Protocol):
    """What a handle uses of the :class:`~dfcore.client._client.Client` that made it."""

    def loop_client(self) -> LoopClient: ...

    async def store(self) -> ClientStore: ...

    async def call(
        self, call: Callable[[LoopClient], Awaitable[T]], action: str | None, note: str = ""
    ) -> T: ...


H = TypeVar("H", bound="WorkflowHandle[Any]")
P = ParamSpec("P")


def _client_call(
    action: str | None, note: str = ""
) -> Callable[
    [Callable[Concatenate[H, P], Coroutine[Any, Any, T]]],
    Callable[Concatenate[H, P], Coroutine[Any, Any, T]],
]:
    """Run a handle method where its client's connection lives (see ``Client.call``).

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
            return await handle.client.call(
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
    run: int | None = None
    """The current run: 1, and 2 and on once the workflow continued as new (``None`` in
    listings, which do not read it)."""


def status_of(
    workflow_id: str,
    kind: str | None,
    last: h.Record,
    ended: h.Record | None,
    run: int | None = None,
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
    return WorkflowStatus(workflow_id, kind, status or "running", when, failure, run)


class WorkflowHandle(Generic[R]):
    """A reference to a workflow by id: wait for its result, inspect, signal or cancel it.

    Every method has a sync form and an async twin (``result`` / ``aresult``...).

    Args:
        client: the client whose connection the calls use.
        workflow_id: the workflow's id.
        subject: its history subject, when known.
        result_hint: the type :meth:`result` converts the result to.
    """

    def __init__(
        self,
        client: HandleClient,
        workflow_id: str,
        *,
        subject: str | None = None,
        result_hint: Any = None,
    ) -> None:
        self.client = client
        self.workflow_id = workflow_id
        self._subject = subject
        self._result_hint = result_hint

    def __repr__(self) -> str:
        return f"<WorkflowHandle {self.workflow_id!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorkflowHandle) and other.workflow_id == self.workflow_id

    def __hash__(self) -> int:
        return hash(self.workflow_id)

    async def _locate(self) -> tuple[ClientStore, str]:
        store = await self.client.store()
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
        client = self.client.loop_client()
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
        run = run_of(first.body) if first is not None else 1
        return status_of(self.workflow_id, kind, last, ended, run)

    def status(self) -> WorkflowStatus:
        """Sync twin of :meth:`astatus`."""
        return run_sync(self.astatus())

    @_client_call("read the history of workflow {id}")
    async def ahistory(self, run: int | None = None) -> list[h.HistoryEvent]:
        """Every event of the workflow's current run, in order (decisions expanded into their
        commands); of its earlier run ``run`` if it continued as new (``status().run`` says
        which run is current).

        Raises:
            WorkflowNotFoundError: no such workflow, or no such run (never made, or removed
                after ``history_retention``).
        """
        return h.flatten(await self._records(run))

    def history(self, run: int | None = None) -> list[h.HistoryEvent]:
        """Sync twin of :meth:`ahistory`."""
        return run_sync(self.ahistory(run))

    async def awatch_history(self) -> AsyncGenerator[list[h.HistoryEvent], None]:
        """The events of the workflow's current run, then each batch of new ones as they
        are appended: ``async for events in handle.awatch_history()``.

        Indexes go on from batch to batch. A batch that starts again at index 1 (with a
        ``WorkflowStarted``) is a fresh history, the next run of a workflow that continued
        as new: replace what came before. Use it on a long-lived event loop, and close the
        generator (``aclose()``) when done.
        """
        store, subject = await self._locate()
        follower = await store.follow(subject)  # before the first read: nothing falls between
        try:
            records = await store.load(subject)
            count = len(h.flatten(records))
            yield h.flatten(records)
            while True:
                await follower.wait()
                last = records[-1].seq if records else 0
                new = await store.load(subject, after_seq=last)
                if not new:
                    continue
                if any(r.type == h.WORKFLOW_STARTED for r in new):  # a next run: start again
                    records = await store.load(subject)
                    fresh = h.flatten(records)
                    count = len(fresh)
                    yield fresh
                    continue
                records += new
                more = [dataclasses.replace(e, index=e.index + count) for e in h.flatten(new)]
                count += len(more)
                yield more
        finally:
            await follower.close()

    def watch_history(self) -> Iterator[list[h.HistoryEvent]]:
        """Sync twin of :meth:`awatch_history`: an iterator that blocks for each batch."""
        events = self.awatch_history()

        async def step() -> list[h.HistoryEvent]:
            return await anext(events)

        try:
            while True:
                yield run_sync(step())
        finally:
            run_sync(events.aclose())

    async def aexport(self, run: int | None = None) -> dict[str, Any]:
        """The workflow's history as JSON-ready data, every record as stored (decoded); of
        its earlier run ``run`` when given.

        What ``dfcore workflow show ID --json`` prints and ``dfcore workflow replay`` (or
        :func:`dfcore.testing.replay`) replays against changed code.
        """
        records = await self._records(run)
        store = await self.client.store()
        return export_history(self.workflow_id, store.settings.namespace, records)

    def export(self, run: int | None = None) -> dict[str, Any]:
        """Sync twin of :meth:`aexport`."""
        return run_sync(self.aexport(run))

    async def _records(self, run: int | None) -> list[h.Record]:
        store, subject = await self._locate()
        records = await store.load(subject)
        if run is None or (records and run_of(records[0].body) == run):
            return records
        kept = await store.runs.load(subject, run) if isinstance(run, int) and run > 0 else None
        if kept is None:
            current = run_of(records[0].body) if records else 1
            raise WorkflowNotFoundError(
                self.workflow_id,
                store.settings.namespace,
                detail=f"workflow {self.workflow_id!r} has no run {run!r} to show: its runs "
                f"are 1 to {current} (the current one), and earlier runs are kept for "
                "history_retention after they ended",
            )
        return kept

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
        fact = SignalReceived(name, payload)
        msg_id = f"{workflow_token(self.workflow_id)}:signal:{signal_id or uuid.uuid4().hex}"
        await store.append_fact(subject, fact.to_wire(), msg_id=msg_id, after_seq=last)

    def signal(self, name: str, payload: Any = None, *, signal_id: str | None = None) -> None:
        """Sync twin of :meth:`asignal`."""
        run_sync(self.asignal(name, payload, signal_id=signal_id))

    @_client_call("cancel workflow {id}", "Cancelling it again is safe. ")
    async def acancel(self, reason: str = "") -> None:
        """Request cancellation: the workflow sees ``CancelledError`` at its next await."""
        store, subject = await self._locate()
        last = await self._ensure_open(store, subject, "cancel")
        fact = CancelRequested(reason)
        msg_id = f"{workflow_token(self.workflow_id)}:cancel"
        await store.append_fact(subject, fact.to_wire(), msg_id=msg_id, after_seq=last)

    def cancel(self, reason: str = "") -> None:
        """Sync twin of :meth:`acancel`."""
        run_sync(self.acancel(reason))

    async def _ensure_open(self, store: ClientStore, subject: str, action: str) -> int:
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


def _not_found(workflow_id: str, settings: Settings) -> WorkflowNotFoundError:
    setting = settings.advice.name("namespace")
    return WorkflowNotFoundError(workflow_id, settings.namespace, setting)
