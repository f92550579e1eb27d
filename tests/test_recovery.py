"""Process-level recovery: real `dfcore worker` processes SIGKILLed, and non-determinism."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from dfcore import App, EmbeddedServer
from dfcore.client._loopthread import run_sync
from dfcore.jetstream import _requests

from .workerkit import WorkerThread, sigkill, spawn_worker, wait_until


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_killed_worker_is_replaced_and_completed_steps_do_not_rerun(
    orders_client: App, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    effects = tmp_path / "effects.txt"
    env = {"DF_TEST_SIDE_EFFECTS": str(effects)}
    first = spawn_worker(nats_url, namespace, env=env, log=tmp_path / "w1.log")
    try:
        handle = orders_client.start("order_with_approval", "kill-me", 9.0, workflow_id="restart-1")
        wait_until(lambda: "charge kill-me" in lines(effects), what="the charge to run")
        # The charge completed and the workflow waits for its signal: kill the worker outright.
        wait_until(
            lambda: any(e.type == "ActivityCompleted" for e in handle.history()),
            what="the charge to be recorded",
        )
    finally:
        sigkill(first)
    handle.signal("approve", "ops")
    second = spawn_worker(nats_url, namespace, env=env, log=tmp_path / "w2.log")
    try:
        result = handle.result(timeout=60)
    finally:
        second.terminate()
        second.wait(30)
    assert result["approved_by"] == "ops"
    assert [ln for ln in lines(effects) if ln.startswith("charge")] == ["charge kill-me"]
    assert len([ln for ln in lines(effects) if ln.startswith("ship")]) == 1


def test_sigterm_stops_the_worker_gracefully(nats_url: str, namespace: str, tmp_path: Path) -> None:
    proc = spawn_worker(nats_url, namespace, log=tmp_path / "w.log")
    wait_until(
        lambda: (
            "serving" in (tmp_path / "w.log").read_text(errors="replace")
            if (tmp_path / "w.log").exists()
            else False
        ),
        what="the worker to start",
    )
    proc.terminate()
    assert proc.wait(30) == 0
    assert "stopping" in (tmp_path / "w.log").read_text()


def test_nondeterminism_is_reported_and_the_fixed_code_continues(
    nats_url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    v1 = _original_app(nats_url, namespace)
    with WorkerThread(v1):
        handle = v1.start("flow", workflow_id="nd-1")
        wait_until(
            lambda: any(e.type == "ActivityCompleted" for e in handle.history()), what="step 1"
        )

    v2 = _changed_app(nats_url, namespace)
    caplog.set_level(logging.ERROR, logger="dfcore.worker")
    with WorkerThread(v2):
        before = len(handle.history())
        handle.signal("go")
        record = wait_until(
            lambda: next(
                (r for r in caplog.records if "not deterministic" in r.getMessage()), None
            ),
            what="a NondeterminismError in the worker log",
        )
        message = record.getMessage()
        assert "'nd-1'" in message and "step 1" in message
        assert "'charge'" in message and "'refund'" in message
        # No decision was written: only the signal, and a note that the workflow is failing.
        noted = wait_until(
            lambda: (
                [e.type for e in handle.history()[before:]]
                == ["SignalReceived", "WorkflowTaskFailed"]
            ),
            what="the WorkflowTaskFailed note",
        )
        assert noted and handle.status().status == "failing"

    with WorkerThread(v1):  # the fixed (original) code picks it up again
        assert handle.result(timeout=30) == ["ch", "tr"]
    run_sync(v1.aclose())
    run_sync(v2.aclose())


def _original_app(nats_url: str, namespace: str) -> App:
    app = App("nd", nats_url=nats_url, namespace=namespace)

    @app.activity
    def charge() -> str:
        return "ch"

    @app.activity
    def ship() -> str:
        return "tr"

    @app.workflow
    async def flow(ctx: Any) -> list[str]:
        out = [await ctx.activity(charge)]
        await ctx.wait_signal("go")
        out.append(await ctx.activity(ship))
        return out

    return app


def _changed_app(nats_url: str, namespace: str) -> App:
    app = App("nd", nats_url=nats_url, namespace=namespace)

    @app.activity
    def refund() -> str:
        return "rf"

    @app.workflow
    async def flow(ctx: Any) -> list[str]:
        await ctx.activity(refund)  # step 1 used to be charge
        await ctx.wait_signal("go")
        return []

    return app


def test_an_attempt_whose_worker_died_runs_again_once_then_counts_as_lost(
    orders_client: App, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    # The first loss may be a worker that never started the task (frozen or stopped with it
    # delivered), so the attempt runs again under its number; losing a second worker to it
    # records it as lost (WorkerLost), and the retry policy runs attempt 2.
    effects = tmp_path / "effects.txt"
    env = {"DF_TEST_SIDE_EFFECTS": str(effects), "DF_ACTIVITY_ACK_WAIT": "1"}
    handle = orders_client.start("slow_flow", "k1")
    for n in (1, 2):
        worker = spawn_worker(nats_url, namespace, env=env, log=tmp_path / f"w{n}.log")
        try:
            wait_until(
                lambda n=n: lines(effects).count("slow k1 attempt 1") == n,
                what=f"attempt 1 to start, time {n}",
            )
        finally:
            sigkill(worker)
    last = spawn_worker(nats_url, namespace, env=env, log=tmp_path / "w3.log")
    try:
        assert handle.result(timeout=60) == "done"
    finally:
        last.terminate()
        last.wait(30)
    failures = [e.attributes["error"] for e in handle.history() if e.type == "ActivityFailed"]
    assert [f["type"] for f in failures] == ["WorkerLost"]
    assert lines(effects) == ["slow k1 attempt 1", "slow k1 attempt 1", "slow k1 attempt 2"]


async def test_a_call_whose_answer_died_with_the_server_is_sent_again_on_reconnect(
    tmp_path: Path, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Requests wait far longer than the test does, so only the reconnect can end the wait.
    monkeypatch.setattr(
        _requests.Replies.request, "__kwdefaults__", {"batch": False, "timeout": 600}
    )
    server = EmbeddedServer(tmp_path / "nats", log_file=str(tmp_path / "nats.log"))
    with server:
        app = App("again", nats_url=server.url, namespace=namespace)

        @app.workflow
        async def gate(ctx: Any) -> str:
            return str(await ctx.wait_signal("go"))

        try:
            handle = await gate.astart(workflow_id="again-1")
            store = await app.client.store()
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)  # it takes the signal in, and never answers
            sending = asyncio.ensure_future(handle.asignal("go", "once", signal_id="s1"))
            while not store._replies._waiters:  # the append is sent and waits for its answer
                await asyncio.sleep(0.01)
            server.kill()
            server.start()  # same port and store; the client reconnects by itself
            await asyncio.wait_for(sending, 60)
            history = await handle.ahistory()
            assert [e.type for e in history].count("SignalReceived") == 1
        finally:
            await app.aclose()
