"""``app.schedules``: create, change, pause, resume, trigger, delete and list schedules.

Every call reads the schedule's record and replaces it, checked against the sequence it read
(a concurrent change makes it read again), and arms the schedule's next time. Workers do the
rest: each tick the server publishes starts the workflow of its time (``worker/_schedules``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from dfcore.client._client import append_start
from dfcore.client._handle import WorkflowHandle
from dfcore.client._loop_client import LoopClient
from dfcore.client._loopthread import run_sync
from dfcore.client._start import prepare_start
from dfcore.core._definitions import WorkflowDefinition
from dfcore.core._errors import DFError, RegistrationError
from dfcore.core._history import now_ms
from dfcore.core._registry import Registry
from dfcore.core._schedules import ScheduleSpec, ScheduleState
from dfcore.jetstream._requests import AppendConflict

T = TypeVar("T")
_TRIES = 10


@dataclass(frozen=True)
class Schedule:
    """A schedule as ``app.schedules`` shows it.

    Attributes:
        schedule_id: its id; its workflows' ids are ``<schedule_id>@<time>``.
        spec: what it starts and when (:class:`~dfcore.ScheduleSpec`).
        paused: whether its times are skipped.
        next_time: when it fires next (UTC), None while paused.
        last_workflow_id: the workflow it started last.
        buffered_time: a time waiting for that workflow to end (``overlap="buffer_one"``).
        note: what happened last, or why it was paused.
    """

    schedule_id: str
    spec: ScheduleSpec
    paused: bool
    next_time: datetime | None
    last_workflow_id: str | None
    buffered_time: datetime | None
    note: str

    @classmethod
    def of(cls, state: ScheduleState) -> Schedule:
        return cls(
            state.spec.schedule_id,
            state.spec,
            state.paused,
            _time(state.next_ms),
            state.last_workflow_id,
            _time(state.buffered_ms),
            state.note,
        )


def _time(ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(ms / 1000, tz=UTC) if ms is not None else None


class ScheduleHost(Protocol):
    """What the schedule API needs of the client: its calls, codec and the default queue."""

    @property
    def codec(self) -> Any: ...

    def get_handle(self, workflow_id: str, *, result_hint: Any = None) -> WorkflowHandle[Any]: ...

    async def call(
        self, call: Callable[[LoopClient], Awaitable[T]], action: str | None, note: str = ""
    ) -> T: ...


class Schedules:
    """``app.schedules``: every method has a sync form and an async twin (``create`` /
    ``acreate``...).

    Args:
        host: the client the calls go through.
        resolve: a workflow function (or its name) -> (registered name, its task queue).
    """

    def __init__(self, host: ScheduleHost, resolve: Callable[[Any], tuple[str, str]]) -> None:
        self._host = host
        self._resolve = resolve

    # -- create and change ------------------------------------------------------------------

    async def acreate(
        self,
        schedule_id: str,
        workflow: Any,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        timezone: str = "UTC",
        args: Sequence[Any] = (),
        task_queue: str | None = None,
        overlap: str = "skip",
        catch_up: str = "last",
        paused: bool = False,
    ) -> Schedule:
        """Create a schedule that starts ``workflow`` (a workflow function or its name).

        The fields are :class:`~dfcore.ScheduleSpec`'s; ``paused=True`` creates it paused.

        Raises:
            ConfigurationError: a field is invalid (the message names it).
            DFError: a schedule with this id exists with another spec (``update`` changes it).
        """
        name, queue = self._resolve(workflow)
        spec = ScheduleSpec(
            schedule_id,
            name,
            cron=cron,
            every=every,
            timezone=timezone,
            args=tuple(args),
            task_queue=task_queue or queue,
            overlap=overlap,
            catch_up=catch_up,
        )

        def change(state: ScheduleState | None) -> ScheduleState | None:
            if state is not None:
                if state.spec.same_as(spec):
                    return None  # created already: creating it again changes nothing
                raise DFError(
                    f"schedule {schedule_id!r} exists with another spec ({state.spec.describe()} "
                    f"starting {state.spec.workflow!r}): change it with "
                    "app.schedules.update(), or delete it first"
                )
            return ScheduleState(
                spec, paused=paused, next_ms=None if paused else spec.next_after(now_ms())
            )

        return await self._change(schedule_id, change, "create")

    def create(self, schedule_id: str, workflow: Any, **fields: Any) -> Schedule:
        """Sync twin of :meth:`acreate`."""
        return run_sync(self.acreate(schedule_id, workflow, **fields))

    async def aupdate(self, schedule_id: str, **fields: Any) -> Schedule:
        """Change some fields of a schedule (``cron=``, ``args=``, ``overlap=``...); its next
        time follows the new spec. ``workflow=`` takes a workflow function or its name.

        Raises:
            ConfigurationError: a field is invalid.
            DFError: there is no such schedule.
        """
        if "workflow" in fields:
            fields["workflow"], queue = self._resolve(fields["workflow"])
            fields.setdefault("task_queue", queue)
        if "every" in fields and "cron" not in fields:
            fields["cron"] = None
            fields.setdefault("timezone", "UTC")  # an interval has no time zone
        if "cron" in fields and "every" not in fields:
            fields["every"] = None

        def change(state: ScheduleState | None) -> ScheduleState:
            state = _existing(state, schedule_id)
            wire = state.spec.to_wire()
            wire.pop("id")
            spec = ScheduleSpec(schedule_id, **{**_fields(wire), **fields})
            next_ms = None if state.paused else spec.next_after(now_ms())
            return state.evolve(spec=spec, next_ms=next_ms, note="updated")

        return await self._change(schedule_id, change, "update")

    def update(self, schedule_id: str, **fields: Any) -> Schedule:
        """Sync twin of :meth:`aupdate`."""
        return run_sync(self.aupdate(schedule_id, **fields))

    async def apause(self, schedule_id: str, note: str = "") -> Schedule:
        """Stop starting workflows until :meth:`aresume`; ``note`` says why (shown in lists)."""

        def change(state: ScheduleState | None) -> ScheduleState:
            state = _existing(state, schedule_id)
            return state.evolve(paused=True, next_ms=None, buffered_ms=None, note=note or "paused")

        return await self._change(schedule_id, change, "pause")

    def pause(self, schedule_id: str, note: str = "") -> Schedule:
        """Sync twin of :meth:`apause`."""
        return run_sync(self.apause(schedule_id, note))

    async def aresume(self, schedule_id: str) -> Schedule:
        """Start workflows again, from the next time on (the times it was paused are not
        started)."""

        def change(state: ScheduleState | None) -> ScheduleState:
            state = _existing(state, schedule_id)
            next_ms = state.spec.next_after(now_ms())
            return state.evolve(paused=False, next_ms=next_ms, note="resumed")

        return await self._change(schedule_id, change, "resume")

    def resume(self, schedule_id: str) -> Schedule:
        """Sync twin of :meth:`aresume`."""
        return run_sync(self.aresume(schedule_id))

    async def atrigger(self, schedule_id: str) -> WorkflowHandle[Any]:
        """Start the schedule's workflow now, once, whatever its policies say; the id is that
        of the current time (``<schedule_id>@<now>``). Its times go on as before."""
        schedule = await self.aget(schedule_id)
        spec = schedule.spec
        at = now_ms()

        async def start(client: LoopClient) -> str:
            store = await client.store()
            prepared = prepare_start(
                self._host.codec,
                spec.workflow,
                list(spec.args),
                workflow_id=spec.workflow_id(at),
                task_queue=spec.task_queue or "",
                execution_timeout=None,
                max_payload=store.max_payload,
                schedule=schedule_id,
            )
            return await append_start(store, prepared, "use_existing")

        await self._host.call(start, f"trigger schedule {schedule_id!r}")

        def change(state: ScheduleState | None) -> ScheduleState:
            state = _existing(state, schedule_id)
            note = f"triggered by hand: {spec.workflow_id(at)}"
            return state.evolve(last_workflow_id=spec.workflow_id(at), note=note)

        await self._change(schedule_id, change, "trigger")
        return self._host.get_handle(spec.workflow_id(at))

    def trigger(self, schedule_id: str) -> WorkflowHandle[Any]:
        """Sync twin of :meth:`atrigger`."""
        return run_sync(self.atrigger(schedule_id))

    async def adelete(self, schedule_id: str) -> None:
        """Delete the schedule; the workflows it started run on.

        Raises:
            DFError: there is no such schedule.
        """

        async def delete(client: LoopClient) -> None:
            records = (await client.store()).schedules
            state, seq = await records.get(schedule_id)
            _existing(state, schedule_id)
            await records.delete(schedule_id, seq)

        await self._host.call(delete, f"delete schedule {schedule_id!r}")

    def delete(self, schedule_id: str) -> None:
        """Sync twin of :meth:`adelete`."""
        run_sync(self.adelete(schedule_id))

    # -- reading ----------------------------------------------------------------------------

    async def aget(self, schedule_id: str) -> Schedule:
        """One schedule. Raises DFError if there is none with this id."""

        async def get(client: LoopClient) -> Schedule:
            state, _ = await (await client.store()).schedules.get(schedule_id)
            return Schedule.of(_existing(state, schedule_id))

        return await self._host.call(get, f"read schedule {schedule_id!r}")

    def get(self, schedule_id: str) -> Schedule:
        """Sync twin of :meth:`aget`."""
        return run_sync(self.aget(schedule_id))

    async def alist(self) -> list[Schedule]:
        """Every schedule of the namespace, by id."""

        async def all_of(client: LoopClient) -> list[Schedule]:
            return [Schedule.of(s) for s in await (await client.store()).schedules.all()]

        return await self._host.call(all_of, "list schedules")

    def list(self) -> list[Schedule]:
        """Sync twin of :meth:`alist`."""
        return run_sync(self.alist())

    async def _change(
        self,
        schedule_id: str,
        change: Callable[[ScheduleState | None], ScheduleState | None],
        what: str,
    ) -> Schedule:
        async def run(client: LoopClient) -> Schedule:
            records = (await client.store()).schedules
            for _ in range(_TRIES):
                state, seq = await records.get(schedule_id)
                new = change(state)
                if new is None:  # nothing to change: arm it anyway (a retried create)
                    assert state is not None
                    await records.arm(state)
                    return Schedule.of(state)
                try:
                    await records.put(new, seq)
                except AppendConflict:
                    continue  # changed meanwhile (a worker fired it): read it again
                return Schedule.of(new)
            raise DFError(f"could not {what} schedule {schedule_id!r}: it kept changing")

        return await self._host.call(run, f"{what} schedule {schedule_id!r}")


def _existing(state: ScheduleState | None, schedule_id: str) -> ScheduleState:
    if state is None:
        raise DFError(
            f"there is no schedule {schedule_id!r} in this namespace: "
            "app.schedules.list() shows the ones there are"
        )
    return state


def _fields(wire: dict[str, Any]) -> dict[str, Any]:
    """A stored spec's fields as ScheduleSpec takes them."""
    out = dict(wire)
    out["args"] = tuple(out.get("args") or ())
    return out


W = TypeVar("W")


def declare_schedule(
    registry: Registry, schedule_id: str, fields: dict[str, Any]
) -> Callable[[W], W]:
    """``@app.schedule(...)``: declare a schedule of the workflow it decorates (checked now)."""

    def declare(workflow: W) -> W:
        defn = getattr(workflow, "definition", None)
        if not isinstance(defn, WorkflowDefinition):
            raise RegistrationError(
                f"@app.schedule({schedule_id!r}) must decorate a workflow: put it above "
                "@app.workflow"
            )
        fields.setdefault("task_queue", defn.task_queue)
        registry.add_schedule(ScheduleSpec(schedule_id, defn.name, **fields))
        return workflow

    return declare
