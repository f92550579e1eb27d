"""``ctx``: what workflow code uses to do anything durable."""

from __future__ import annotations

import asyncio
import logging
import random as _random
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeVar, overload

from dfcore.core._children import ChildWorkflowHandle
from dfcore.core._definitions import ActivityOptions, RetryPolicy
from dfcore.core._engine import WorkflowRun
from dfcore.core._errors import outside_workflow
from dfcore.core._logfields import log_fields

_T = TypeVar("_T")

_log = logging.getLogger("dfcore.workflow")


@dataclass(frozen=True)
class WorkflowInfo:
    """Facts about the running workflow (``ctx.info``)."""

    workflow_id: str
    workflow_type: str
    run_id: str
    task_queue: str
    namespace: str
    attempt: int  # always 1: a workflow is not retried as a whole, its activities are
    start_time: datetime
    run: int = 1  # 2 and on: this run was continued as new from the one before


class _ReplaySafeLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Drops records while the workflow replays history, so each line is logged once."""

    def __init__(self, logger: logging.Logger, run: WorkflowRun) -> None:
        super().__init__(logger, {})
        self._run = run

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - logging's API
        return not self._run.replaying and self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, Any]:
        info = self._run.info
        kwargs["extra"] = {**log_fields(info), **(kwargs.get("extra") or {})}
        return f"[{info.workflow_type} {info.workflow_id}] {msg}", kwargs


class WorkflowContext:
    """The first argument of every workflow.

    Everything here is replay-safe: it returns the same values when the workflow is replayed
    from its history after a restart. Use it instead of ``time``, ``random``, ``uuid`` and
    ``logging`` inside workflow code.
    """

    def __init__(self, run: WorkflowRun) -> None:
        self._run = run
        self._random = _random.Random(run.info.run_id or run.info.workflow_id)
        self.logger: logging.LoggerAdapter = _ReplaySafeLogger(_log, run)  # type: ignore[type-arg]
        run.context = self

    @property
    def info(self) -> WorkflowInfo:
        """The workflow's id, type, run id, task queue, namespace, attempt and start time."""
        i = self._run.info
        return WorkflowInfo(
            workflow_id=i.workflow_id,
            workflow_type=i.workflow_type,
            run_id=i.run_id,
            task_queue=i.task_queue,
            namespace=i.namespace,
            attempt=i.attempt,
            start_time=datetime.fromtimestamp(i.start_time_ms / 1000, tz=UTC),
            run=i.run,
        )

    @property
    def is_replaying(self) -> bool:
        """True while the code re-runs to catch up with recorded history."""
        return self._run.replaying

    def activity(
        self,
        fn: Callable[..., Awaitable[_T]] | Callable[..., _T] | str,
        *args: Any,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        schedule_to_close: float | None = None,
        heartbeat_timeout: float | None = None,
        task_queue: str | None = None,
    ) -> asyncio.Future[_T]:
        """Run an activity and return an awaitable for its result.

        Args:
            fn: an ``@app.activity`` function, or the registered name of one.
            *args: its positional arguments (JSON-serialisable).
            retry: overrides the activity's retry policy.
            timeout: start-to-close timeout per attempt, in seconds.
            schedule_to_close: limit for all attempts together, in seconds.
            heartbeat_timeout: an attempt that does not heartbeat this often is retried.
            task_queue: run it on workers of this queue (default: the workflow's queue).

        Raises (when awaited):
            ActivityError: the activity failed for good.
        """
        options = ActivityOptions(
            retry=retry,
            start_to_close=timeout,
            schedule_to_close=schedule_to_close,
            heartbeat_timeout=heartbeat_timeout,
            task_queue=task_queue,
        )
        return self._run.activities.schedule(fn, args, options)

    async def start_child(
        self,
        workflow: Any,
        *args: Any,
        workflow_id: str | None = None,
        task_queue: str | None = None,
        parent_close_policy: str = "cancel",
        execution_timeout: float | None = None,
    ) -> ChildWorkflowHandle:
        """Start a child workflow; returns once it runs, with a handle to await, signal or
        cancel it.

        Args:
            workflow: an ``@app.workflow`` function, or the registered name of one.
            *args: its arguments (JSON-serialisable).
            workflow_id: the child's id; by default ``"<this workflow's id>/<step>"``, the
                same on every replay, so a parent that restarts never starts a child twice.
            task_queue: run it on workers of this queue (default: this workflow's queue).
            parent_close_policy: ``"cancel"`` (default) cancels the child when this workflow
                ends first; ``"abandon"`` lets it run on.
            execution_timeout: the child's own execution timeout, in seconds.

        Raises:
            ChildWorkflowError: it could not be started (``status == "not_started"``: a
                workflow with its id already exists).
        """
        handle = self._run.children.start(
            workflow,
            args,
            workflow_id=workflow_id,
            task_queue=task_queue,
            parent_close_policy=parent_close_policy,
            execution_timeout=execution_timeout,
        )
        await asyncio.shield(handle.started)
        return handle

    async def child(
        self,
        workflow: Any,
        *args: Any,
        workflow_id: str | None = None,
        task_queue: str | None = None,
        parent_close_policy: str = "cancel",
        execution_timeout: float | None = None,
    ) -> Any:
        """Run a child workflow and return its result (:meth:`start_child`, then await it).

        Raises:
            ChildWorkflowError: the child failed, timed out, was cancelled or could not start;
                ``cause_type`` and ``cause_message`` say why.
        """
        handle = await self.start_child(
            workflow,
            *args,
            workflow_id=workflow_id,
            task_queue=task_queue,
            parent_close_policy=parent_close_policy,
            execution_timeout=execution_timeout,
        )
        return await handle.result()

    async def sleep(self, seconds: float) -> None:
        """Wait durably: the timer survives restarts of every process."""
        await asyncio.sleep(seconds)

    async def wait_signal(self, name: str, timeout: float | None = None) -> Any:
        """Wait for the next signal ``name`` sent with ``handle.signal(name, payload)``.

        Signals that arrived earlier are buffered, so none is missed.

        Raises:
            TimeoutError: no signal arrived within ``timeout`` seconds (a durable timer,
                labelled ``signal 'NAME' timeout`` in the history). A signal sent later is
                kept for the next wait.
        """
        future = self._run.signal_future(name)
        if timeout is None:
            return await future
        self._run.label_next_timer(f"signal {name!r} timeout")  # wait_for starts it at once
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._run.label_next_timer(None)

    @overload
    async def gather(self, *aws: Awaitable[_T]) -> list[_T]: ...
    @overload
    async def gather(self, *aws: Awaitable[Any], return_exceptions: bool) -> list[Any]: ...
    async def gather(self, *aws: Awaitable[Any], return_exceptions: bool = False) -> list[Any]:
        """Await several activities (or other awaitables) in parallel, like ``asyncio.gather``."""
        return list(await asyncio.gather(*aws, return_exceptions=return_exceptions))

    def patched(self, patch_id: str) -> bool:
        """Whether to run the new code of a change named ``patch_id`` (versioning).

        True for runs that reach this point under the new code, False when replaying a
        history recorded by the code before the change; the answer holds for the whole run::

            if ctx.patched("email-receipt"):
                await ctx.activity(email_receipt, order_id)

        Costs one command in the decision where a run first asks. Once no run recorded
        before the change is left, replace the call with :meth:`deprecate_patch`, and later
        remove that too. Never reuse a patch id for another change.
        """
        return self._run.patched(patch_id)

    def deprecate_patch(self, patch_id: str) -> None:
        """Retire ``ctx.patched(patch_id)``: the new code is the only path now.

        Histories that recorded the patch still replay, new runs still record it (so workers
        not yet deployed, still asking ``patched``, agree), and once no run that asked
        ``patched`` is left the call can be removed.
        """
        self._run.patched(patch_id, deprecated=True)

    def continue_as_new(self, *args: Any) -> NoReturn:
        """End this run and start the workflow afresh with ``args``, under the same id.

        A loop that runs for ever keeps a bounded history this way: the next run starts from
        an empty one (earlier runs stay readable, ``handle.history(run=N)``). It does not
        return: call it from the workflow function itself, as its last step. Signals sent
        meanwhile reach the next run; unfinished activities and timers are dropped, and
        children end by their ``parent_close_policy``. ``handle.result()`` waits for the last
        run's result.

        Raises:
            DFError: called from somewhere other than this workflow's code (an activity,
                another thread).
            SerializationError: an argument cannot be sent.
        """
        _check_in_loop(self._run, "continue_as_new")
        raise self._next_run(args)

    def _next_run(self, args: tuple[Any, ...]) -> BaseException:
        return self._run.continue_as_new(args)

    def now(self) -> datetime:
        """The workflow's current time (UTC), as recorded in its history."""
        return datetime.fromtimestamp(self._run.now_ms / 1000, tz=UTC)

    def random(self) -> _random.Random:
        """A random generator seeded from the run id: same numbers on replay."""
        return self._random

    def uuid4(self) -> uuid.UUID:
        """A UUID that stays the same on replay."""
        return uuid.UUID(int=self._random.getrandbits(128), version=4)


def _check_in_loop(run: WorkflowRun, what: str) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is not run.loop:
        raise outside_workflow(what)
