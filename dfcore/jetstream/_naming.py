"""Every stream, subject and consumer name the engine uses, derived from the namespace.

See docs/architecture.md for why the layout is what it is; tests/test_layout.py pins it.
"""

from __future__ import annotations

import base64
import re
import zlib
from dataclasses import dataclass

from dfcore.core._errors import ConfigurationError

_SAFE_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")
MAX_WORKFLOW_ID = 200
# Workflow tasks of a queue are split into this many partitions, each a consumer that one
# worker process holds at a time (docs/architecture.md, "Affinity"). Fixed, because every
# client and worker must put a workflow's records on the same subject; 12 divides evenly among
# 1, 2, 3, 4 and 6 worker processes.
PARTITIONS = 12


def partition_of(workflow_id: str) -> int:
    """The partition of a workflow: a stable hash of its id (the same in every process)."""
    return zlib.crc32(workflow_id.encode()) % PARTITIONS


def check_workflow_id(workflow_id: str) -> str:
    """Return ``workflow_id`` if a workflow can have it, else raise :class:`ConfigurationError`.

    Any characters are allowed; the length is 1 to ``MAX_WORKFLOW_ID``.
    """
    if not isinstance(workflow_id, str):
        raise ConfigurationError(f"workflow_id must be a str, got {type(workflow_id).__name__}")
    if not workflow_id or len(workflow_id) > MAX_WORKFLOW_ID:
        raise ConfigurationError(
            f"workflow_id must be 1 to {MAX_WORKFLOW_ID} characters, got {len(workflow_id)}"
        )
    return workflow_id


def check_task_queue(name: str) -> str:
    """Return ``name`` if it can name a task queue, else raise :class:`ConfigurationError`."""
    return check_queue(name)


def workflow_token(workflow_id: str) -> str:
    """A subject token for a workflow id: the id itself when safe, else ``~`` + base64url."""
    check_workflow_id(workflow_id)
    if _SAFE_TOKEN.fullmatch(workflow_id):
        return workflow_id
    encoded = base64.urlsafe_b64encode(workflow_id.encode()).decode().rstrip("=")
    return "~" + encoded


def run_token(workflow_id: str, run: int) -> str:
    """What message ids of run ``run`` of a workflow start with: its token, ``#<run>`` added
    from the second run on (a continued run repeats the steps of the one before, and must not
    be deduplicated against them)."""
    token = workflow_token(workflow_id)
    return token if run <= 1 else f"{token}#{run}"


def workflow_id_from_token(token: str) -> str:
    """Inverse of :func:`workflow_token`."""
    if not token.startswith("~"):
        return token
    body = token[1:]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()


def check_queue(name: str, what: str = "task_queue") -> str:
    if not isinstance(name, str) or not _SAFE_TOKEN.fullmatch(name) or len(name) > 64:
        raise ConfigurationError(
            f"{what} {name!r} may only contain letters, digits, '_' and '-' (at most 64)"
        )
    return name


@dataclass(frozen=True)
class Layout:
    """Names for one namespace.

    Streams:
        ``DF_<ns>_HISTORY``  limits retention; ``<ns>.history.<queue>.<p>.<wf>`` holds each
                             workflow's records (``p``: its partition, see :func:`partition_of`);
                             ``<ns>.timer.<queue>.<wf>.<timer>`` its pending timers;
                             ``<ns>.status.<queue>.<wf>`` its final outcome, once it ended;
                             ``<ns>.index.<queue>.<wf>`` its entry in listings (type, status,
                             times), replaced as its status changes;
                             ``<ns>.runs.<queue>.<wf>.<n>`` the records of its run ``n``, kept
                             once it continued as new; ``<ns>.sched.<id>.state`` a schedule,
                             ``.at`` its next time (a message schedule), ``.tick`` its times
                             as the server publishes them.
        ``DF_<ns>_TASKS``    work-queue retention; ``<ns>.task.<queue>`` holds activity tasks;
                             ``<ns>.admit.<queue>.<p>`` starts waiting for room in the cache of
                             the worker that serves partition ``p``.
        ``DF_<ns>_DLQ``      limits retention; ``<ns>.dlq.<source>`` holds messages a worker
                             could not use (source: history, task or cancel), with the reason.
    Consumers:
        ``wf_<queue>_<p>``   on HISTORY, filter ``<ns>.history.<queue>.<p>.*``: workflow tasks,
                             pinned to one worker (priority group ``df``).
        ``adm_<queue>_<p>``  on TASKS, filter ``<ns>.admit.<queue>.<p>``: deferred starts.
        ``sched``            on HISTORY, filter ``<ns>.sched.*.tick``: every schedule's times,
                             shared by all workflow workers.
        ``act_<queue>``      on TASKS, filter ``<ns>.task.<queue>``: activity tasks.
    Core NATS subjects (no stream): ``<ns>.workers.<queue>``, the heartbeats of the worker
    processes serving a queue's workflows; ``<ns>.cancel.<wf>``, activity cancellations;
    ``<ns>.ctl.workers``, where worker processes are asked to describe themselves.
    """

    namespace: str

    @property
    def history_stream(self) -> str:
        return f"DF_{self.namespace}_HISTORY"

    @property
    def tasks_stream(self) -> str:
        return f"DF_{self.namespace}_TASKS"

    @property
    def dlq_stream(self) -> str:
        return f"DF_{self.namespace}_DLQ"

    def dlq_subject(self, source: str) -> str:
        """Where messages that ``source`` (history, task, cancel) could not use are kept."""
        return f"{self.namespace}.dlq.{source}"

    @property
    def dlq_all(self) -> str:
        return f"{self.namespace}.dlq.>"

    def history_subject(self, queue: str, workflow_id: str) -> str:
        token = workflow_token(workflow_id)
        return f"{self.namespace}.history.{queue}.{partition_of(workflow_id)}.{token}"

    def history_any_queue(self, workflow_id: str) -> str:
        token = workflow_token(workflow_id)
        return f"{self.namespace}.history.*.{partition_of(workflow_id)}.{token}"

    def history_filter(self, queue: str, partition: int) -> str:
        """The history subjects of one partition of ``queue``."""
        return f"{self.namespace}.history.{queue}.{partition}.*"

    @property
    def history_all(self) -> str:
        return f"{self.namespace}.history.>"

    @property
    def timers_all(self) -> str:
        return f"{self.namespace}.timer.>"

    def timers_of(self, queue: str, workflow_id: str) -> str:
        """Every pending timer of a workflow, of all its runs."""
        return f"{self.namespace}.timer.{queue}.{workflow_token(workflow_id)}.>"

    def timers_of_run(self, queue: str, workflow_id: str, run: int) -> str:
        """The pending timers of one run (a continued run's are a token deeper)."""
        of_run = f".r{run}" if run > 1 else ""
        return f"{self.namespace}.timer.{queue}.{workflow_token(workflow_id)}{of_run}.*"

    def runs_subject(self, queue: str, workflow_id: str, run: int) -> str:
        """Where run ``run`` of a workflow that continued as new keeps its records."""
        return f"{self.namespace}.runs.{queue}.{workflow_token(workflow_id)}.{run}"

    @property
    def runs_all(self) -> str:
        return f"{self.namespace}.runs.>"

    def schedule_subject(self, schedule_id: str) -> str:
        """The record of schedule ``schedule_id`` (its spec and state)."""
        return f"{self.namespace}.sched.{schedule_id}.state"

    def schedule_at_subject(self, schedule_id: str) -> str:
        """The message schedule that publishes the schedule's next tick."""
        return f"{self.namespace}.sched.{schedule_id}.at"

    def schedule_tick_subject(self, schedule_id: str) -> str:
        return f"{self.namespace}.sched.{schedule_id}.tick"

    @property
    def schedules_all(self) -> str:
        return f"{self.namespace}.sched.>"

    @property
    def schedule_states(self) -> str:
        return f"{self.namespace}.sched.*.state"

    @property
    def schedule_ticks(self) -> str:
        return f"{self.namespace}.sched.*.tick"

    SCHEDULE_CONSUMER = "sched"

    def parse_schedule_tick(self, subject: str) -> str:
        """The schedule id of a tick subject; raises ValueError if it is not one."""
        parts = subject.split(".")
        if len(parts) != 4 or parts[0] != self.namespace or parts[1:4:2] != ["sched", "tick"]:
            raise ValueError(f"{subject!r} is not a schedule tick subject of {self.namespace!r}")
        return parts[2]

    def status_subject(self, queue: str, workflow_id: str) -> str:
        return f"{self.namespace}.status.{queue}.{workflow_token(workflow_id)}"

    def status_any_queue(self, workflow_id: str) -> str:
        return f"{self.namespace}.status.*.{workflow_token(workflow_id)}"

    @property
    def status_all(self) -> str:
        return f"{self.namespace}.status.>"

    def status_for(self, history_subject: str) -> str:
        """The status subject of the workflow whose history is ``history_subject``."""
        queue, workflow_id = self.parse_history_subject(history_subject)
        return self.status_subject(queue, workflow_id)

    def index_subject(self, queue: str, workflow_id: str) -> str:
        """The workflow's index entry: one message, replaced as its status changes."""
        return f"{self.namespace}.index.{queue}.{workflow_token(workflow_id)}"

    def index_for(self, history_subject: str) -> str:
        queue, workflow_id = self.parse_history_subject(history_subject)
        return self.index_subject(queue, workflow_id)

    @property
    def index_all(self) -> str:
        return f"{self.namespace}.index.>"

    def parse_index_subject(self, subject: str) -> tuple[str, str]:
        """``(queue, workflow_id)`` of an index subject.

        Raises:
            ValueError: ``subject`` is not one.
        """
        parts = subject.split(".")
        if len(parts) != 4 or parts[0] != self.namespace or parts[1] != "index":
            raise ValueError(f"{subject!r} is not an index subject of {self.namespace!r}")
        return parts[2], workflow_id_from_token(parts[3])

    def timer_subject(self, queue: str, workflow_id: str, timer_id: str, run: int = 1) -> str:
        of_run = f"r{run}." if run > 1 else ""
        return f"{self.namespace}.timer.{queue}.{workflow_token(workflow_id)}.{of_run}{timer_id}"

    def task_subject(self, queue: str) -> str:
        return f"{self.namespace}.task.{queue}"

    @property
    def tasks_all(self) -> str:
        return f"{self.namespace}.task.>"

    def admit_subject(self, queue: str, partition: int) -> str:
        """Where a worker with a full cache leaves a start of ``partition`` until it has room."""
        return f"{self.namespace}.admit.{queue}.{partition}"

    @property
    def admit_all(self) -> str:
        return f"{self.namespace}.admit.>"

    def activity_cancel_subject(self, workflow_id: str) -> str:
        return f"{self.namespace}.cancel.{workflow_token(workflow_id)}"

    @property
    def activity_cancel_all(self) -> str:
        return f"{self.namespace}.cancel.>"

    def workers_subject(self, queue: str) -> str:
        """Heartbeats of the worker processes that serve ``queue``'s workflows."""
        return f"{self.namespace}.workers.{queue}"

    @property
    def workers_ask(self) -> str:
        """Where worker processes are asked to describe themselves (core NATS)."""
        return f"{self.namespace}.ctl.workers"

    @property
    def workers_reply(self) -> str:
        """The prefix of the subjects worker processes answer on (core NATS)."""
        return f"{self.namespace}.ctl.reply"

    @staticmethod
    def workflow_consumer(queue: str, partition: int) -> str:
        return f"wf_{queue}_{partition}"

    @staticmethod
    def activity_consumer(queue: str) -> str:
        return f"act_{queue}"

    @staticmethod
    def admit_consumer(queue: str, partition: int) -> str:
        return f"adm_{queue}_{partition}"

    def parse_status_subject(self, subject: str) -> str:
        """The workflow id of a status subject."""
        return workflow_id_from_token(subject.rsplit(".", 1)[1])

    def history_for_status(self, status_subject: str) -> str:
        """The history subject a status subject summarises.

        Raises:
            ValueError: ``status_subject`` is not one.
        """
        parts = status_subject.split(".")
        if len(parts) != 4 or parts[0] != self.namespace or parts[1] != "status":
            raise ValueError(f"{status_subject!r} is not a status subject of {self.namespace!r}")
        return self.history_subject(parts[2], workflow_id_from_token(parts[3]))

    def parse_history_subject(self, subject: str) -> tuple[str, str]:
        """``(queue, workflow_id)`` of a history subject.

        Raises:
            ValueError: ``subject`` is not one, or its partition is not the id's.
        """
        parts = subject.split(".")
        if len(parts) != 5 or parts[0] != self.namespace or parts[1] != "history":
            raise ValueError(
                f"{subject!r} is not a history subject of namespace {self.namespace!r}"
            )
        try:
            workflow_id = workflow_id_from_token(parts[4])
        except ValueError as exc:
            raise ValueError(f"{subject!r} has an unreadable workflow id: {exc}") from None
        if parts[3] != str(partition_of(workflow_id)):
            raise ValueError(f"{subject!r} is not in its workflow id's partition")
        return parts[2], workflow_id

    def workflow_of(self, subject: str | None) -> str | None:
        """The workflow id of a history subject; None for any other (for log lines)."""
        try:
            return self.parse_history_subject(subject or "")[1]
        except ValueError:
            return None

    def partition_of_subject(self, history_subject: str) -> int:
        """The partition of a history subject that :meth:`parse_history_subject` accepted."""
        return int(history_subject.split(".")[3])


def queue_of(history_subject: str) -> str:
    """The task queue of a history subject that ``parse_history_subject`` accepted."""
    return history_subject.split(".")[2]
