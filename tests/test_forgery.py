"""Well-formed but false records cannot steer a workflow (docs/security.md, "Threat model").

A foreign client with publish rights writes records onto a live workflow's history subject, as
anyone who may publish in the namespace can.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import nats
import orjson
import pytest

from dfcore import DFError
from dfcore.jetstream._naming import Layout

from .workerkit import WorkerThread, wait_until


async def forge(
    nats_url: str,
    subject: str,
    body: dict[str, Any] | bytes,
    headers: dict[str, str] | None = None,
) -> None:
    """Publish as a foreign client with publish rights would (a record, or raw bytes)."""
    nc = await nats.connect(nats_url)
    try:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        await nc.jetstream().publish(subject, data, headers=headers)
    finally:
        await nc.close()


def define_gate(app: Any) -> Any:
    """A workflow that waits for the signal ``go`` and returns its payload."""

    @app.workflow
    async def gate(ctx: Any) -> str:
        return str(await ctx.wait_signal("go"))

    return gate


async def running(gate: Any, workflow_id: str) -> Any:
    """Start ``gate`` as ``workflow_id`` and wait until a worker has taken it on."""
    handle = await gate.astart(workflow_id=workflow_id)
    wait_until(lambda: handle.status().status == "running", what="the workflow running")
    return handle


async def test_a_record_dated_an_hour_ahead_does_not_move_the_workflows_clock(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()

    @app.workflow
    async def nap(ctx: Any) -> float:
        await ctx.wait_signal("go")
        before = ctx.now().timestamp()
        await ctx.sleep(1)
        return before

    with WorkerThread(app):
        handle = await nap.astart(workflow_id="nap-1")
        wait_until(lambda: handle.status().status == "running", what="the workflow running")
        hour_ahead = int(time.time() * 1000) + 3_600_000
        subject = Layout(namespace).history_subject("default", "nap-1")
        await forge(nats_url, subject, {"t": "SignalReceived", "ts": hour_ahead, "name": "go"})
        # The signal counts (it is well formed), but the workflow's clock is the server's time
        # of the record, so the one-second sleep ends in about a second, not in an hour.
        before = await handle.aresult(timeout=30)
    assert abs(before - time.time()) < 600  # the clock never jumped by the forged hour


async def test_a_record_whose_timestamp_is_not_a_number_is_dead_lettered(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()
    gate = define_gate(app)

    with WorkerThread(app):
        handle = await running(gate, "gate-1")
        subject = Layout(namespace).history_subject("default", "gate-1")
        await forge(nats_url, subject, {"t": "SignalReceived", "ts": "soon", "name": "go"})
        letters = wait_until(app.dead_letters, what="the mistyped record dead-lettered")
        assert "'ts'" in letters[0].reason
        # The workflow was not wedged by it: a real signal still reaches it.
        await handle.asignal("go", "real")
        assert await handle.aresult(timeout=30) == "real"


async def test_a_forged_outcome_is_not_believed_and_junk_beside_it_harms_nothing(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()
    gate = define_gate(app)

    lay = Layout(namespace)
    status = lay.status_subject("default", "gate-2")
    forged = {
        "t": "Decided",
        "ts": 1,
        "seq": 1,
        "cmds": [{"t": "WorkflowCompleted", "result": "x"}],
    }
    with WorkerThread(app):
        handle = await running(gate, "gate-2")
        waiting = asyncio.ensure_future(handle.aresult(timeout=30))
        await forge(nats_url, status, forged)  # stored, and seen live by the waiting client
        await forge(nats_url, status, b"\xffjunk")
        assert (await handle.astatus()).status == "running"  # the history says so
        assert not waiting.done()
        await handle.asignal("go", "real")
        assert await waiting == "real"
        assert (await app.get_handle("gate-2").astatus()).status == "completed"


async def test_garbage_after_a_finished_history_hides_nothing(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()

    @app.workflow
    async def quick(ctx: Any, n: int) -> int:
        return n + 1

    with WorkerThread(app):
        handle = await quick.astart(1, workflow_id="quick-1")
        assert await handle.aresult(timeout=30) == 2
        subject = Layout(namespace).history_subject("default", "quick-1")
        await forge(nats_url, subject, b"\x00not a record")
        again = app.get_handle("quick-1")  # a fresh handle locates the workflow anew
        assert await again.aresult(timeout=30) == 2
        assert (await again.astatus()).status == "completed"


async def test_stored_headers_that_look_like_a_server_reply_are_not_taken_for_one(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()
    gate = define_gate(app)

    with WorkerThread(app):
        handle = await running(gate, "gate-3")
        subject = Layout(namespace).history_subject("default", "gate-3")
        signal = {"t": "SignalReceived", "ts": 1, "name": "go", "payload": "via 404"}
        # Reads of this history return the message with these headers: it is a stored
        # message (the server adds Nats-Sequence), not "no message" or "no responders".
        for status in ("404", "503"):
            await forge(nats_url, subject, signal, headers={"Status": status})
        assert await handle.aresult(timeout=30) == "via 404"
        assert (await handle.astatus()).status == "completed"


async def test_a_start_behind_a_stray_message_is_refused_not_reported_as_started(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()

    @app.workflow
    async def quick(ctx: Any, n: int) -> int:
        return n + 1

    await quick.astart(0, workflow_id="first")  # the namespace's streams exist from here
    subject = Layout(namespace).history_subject("default", "taken-1")
    await forge(nats_url, subject, {"t": "SignalReceived", "ts": 1, "name": "early"})
    with pytest.raises(DFError, match="not a workflow start"):
        await quick.astart(1, workflow_id="taken-1")
    with pytest.raises(DFError, match="not a workflow start"):
        await app.astart("quick", 1, workflow_id="taken-1", if_exists="fail")


async def test_with_the_aes_gcm_codec_a_record_forged_without_the_key_is_rejected(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    from dfcore.contrib.encryption import AESGCMCodec

    app = make_app(codec=AESGCMCodec(AESGCMCodec.generate_key()))

    @app.activity
    def pay(n: int) -> int:
        return n

    @app.workflow
    async def gate(ctx: Any) -> str:
        signal = await ctx.wait_signal("go")
        return f"{signal}:{await ctx.activity(pay, 7)}"

    with WorkerThread(app):
        handle = await gate.astart(workflow_id="sealed-1")
        wait_until(lambda: handle.status().status == "running", what="the workflow running")
        subject = Layout(namespace).history_subject("default", "sealed-1")
        # Well formed, and sent by a party that may publish, but not sealed with the key.
        await forge(nats_url, subject, {"t": "SignalReceived", "ts": 1, "name": "go", "payload": 0})
        letters = wait_until(app.dead_letters, what="the forged record dead-lettered")
        assert "not encrypted" in letters[0].reason
        assert (await handle.astatus()).status == "running"  # it was not taken as the signal
        await handle.asignal("go", "real")
        assert await handle.aresult(timeout=30) == "real:7"


async def _publish_raw(
    nats_url: str, subject: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    """Publish with headers as given, repeated names included (nats-py's dict cannot)."""
    reader, writer = await asyncio.open_connection(*nats_url.removeprefix("nats://").split(":"))
    try:
        await reader.readline()  # INFO
        block = "NATS/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        head = block.encode()
        writer.write(b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n')
        writer.write(f"HPUB {subject} {len(head)} {len(head) + len(body)}\r\n".encode())
        writer.write(head + body + b"\r\nPING\r\n")
        await writer.drain()
        while not (await reader.readline()).startswith(b"PONG"):
            pass
    finally:
        writer.close()


async def test_a_repeated_header_cannot_pass_for_what_the_server_checked(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    # The server checks the first copy of Nats-Expected-Last-Subject-Sequence; a client library
    # that kept the last would take a start appended after a finished history for its first
    # record, and run the workflow again from the forged arguments.
    from .test_traffic import settled

    app = make_app()

    @app.workflow
    async def quick(ctx: Any, n: int) -> int:
        return n + 1

    lay = Layout(namespace)
    with WorkerThread(app):
        handle = await quick.astart(1, workflow_id="once-1")
        assert await handle.aresult(timeout=30) == 2
        store = await app.client.store()
        subject = lay.history_subject("default", "once-1")
        last = await store.last_seq(subject)
        start = {"t": "WorkflowStarted", "ts": 1, "workflow": "quick", "args": [41], "prev": 0}
        headers = [
            ("Nats-Expected-Last-Subject-Sequence", str(last)),  # true: the server stores it
            ("Nats-Expected-Last-Subject-Sequence", "0"),  # what a forger wants read
        ]
        await _publish_raw(nats_url, subject, headers, orjson.dumps(start))
        nc = await nats.connect(nats_url)
        try:
            await settled(nc, lay, "default")
        finally:
            await nc.close()
        kinds = [e.type for e in await handle.ahistory()]
    assert kinds.count("WorkflowCompleted") == 1, kinds  # it did not run again
    assert await app.get_handle("once-1").aresult(timeout=5) == 2
