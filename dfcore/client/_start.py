"""A workflow start: encoded without I/O (for a transactional outbox), sent later."""

from __future__ import annotations

import collections
import dataclasses
import os
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from dfcore.core._codec import JSONConverter, PayloadCodec, check_size, safe_encode
from dfcore.core._errors import SerializationError
from dfcore.core._facts import WorkflowStarted
from dfcore.core._logfields import log_fields
from dfcore.core._observe import ObservedStart, Observers
from dfcore.jetstream._store import HEADROOM

IfExists = Literal["use_existing", "fail"]


class UnsentStarts:
    """The workflow starts this process committed to an outbox and has not sent yet.

    The outbox's publishing thread sends them moments after their commit. Until it has, a
    handle that does not find one of those workflows waits for the thread rather than raise
    :class:`WorkflowNotFoundError` for a workflow its own process has just started.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the parent's thread sends them

    def _reset(self) -> None:
        self._changed = threading.Condition()
        self._ids: collections.Counter[str] = collections.Counter()

    def add(self, workflow_ids: Iterable[str]) -> None:
        with self._changed:
            self._ids.update(workflow_ids)

    def discard(self, workflow_ids: Iterable[str]) -> None:
        """These were sent, or left to the relay: nobody should wait for them any longer."""
        with self._changed:
            self._ids.subtract(workflow_ids)
            self._ids += collections.Counter()  # drops the ids counted down to zero
            self._changed.notify_all()

    def holds(self, workflow_id: str) -> bool:
        return workflow_id in self._ids

    def wait(self, workflow_id: str, timeout: float) -> bool:
        """Block until ``workflow_id`` is no longer unsent; False after ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: workflow_id not in self._ids, timeout)


UNSENT = UnsentStarts()


@dataclass(frozen=True)
class PreparedStart:
    """A workflow start, encoded but not yet sent: what a transactional outbox stores.

    Made by :meth:`dfcore.App.prepare_start`, sent by :meth:`dfcore.App.publish_start`.
    Sending the same prepared start again (a relay retrying) starts the workflow once.

    Attributes:
        workflow_id: the id of the workflow it starts.
        workflow_type: the registered workflow name.
        task_queue: the queue whose workers run it.
        data: the encoded start record (the app's codec applied).
        trace: the trace context it carries in its headers (``traceparent``, ``tracestate``,
            ``baggage``), from the app's observers where it was prepared; empty without them.
    """

    workflow_id: str
    workflow_type: str
    task_queue: str
    data: bytes
    trace: Mapping[str, str] = field(default_factory=dict)

    @property
    def what(self) -> str:
        return f"the start of workflow {self.workflow_type!r}"


def start_fields(start: PreparedStart) -> dict[str, Any]:
    """``extra=`` of a log line about a start: the first run of its workflow."""
    return log_fields(start.workflow_id, run=1, workflow_type=start.workflow_type)


def prepare_start(
    codec: PayloadCodec,
    workflow: str,
    args: Sequence[Any],
    *,
    workflow_id: str | None,
    task_queue: str,
    execution_timeout: float | None,
    max_payload: int,
    schedule: str | None = None,
    observers: Observers | None = None,
) -> PreparedStart:
    """Build and encode a start record (no I/O); an unserialisable argument is named.

    ``schedule``: the schedule starting it, which hears of its end. ``observers`` are told of
    the start, where it is made, and give it the trace context it carries.
    """
    fact = WorkflowStarted(
        workflow=workflow,
        args=list(args),
        task_queue=task_queue,
        run_id=uuid.uuid4().hex,
        execution_timeout=execution_timeout,
        schedule=schedule,
    )
    start = PreparedStart(workflow_id or str(uuid.uuid4()), workflow, task_queue, b"")
    if observers:
        observed = ObservedStart(start.workflow_id, workflow, task_queue)
        start = dataclasses.replace(start, trace=observers.start(observed))
    converter = JSONConverter()
    try:
        raw = converter.dumps(fact.to_wire(), what=start.what)
    except SerializationError:
        for i, arg in enumerate(fact.args, 1):
            converter.dumps(arg, what=f"argument {i} of workflow {workflow!r}")
        raise
    data = safe_encode(codec, raw, start.what)
    carried = sum(len(name) + len(value) + 4 for name, value in start.trace.items())
    check_size(len(data) + HEADROOM + carried, max_payload, start.what)
    return dataclasses.replace(start, data=data)
