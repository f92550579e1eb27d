"""``AsyncResult``: a task's state and result, read from its workflow."""

from __future__ import annotations

import builtins
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dfcore import (
    EventType,
    HistoryEvent,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowNotFoundError,
    WorkflowStatus,
)

from . import states
from ._task import traceback_in
from .exceptions import TimeoutError, rebuild

if TYPE_CHECKING:
    from ._app import Celery


class AsyncResult:
    """The result of a task call, by its id: ``AsyncResult(task_id)`` or what ``delay`` returns.

    Every property and method reads the task's workflow; the async twins (``aget``,
    ``astate``, ``arevoke``) do the same from async code.
    """

    def __init__(self, id: str, app: Celery | None = None, **_: Any) -> None:
        from ._app import current_app

        self.id = id
        self.task_id = id
        self.app = app or current_app()

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def _handle(self) -> WorkflowHandle[Any]:
        return self.app.df_app.get_handle(self.id)

    # -- the result -------------------------------------------------------------------------

    def get(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:
        """Wait for the task and return its result; its exception is raised (``propagate``)
        or returned.

        Raises:
            TimeoutError: it did not finish within ``timeout`` seconds (it goes on).
        """
        return _outcome(lambda: self._handle.result(timeout=timeout), timeout, propagate)

    async def aget(self, timeout: float | None = None, propagate: bool = True, **_: Any) -> Any:
        """Async twin of :meth:`get`."""
        try:
            value = await self._handle.aresult(timeout=timeout)
        except (WorkflowNotFoundError, builtins.TimeoutError, WorkflowFailureError) as exc:
            return _outcome(_raise(exc), timeout, propagate)
        return value

    @property
    def state(self) -> str:
        """PENDING, STARTED, RETRY, SUCCESS, FAILURE or REVOKED."""
        handle = self._handle
        try:
            status = handle.status()
        except WorkflowNotFoundError:
            return states.PENDING
        return _state(status, handle.history)

    status = state

    async def astate(self) -> str:
        """Async twin of :attr:`state`."""
        handle = self._handle
        try:
            status = await handle.astatus()
        except WorkflowNotFoundError:
            return states.PENDING
        history = await handle.ahistory() if status.status in ("running", "failing") else []
        return _state(status, lambda: history)

    def ready(self) -> bool:
        """Whether the task has finished (succeeded, failed or was revoked)."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    @property
    def result(self) -> Any:
        """The return value once it succeeded, its exception once it failed, else None."""
        return self.get(propagate=False) if self.ready() else None

    @property
    def traceback(self) -> str | None:
        """The traceback of the task's last failed attempt, if there is one."""
        for event in reversed(self._handle.history()):
            if event.type == EventType.ACTIVITY_FAILED:
                error = event.attributes.get("error") or {}
                return traceback_in(error.get("details")) or error.get("traceback") or None
        return None

    # -- control ----------------------------------------------------------------------------

    def revoke(self, terminate: bool = False, **_: Any) -> None:
        """Revoke the task: it does not run if it has not started, and a running attempt is
        asked to stop at its next heartbeat."""
        try:
            self._handle.cancel("revoked")
        except WorkflowNotFoundError:
            pass

    async def arevoke(self, terminate: bool = False, **_: Any) -> None:
        """Async twin of :meth:`revoke`."""
        try:
            await self._handle.acancel("revoked")
        except WorkflowNotFoundError:
            pass

    def forget(self) -> None:
        """Results are kept for ``history_retention``, then removed: nothing to do here."""


_ATTEMPT_EVENTS = (
    EventType.ACTIVITY_SCHEDULED,
    EventType.ACTIVITY_COMPLETED,
    EventType.ACTIVITY_FAILED,
)


def _state(status: WorkflowStatus, history: Callable[[], list[HistoryEvent]]) -> str:
    if status.status == "completed":
        return states.SUCCESS
    if status.status == "cancelled":
        return states.REVOKED
    if status.status in ("failed", "timed_out"):
        revoked = (status.failure or "").startswith("TaskRevokedError")
        return states.REVOKED if revoked else states.FAILURE
    kinds = [event.type for event in history() if event.type in _ATTEMPT_EVENTS]
    if not kinds:
        return states.PENDING  # waiting out its countdown, or for a worker
    return states.RETRY if kinds[-1] == EventType.ACTIVITY_FAILED else states.STARTED


def _raise(exc: BaseException) -> Callable[[], Any]:
    def again() -> Any:
        raise exc

    return again


def _outcome(wait: Callable[[], Any], timeout: float | None, propagate: bool) -> Any:
    try:
        return wait()
    except WorkflowNotFoundError:
        if timeout is not None:  # not sent yet, or no such task: PENDING, as in Celery
            raise TimeoutError("The operation timed out.") from None
        raise
    except builtins.TimeoutError as exc:
        raise TimeoutError("The operation timed out.") from exc
    except WorkflowFailureError as exc:
        error = (
            rebuild("TaskRevokedError", "the task was revoked")
            if exc.status == "cancelled"
            else rebuild(exc.cause_type, exc.cause_message)
        )
        if propagate:
            raise error from None
        return error
