"""Activity tasks: run, report, then ack.

A task is run, its outcome is appended to the history (with a deterministic message id), and
only then is the task acked. While it runs, the worker tells JetStream the task is in progress,
and enforces the start-to-close and heartbeat timeouts itself. A malformed task is
dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
import queue as threadqueue
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

import orjson
from nats.aio.msg import Msg

from dfcore.core import _history as h
from dfcore.core._activity import ActivityInfo, ActivityState, _current
from dfcore.core._call_args import decode_call_args
from dfcore.core._definitions import ActivityDefinition
from dfcore.core._errors import (
    ApplicationError,
    CodecUnavailableError,
    DFError,
    PayloadError,
    WorkflowNotFoundError,
)
from dfcore.core._facts import ActivityCompleted, ActivityFailed
from dfcore.core._logfields import log_fields
from dfcore.core._observe import AttemptObservation, Observers
from dfcore.core._registry import Registry
from dfcore.core._tasks import ActivityTask
from dfcore.jetstream._naming import Layout, run_token, workflow_id_from_token
from dfcore.worker._delivery import KeepAlive
from dfcore.worker._observing import end_attempt, observe_attempt
from dfcore.worker._storage import WorkerStore

Outcome = ActivityCompleted | ActivityFailed

log = logging.getLogger("dfcore.worker")


class ActivityRunner:
    """Runs activity tasks: sync ones on :class:`ActivityThreads`, async ones on the loop."""

    def __init__(
        self,
        registry: Registry,
        store: WorkerStore,
        contexts: Sequence[Callable[[ActivityInfo], AbstractContextManager[Any]]] = (),
        observers: Observers | None = None,
    ) -> None:
        self.registry = registry
        self.contexts = contexts
        self.observers = observers or Observers()
        self.store = store
        self.ack_wait = store.settings.activity_ack_wait
        self.threads = ActivityThreads()
        self.running: dict[tuple[str, int], ActivityState] = {}
        self._cancel_sub: Any = None
        # Pause detection: a tick that comes late means the process was frozen (SIGSTOP, a VM
        # paused); the tasks it received before are checked against their histories first.
        self._pause_after = max(1.0, self.ack_wait / 2)
        self._last_tick = 0.0
        self._suspect_until = 0.0
        self._ticker: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        nc = self.store.nc
        self._cancel_sub = await nc.subscribe(
            self.store.layout.activity_cancel_all, cb=self._on_cancel
        )
        self._last_tick = asyncio.get_running_loop().time()
        self._tick()

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._cancel_sub is not None:
            await self._cancel_sub.unsubscribe()
        self.threads.shutdown()

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now - self._last_tick > self._pause_after:
            log.warning(
                "this worker was paused for %.1f s; tasks it received before are checked "
                "against their histories before they run (another worker may have run them)",
                now - self._last_tick,
            )
            self._suspect_until = now + self.ack_wait
        self._last_tick = now
        self._ticker = loop.call_later(TICK, self._tick)

    def _was_paused(self) -> bool:
        """Whether a task may have waited in this process while it was frozen."""
        now = asyncio.get_running_loop().time()
        return now < self._suspect_until or now - self._last_tick > self._pause_after

    async def _on_cancel(self, msg: Msg) -> None:
        try:
            token = msg.subject.rsplit(".", 1)[1]
            workflow_id = workflow_id_from_token(token)
            seq = orjson.loads(msg.data)["seq"]
            if not isinstance(seq, int) or isinstance(seq, bool):
                raise TypeError(f"'seq' must be an integer, got {type(seq).__name__}")
        except Exception as exc:
            reason = f"not an activity cancellation ({type(exc).__name__}: {exc})"
            try:
                await self.store.dlq.keep("cancel", msg.subject, msg.data, reason)
            except DFError as error:
                log.warning("could not dead-letter a cancellation message: %s", error)
            return
        state = self.running.get((workflow_id, seq))
        if state is not None:
            state.cancel_requested = True

    async def handle(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        try:
            task = ActivityTask.from_wire(self.store.decode(msg.data, f"activity task {seq}"))
            info = _task_info(task, self.store.layout)
        except CodecUnavailableError as exc:  # the task is fine; this process cannot read it
            await self._hand_back(msg, exc)
            return
        except (PayloadError, ValueError) as exc:
            await self._reject(msg, f"malformed activity task: {exc}")
            return
        defn = self.registry.activities.get(info.activity)
        delivered = msg.metadata.num_delivered
        outcome: Outcome
        if defn is None:
            outcome = ActivityFailed(info.seq, info.attempt, _unregistered(info))
        elif (delivered > 1 or self._was_paused()) and await self._settled(task, info):
            # Its outcome is recorded: only the ack was lost (a dead leader), or it waited here
            # while this process was frozen and another worker ran it meanwhile.
            log.info(
                "%s #%s attempt %s: %s; acked without running it",
                info.activity,
                info.seq,
                info.attempt,
                SETTLED,
                extra=log_fields(task),
            )
            await msg.ack()
            return
        elif delivered > RUN_AGAIN_UNTIL:
            outcome = ActivityFailed(info.seq, info.attempt, _worker_lost(info))
        else:
            if delivered > 1:
                log.info(
                    "%s #%s attempt %s delivered again without an outcome; running it again "
                    "(its worker was stopped, frozen or never started it)",
                    info.activity,
                    info.seq,
                    info.attempt,
                    extra=log_fields(task),
                )
            outcome = await self._run(defn, info, task, msg)
        try:
            try:
                await self._report_patiently(task, info, outcome, msg)
            except PayloadError as exc:  # the result is too big or not serialisable
                error = {"type": type(exc).__name__, "message": str(exc), "non_retryable": True}
                failed = ActivityFailed(info.seq, info.attempt, error)
                await self._report_patiently(task, info, failed, msg)
        except WorkflowNotFoundError as exc:
            await self._reject(msg, str(exc))
            return
        await msg.ack()

    async def _settled(self, task: ActivityTask, info: ActivityInfo) -> bool:
        """Whether the history already holds this attempt's outcome, or the workflow ended.

        Asked only of a redelivered task, or of one received before this process was frozen:
        one read of what followed the decision that scheduled it. A read that fails says no;
        the task is then run or recorded as lost.
        """
        try:
            records, _ = await self.store.read_recent(task.history, task.decision_seq)
        except DFError as exc:
            log.warning(
                "cannot read %s to check a redelivered task (%s)",
                task.history,
                exc,
                extra=log_fields(task),
            )
            return False
        for record in records:
            body = record.body
            if record.type in (h.ACTIVITY_COMPLETED, h.ACTIVITY_FAILED):
                if body.get("seq") == info.seq and body.get("attempt") == info.attempt:
                    return True
            elif record.type == h.DECIDED and h.terminal_status(record.commands):
                return True
        return False

    async def _hand_back(self, msg: Msg, exc: DFError) -> None:
        """Put a task this process cannot read back on the queue, after a pause.

        Not a nak: the next worker would see a redelivery, which means "a worker died during
        this attempt", and record the attempt as lost without running it. A fresh copy (stored
        before the original is acked, with a message id) is a first delivery for whoever
        takes it.
        """
        log.error("%s; handing the task back in %.0f s", exc, HAND_BACK_DELAY)
        keep_alive = KeepAlive(msg, self.ack_wait / 3)
        try:
            await asyncio.sleep(HAND_BACK_DELAY)
        finally:
            keep_alive.cancel()
        await self.requeue(msg)

    async def requeue(self, msg: Msg) -> None:
        """Put a fresh copy of a task back on its queue, then ack the original.

        A nak would make the next delivery look like the attempt of a worker that died (and be
        recorded as lost without running); a copy is a first delivery. It is stored (with a
        message id derived from the original's sequence) before the original is acked.
        """
        seq = msg.metadata.sequence.stream
        await self.store.requeue(msg.subject, msg.data, f"{msg.subject}:again:{seq}")
        await msg.ack()

    async def _report_patiently(
        self, task: ActivityTask, info: ActivityInfo, outcome: Outcome, msg: Msg
    ) -> None:
        """:meth:`_report`, retried while the server is unreachable or electing a leader.

        Giving up at once would leave the task to be redelivered after the ack wait and its
        attempt recorded as lost: the work done would be thrown away. The task is kept alive
        meanwhile; after REPORT_PATIENCE seconds the error propagates (and that happens).
        """
        loop = asyncio.get_running_loop()
        give_up = loop.time() + REPORT_PATIENCE
        pause = 0.2
        while True:
            try:
                await self._report(task, info, outcome)
                return
            except (WorkflowNotFoundError, PayloadError):
                raise
            except DFError as exc:
                if loop.time() + pause > give_up:
                    raise
                log.warning(
                    "could not record %s #%s yet (%s); retrying",
                    info.activity,
                    info.seq,
                    exc,
                    extra=log_fields(task),
                )
            with contextlib.suppress(Exception):
                await msg.in_progress()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    async def _reject(self, msg: Msg, reason: str) -> None:
        """Dead-letter an activity task the engine cannot use, then remove it from the queue."""
        await self.store.dlq.keep_message("task", msg, reason)
        await msg.term()

    async def _report(self, task: ActivityTask, info: ActivityInfo, outcome: Outcome) -> None:
        """Append an attempt's outcome to its workflow's history (deduplicated by attempt)."""
        kind = "c" if isinstance(outcome, ActivityCompleted) else "f"
        msg_id = f"{run_token(info.workflow_id, task.run)}:{info.seq}:{info.attempt}:{kind}"
        if task.run > 1:
            outcome = dataclasses.replace(outcome, run=task.run)
        after = task.decision_seq
        await self.store.append_fact(
            task.history, outcome.to_wire(), msg_id=msg_id, after_seq=after
        )

    async def _run(
        self, defn: ActivityDefinition, info: ActivityInfo, task: ActivityTask, msg: Msg
    ) -> Outcome:
        state = ActivityState(info)
        key = (info.workflow_id, info.seq)
        self.running[key] = state
        watchers = observe_attempt(self.observers, info, task, msg) if self.observers else []
        began = time.perf_counter()
        outcome: Outcome
        raised: BaseException | None = None
        try:
            job = self._launch(defn, state, task.args, watchers)
            timeout = await self._watch(job, state, task, msg)
            if timeout is not None:
                state.abandoned = True
                job.cancel()
                outcome = ActivityFailed(info.seq, info.attempt, timeout, state.details)
            else:
                try:
                    outcome = ActivityCompleted(info.seq, info.attempt, job.result())
                except BaseException as exc:
                    raised = exc
                    error = _activity_error(exc)
                    outcome = ActivityFailed(info.seq, info.attempt, error, state.details)
        finally:
            self.running.pop(key, None)
        _log_attempt(task, outcome, time.perf_counter() - began)
        if watchers:
            end_attempt(watchers, outcome, raised)
        return outcome

    def _launch(
        self,
        defn: ActivityDefinition,
        state: ActivityState,
        args: list[Any],
        watchers: list[AttemptObservation],
    ) -> asyncio.Future[Any]:
        ctx = contextvars.copy_context()
        ctx.run(_current.set, state)
        loop = asyncio.get_running_loop()

        contexts = self.contexts

        def call() -> Any:
            call_args, _ = decode_call_args(defn.fn, args, {})
            return defn.fn(*call_args)

        def enter_contexts(stack: contextlib.ExitStack) -> None:
            for watcher in watchers:
                stack.enter_context(watcher.running())
            for factory in contexts:
                stack.enter_context(factory(state.info))

        def run_sync() -> Any:
            with contextlib.ExitStack() as stack:
                enter_contexts(stack)
                return call()

        if defn.is_async:

            async def run_async() -> Any:
                with contextlib.ExitStack() as stack:
                    enter_contexts(stack)
                    return await call()

            return loop.create_task(run_async(), context=ctx)
        return self.threads.submit(loop, lambda: ctx.run(run_sync))

    async def _watch(
        self, job: asyncio.Future[Any], state: ActivityState, task: ActivityTask, msg: Msg
    ) -> dict[str, Any] | None:
        """Wait for the job; keep the task alive in JetStream; enforce timeouts."""
        info = state.info
        started = time.monotonic()
        deadline = started + info.start_to_close if info.start_to_close else None
        tick = max(min(self.ack_wait / 3, 10.0), 0.2)
        while True:
            waits = [tick]
            now = time.monotonic()
            if deadline is not None:
                waits.append(deadline - now)
            if info.heartbeat_timeout:
                waits.append(state.last_heartbeat + info.heartbeat_timeout - now)
            done, _ = await asyncio.wait({job}, timeout=max(min(waits), 0))
            if done:
                return None
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return _timeout_error("start_to_close", info.start_to_close)
            if info.heartbeat_timeout and now - state.last_heartbeat >= info.heartbeat_timeout:
                return _timeout_error("heartbeat", info.heartbeat_timeout)
            try:
                await msg.in_progress()  # keeps JetStream from redelivering a live attempt
            except Exception as exc:
                log.debug("could not extend %s: %r", info.activity, exc, extra=log_fields(task))


HAND_BACK_DELAY = 2.0
"""Seconds a task this process cannot read waits before it goes back on the queue."""
REPORT_PATIENCE = 120.0
"""Seconds an activity worker keeps trying to record an outcome before giving up."""
RUN_AGAIN_UNTIL = 2
"""Deliveries of a task without an outcome that are still run; later ones are lost attempts."""
TICK = 0.25
"""Seconds between the activity runner's pause-detection ticks."""
SETTLED = "its outcome is already recorded"
"""What the log says of a task acked without running because its outcome is recorded."""


def pull_expiry(ack_wait: float) -> tuple[float, float]:
    """``(expires, idle_heartbeat)`` of activity pull requests, for ``activity_ack_wait``.

    A frozen worker's open requests keep receiving tasks it will not start. Expiring them
    within half the ack wait means that, by the time those tasks are redelivered, the frozen
    worker has no request left to receive them again: another worker runs them.
    """
    expires = min(30.0, ack_wait / 2)
    return expires, min(5.0, expires / 2)


def _task_info(task: ActivityTask, layout: Layout) -> ActivityInfo:
    """What the activity sees of its task; ValueError if the task names another's history."""
    _, workflow_id = layout.parse_history_subject(task.history)
    if workflow_id != task.workflow_id:
        raise ValueError(f"'h' ({task.history}) is not the history of {task.workflow_id!r}")
    return ActivityInfo(
        activity=task.activity,
        workflow_id=task.workflow_id,
        seq=task.seq,
        attempt=task.attempt,
        task_queue=task.task_queue,
        heartbeat_details=task.heartbeat,
        start_to_close=task.start_to_close,
        heartbeat_timeout=task.heartbeat_timeout,
    )


def _log_attempt(task: ActivityTask, outcome: Outcome, took: float) -> None:
    """The worker's line for an attempt it ran (``-l INFO``), as Celery's "succeeded in"."""
    if not log.isEnabledFor(logging.INFO):
        return  # quiet workers build no lines
    fields = log_fields(task)
    name = f"{task.activity}[{task.workflow_id} #{task.seq}]"
    if isinstance(outcome, ActivityCompleted):
        log.info(
            "activity %s attempt %d succeeded in %.3fs", name, task.attempt, took, extra=fields
        )
        return
    error = outcome.error
    log.info(  # the workflow's retry policy decides what comes of it
        "activity %s attempt %d failed in %.3fs: %s: %s",
        name,
        task.attempt,
        took,
        error.get("type"),
        error.get("message"),
        extra=fields,
    )


def _unregistered(info: ActivityInfo) -> dict[str, Any]:
    return {
        "type": "RegistrationError",
        "message": (
            f"activity {info.activity!r} is not registered on the workers of task queue "
            f"{info.task_queue!r}; register it with @app.activity in a module those workers "
            "import, or route the call with task_queue= to workers that have it"
        ),
    }  # retryable: during a rolling deploy, a worker that has it may take the next attempt


def _worker_lost(info: ActivityInfo) -> dict[str, Any]:
    """The failure recorded for an attempt delivered more than :data:`RUN_AGAIN_UNTIL` times
    without an outcome.

    A first redelivery is run again: its worker may have been frozen or stopped before it
    started it (a pull request delivers ahead of the work). A second one means the attempt
    keeps losing its worker. Counting it as a failed attempt lets the retry policy (and its
    max_attempts) apply, so an activity that crashes its worker cannot crash every worker of
    the queue in turn.
    """
    return {
        "type": "WorkerLost",
        "message": (
            f"attempt {info.attempt} was taken by a worker that stopped before reporting "
            "(killed, crashed or disconnected); retried according to the retry policy"
        ),
    }


class ActivityThreads:
    """Threads for sync activities: an idle one is reused, a new one added when none is idle.

    Not a fixed-size pool: an attempt abandoned after its timeout keeps its thread (threads
    cannot be killed), and must not keep later attempts from starting. Busy threads are bounded
    by the consumer's in-flight limit plus the abandoned attempts still running.
    """

    def __init__(self) -> None:
        self._jobs: threadqueue.SimpleQueue[tuple[Any, ...] | None] = threadqueue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._count = 0

    def submit(self, loop: asyncio.AbstractEventLoop, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            spawn = self._idle == 0
            if spawn:
                self._count += 1
            else:
                self._idle -= 1
        self._jobs.put((loop, future, fn))
        if spawn:
            name = f"df-activity-{self._count}"
            threading.Thread(target=self._work, name=name, daemon=True).start()
        return future

    def shutdown(self) -> None:
        """Let idle threads exit (busy ones exit when their attempt returns)."""
        with self._lock:
            count, self._count = self._count, 0
        for _ in range(count):
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn = job
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as exc:
                outcome = (False, exc)
            try:
                loop.call_soon_threadsafe(_settle, future, *outcome)
            except RuntimeError:
                pass  # the worker's loop is gone (shutdown): nobody waits for this attempt
            with self._lock:
                self._idle += 1


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


def _timeout_error(kind: str, seconds: float | None) -> dict[str, Any]:
    return {
        "type": "TimeoutError",
        "message": f"{kind} timeout of {seconds}s exceeded",
        "timeout": kind,
    }


def _activity_error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, ApplicationError):
        return {
            "type": exc.type,
            "message": exc.message,
            "non_retryable": exc.non_retryable,
            "next_retry_delay": exc.next_retry_delay,
            "details": list(exc.details),
        }
    if isinstance(exc, asyncio.CancelledError):
        return {
            "type": "CancelledError",
            "message": "the activity was cancelled",
            "non_retryable": True,
        }
    return {"type": type(exc).__name__, "message": str(exc)}
