"""The replay engine: history records in, commands out. No I/O, no clock, no globals.

A :class:`WorkflowRun` owns one workflow's code, running on a :class:`DeterministicLoop`.
The worker feeds it records in stream order with :meth:`WorkflowRun.apply`; after each fact the
code runs until it blocks, and what it asks for becomes *commands*. Commands the history already
holds (in a later ``Decided`` record) are matched, not repeated; the rest are returned by
:meth:`WorkflowRun.pending_commands` for the worker to append as the next decision.

Replay is therefore the same code path as live execution: a cache miss just applies more records.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from dfcore.core import _history as h
from dfcore.core._call_args import decode_call_args, return_hint
from dfcore.core._commands import (
    CancelWorkflow,
    Command,
    CompleteWorkflow,
    FailWorkflow,
    RecordPatch,
    RequestActivityCancel,
    ScheduleActivity,
    StartTimer,
    TimeOutWorkflow,
    check_patch_id,
)
from dfcore.core._convert import convert
from dfcore.core._definitions import ActivityOptions, RetryPolicy, WorkflowDefinition
from dfcore.core._errors import (
    ActivityError,
    DFError,
    NondeterminismError,
    PayloadError,
    RegistrationError,
    SerializationError,
    UnregisteredWorkflowError,
    WorkflowCodeError,
    error_json,
)
from dfcore.core._facts import (
    ActivityCompleted,
    ActivityFailed,
    CancelRequested,
    Fact,
    SignalReceived,
    TimerFired,
    WorkflowStarted,
    fact_from_wire,
)
from dfcore.core._run_state import ActivityCall, RunInfo, TimerState
from dfcore.core._sync_workflow import run_sync_workflow
from dfcore.core._workflow_loop import DeterministicLoop

log = logging.getLogger("dfcore.engine")

WorkflowResolver = Callable[[str], WorkflowDefinition | None]
PayloadCheck = Callable[[Any, str], None]
"""Raises SerializationError or PayloadTooLargeError if a value cannot be sent."""


class _Abort(BaseException):
    """Unwinds workflow code after a non-determinism was found; user code must not catch it."""


class WorkflowRun:
    """One workflow's live state, rebuilt by applying its history."""

    def __init__(
        self,
        workflow_id: str,
        resolve_workflow: WorkflowResolver,
        *,
        namespace: str = "",
        default_activity_timeout: float = 300.0,
        activity_lookup: Callable[[Any], tuple[str, ActivityOptions, Any]] | None = None,
        check_payload: PayloadCheck | None = None,
    ) -> None:
        self.info = RunInfo(workflow_id=workflow_id, namespace=namespace)
        self.last_seq = 0
        self.started = False
        self.closed = False
        self.decided = False  # a decision of this run has been recorded
        self._timer_label: str | None = None
        self._unregistered = False  # started under a name this worker has no workflow for
        self.replaying = False
        self.evicting = False
        self._resolve_workflow = resolve_workflow
        self._default_timeout = default_activity_timeout
        self._activity_lookup = activity_lookup
        self._check_payload = check_payload
        self._now_ms = 0
        self._next_seq = 0
        self._loop = DeterministicLoop(  # type: ignore[abstract]  # I/O methods are unused
            self._clock, self._start_user_timer, self._loop_error
        )
        self._main: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        self._activities: dict[int, ActivityCall] = {}
        self._timers: dict[str, TimerState] = {}
        self._signals: dict[str, deque[Any]] = {}
        self._signal_waiters: dict[str, deque[asyncio.Future[Any]]] = {}
        self._pending: list[dict[str, Any]] = []
        self._recorded: dict[tuple[Any, ...], Mapping[str, Any]] = {}
        self._recorded_user: dict[int, Mapping[str, Any]] = {}
        self._awaiting: set[tuple[Any, ...]] = set()
        self._patches: dict[str, bool] = {}  # each patch's answer, fixed for the run
        self._nondeterminism: NondeterminismError | None = None
        self.context: Any = None  # set by the WorkflowContext that wraps this run

    # -- feeding ----------------------------------------------------------------------------

    def apply(self, records: Iterable[h.Record]) -> None:
        """Apply records in stream order; raise NondeterminismError if code and history disagree."""
        batch = [r for r in records if r.seq > self.last_seq]
        self._prescan(batch)
        replay_until = max((r.seq for r in batch if r.type == h.DECIDED), default=0)
        for record in batch:
            self.replaying = record.seq < replay_until
            if record.type == h.DECIDED:
                self._apply_decided(record)
            elif record.type == h.WORKFLOW_TASK_FAILED:
                pass  # a note for people: not an input of the workflow
            elif not self.closed:
                self._apply_fact(record)
            self.last_seq = record.seq
        self.replaying = False
        if self._unregistered and not self.closed:
            raise UnregisteredWorkflowError(self.info.workflow_type, self.info.task_queue)

    def skip_to(self, seq: int) -> None:
        """Step over records that could not be read (they were reported and are ignored)."""
        self.last_seq = max(self.last_seq, seq)

    def pending_commands(self) -> list[dict[str, Any]]:
        """Commands produced by the code that the history does not hold yet."""
        return list(self._pending)

    def activity(self, seq: int) -> ActivityCall | None:
        return self._activities.get(seq)

    def timer(self, timer_id: str) -> TimerState | None:
        return self._timers.get(timer_id)

    def has_pending_timers(self) -> bool:
        """Whether any durable timer was started and has not fired."""
        return any(not t.fired for t in self._timers.values())

    @property
    def now_ms(self) -> int:
        return self._now_ms

    def evict(self) -> None:
        """Release the workflow's code (it is being dropped from the worker's cache)."""
        self.evicting = True
        self.closed = True  # nothing the unwinding code does is a command
        if self._main is not None and not self._main.done():
            self._main.cancel()
            try:
                self._loop.run_until_idle()
            except BaseException:
                log.debug("workflow %s: error while unwinding", self.info.workflow_id)

    # -- records ----------------------------------------------------------------------------

    def _prescan(self, batch: Sequence[h.Record]) -> None:
        for record in batch:
            for cmd in record.commands:
                self._recorded[h.command_key(cmd)] = cmd
                if h.is_user_command(cmd):
                    self._recorded_user[int(cmd["seq"])] = cmd

    def _apply_decided(self, record: h.Record) -> None:
        self.decided = True
        pending_keys = {h.command_key(c): c for c in self._pending}
        for cmd in record.commands:
            key = h.command_key(cmd)
            self._recorded.pop(key, None)
            if h.is_user_command(cmd):
                self._recorded_user.pop(int(cmd["seq"]), None)
            if key in self._awaiting:
                self._awaiting.discard(key)
            elif key in pending_keys:
                self._pending.remove(pending_keys.pop(key))
            elif cmd["t"] == h.PATCH_RECORDED and cmd.get("deprecated"):
                self._patches[cmd["patch"]] = True  # retired: its call may be gone from the code
            elif cmd["t"] == h.PATCH_RECORDED:
                self._nondeterministic(self._next_seq, h.describe_command(cmd), _NO_PATCH_CALL)
            else:
                self._nondeterministic(
                    h.command_step(cmd), h.describe_command(cmd), "nothing at that point"
                )
        if self._pending and not self.closed and not record.body.get("more"):
            first = self._pending[0]
            self._nondeterministic(
                h.command_step(first), "no such command", h.describe_command(first)
            )
        self._raise_nondeterminism()

    def _apply_fact(self, record: h.Record) -> None:
        self._now_ms = max(self._now_ms, record.time_ms)  # the server's time, not the writer's
        fact = fact_from_wire(record.body)
        _FACT_HANDLERS[type(fact)](self, fact)
        self._run_code()

    def _apply_workflow_started(self, fact: WorkflowStarted) -> None:
        if self._main is not None:
            return
        self.started = True
        info = self.info
        info.workflow_type = fact.workflow
        info.run_id = fact.run_id
        info.task_queue = fact.task_queue
        info.start_time_ms = self._now_ms
        defn = self._resolve_workflow(info.workflow_type)
        if defn is None:
            self._unregistered = True  # apply() raises, unless a cancel request ends it
            return
        try:
            args, _ = decode_call_args(defn.fn, fact.args, {}, skip_first=True)
        except SerializationError as exc:
            self._fail_workflow(exc)
            return
        timeout = fact.execution_timeout or defn.execution_timeout
        self._main = self._loop.create_task(self._run_workflow(defn, args))
        if timeout:
            self._start_timer("x", "execution_timeout", float(timeout))

    def _apply_activity_completed(self, fact: ActivityCompleted) -> None:
        call = self._activities.get(fact.seq)
        if call is None or call.done or fact.attempt != call.attempt:
            return  # a duplicate, or an attempt the history did not schedule (or gave up on)
        call.done = True
        if call.future.done():
            return
        try:
            call.future.set_result(convert(fact.result, call.result_hint))
        except SerializationError as exc:
            call.future.set_exception(exc)

    def _apply_activity_failed(self, fact: ActivityFailed) -> None:
        call = self._activities.get(fact.seq)
        if call is None or call.done or fact.attempt != call.attempt:
            return
        error = dict(fact.error)
        if fact.heartbeat is not None:  # the next attempt starts from the last details
            call.heartbeat = fact.heartbeat
        delay = self._retry_delay(call, error)
        if delay is None:
            self._fail_activity(call, error)
            return
        call.attempt += 1
        if delay <= 0:
            self._schedule_attempt(call)
        else:
            self._start_timer(f"{call.seq}r{call.attempt}", "retry", delay, seq=call.seq)

    def _apply_timer_fired(self, fact: TimerFired) -> None:
        timer = self._timers.get(fact.timer)
        if timer is None or timer.fired:
            return
        timer.fired = True
        if timer.purpose == "timer" and timer.handle is not None:
            self._loop.fire(timer.handle)
        elif timer.purpose == "retry":
            call = self._activities[timer.seq or 0]
            if not call.done:
                self._schedule_attempt(call)
        elif timer.purpose == "schedule_to_close":
            call = self._activities[timer.seq or 0]
            if not call.done:
                error = {"type": "TimeoutError", "message": "schedule_to_close timeout exceeded"}
                self._fail_activity(call, {**error, "non_retryable": True})
        elif timer.purpose == "execution_timeout":
            self._time_out_workflow()

    def _apply_signal_received(self, fact: SignalReceived) -> None:
        waiters = self._signal_waiters.get(fact.name)
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(fact.payload)
                return
        self._signals.setdefault(fact.name, deque()).append(fact.payload)

    def _apply_cancel_requested(self, fact: CancelRequested) -> None:
        if self._unregistered:  # no code ran: nothing to unwind
            self._produce(CancelWorkflow())
            self.closed = True
            return
        if self._main is not None and not self._main.done() and not self._cancel_requested:
            self._cancel_requested = True
            self._main.cancel()

    # -- what workflow code calls (through WorkflowContext) ----------------------------------

    def schedule_activity(
        self, ref: Any, args: Sequence[Any], options: ActivityOptions
    ) -> asyncio.Future[Any]:
        """Start an activity; the returned future resolves with its result or ActivityError."""
        name, defaults, hint = self._lookup_activity(ref)
        opts = defaults.merged(options)
        opts.validate(name)
        self._check_args(name, args)
        seq = self._allocate_seq()
        call = ActivityCall(
            seq=seq,
            name=name,
            args=list(args),
            task_queue=opts.task_queue or self.info.task_queue,
            options=opts,
            retry=opts.retry or RetryPolicy(),
            result_hint=hint,
            future=self._loop.create_future(),
            first_scheduled_ms=self._now_ms,
        )
        self._adopt_recorded_options(call)
        self._activities[seq] = call
        call.future.add_done_callback(lambda fut: self._on_activity_future_done(call))
        self._schedule_attempt(call)
        if call.options.schedule_to_close:
            self._start_timer(
                f"{seq}s", "schedule_to_close", call.options.schedule_to_close, seq=seq
            )
        return call.future

    def _adopt_recorded_options(self, call: ActivityCall) -> None:
        """On replay, retries and timeouts follow what was recorded, not today's code.

        Changing an activity's retry policy or timeouts is then safe for running workflows:
        attempts already scheduled keep the options they were scheduled with.
        """
        recorded = self._recorded_user.get(call.seq)
        if recorded is None or recorded.get("activity") != call.name:
            return
        if isinstance(recorded.get("retry"), Mapping):
            call.retry = RetryPolicy.from_json(recorded["retry"])
        call.options = replace(
            call.options,
            start_to_close=recorded.get("start_to_close"),
            schedule_to_close=recorded.get("schedule_to_close"),
            heartbeat_timeout=recorded.get("heartbeat_timeout"),
        )

    def signal_future(self, name: str) -> asyncio.Future[Any]:
        """A future for the next signal called ``name`` (resolved now if one is buffered)."""
        future = self._loop.create_future()
        buffered = self._signals.get(name)
        if buffered:
            future.set_result(buffered.popleft())
        else:
            self._signal_waiters.setdefault(name, deque()).append(future)
        return future

    # -- internals --------------------------------------------------------------------------

    async def _run_workflow(self, defn: WorkflowDefinition, args: list[Any]) -> Any:
        if defn.is_async:
            return await defn.fn(self.context, *args)
        return await run_sync_workflow(
            self.context, self.info.workflow_id, lambda: self.evicting, defn.fn, args
        )

    def _run_code(self) -> None:
        self._loop.run_until_idle()
        self._raise_nondeterminism()
        main = self._main
        if main is not None and main.done() and not self.closed:
            self._close_with(main)

    def _close_with(self, main: asyncio.Task[Any]) -> None:
        if main.cancelled():
            self._produce(CancelWorkflow())
        elif (exc := main.exception()) is not None:
            if isinstance(exc, asyncio.CancelledError):
                self._produce(CancelWorkflow())
            elif isinstance(exc, DFError | TimeoutError):
                self._produce(FailWorkflow(error_json(exc)))
            else:
                raise WorkflowCodeError(
                    self.info.workflow_id, self.info.workflow_type, exc
                ) from exc
        else:
            self._complete(main.result())
        self.closed = True

    def _check_args(self, name: str, args: Sequence[Any]) -> None:
        """Fail at the ``ctx.activity`` call, not later in the worker, naming the argument."""
        if self._check_payload is None:
            return
        try:
            self._check_payload(list(args), f"the arguments of activity {name!r}")
        except SerializationError:
            for i, arg in enumerate(args, 1):
                self._check_payload(arg, f"argument {i} of activity {name!r}")
            raise

    def _complete(self, result: Any) -> None:
        if self._check_payload is not None:
            try:
                self._check_payload(result, f"the result of workflow {self.info.workflow_type!r}")
            except PayloadError as exc:
                self._fail_workflow(exc)
                return
        self._produce(CompleteWorkflow(result))

    def _time_out_workflow(self) -> None:
        if self.closed:
            return
        error = {"type": "TimeoutError", "message": "workflow execution timeout exceeded"}
        self._produce(TimeOutWorkflow(error))
        self.closed = True
        if self._main is not None and not self._main.done():
            self._main.cancel()
            self._loop.run_until_idle()

    def _fail_workflow(self, exc: BaseException) -> None:
        """End the workflow with ``exc`` before its code could run."""
        self._produce(FailWorkflow(error_json(exc)))
        self.closed = True

    def _lookup_activity(self, ref: Any) -> tuple[str, ActivityOptions, Any]:
        if self._activity_lookup is not None:
            return self._activity_lookup(ref)
        if isinstance(ref, str):
            return ref, ActivityOptions(), None
        raise RegistrationError(f"{ref!r} is not an activity; decorate it with @app.activity")

    def _allocate_seq(self) -> int:
        self._next_seq += 1
        return self._next_seq

    def _schedule_attempt(self, call: ActivityCall) -> None:
        opts = call.options
        self._produce(
            ScheduleActivity(
                seq=call.seq,
                attempt=call.attempt,
                activity=call.name,
                args=call.args,
                task_queue=call.task_queue,
                start_to_close=opts.start_to_close or self._default_timeout,
                heartbeat_timeout=opts.heartbeat_timeout,
                schedule_to_close=opts.schedule_to_close,
                retry=call.retry.to_json(),
                heartbeat=call.heartbeat,
            )
        )

    def _retry_delay(self, call: ActivityCall, error: Mapping[str, Any]) -> float | None:
        policy = call.retry
        if error.get("non_retryable") or error.get("type") in policy.non_retryable_names():
            return None
        if not policy.allows(call.attempt):
            return None
        explicit = error.get("next_retry_delay")
        delay = float(explicit) if explicit is not None else policy.delay(call.attempt)
        deadline = call.options.schedule_to_close
        if deadline and self._now_ms + delay * 1000 >= call.first_scheduled_ms + deadline * 1000:
            return None
        return delay

    def _fail_activity(self, call: ActivityCall, error: Mapping[str, Any]) -> None:
        call.done = True
        if call.future.done():
            return
        call.future.set_exception(
            ActivityError(
                call.name,
                str(error.get("type", "Error")),
                str(error.get("message", "")),
                call.attempt,
                non_retryable=bool(error.get("non_retryable")),
                details=tuple(error.get("details") or ()),
            )
        )

    def _on_activity_future_done(self, call: ActivityCall) -> None:
        if call.future.cancelled() and not call.done:
            call.done = True
            self._produce(RequestActivityCancel(call.seq))

    def patched(self, patch_id: str, *, deprecated: bool = False) -> bool:
        """Whether this run takes the code path of patch ``patch_id`` (``ctx.patched``).

        The history answers when it can: its marker means yes; a point it already decided
        without one means the run was recorded by the code before the patch. Anywhere else the
        run is new code going forward: yes, and the marker is recorded for replays.
        """
        check_patch_id(patch_id)
        answer = self._patches.get(patch_id)
        if answer is None:
            recorded = (h.PATCH_RECORDED, patch_id) in self._recorded
            answer = recorded or not self.replaying
            if answer:
                self._produce(RecordPatch(patch_id, deprecated))
            self._patches[patch_id] = answer
        return answer

    def label_next_timer(self, label: str | None) -> None:
        """Say in the history what the next timer the code starts is for (shown, not replayed)."""
        self._timer_label = label

    def _start_user_timer(self, handle: asyncio.TimerHandle) -> None:
        seq = self._allocate_seq()
        delay = max(handle.when() - self._clock(), 0.0)
        label, self._timer_label = self._timer_label, None
        state = self._start_timer(str(seq), "timer", delay, seq=seq, label=label)
        state.handle = handle

    def _start_timer(
        self,
        timer_id: str,
        purpose: str,
        delay: float,
        *,
        seq: int | None = None,
        label: str | None = None,
    ) -> TimerState:
        state = TimerState(timer_id, purpose, seq)
        self._timers[timer_id] = state
        fire_at = self._now_ms + int(delay * 1000)
        self._produce(StartTimer(timer_id, purpose, round(delay, 3), fire_at, seq, label))
        return state

    def _produce(self, command: Command) -> None:
        if self.closed or self._nondeterminism is not None:
            return
        cmd = command.to_wire()  # what decisions store, and what replay compares
        key = h.command_key(cmd)
        if h.is_user_command(cmd):
            recorded = self._recorded_user.pop(int(cmd["seq"]), None)
            if recorded is not None and not h.same_command(recorded, cmd):
                self._nondeterministic(
                    cmd["seq"], h.describe_command(recorded), h.describe_command(cmd)
                )
                raise _Abort
        if key in self._recorded:
            self._recorded.pop(key)
            self._awaiting.add(key)
        else:
            self._pending.append(cmd)

    def _nondeterministic(self, step: int, recorded: str, produced: str) -> None:
        if self._nondeterminism is None:
            self._nondeterminism = NondeterminismError(
                self.info.workflow_id, step, recorded, produced
            )

    def _raise_nondeterminism(self) -> None:
        if self._nondeterminism is not None:
            raise self._nondeterminism

    def _clock(self) -> float:
        return self._now_ms / 1000.0

    def _loop_error(self, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        message = str(context.get("message", ""))
        if isinstance(exc, _Abort | asyncio.CancelledError) or self.evicting:
            return  # expected while a run unwinds or is discarded
        if message.startswith("Task was destroyed but it is pending"):
            return  # a parked workflow that was dropped from memory; its history has it all
        log.warning("workflow %s: %s", self.info.workflow_id, context.get("message"), exc_info=exc)


_NO_PATCH_CALL = (
    "no ctx.patched() for it: retire a patch with ctx.deprecate_patch() before removing its "
    "call, and never reuse a patch id for another change"
)


# WorkflowTaskFailed is not here: a note for people, apply() steps over it
_FACT_HANDLERS: dict[type[Fact], Callable[[WorkflowRun, Any], None]] = {
    WorkflowStarted: WorkflowRun._apply_workflow_started,
    ActivityCompleted: WorkflowRun._apply_activity_completed,
    ActivityFailed: WorkflowRun._apply_activity_failed,
    TimerFired: WorkflowRun._apply_timer_fired,
    SignalReceived: WorkflowRun._apply_signal_received,
    CancelRequested: WorkflowRun._apply_cancel_requested,
}


def workflow_return_hint(defn: WorkflowDefinition) -> Any:
    """The type a workflow's result should be converted to for the caller."""
    return return_hint(defn.fn)
