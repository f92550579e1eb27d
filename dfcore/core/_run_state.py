"""What a workflow run keeps between records: its info, and each activity call and timer;
and what the run's parts (activities, children) may ask of it."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dfcore.core._commands import Command
from dfcore.core._definitions import ActivityOptions, RetryPolicy, WorkflowDefinition


@dataclass
class ActivityCall:
    """Everything the engine knows about one ``ctx.activity`` call."""

    seq: int
    name: str
    args: list[Any]
    task_queue: str
    options: ActivityOptions
    retry: RetryPolicy
    result_hint: Any
    future: asyncio.Future[Any]
    attempt: int = 1
    done: bool = False
    first_scheduled_ms: int = 0
    heartbeat: Any = None


@dataclass
class TimerState:
    timer: str
    purpose: str
    seq: int | None = None
    started_ms: int = 0  # the workflow's time when it was started
    label: str | None = None
    handle: asyncio.TimerHandle | None = None
    fired: bool = False


@dataclass
class RunInfo:
    """Facts about the run, exposed to workflow code as ``ctx.info``."""

    workflow_id: str
    workflow_type: str = ""
    run_id: str = ""
    task_queue: str = ""
    namespace: str = ""
    attempt: int = 1
    start_time_ms: int = 0
    parent: Any = None  # a _facts.Parent when a workflow started this one as its child
    run: int = 1  # 2 and on: continued as new from the run before
    deadline_ms: int | None = None  # when the execution timeout ends the workflow
    schedule: str | None = None  # the schedule that started it
    trace: Mapping[str, str] = field(default_factory=dict)  # the trace headers its start carried


class Run(Protocol):
    """The run, as its parts see it (``_engine.WorkflowRun`` is the one implementation)."""

    info: RunInfo

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def now_ms(self) -> int: ...

    def allocate_seq(self) -> int: ...

    def produce(self, command: Command) -> None: ...

    def check_args(self, what: str, args: Sequence[Any]) -> None: ...

    def check_value(self, value: Any, what: str) -> None: ...

    def start_timer(
        self,
        timer_id: str,
        purpose: str,
        delay: float,
        *,
        seq: int | None = None,
        label: str | None = None,
    ) -> TimerState: ...

    def recorded_call(self, seq: int) -> Mapping[str, Any] | None: ...

    def resolve_workflow(self, name: str) -> WorkflowDefinition | None: ...
