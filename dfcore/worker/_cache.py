"""A workflow worker's cache entry: one per workflow it has seen lately."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from dfcore.core._engine import WorkflowRun
from dfcore.core._logfields import log_fields


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

    def log_fields(self) -> dict[str, Any]:
        """``extra=`` of a line about it: its run's id, number and type when it holds one."""
        return log_fields(self.run.info if self.run is not None else self.workflow_id)
