"""A workflow worker's cache entry: one per workflow it has seen lately."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from dfcore.core._engine import WorkflowRun


@dataclass
class CachedWorkflow:
    """A cached workflow: its run (None once closed or evicted) and a lock serialising it."""

    workflow_id: str
    subject: str
    run: WorkflowRun | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed_seq: int = 0
    users: int = 0  # handlers holding or waiting for the lock; the cache keeps such entries
    touched: float = 0.0  # when a message for it last arrived (monotonic seconds)
