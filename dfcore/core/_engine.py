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
from typing import Any

from dfcore.core import _history as h
from dfcore.core._activities import Activities
from dfcore.core._call_args import decode_call_args, return_hint
from dfcore.core._children import Children
from dfcore.core._commands import (
    CancelWorkflow,
    Command,
    CompleteWorkflow,
    ContinueAsNew,
    FailWorkflow,
    RecordPatch,
    StartTimer,
    TimeOutWorkflow,
    check_patch_id,
)
from dfcore.core._definitions import ActivityOptions, WorkflowDefinition
from dfcore.core._errors import (
    DFError,
    NondeterminismError,
    PayloadError,
    SerializationError,
    UnregisteredWorkflowError,
    WorkflowCodeError,
    error_json,
)
from dfcore.core._facts import (
    ActivityCompleted,
    ActivityFailed,
    CancelRequested,
    ChildWorkflowEnded,
    ChildWorkflowStarted,
    Fact,
    SignalReceived,
    TimerFired,
    WorkflowStarted,
    fact_from_wire,
)
from dfcore.core._logfields import log_fields
from dfcore.core._run_state import ActivityCall, RunInfo, TimerState
from dfcore.core._sync_workflow import run_sync_workflow
from dfcore.core._workflow_loop import DeterministicLoop

log = logging.getLogger("dfcore.engine")

WorkflowResolver = Callable[[str], WorkflowDefinition | None]
PayloadCheck = Callable[[Any, str], None]
"""Raises SerializationError or PayloadTooLargeError if a value cannot be sent."""


class _Abort(BaseException):
    """Unwinds workflow code after a non-determinism was found; user code must not catch it."""


class ContinueAsNewRequest(BaseException):
    """Raised by ``ctx.continue_as_new``: unwinds the run, which ends with these arguments
    for the next one. A BaseException, so ``except Exception`` in workflow code lets it by."""

    def __init__(self, args: list[Any]) -> None:
        super().__init__("continue as new")
        self.next_args = args


MAX_CARRIED = 1000  # signals a run did not wait for that its next run gets, at most

# Facts that answer a command of one run: a continued workflow ignores an earlier run's.
_ANSWERS = (ActivityCompleted, ActivityFailed, TimerFired, ChildWorkflowStarted, ChildWorkflowEnded)
_ENDINGS = (CompleteWorkflow, FailWorkflow, TimeOutWorkflow, CancelWorkflow, ContinueAsNew)


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
        self.noted_failure = False  # a WorkflowTaskFailed note came after its last decision
        self.inputs: list[h.Record] = []  # facts applied since the last decision, not replayed
        self._timer_label: str | None = None
        self._unregistered = False  # started under a name this worker has no workflow for
        self.replaying = False
        self.evicting = False
        self.resolve_workflow = resolve_workflow
        self._check_payload = check_payload
        self._now_ms = 0
        self._next_seq = 0
        self._applying = 0  # the record being applied
        self.loop = DeterministicLoop(  # type: ignore[abstract]  # I/O methods are unused
            self._clock, self._start_user_timer, self._loop_error
        )
        self._main: asyncio.Task[Any] | None = None
        self._cancel_requested = False
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
        self.activities = Activities(self, activity_lookup, default_activity_timeout)
        self.children = Children(self)

    # -- feeding ----------------------------------------------------------------------------

    def apply(self, records: Iterable[h.Record]) -> None:
        """Apply records in stream order; raise NondeterminismError if code and history disagree."""
        batch = [r for r in records if r.seq > self.last_seq]
        self._prescan(batch)
        replay_until = max((r.seq for r in batch if r.type == h.DECIDED), default=0)
        for record in batch:
            self._applying = record.seq
            self.replaying = record.seq < replay_until
            if record.type == h.DECIDED:
                self._apply_decided(record)
            elif record.type == h.WORKFLOW_TASK_FAILED:
                self.noted_failure = True  # a note for people: not an input of the workflow
            elif not self.closed:
                if not self.replaying:
                    self.inputs.append(record)  # what the next decision answers (observers)
                if record.type == h.WORKFLOW_STARTED and not self.started:
                    self.info.trace = record.trace
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
        return self.activities.get(seq)

    def recorded_call(self, seq: int) -> Mapping[str, Any] | None:
        """The command the history recorded for call ``seq`` that replay has not reached."""
        return self._recorded_user.get(seq)

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
                self.loop.run_until_idle()
            except BaseException:
                log.debug(
                    "workflow %s: error while unwinding",
                    self.info.workflow_id,
                    extra=log_fields(self.info),
                )

    # -- records ----------------------------------------------------------------------------

    def _prescan(self, batch: Sequence[h.Record]) -> None:
        for record in batch:
            for cmd in record.commands:
                self._recorded[h.command_key(cmd)] = cmd
                if h.is_user_command(cmd):
                    self._recorded_user[int(cmd["seq"])] = cmd

    def _apply_decided(self, record: h.Record) -> None:
        self.decided = True
        self.inputs.clear()
        self.noted_failure = False
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
        if isinstance(fact, _ANSWERS) and fact.run != self.info.run:
            return  # a late answer to a run that continued as new: nothing waits for it
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
        info.parent = fact.parent
        info.run = fact.run
        info.schedule = fact.schedule
        info.start_time_ms = self._now_ms
        defn = self.resolve_workflow(info.workflow_type)
        if defn is None:
            self._unregistered = True  # apply() raises, unless a cancel request ends it
            return
        try:
            args, _ = decode_call_args(defn.fn, fact.args, {}, skip_first=True)
        except SerializationError as exc:
            self._fail_workflow(exc)
            return
        timeout = fact.execution_timeout or defn.execution_timeout
        if fact.deadline or timeout:
            info.deadline_ms = fact.deadline or self._now_ms + int(float(timeout or 0) * 1000)
        self._main = self.loop.create_task(self._run_workflow(defn, args))
        if info.deadline_ms is not None:
            left = max(info.deadline_ms - self._now_ms, 0) / 1000
            self.start_timer("x", "execution_timeout", left)
        for carried in fact.carried:  # what reached the last run after it decided to go on
            carried_fact = fact_from_wire(carried)
            _FACT_HANDLERS[type(carried_fact)](self, carried_fact)

    def _apply_timer_fired(self, fact: TimerFired) -> None:
        timer = self._timers.get(fact.timer)
        if timer is None or timer.fired:
            return
        timer.fired = True
        if timer.purpose == "timer" and timer.handle is not None:
            self.loop.fire(timer.handle)
        elif timer.purpose in ("retry", "schedule_to_close"):
            self.activities.on_timer(timer)
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
            self.produce(CancelWorkflow())
            self.closed = True
            return
        if self._main is not None and not self._main.done() and not self._cancel_requested:
            self._cancel_requested = True
            self._main.cancel()

    # -- what workflow code calls (through WorkflowContext) ----------------------------------

    def signal_future(self, name: str) -> asyncio.Future[Any]:
        """A future for the next signal called ``name`` (resolved now if one is buffered)."""
        future = self.loop.create_future()
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
        self.loop.run_until_idle()
        self._raise_nondeterminism()
        main = self._main
        if main is not None and main.done() and not self.closed:
            self._close_with(main)

    def _close_with(self, main: asyncio.Task[Any]) -> None:
        if main.cancelled():
            self.produce(CancelWorkflow())
        elif (exc := main.exception()) is not None:
            if isinstance(exc, ContinueAsNewRequest):
                self._continue(exc.next_args)
            elif isinstance(exc, asyncio.CancelledError):
                self.produce(CancelWorkflow())
            elif isinstance(exc, DFError | TimeoutError):
                self.produce(FailWorkflow(error_json(exc)))
            else:
                raise WorkflowCodeError(
                    self.info.workflow_id, self.info.workflow_type, exc
                ) from exc
        else:
            self._complete(main.result())
        self.closed = True

    def _continue(self, args: list[Any]) -> None:
        """End the run for the next: it gets the signals this one did not wait for."""
        unread = [
            SignalReceived(name, payload, self._now_ms).to_wire()
            for name, buffered in self._signals.items()
            for payload in buffered
        ]
        if len(unread) > MAX_CARRIED:  # signals no run waits for must not grow without end
            log.warning(
                "workflow %s: %d signals it did not wait for are dropped as it continues "
                "(at most %d go on to the next run)",
                self.info.workflow_id,
                len(unread) - MAX_CARRIED,
                MAX_CARRIED,
                extra=log_fields(self.info),
            )
            unread = unread[-MAX_CARRIED:]
        deadline = self.info.deadline_ms
        self.produce(ContinueAsNew(args, deadline, tuple(unread), after=self._applying))

    def check_args(self, what: str, args: Sequence[Any]) -> None:
        """Fail at the call (``what``: "activity 'x'"), not later in the worker, naming the
        argument that cannot be sent."""
        try:
            self.check_value(list(args), f"the arguments of {what}")
        except SerializationError:
            for i, arg in enumerate(args, 1):
                self.check_value(arg, f"argument {i} of {what}")
            raise

    def check_value(self, value: Any, what: str) -> None:
        if self._check_payload is not None:
            self._check_payload(value, what)

    def _complete(self, result: Any) -> None:
        if self._check_payload is not None:
            try:
                self._check_payload(result, f"the result of workflow {self.info.workflow_type!r}")
            except PayloadError as exc:
                self._fail_workflow(exc)
                return
        self.produce(CompleteWorkflow(result))

    def _time_out_workflow(self) -> None:
        if self.closed:
            return
        error = {"type": "TimeoutError", "message": "workflow execution timeout exceeded"}
        self.produce(TimeOutWorkflow(error))
        self.closed = True
        if self._main is not None and not self._main.done():
            self._main.cancel()
            self.loop.run_until_idle()

    def _fail_workflow(self, exc: BaseException) -> None:
        """End the workflow with ``exc`` before its code could run."""
        self.produce(FailWorkflow(error_json(exc)))
        self.closed = True

    def continue_as_new(self, args: Sequence[Any]) -> ContinueAsNewRequest:
        """What ``ctx.continue_as_new(*args)`` raises, once the arguments are known to send."""
        self.check_args(f"the next run of workflow {self.info.workflow_type!r}", args)
        return ContinueAsNewRequest(list(args))

    def allocate_seq(self) -> int:
        self._next_seq += 1
        return self._next_seq

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
                self.produce(RecordPatch(patch_id, deprecated))
            self._patches[patch_id] = answer
        return answer

    def label_next_timer(self, label: str | None) -> None:
        """Say in the history what the next timer the code starts is for (shown, not replayed)."""
        self._timer_label = label

    def _start_user_timer(self, handle: asyncio.TimerHandle) -> None:
        seq = self.allocate_seq()
        delay = max(handle.when() - self._clock(), 0.0)
        label, self._timer_label = self._timer_label, None
        state = self.start_timer(str(seq), "timer", delay, seq=seq, label=label)
        state.handle = handle

    def start_timer(
        self,
        timer_id: str,
        purpose: str,
        delay: float,
        *,
        seq: int | None = None,
        label: str | None = None,
    ) -> TimerState:
        state = TimerState(timer_id, purpose, seq, self._now_ms, label)
        self._timers[timer_id] = state
        fire_at = self._now_ms + int(delay * 1000)
        self.produce(StartTimer(timer_id, purpose, round(delay, 3), fire_at, seq, label))
        return state

    def produce(self, command: Command) -> None:
        if self.closed or self._nondeterminism is not None:
            return
        if isinstance(command, _ENDINGS):
            self.children.close()  # the children not abandoned end with their parent
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
        log.warning(
            "workflow %s: %s",
            self.info.workflow_id,
            context.get("message"),
            exc_info=exc,
            extra=log_fields(self.info),
        )


_NO_PATCH_CALL = (
    "no ctx.patched() for it: retire a patch with ctx.deprecate_patch() before removing its "
    "call, and never reuse a patch id for another change"
)


# WorkflowTaskFailed is not here: a note for people, apply() steps over it
_FACT_HANDLERS: dict[type[Fact], Callable[[WorkflowRun, Any], None]] = {
    WorkflowStarted: WorkflowRun._apply_workflow_started,
    ActivityCompleted: lambda run, fact: run.activities.on_completed(fact),
    ActivityFailed: lambda run, fact: run.activities.on_failed(fact),
    TimerFired: WorkflowRun._apply_timer_fired,
    SignalReceived: WorkflowRun._apply_signal_received,
    CancelRequested: WorkflowRun._apply_cancel_requested,
    ChildWorkflowStarted: lambda run, fact: run.children.on_started(fact),
    ChildWorkflowEnded: lambda run, fact: run.children.on_ended(fact),
}


def workflow_return_hint(defn: WorkflowDefinition) -> Any:
    """The type a workflow's result should be converted to for the caller."""
    return return_hint(defn.fn)
