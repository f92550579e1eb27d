"""A batch of order workflows run by real worker processes while a fault is injected.

:class:`OrderBatch` starts ``dfcore worker`` processes (``tests.faults.orderapp:app``), starts a
batch of order workflows, tells the test when a random share of the work is done (the moment
to inject its fault), then waits for every workflow and checks the outcome against the
histories and the side-effect file the activities write. The result is a :class:`Report`, one
row of the table the suite prints at the end: workflows, lost, started twice, results used
twice, activity re-executions.

The random moment comes from a seed printed in every failure message; ``DF_FAULT_SEED=<n>``
repeats a run's choices.
"""

from __future__ import annotations

import collections
import functools
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfcore import App, DFError, WorkflowFailureError
from dfcore.client._loopthread import run_sync
from dfcore.core import _history as h

from ..workerkit import spawn_worker, wait_until
from .orderapp import app as order_app

ACTIVITIES_PER_ORDER = 2

REPORTS: list[Report] = []
"""Every report made in this run, in order; the suite's conftest prints them as a table."""


@dataclass
class Report:
    """What a fault did to a batch: one row of the closing table."""

    fault: str
    workflows: int
    lost: int = 0
    started_twice: int = 0
    results_used_twice: int = 0
    activity_reexecutions: int = 0
    failed_attempts: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    HEADER = (
        "| fault | workflows | lost | started twice | results used twice "
        "| activity re-executions | failed attempts | seconds |"
    )

    def row(self) -> str:
        return (
            f"| {self.fault} | {self.workflows} | {self.lost} | {self.started_twice} "
            f"| {self.results_used_twice} | {self.activity_reexecutions} "
            f"| {self.failed_attempts} | {self.seconds:.1f} |"
        )


@dataclass
class Effects:
    """The side effects the activities recorded, per order id."""

    charges: dict[str, list[str]] = field(default_factory=lambda: collections.defaultdict(list))
    ships: dict[str, list[tuple[str, str]]] = field(
        default_factory=lambda: collections.defaultdict(list)
    )
    total: int = 0

    @classmethod
    def read(cls, path: Path) -> Effects:
        effects = cls()
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        for line in text.splitlines():
            kind, order_id, value, _attempt = line.split(" ")
            effects.total += 1
            if kind == "charge":
                effects.charges[order_id].append(value)
            elif kind == "ship":
                charge_id, tracking_id = value.split(":")
                effects.ships[order_id].append((charge_id, tracking_id))
        return effects


class OrderBatch:
    """Order workflows, worker processes, and the checks of what a fault did to them.

    Args:
        fault: the fault's name, for the report.
        tmp_path: folder for the side-effect file and worker logs.
        nats_url: server URL(s) for workers and the client (comma-separated for a cluster).
        namespace: the test's namespace.
        count: how many workflows.
        env: extra environment for the workers (settings such as DF_ACTIVITY_ACK_WAIT).
    """

    def __init__(
        self,
        fault: str,
        tmp_path: Path,
        nats_url: str,
        namespace: str,
        *,
        count: int = 100,
        env: dict[str, str] | None = None,
        **settings: Any,
    ) -> None:
        self.fault = fault
        self.tmp_path = tmp_path
        self.nats_url = nats_url
        self.namespace = namespace
        self.count = count
        self.seed = int(os.environ.get("DF_FAULT_SEED") or random.randrange(2**32))
        self.random = random.Random(self.seed)
        self.effects_path = tmp_path / "effects.txt"
        # Short ack waits make a killed worker's unacked tasks come back in seconds.
        self.env = {
            "DF_FAULT_EFFECTS": str(self.effects_path),
            "DF_ACTIVITY_ACK_WAIT": "3",
            "DF_WORKFLOW_ACK_WAIT": "3",
            **(env or {}),
        }
        self.client = App(
            f"faults-client-{namespace}",
            registry=order_app.registry,
            nats_url=nats_url,
            namespace=namespace,
            **settings,
        )
        self.order_ids = [f"order-{i:04d}" for i in range(count)]
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._started_at = 0.0

    # -- processes ---------------------------------------------------------------------------

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a ``dfcore worker`` process (``args``: worker options such as --workflows-only)."""
        proc = spawn_worker(
            self.nats_url,
            self.namespace,
            "--loglevel",
            "INFO",
            *args,
            env=self.env,
            app="tests.faults.orderapp:app",
            log=self.tmp_path / f"{name}.log",
        )
        self.processes[name] = proc
        return proc

    def kill(self, name: str) -> None:
        """SIGKILL a worker process (no clean-up of any kind)."""
        proc = self.processes[name]
        proc.kill()
        proc.wait(10)

    def pause(self, name: str) -> None:
        """SIGSTOP a worker process: frozen, as by a long GC pause or a stopped container."""
        self.processes[name].send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        """SIGCONT a worker process that :meth:`pause` froze."""
        self.processes[name].send_signal(signal.SIGCONT)

    def log_of(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop every worker process still running (SIGTERM, then SIGKILL) and the client."""
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.client.close()

    def logs(self) -> str:
        """The end of every worker log, for failure messages."""
        parts = []
        for name in self.processes:
            path = self.tmp_path / f"{name}.log"
            lines = path.read_text(errors="replace").splitlines() if path.exists() else []
            parts.append(f"--- {name}.log (last 30 lines)\n" + "\n".join(lines[-30:]))
        return "\n".join(parts)

    # -- the batch ---------------------------------------------------------------------------

    def start(self, share: slice = slice(None)) -> None:
        """Start the batch's workflows, or the ``share`` of them given (the rest later); a start
        is retried while the server is away."""
        self._started_at = self._started_at or time.monotonic()
        for i, order_id in list(enumerate(self.order_ids))[share]:
            retry(
                functools.partial(
                    self.client.start, "order", order_id, 10.0 + i, workflow_id=order_id
                )
            )

    def unacked_activities(self) -> int:
        """Activity tasks delivered to some worker and not acknowledged yet, as the server
        counts them."""

        async def info() -> Any:
            store = await self.client.client.store()
            lay = store.layout
            return await store.js.consumer_info(lay.tasks_stream, lay.activity_consumer("default"))

        return int(run_sync(info()).num_ack_pending)

    def wait_for_progress(self, low: float = 0.15, high: float = 0.6) -> int:
        """Block until a random share (``low``..``high``) of the activities has run.

        Returns the number of activity executions seen at that moment.
        """
        target = max(1, int(self.count * ACTIVITIES_PER_ORDER * self.random.uniform(low, high)))
        return int(
            wait_until(
                lambda: (n := Effects.read(self.effects_path).total) >= target and n,
                timeout=90,
                what=f"{target} activity executions ({self.describe()})",
            )
        )

    def describe(self) -> str:
        return f"fault {self.fault!r}, seed {self.seed} (DF_FAULT_SEED={self.seed} repeats it)"

    def finish(self, timeout: float = 120.0, *, stop: bool = True) -> Report:
        """Wait for every workflow, compare results, histories and side effects; report.

        The worker processes are stopped afterwards, unless ``stop`` is False.
        """
        try:
            results = self._results(timeout)
            report = self._check(results, Effects.read(self.effects_path))
        finally:
            if stop:
                self.stop()
        report.seconds = time.monotonic() - self._started_at
        REPORTS.append(report)
        return report

    def check(self, report: Report) -> None:
        """Fail the test if anything was lost, started twice or used twice."""
        bad = report.lost or report.started_twice or report.results_used_twice
        assert not bad and not report.problems, (
            f"{self.describe()}\n{report.row()}\n"
            + "\n".join(report.problems[:20])
            + "\n"
            + self.logs()
        )

    def _results(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        results: dict[str, Any] = {}
        for order_id in self.order_ids:
            wait = functools.partial(_result, self.client.get_handle(order_id), deadline)
            try:
                results[order_id] = retry(wait, deadline=deadline)
            except (TimeoutError, WorkflowFailureError) as exc:
                results[order_id] = exc
        return results

    def _check(self, results: dict[str, Any], effects: Effects) -> Report:
        report = Report(self.fault, self.count)
        expected_effects = 0
        for order_id in self.order_ids:
            result = results[order_id]
            events = retry(self.client.get_handle(order_id).history)
            report.failed_attempts += sum(1 for e in events if e.type == h.ACTIVITY_FAILED)
            if _count(events, h.WORKFLOW_STARTED) != 1:
                report.started_twice += 1
                report.problems.append(f"{order_id}: {_count(events, h.WORKFLOW_STARTED)} starts")
            if not isinstance(result, dict) or result.get("order_id") != order_id:
                report.lost += 1
                report.problems.append(f"{order_id}: no result ({result!r})")
                continue
            expected_effects += ACTIVITIES_PER_ORDER
            why = _used_twice(order_id, result, events, effects)
            if why:
                report.results_used_twice += 1
                report.problems.append(f"{order_id}: {why}")
        report.activity_reexecutions = effects.total - expected_effects
        return report


def _result(handle: Any, deadline: float) -> Any:
    return handle.result(timeout=max(deadline - time.monotonic(), 0.1))


def _count(events: Iterable[h.HistoryEvent], kind: str) -> int:
    return sum(1 for e in events if e.type == kind)


def _used_twice(
    order_id: str, result: dict[str, Any], events: list[h.HistoryEvent], effects: Effects
) -> str | None:
    """Why the workflow did not use each activity result exactly once, or None.

    A result is used once when no decision was made twice (each command appears once), the
    workflow ended once, every shipment was for the one charge the workflow kept, and the
    workflow's result names a charge and a shipment that really happened.
    """
    commands = collections.Counter(
        (e.type, e.attributes.get("seq"), e.attributes.get("attempt"))
        for e in events
        if e.type in h.COMMAND_TYPES
    )
    repeated = [key for key, n in commands.items() if n > 1]
    if repeated:
        return f"commands decided twice: {repeated}"
    if _count(events, h.WORKFLOW_COMPLETED) != 1:
        return f"{_count(events, h.WORKFLOW_COMPLETED)} completions"
    charge_id = result["charge_id"]
    if charge_id not in effects.charges.get(order_id, []):
        return f"result charge {charge_id} was never made ({effects.charges.get(order_id)})"
    shipped_for = {c for c, _ in effects.ships.get(order_id, [])}
    if shipped_for != {charge_id}:
        return f"shipped for charges {sorted(shipped_for)}, result says {charge_id}"
    if result["tracking_id"] not in {t for _, t in effects.ships[order_id]}:
        return f"result tracking {result['tracking_id']} was never shipped"
    return None


def retry(call: Any, *, deadline: float | None = None, what: str = "a client call") -> Any:
    """Call ``call()`` until it does not fail for want of a server (it may be restarting)."""
    deadline = deadline if deadline is not None else time.monotonic() + 90
    while True:
        try:
            return call()
        except (TimeoutError, WorkflowFailureError):
            raise
        except DFError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.2)  # the server is restarting or electing a leader: ask again
