"""What a workflow run keeps between records: its info, and each activity call and timer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from dfcore.core._definitions import ActivityOptions, RetryPolicy


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
