"""Child workflows, as the parent's run keeps them: started, signalled, cancelled, awaited.

A child is one call of the parent's code (a ``seq``, like an activity). Its start is a
``ChildWorkflowScheduled`` command; the parent's worker then makes the child's history and
appends ``ChildWorkflowStarted`` to the parent's, and the child's worker appends
``ChildWorkflowEnded`` when it ends. Both facts are matched by ``seq``, so a replay feeds the
code the same answers, and the child's id (``<parent id>/<seq>`` unless the code names one) is
the same on every replay: a parent replayed after a crash never starts a child twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dfcore.core._call_args import return_hint
from dfcore.core._commands import CancelChild, SignalChild, StartChild
from dfcore.core._config_parsers import check_queue_name
from dfcore.core._convert import convert
from dfcore.core._definitions import WorkflowDefinition
from dfcore.core._errors import ChildWorkflowError, RegistrationError, SerializationError
from dfcore.core._facts import ChildWorkflowEnded, ChildWorkflowStarted
from dfcore.core._run_state import Run, RunInfo

POLICIES: Final = ("cancel", "abandon")
MAX_CHILD_ID: Final = 255


@dataclass
class ChildCall:
    """Everything the parent's run knows about one child."""

    seq: int
    workflow: str
    workflow_id: str
    task_queue: str
    policy: str
    result_hint: Any
    started: asyncio.Future[None]
    result: asyncio.Future[Any]
    cancel_requested: bool = False
    ended: bool = False


def default_child_id(info: RunInfo, seq: int) -> str:
    """``<parent id>/<step>``; from a continued run on, ``<parent id>/r<run>/<step>``."""
    if info.run > 1:
        return f"{info.workflow_id}/r{info.run}/{seq}"
    return f"{info.workflow_id}/{seq}"


class ChildWorkflowHandle:
    """A child workflow as its parent's code holds it (from ``await ctx.start_child(...)``).

    ``await handle`` (or ``await handle.result()``) returns the child's result, or raises
    :class:`~dfcore.ChildWorkflowError`.
    """

    def __init__(self, children: Children, call: ChildCall) -> None:
        self._children = children
        self._call = call

    @property
    def workflow_id(self) -> str:
        return self._call.workflow_id

    @property
    def started(self) -> asyncio.Future[None]:
        """Resolves once the child runs (raises ChildWorkflowError if it could not start)."""
        return self._call.started

    def __repr__(self) -> str:
        return f"<ChildWorkflowHandle {self._call.workflow!r} {self._call.workflow_id!r}>"

    def __await__(self) -> Generator[Any, None, Any]:
        return self.result().__await__()

    async def result(self) -> Any:
        """The child's result; a cancelled wait leaves the child running."""
        return await asyncio.shield(self._call.result)

    async def signal(self, name: str, payload: Any = None) -> None:
        """Send the child signal ``name``; it arrives once the parent's step is recorded."""
        self._children.signal(self._call, name, payload)

    async def cancel(self) -> None:
        """Ask the child to cancel; its end reaches the parent as a ChildWorkflowError."""
        self._children.cancel(self._call)


class Children:
    """The children of one run."""

    def __init__(self, run: Run) -> None:
        self._run = run
        self._calls: dict[int, ChildCall] = {}

    def get(self, seq: int) -> ChildCall | None:
        return self._calls.get(seq)

    # -- what the parent's code calls -------------------------------------------------------

    def start(
        self,
        ref: Any,
        args: Sequence[Any],
        *,
        workflow_id: str | None,
        task_queue: str | None,
        parent_close_policy: str,
        execution_timeout: float | None,
    ) -> ChildWorkflowHandle:
        run = self._run
        name, hint = self._resolve(ref, task_queue)
        if parent_close_policy not in POLICIES:
            raise ValueError(
                f"parent_close_policy must be 'cancel' or 'abandon', got {parent_close_policy!r}"
            )
        if task_queue is not None:
            check_queue_name(task_queue, f"child workflow {name!r}")
        seq = run.allocate_seq()
        child_id = workflow_id if workflow_id is not None else default_child_id(run.info, seq)
        if not isinstance(child_id, str) or not 0 < len(child_id) <= MAX_CHILD_ID:
            raise ValueError(
                f"child workflow id {child_id!r} must be 1 to {MAX_CHILD_ID} characters: "
                "pass a shorter workflow_id= to ctx.child"
            )
        run.check_args(f"child workflow {name!r}", args)
        queue = task_queue or run.info.task_queue
        recorded = run.recorded_call(seq)
        if recorded is not None and recorded.get("workflow") == name:
            # On replay the child is the one the history started, whatever today's code says
            # of its id, queue or policy: later signals and cancellations must reach it.
            child_id, queue = str(recorded["workflow_id"]), str(recorded["task_queue"])
            if recorded.get("parent_close_policy") in POLICIES:
                parent_close_policy = str(recorded["parent_close_policy"])
        loop = run.loop
        call = ChildCall(
            seq=seq,
            workflow=name,
            workflow_id=child_id,
            task_queue=queue,
            policy=parent_close_policy,
            result_hint=hint,
            started=loop.create_future(),
            result=loop.create_future(),
        )
        call.result.add_done_callback(_observed)  # a child nobody awaits may fail quietly
        self._calls[seq] = call
        run.produce(
            StartChild(
                seq,
                name,
                child_id,
                call.task_queue,
                list(args),
                parent_close_policy,
                execution_timeout,
            )
        )
        return ChildWorkflowHandle(self, call)

    def signal(self, call: ChildCall, name: str, payload: Any) -> None:
        run = self._run
        run.check_value(payload, f"the payload of signal {name!r}")
        seq = run.allocate_seq()
        run.produce(SignalChild(seq, call.seq, call.workflow_id, call.task_queue, name, payload))

    def cancel(self, call: ChildCall) -> None:
        if call.ended or call.cancel_requested:
            return
        call.cancel_requested = True
        self._run.produce(CancelChild(call.seq, call.workflow_id, call.task_queue))

    def close(self) -> None:
        """The parent ends: cancel the children it has not abandoned (its close policy)."""
        for call in self._calls.values():
            if call.policy == "cancel":
                self.cancel(call)

    # -- facts ------------------------------------------------------------------------------

    def on_started(self, fact: ChildWorkflowStarted) -> None:
        call = self._calls.get(fact.seq)
        if call is not None and not call.started.done():
            call.started.set_result(None)

    def on_ended(self, fact: ChildWorkflowEnded) -> None:
        call = self._calls.get(fact.seq)
        if call is None or call.ended:
            return  # a duplicate, or a child this history never started
        call.ended = True
        if fact.status == "completed":
            if not call.started.done():
                call.started.set_result(None)
            try:
                call.result.set_result(convert(fact.result, call.result_hint))
            except SerializationError as exc:
                call.result.set_exception(exc)
            return
        error = _child_error(call, fact.status, fact.error or {})
        if not call.started.done():
            if fact.status == "not_started":
                call.started.set_exception(error)
            else:
                call.started.set_result(None)
        call.result.set_exception(error)

    def _resolve(self, ref: Any, task_queue: str | None) -> tuple[str, Any]:
        """The child's workflow name and result type, from a registered workflow or a name."""
        defn = getattr(ref, "definition", None)
        if isinstance(defn, WorkflowDefinition):
            return defn.name, return_hint(defn.fn)
        if isinstance(ref, str) and ref:
            known = self._run.resolve_workflow(ref)
            if known is None and task_queue is None:
                raise RegistrationError(
                    f"child workflow {ref!r} is not registered here: register it with "
                    "@app.workflow in a module the workers import, or pass task_queue= to "
                    "run it on the workers that have it"
                )
            return ref, return_hint(known.fn) if known is not None else None
        if callable(ref):
            name = getattr(ref, "__name__", repr(ref))
            known = self._run.resolve_workflow(name)
            if known is not None and known.fn is ref:
                return name, return_hint(ref)
            raise RegistrationError(
                f"{name!r} is not a registered workflow: decorate it with @app.workflow to run "
                "it as a child"
            )
        raise TypeError(f"ctx.child takes a workflow or its name, got {ref!r}")


def _child_error(call: ChildCall, status: str, error: Mapping[str, Any]) -> ChildWorkflowError:
    return ChildWorkflowError(
        call.workflow_id,
        call.workflow,
        status,
        str(error.get("type", "Error")),
        str(error.get("message", "")),
    )


def _observed(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()
