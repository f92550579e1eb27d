"""Activity calls, as a run keeps them: scheduled, retried, timed out, awaited.

A call is one ``ctx.activity`` of the code (a ``seq``). Each attempt is an
``ActivityScheduled`` command, its outcome an ``ActivityCompleted`` or ``ActivityFailed`` fact
matched by ``seq`` and attempt; a retry waits on a durable timer, and a call's
``schedule_to_close`` is a timer too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from dfcore.core._commands import RequestActivityCancel, ScheduleActivity
from dfcore.core._config_parsers import check_queue_name
from dfcore.core._convert import convert
from dfcore.core._definitions import ActivityOptions, RetryPolicy
from dfcore.core._errors import ActivityError, RegistrationError, SerializationError
from dfcore.core._facts import ActivityCompleted, ActivityFailed
from dfcore.core._run_state import ActivityCall, Run, TimerState

ActivityLookup = Callable[[Any], tuple[str, ActivityOptions, Any]]


class Activities:
    """The activity calls of one run."""

    def __init__(
        self, run: Run, lookup: ActivityLookup | None, default_timeout: float | None
    ) -> None:
        self._run = run
        self._lookup_fn = lookup
        self._default_timeout = default_timeout
        self._calls: dict[int, ActivityCall] = {}

    def get(self, seq: int) -> ActivityCall | None:
        return self._calls.get(seq)

    def schedule(
        self, ref: Any, args: Sequence[Any], options: ActivityOptions
    ) -> asyncio.Future[Any]:
        """Start an activity; the returned future resolves with its result or ActivityError."""
        run = self._run
        name, defaults, hint = self._lookup(ref)
        opts = defaults.merged(options)
        opts.validate(name)
        if opts.task_queue is not None:
            check_queue_name(opts.task_queue, f"activity {name!r}")
        run.check_args(f"activity {name!r}", args)
        seq = run.allocate_seq()
        call = ActivityCall(
            seq=seq,
            name=name,
            args=list(args),
            task_queue=opts.task_queue or run.info.task_queue,
            options=opts,
            retry=opts.retry or RetryPolicy(),
            result_hint=hint,
            future=run.loop.create_future(),
            first_scheduled_ms=run.now_ms,
        )
        self._adopt_recorded_options(call)
        self._calls[seq] = call
        call.future.add_done_callback(lambda fut: self._on_future_done(call))
        self._schedule_attempt(call)
        if call.options.schedule_to_close:
            run.start_timer(f"{seq}s", "schedule_to_close", call.options.schedule_to_close, seq=seq)
        return call.future

    # -- facts and timers -------------------------------------------------------------------

    def on_completed(self, fact: ActivityCompleted) -> None:
        call = self._calls.get(fact.seq)
        if call is None or call.done or fact.attempt != call.attempt:
            return  # a duplicate, or an attempt the history did not schedule (or gave up on)
        call.done = True
        if call.future.done():
            return
        try:
            call.future.set_result(convert(fact.result, call.result_hint))
        except SerializationError as exc:
            call.future.set_exception(exc)

    def on_failed(self, fact: ActivityFailed) -> None:
        call = self._calls.get(fact.seq)
        if call is None or call.done or fact.attempt != call.attempt:
            return
        error = dict(fact.error)
        if fact.heartbeat is not None:  # the next attempt starts from the last details
            call.heartbeat = fact.heartbeat
        delay = self._retry_delay(call, error)
        if delay is None:
            self._fail(call, error)
            return
        call.attempt += 1
        if delay <= 0:
            self._schedule_attempt(call)
        else:
            self._run.start_timer(f"{call.seq}r{call.attempt}", "retry", delay, seq=call.seq)

    def on_timer(self, timer: TimerState) -> None:
        """A ``retry`` or ``schedule_to_close`` timer of a call fired."""
        call = self._calls[timer.seq or 0]
        if call.done:
            return
        if timer.purpose == "retry":
            self._schedule_attempt(call)
        else:
            error = {"type": "TimeoutError", "message": "schedule_to_close timeout exceeded"}
            self._fail(call, {**error, "non_retryable": True})

    # -- internals --------------------------------------------------------------------------

    def _lookup(self, ref: Any) -> tuple[str, ActivityOptions, Any]:
        if self._lookup_fn is not None:
            return self._lookup_fn(ref)
        if isinstance(ref, str):
            return ref, ActivityOptions(), None
        raise RegistrationError(f"{ref!r} is not an activity; decorate it with @app.activity")

    def _adopt_recorded_options(self, call: ActivityCall) -> None:
        """On replay, retries and timeouts follow what was recorded, not today's code.

        Changing an activity's retry policy or timeouts is then safe for running workflows:
        attempts already scheduled keep the options they were scheduled with.
        """
        recorded = self._run.recorded_call(call.seq)
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

    def _schedule_attempt(self, call: ActivityCall) -> None:
        opts = call.options
        self._run.produce(
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
        next_at = self._run.now_ms + delay * 1000
        if deadline and next_at >= call.first_scheduled_ms + deadline * 1000:
            return None
        return delay

    def _fail(self, call: ActivityCall, error: Mapping[str, Any]) -> None:
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

    def _on_future_done(self, call: ActivityCall) -> None:
        if call.future.cancelled() and not call.done:
            call.done = True
            self._run.produce(RequestActivityCancel(call.seq))
