"""Workers: the workflow-task processor and the activity runner.

Workflow tasks. Every record appended to a history on queue Q is delivered (through the durable
consumer ``wf_Q``) to some worker. The worker brings its cached :class:`WorkflowRun` up to date by
loading the records after the last one it applied (an exact read, no timeouts), applies them, and
appends the commands the code produced as one ``Decided`` record, with the expected-last-subject-
sequence check (a concurrent writer makes it reload and re-decide). Only then does it publish
the work the decision implies (activity tasks, timer schedules) and ack the message. A decision
record is itself delivered later; if its work was not published yet (the worker died in between),
whoever receives it publishes it, with the same deterministic message ids.

Activity tasks. A task is run, its outcome is appended to the history (with a deterministic
message id), and only then is the task acked. While it runs, the worker tells JetStream the task
is in progress, and enforces the start-to-close and heartbeat timeouts itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import queue as threadqueue
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from nats.aio.msg import Msg

from . import _history as h
from ._connection import close_connection, connect
from ._context import WorkflowContext
from ._convert import decode_call_args
from ._definitions import ActivityDefinition
from ._engine import WorkflowCodeError, WorkflowRun
from ._errors import (
    ApplicationError,
    CodecKeyError,
    DFError,
    NondeterminismError,
    PayloadError,
    PayloadTooLargeError,
)
from ._history import now_ms
from ._naming import Layout, check_queue, workflow_id_from_token, workflow_token
from ._pull import PullConsumer
from ._store import AppendConflict, NoSuchWorkflow, Store
from .activity import ActivityInfo, ActivityState, _current

if TYPE_CHECKING:
    from ._app import App

log = logging.getLogger("dfcore.worker")


def _retry_delay(num_delivered: int) -> float:
    return float(min(2 ** max(num_delivered - 1, 0), 60))


class Worker:
    """Serves workflow tasks and/or activity tasks of one App on some task queues.

    Args:
        app: the App whose workflows and activities to run.
        task_queues: queues to serve (default: the App's ``task_queue`` setting).
        workflows: serve workflow tasks.
        activities: serve activity tasks.
        activity_concurrency: max activities at once (default: the setting).
        workflow_concurrency: max workflow tasks at once (default: the setting).
        shutdown_timeout: on stop, how long in-flight work may take before it is handed back.
    """

    def __init__(
        self,
        app: App,
        *,
        task_queues: Sequence[str] | None = None,
        workflows: bool = True,
        activities: bool = True,
        activity_concurrency: int | None = None,
        workflow_concurrency: int | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        if not workflows and not activities:
            raise DFError("a worker must serve workflows, activities, or both")
        settings = app.settings
        self.app = app
        self.queues = [check_queue(q) for q in (task_queues or [settings.task_queue])]
        self.serve_workflows = workflows
        self.serve_activities = activities
        self.activity_concurrency = activity_concurrency or settings.activity_concurrency
        self.workflow_concurrency = workflow_concurrency or settings.workflow_concurrency
        self.shutdown_timeout = shutdown_timeout
        self.store: Store | None = None
        self._pullers: list[PullConsumer] = []
        self._activity_runner: ActivityRunner | None = None
        self._processors: list[WorkflowProcessor] = []

    async def start(self) -> None:
        """Connect, create streams and consumers, and start consuming."""
        settings = self.app.settings
        nc = await connect(settings, f"dfcore-worker:{self.app.name}", self._reconnected)
        self.store = store = Store(nc, settings, self.app.codec)
        await store.ensure()
        lay = store.layout
        for queue in self.queues:
            if self.serve_workflows:
                name = lay.workflow_consumer(queue)
                await store.ensure_consumer(
                    lay.history_stream, name, lay.history_filter(queue), settings.workflow_ack_wait
                )
                processor = WorkflowProcessor(self.app, store)
                self._processors.append(processor)
                self._pullers.append(
                    PullConsumer(
                        nc,
                        lay.history_stream,
                        name,
                        processor.handle,
                        max_inflight=self.workflow_concurrency,
                    )
                )
            if self.serve_activities:
                name = lay.activity_consumer(queue)
                await store.ensure_consumer(
                    lay.tasks_stream, name, lay.task_subject(queue), settings.activity_ack_wait
                )
                runner = self._activity_runner or ActivityRunner(self.app, store)
                self._activity_runner = runner
                self._pullers.append(
                    PullConsumer(
                        nc,
                        lay.tasks_stream,
                        name,
                        runner.handle,
                        max_inflight=self.activity_concurrency,
                    )
                )
        if self._activity_runner is not None:
            await self._activity_runner.start()
        for puller in self._pullers:
            await puller.start()
        log.info(
            "worker for app %r serving %s on queues %s (NATS %s, namespace %r)",
            self.app.name,
            self._what(),
            ", ".join(self.queues),
            settings.display_url,
            settings.namespace,
        )

    def _what(self) -> str:
        parts = ["workflows"] if self.serve_workflows else []
        return " and ".join(parts + (["activities"] if self.serve_activities else []))

    async def _reconnected(self) -> None:
        for puller in self._pullers:
            puller.on_reconnected()

    async def stop(self) -> None:
        """Stop taking work, let in-flight work finish (up to shutdown_timeout), disconnect."""
        await asyncio.gather(*(p.stop(self.shutdown_timeout) for p in self._pullers))
        if self._activity_runner is not None:
            await self._activity_runner.stop()
        for processor in self._processors:
            processor.close()
        if self.store is not None:
            await close_connection(self.store.nc)

    async def run(self, *, handle_signals: bool = False, stop: asyncio.Event | None = None) -> None:
        """Start, run until ``stop`` is set (or SIGTERM/SIGINT if ``handle_signals``), stop."""
        stop = stop or asyncio.Event()
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
            log.info("stopping: finishing in-flight work (up to %ss)", self.shutdown_timeout)
        finally:
            await self.stop()


@dataclass
class _Entry:
    """A cached workflow: its run (None once closed or evicted) and a lock serialising it."""

    workflow_id: str
    subject: str
    run: WorkflowRun | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    dispatched: set[int] = field(default_factory=set)
    closed_seq: int = 0
    users: int = 0  # handlers holding or waiting for the lock; the cache keeps such entries


class _StaleRead(DFError):
    """A read did not reach the delivered record yet (a lagging replica); try again shortly."""


class WorkflowProcessor:
    """Handles history messages of one task queue: replays, decides, appends, dispatches."""

    def __init__(self, app: App, store: Store) -> None:
        self.app = app
        self.store = store
        self.cache: OrderedDict[str, _Entry] = OrderedDict()
        self.capacity = app.settings.workflow_cache_size

    async def handle(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        try:
            _, workflow_id = self.store.layout.parse_history_subject(msg.subject)
            record = h.validate_record(seq, self.store.decode(msg.data, f"history message {seq}"))
        except CodecKeyError as exc:
            log.error("%s; will retry", exc)  # this process lacks the key; the message is fine
            await msg.nak(delay=_retry_delay(msg.metadata.num_delivered))
            return
        except (ValueError, PayloadError) as exc:  # MalformedRecordError is a ValueError
            await self._reject(msg, str(exc))
            return
        if record.type == h.WORKFLOW_TASK_FAILED:
            await msg.ack()  # a note for people; the failed task retries on its own message
            return
        entry = self._entry(workflow_id, msg.subject)
        entry.users += 1
        keep_alive = _KeepAlive(msg, self.app.settings.workflow_ack_wait / 3)
        try:
            async with entry.lock:
                if not await self._handle_locked(entry, record, msg):
                    return
        finally:
            keep_alive.cancel()
            entry.users -= 1
        self._trim()
        await msg.ack()

    async def _reject(self, msg: Msg, reason: str) -> None:
        """Dead-letter a history message the engine cannot use, then ack it."""
        await self.store.dead_letter(
            "history",
            msg.subject,
            msg.data,
            reason,
            headers=msg.headers,
            stream_seq=msg.metadata.sequence.stream,
        )
        await msg.ack()

    async def _handle_locked(self, entry: _Entry, record: h.Record, msg: Msg) -> bool:
        """Process one record; False when the message was handed back or dead-lettered."""
        try:
            await self._process(entry, record)
        except _StaleRead:
            await msg.nak(delay=0.2)
            return False
        except _NoSuchWorkflow as exc:
            self._drop(entry)
            await self._reject(msg, str(exc))
            return False
        except (NondeterminismError, WorkflowCodeError) as exc:
            self._drop(entry)
            log.error("%s", exc)
            await self._note_task_failure(entry, exc, msg.metadata.num_delivered)
            await msg.nak(delay=_retry_delay(msg.metadata.num_delivered))
            return False
        except Exception as exc:
            self._drop(entry)
            log.exception("workflow %s: task failed (%s); will retry", entry.workflow_id, exc)
            await msg.nak(delay=_retry_delay(msg.metadata.num_delivered))
            return False
        return True

    async def _note_task_failure(self, entry: _Entry, exc: DFError, attempt: int) -> None:
        """Record in the history that the workflow's task fails, once per stuck point.

        The note is for people (``df workflow show``, ``handle.status()``); replay ignores it.
        If the history already ends with a note, or anything was appended meanwhile, nothing
        is written: the next failed attempt writes it then.
        """
        try:
            last = await self.store.last(entry.subject)
            if last is None or last[1].type == h.WORKFLOW_TASK_FAILED:
                return
            prev = last[1].seq
            body = {
                "t": h.WORKFLOW_TASK_FAILED,
                "ts": now_ms(),
                "error": _task_error(exc),
                "attempt": attempt,
                "prev": prev,
            }
            msg_id = f"{workflow_token(entry.workflow_id)}:tf:{prev}"
            await self.store.append(entry.subject, body, msg_id=msg_id, expected_seq=prev)
        except AppendConflict:
            pass
        except DFError as error:
            log.warning("workflow %s: cannot note the task failure: %s", entry.workflow_id, error)

    def close(self) -> None:
        """Release every cached workflow (the worker is stopping)."""
        for entry in self.cache.values():
            self._drop(entry)
        self.cache.clear()

    def _entry(self, workflow_id: str, subject: str) -> _Entry:
        entry = self.cache.get(workflow_id)
        if entry is None:
            entry = self.cache[workflow_id] = _Entry(workflow_id, subject)
        else:
            self.cache.move_to_end(workflow_id)
        return entry

    def _drop(self, entry: _Entry) -> None:
        if entry.run is not None:
            entry.run.evict()
        entry.run = None
        entry.dispatched.clear()

    def _trim(self) -> None:
        """Evict least recently used workflows that no handler is using."""
        excess = len(self.cache) - self.capacity
        if excess <= 0:
            return
        for workflow_id in list(itertools.islice(self.cache, excess * 2 + 8)):
            if excess <= 0:
                break
            entry = self.cache[workflow_id]
            if entry.users:
                continue
            self._drop(entry)
            del self.cache[workflow_id]
            excess -= 1

    def _new_run(self, workflow_id: str) -> WorkflowRun:
        settings = self.app.settings
        run = WorkflowRun(
            workflow_id,
            self.app.workflows.get,
            namespace=settings.namespace,
            default_activity_timeout=settings.default_activity_timeout,
            activity_lookup=self.app.lookup_activity,
            check_payload=self._check_payload,
        )
        WorkflowContext(run)
        return run

    def _check_payload(self, value: Any, what: str) -> None:
        """Raise at the workflow's call site if ``value`` cannot be sent."""
        self.store.encode({"v": value}, what)

    async def _process(self, entry: _Entry, record: h.Record) -> None:
        run = entry.run
        seq = record.seq
        if seq <= entry.closed_seq or (run is not None and run.last_seq >= seq):
            # Already applied. A decision may still owe its work (its writer died before
            # publishing it): publish it now, idempotently.
            if seq not in entry.dispatched and record.type == h.DECIDED:
                await self._dispatch(entry, run, record)
            entry.dispatched.discard(seq)
            return
        if run is None:
            run = entry.run = self._new_run(entry.workflow_id)
        await self._catch_up_and_decide(entry, run, seq, _chained(record, run.last_seq))
        entry.dispatched.discard(seq)
        if run.closed and not run.pending_commands():
            entry.closed_seq = run.last_seq
            self._drop(entry)

    async def _catch_up_and_decide(
        self, entry: _Entry, run: WorkflowRun, delivered: int, known: list[h.Record] | None
    ) -> None:
        while True:
            if known is not None:
                records, seen = known, delivered
            else:
                records, seen = await self.store.read(entry.subject, after_seq=run.last_seq)
            known = None
            run.apply(records)
            run.skip_to(seen)
            if run.last_seq < delivered:
                raise _StaleRead(f"read of {entry.subject} ended before {delivered}")
            if not run.started:
                raise _NoSuchWorkflow(
                    f"no workflow {entry.workflow_id!r} exists: its history has no readable "
                    "WorkflowStarted record, so nothing can use this message"
                )
            for record in records:
                if record.seq == delivered and record.type == h.DECIDED:
                    await self._dispatch(entry, run, record)
            if await self._decide(entry, run):
                return

    async def _decide(self, entry: _Entry, run: WorkflowRun) -> bool:
        """Append the pending commands; False if someone appended first.

        A decision too big for one message is appended as several records, all but the last
        marked ``more`` (the usual decision is encoded once and sent as it is).
        """
        cmds = run.pending_commands()
        if not cmds:
            return True
        body = _decision(cmds, run.last_seq, more=False)
        try:
            data: bytes | None = self.store.encode(body, "a decision")
        except PayloadTooLargeError:
            parts = self._split(cmds)
        else:
            return await self._append_decision(entry, run, body, data)
        for i, part in enumerate(parts):
            body = _decision(part, run.last_seq, more=i < len(parts) - 1)
            if not await self._append_decision(entry, run, body, None):
                return False
        return True

    async def _append_decision(
        self, entry: _Entry, run: WorkflowRun, body: dict[str, Any], data: bytes | None
    ) -> bool:
        try:
            seq = await self.store.append(
                entry.subject,
                body,
                msg_id=f"{workflow_token(run.info.workflow_id)}:d:{run.last_seq}",
                expected_seq=run.last_seq,
                status=h.terminal_status(body["cmds"]),
                data=data,
            )
        except AppendConflict:
            return False  # read what was appended and decide again
        record = h.Record(seq, body)
        run.apply([record])
        await self._dispatch(entry, run, record)
        return True

    def _split(self, cmds: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Group commands into decisions that each fit in max_payload."""
        limit = int(self.store.nc.max_payload * 0.8)
        parts: list[list[dict[str, Any]]] = [[]]
        used = 0
        for cmd in cmds:
            size = len(self.store.encode({"c": cmd}, "a command"))
            if parts[-1] and used + size > limit:
                parts.append([])
                used = 0
            parts[-1].append(cmd)
            used += size
        return parts

    async def _dispatch(self, entry: _Entry, run: WorkflowRun | None, record: h.Record) -> None:
        """Publish the work a decision implies; idempotent (deterministic message ids)."""
        cmds = record.commands
        await asyncio.gather(*(self._dispatch_one(entry, run, record.seq, c) for c in cmds))
        if h.terminal_status(cmds):
            await self.store.mark_ended(entry.subject, record.body, record.seq)
            if run is None or run.has_pending_timers():
                await self.store.purge_timers(entry.subject)
        entry.dispatched.add(record.seq)

    async def _dispatch_one(
        self, entry: _Entry, run: WorkflowRun | None, decision_seq: int, cmd: Mapping[str, Any]
    ) -> None:
        kind = cmd["t"]
        workflow_id = entry.workflow_id
        if kind == h.ACTIVITY_SCHEDULED:
            call = run.activity(int(cmd["seq"])) if run is not None else None
            if call is not None and (call.done or call.attempt != cmd["attempt"]):
                return
            task = {
                "wf": workflow_id,
                "h": entry.subject,
                "seq": cmd["seq"],
                "attempt": cmd["attempt"],
                "activity": cmd["activity"],
                "args": cmd["args"],
                "task_queue": cmd["task_queue"],
                "start_to_close": cmd.get("start_to_close"),
                "heartbeat_timeout": cmd.get("heartbeat_timeout"),
                "heartbeat": cmd.get("heartbeat"),
                "dseq": decision_seq,
            }
            msg_id = f"{workflow_token(workflow_id)}:{cmd['seq']}:{cmd['attempt']}"
            await self.store.publish_task(cmd["task_queue"], task, msg_id)
        elif kind == h.TIMER_STARTED:
            timer = run.timer(str(cmd["timer"])) if run is not None else None
            if (timer is not None and timer.fired) or (run is not None and run.closed):
                return
            await self.store.schedule_timer(entry.subject, str(cmd["timer"]), int(cmd["fire_at"]))
        elif kind == h.ACTIVITY_CANCEL_REQUESTED:
            subject = self.store.layout.activity_cancel_subject(workflow_id)
            await self.store.nc.publish(subject, orjson.dumps({"seq": cmd["seq"]}))


class _KeepAlive:
    """Tells JetStream a message is still being worked on, every ``interval`` seconds.

    A workflow task usually takes milliseconds, but one may wait behind others of the same
    workflow, or replay a long history; without this it would be redelivered to a second
    worker after the ack wait. A loop timer, not a task, so the common case costs nothing.
    """

    def __init__(self, msg: Msg, interval: float) -> None:
        self._msg = msg
        self._interval = interval
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(interval, self._fire)
        self._pending: asyncio.Task[None] | None = None

    def _fire(self) -> None:
        self._pending = self._loop.create_task(self._extend())
        self._timer = self._loop.call_later(self._interval, self._fire)

    async def _extend(self) -> None:
        try:
            await self._msg.in_progress()
        except Exception as exc:
            log.debug("could not extend workflow task %s: %r", self._msg.reply, exc)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _decision(cmds: list[dict[str, Any]], prev: int, *, more: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"t": h.DECIDED, "ts": now_ms(), "cmds": cmds, "prev": prev}
    if more:
        body["more"] = True
    return body


def _chained(record: h.Record, last_seq: int) -> list[h.Record] | None:
    """The delivered record alone, if it provably follows ``last_seq`` (no gap to read)."""
    if record.type == h.DECIDED:
        return None
    return [record] if record.body.get("prev") == last_seq else None


class _NoSuchWorkflow(DFError):
    """A history message for a workflow id that was never started."""


def _task_error(exc: BaseException) -> dict[str, Any]:
    """The error of a failed workflow task, as recorded in its WorkflowTaskFailed note."""
    cause = exc.__cause__ if isinstance(exc, WorkflowCodeError) and exc.__cause__ else exc
    error: dict[str, Any] = {"type": type(cause).__name__, "message": str(cause)}
    if isinstance(exc, WorkflowCodeError):
        error["traceback"] = exc.traceback
    return error


class ActivityRunner:
    """Runs activity tasks: sync ones on :class:`ActivityThreads`, async ones on the loop."""

    def __init__(self, app: App, store: Store) -> None:
        self.app = app
        self.store = store
        self.ack_wait = app.settings.activity_ack_wait
        self.threads = ActivityThreads()
        self.running: dict[tuple[str, int], ActivityState] = {}
        self._cancel_sub: Any = None

    async def start(self) -> None:
        nc = self.store.nc
        self._cancel_sub = await nc.subscribe(
            self.store.layout.activity_cancel_all, cb=self._on_cancel
        )

    async def stop(self) -> None:
        if self._cancel_sub is not None:
            await self._cancel_sub.unsubscribe()
        self.threads.shutdown()

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
                await self.store.dead_letter("cancel", msg.subject, msg.data, reason)
            except DFError as error:
                log.warning("could not dead-letter a cancellation message: %s", error)
            return
        state = self.running.get((workflow_id, seq))
        if state is not None:
            state.cancel_requested = True

    async def handle(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        try:
            task = self.store.decode(msg.data, f"activity task {seq}")
            info = _task_info(task, self.store.layout)
        except CodecKeyError as exc:
            log.error("%s; will retry", exc)  # this process lacks the key; the task is fine
            await msg.nak(delay=_retry_delay(msg.metadata.num_delivered))
            return
        except (PayloadError, KeyError, TypeError, ValueError) as exc:
            await self._reject(msg, f"malformed activity task: {_reason(exc)}")
            return
        defn = self.app.activities.get(info.activity)
        outcome: dict[str, Any]
        if defn is None:
            outcome = {"t": h.ACTIVITY_FAILED, "error": _unregistered(info)}
        elif msg.metadata.num_delivered > 1:
            outcome = {"t": h.ACTIVITY_FAILED, "error": _worker_lost(info)}
        else:
            outcome = await self._run(defn, info, task.get("args") or [], msg)
        try:
            try:
                await self._report(task, info, outcome)
            except PayloadError as exc:  # the result is too big or not serialisable
                error = {"type": type(exc).__name__, "message": str(exc), "non_retryable": True}
                await self._report(task, info, {"t": h.ACTIVITY_FAILED, "error": error})
        except NoSuchWorkflow as exc:
            await self._reject(msg, str(exc))
            return
        await msg.ack()

    async def _reject(self, msg: Msg, reason: str) -> None:
        """Dead-letter an activity task the engine cannot use, then remove it from the queue."""
        await self.store.dead_letter(
            "task",
            msg.subject,
            msg.data,
            reason,
            headers=msg.headers,
            stream_seq=msg.metadata.sequence.stream,
        )
        await msg.term()

    async def _report(
        self, task: Mapping[str, Any], info: ActivityInfo, outcome: Mapping[str, Any]
    ) -> None:
        """Append an attempt's outcome to its workflow's history (deduplicated by attempt)."""
        body = {"ts": now_ms(), "seq": info.seq, "attempt": info.attempt, **outcome}
        kind = "c" if outcome["t"] == h.ACTIVITY_COMPLETED else "f"
        msg_id = f"{workflow_token(info.workflow_id)}:{info.seq}:{info.attempt}:{kind}"
        after = int(task.get("dseq") or 0)
        await self.store.append_fact(task["h"], body, msg_id=msg_id, after_seq=after)

    async def _run(
        self, defn: ActivityDefinition, info: ActivityInfo, args: list[Any], msg: Msg
    ) -> dict[str, Any]:
        state = ActivityState(info)
        key = (info.workflow_id, info.seq)
        self.running[key] = state
        try:
            job = self._launch(defn, state, args)
            timeout = await self._watch(job, state, msg)
            if timeout is not None:
                state.abandoned = True
                job.cancel()
                return {"t": h.ACTIVITY_FAILED, "error": timeout, "heartbeat": state.details}
            try:
                result = job.result()
            except BaseException as exc:
                return {
                    "t": h.ACTIVITY_FAILED,
                    "error": _activity_error(exc),
                    "heartbeat": state.details,
                }
            return {"t": h.ACTIVITY_COMPLETED, "result": result}
        finally:
            self.running.pop(key, None)

    def _launch(
        self, defn: ActivityDefinition, state: ActivityState, args: list[Any]
    ) -> asyncio.Future[Any]:
        ctx = contextvars.copy_context()
        ctx.run(_current.set, state)
        loop = asyncio.get_running_loop()

        contexts = self.app.activity_contexts

        def call() -> Any:
            call_args, _ = decode_call_args(defn.fn, args, {})
            return defn.fn(*call_args)

        def enter_contexts(stack: contextlib.ExitStack) -> None:
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
        self, job: asyncio.Future[Any], state: ActivityState, msg: Msg
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
                log.debug("could not extend %s: %r", info.activity, exc)


def _task_info(task: Any, layout: Layout) -> ActivityInfo:
    """Check an activity task's shape and read it; raise ValueError/TypeError/KeyError."""
    if not isinstance(task, Mapping):
        raise TypeError(f"expected a JSON object, got {type(task).__name__}")
    for name, kind in _TASK_FIELDS.items():
        value = task[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"{name!r} must be {kind.__name__}, got {type(value).__name__}")
    _, workflow_id = layout.parse_history_subject(task["h"])
    if workflow_id != task["wf"]:
        raise ValueError(f"'h' ({task['h']}) is not the history of workflow {task['wf']!r}")
    if task["dseq"] < 1 or task["seq"] < 1 or task["attempt"] < 1:
        raise ValueError("'dseq', 'seq' and 'attempt' must be positive")
    return ActivityInfo(
        activity=str(task["activity"]),
        workflow_id=str(task["wf"]),
        seq=int(task["seq"]),
        attempt=int(task["attempt"]),
        task_queue=str(task.get("task_queue", "")),
        heartbeat_details=task.get("heartbeat"),
        start_to_close=task.get("start_to_close"),
        heartbeat_timeout=task.get("heartbeat_timeout"),
    )


# The fields of an activity task the runner relies on, with their JSON types.
_TASK_FIELDS: Mapping[str, type] = {
    "wf": str,
    "h": str,
    "seq": int,
    "attempt": int,
    "activity": str,
    "args": list,
    "dseq": int,
}


def _reason(exc: BaseException) -> str:
    """A readable reason; a KeyError's message is just the key."""
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}" if exc.args else "missing field"
    return str(exc)


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
    """The failure recorded for an attempt whose worker vanished without reporting.

    Counting it as a failed attempt lets the retry policy (and its max_attempts) apply, so an
    activity that crashes its worker cannot crash every worker of the queue in turn.
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
