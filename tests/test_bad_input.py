"""Bad input never harms other work: dead letters, failing workflow code, oversized payloads.

A foreign client publishes a corpus of malformed messages onto every subject the engine
consumes (history subjects, of a live workflow and of unknown ids; the activity task subject;
the activity cancellation subject). The worker stays up, the other workflows finish, and each
bad message lands in the dead-letter stream with its reason, where ``dfcore dlq list`` and
``dfcore dlq show`` find it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import orjson
import pytest

from dfcore import App, EmbeddedServer, PayloadTooLargeError
from dfcore.core import _history as h
from dfcore.jetstream._naming import PARTITIONS, Layout, partition_of

from .workerkit import ROOT, WorkerThread, wait_until


def define(app: App) -> None:
    @app.activity
    async def step(n: int) -> int:
        return n

    @app.workflow
    async def pair(ctx: Any, n: int) -> int:
        return await ctx.activity(step, n) + await ctx.activity(step, 1)

    @app.workflow
    async def gated(ctx: Any, n: int) -> int:
        await ctx.wait_signal("go")
        return await ctx.activity(step, n)


def corpus(namespace: str, live_workflow: str) -> list[tuple[str, bytes, str]]:
    """(subject, body, a phrase the dead letter's reason must contain) for every bad message."""
    lay = Layout(namespace)

    def history(workflow_id: str) -> str:
        return lay.history_subject("default", workflow_id)

    live = history(live_workflow)
    # A subject in another partition than its id's: the consumer that receives it must not
    # take it for that workflow's history.
    misplaced = live.replace(
        f".{partition_of(live_workflow)}.", f".{(partition_of(live_workflow) + 1) % PARTITIONS}."
    )
    task = f"{namespace}.task.default"
    unknown_fact = orjson.dumps({"t": "ActivityCompleted", "ts": 1, "seq": 1, "attempt": 1})
    ghost_task = {
        "wf": "ghost",
        "h": history("ghost"),
        "seq": 1,
        "attempt": 1,
        "activity": "step",
        "args": [1],
        "dseq": 1,
    }
    return [
        (live, b"\xff\xfe\x00garbage", "not valid JSON"),
        (live, b'{"t": "ActivityCompleted", "seq": 1', "not valid JSON"),
        (live, b'{"t": "Exploded", "ts": 1}', "unknown record type"),
        (live, b'{"t": "ActivityCompleted"}', "needs 'seq'"),
        (misplaced, unknown_fact, "not in its workflow id's partition"),
        (history("bad-types"), b'{"t": "SignalReceived", "name": 7}', "needs 'name'"),
        (history("bad-schema"), b"[1, 2, 3]", "not a history record"),
        (history("huge"), b"\x00" * 900_000, "not valid JSON"),
        (history("unknown-id"), unknown_fact, "no workflow 'unknown-id' exists"),
        (task, b"", "malformed activity task"),
        (task, b'{"wf": "x"', "malformed activity task"),
        (task, b'{"wf": "x", "h": "nope", "seq": 1}', "missing field"),
        (task, orjson.dumps({**ghost_task, "seq": "one"}), "'seq' must be int"),
        (task, orjson.dumps(ghost_task), "was never started"),
        (task, orjson.dumps({**ghost_task, "h": f"{namespace}.history.default.ghost"}), "not a"),
        (f"{namespace}.cancel.{live_workflow}", b"not json", "not an activity cancellation"),
    ]


async def publish_corpus(nats_url: str, messages: list[tuple[str, bytes, str]]) -> None:
    """Publish as a foreign client would: JetStream for streams, core NATS for the hint."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for subject, body, _ in messages:
            if ".cancel." in subject:
                await nc.publish(subject, body)
            else:
                await js.publish(subject, body)
        await nc.flush()
    finally:
        await nc.close()


def df(*args: str, nats_url: str, namespace: str) -> str:
    """Run the ``df`` command as an operator would; return its output."""
    env = {**os.environ, "DF_NATS_URL": nats_url, "DF_NAMESPACE": namespace}
    done = subprocess.run(
        [sys.executable, "-m", "dfcore", *args, "-A", "tests.apps.orders:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_malformed_messages_are_dead_lettered_and_harm_nothing(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()
    define(app)
    messages = corpus(namespace, "live-1")
    with WorkerThread(app) as worker:
        live = app.start("gated", 5, workflow_id="live-1")
        before = [app.start("pair", n) for n in range(10)]
        asyncio.run(publish_corpus(nats_url, messages))
        letters = wait_until(
            lambda: (
                (found := app.dead_letters(limit=100)) and len(found) >= len(messages) and found
            ),
            what=f"{len(messages)} dead letters",
        )
        after = [app.start("pair", n) for n in range(10, 20)]
        live.signal("go")
        assert [hd.result(timeout=30) for hd in before + after] == [n + 1 for n in range(20)]
        assert live.result(timeout=30) == 5
        assert worker._thread.is_alive()  # the worker that took the corpus is still serving
    assert len(letters) == len(messages)
    for (subject, body, phrase), letter in zip(
        sorted(messages, key=lambda m: (m[0], m[1])), sorted(letters, key=_origin)
    ):
        assert (letter.subject, letter.data[:100]) == (subject, body[:100])
        assert phrase in letter.reason, (subject, letter.reason)
    huge = next(letter for letter in letters if letter.subject.endswith(".huge"))
    assert huge.size == 900_000 and len(huge.data) == 900_000 and not huge.truncated
    # The live workflow's history kept the garbage (histories are append-only) but its
    # replay skipped it: the workflow ended normally, once.
    assert [e.type for e in live.history()].count(h.WORKFLOW_COMPLETED) == 1


def _origin(letter: Any) -> tuple[str, bytes]:
    return (letter.subject, letter.data)


def test_df_dlq_list_and_show(make_app: Any, nats_url: str, namespace: str) -> None:
    app = make_app()
    define(app)
    with WorkerThread(app):
        who = Layout(namespace).history_subject("default", "who")
        asyncio.run(publish_corpus(nats_url, [(who, b'{"t": "Nope"}', "")]))
        wait_until(lambda: app.dead_letters(), what="the dead letter")
    listing = df("dlq", "list", nats_url=nats_url, namespace=namespace)
    assert "history" in listing and who in listing
    assert "unknown record type 'Nope'" in listing
    seq = app.dead_letters()[0].seq
    shown = df("dlq", "show", str(seq), nats_url=nats_url, namespace=namespace)
    assert f"Dead letter {seq}" in shown and '{"t": "Nope"}' in shown
    assert "stream seq:" in shown and "reason:" in shown


def test_the_listing_and_dead_letter_tools_survive_any_content(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()
    define(app)
    lay = Layout(namespace)
    junk_headers = {
        "Df-Dlq-Size": "many",
        "Df-Dlq-Time": "yesterday",
        "Df-Dlq-Stream-Seq": "-1",
        "Df-Dlq-Headers": "[not, a, mapping",
        "Status": "503",
    }

    async def litter() -> None:
        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            await js.publish(lay.dlq_subject("history"), b"\xff", headers=junk_headers)
            await js.publish(lay.dlq_subject("history"), b"", headers={"Df-Dlq-Size": ""})
            # Subjects under history.> that are no workflow's history.
            await js.publish(f"{namespace}.history.default.99.stray", b"{}")
            await js.publish(f"{namespace}.history.default.0.~%%%", b"{}")
            await js.publish(f"{namespace}.status.default.{'x' * 3}", b"junk")
        finally:
            await nc.close()

    with WorkerThread(app):
        done = app.start("pair", 1)
        assert done.result(timeout=30) == 2
        asyncio.run(litter())
        letters = app.dead_letters()
        assert sorted(letter.size for letter in letters if letter.subject == "?") == [0, 1]
        workflows = app.list_workflows()
        assert [w.workflow_id for w in workflows] == [done.workflow_id]
        assert workflows[0].status == "completed"
    listing = df("dlq", "list", nats_url=nats_url, namespace=namespace)
    assert "history" in listing
    shown = df("dlq", "show", str(letters[0].seq), nats_url=nats_url, namespace=namespace)
    assert f"Dead letter {letters[0].seq}" in shown
    assert done.workflow_id in df("workflow", "list", nats_url=nats_url, namespace=namespace)


def test_a_workflow_whose_code_keeps_failing_is_retried_and_shown_as_failing(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    fixed = False

    @app.activity
    async def fetch(n: int) -> dict[str, int]:
        return {"n": n}

    @app.workflow
    async def buggy(ctx: Any, n: int) -> int:
        data = await ctx.activity(fetch, n)
        return data["n"] if fixed else data["count"]  # the bug: a key that is never there

    @app.workflow
    async def fine(ctx: Any, n: int) -> int:
        return (await ctx.activity(fetch, n))["n"]

    caplog.set_level(logging.ERROR, logger="dfcore.worker")
    with WorkerThread(app):
        stuck = buggy.start(1, workflow_id="buggy-1")
        others = [fine.start(n) for n in range(20)]
        assert [hd.result(timeout=30) for hd in others] == list(range(20))  # not blocked
        wait_until(
            lambda: sum("its code raised KeyError" in r.getMessage() for r in caplog.records) >= 3,
            what="the failing task to be retried",
        )
        status = stuck.status()
        assert status.status == "failing" and "KeyError" in (status.failure or "")
        assert any(
            w.status == "failing" for w in app.list_workflows() if w.workflow_id == "buggy-1"
        )
        events = stuck.history()
        # One note per stuck point however often it is retried, and no decision for the step.
        assert [e.type for e in events].count(h.WORKFLOW_TASK_FAILED) == 1
        assert [e.type for e in events].count(h.ACTIVITY_SCHEDULED) == 1
        fixed = True  # deploy the fix: the next retry replays and carries on
        assert stuck.result(timeout=60) == 1
    assert stuck.status().status == "completed"
    assert [e.type for e in stuck.history()].count(h.WORKFLOW_TASK_FAILED) == 1


def test_a_payload_over_the_servers_max_payload_is_refused_at_the_call_site(
    tmp_path: Path, make_app: Any
) -> None:
    config = "max_payload: 65536\n"
    with EmbeddedServer(tmp_path / "nats", config_text=config) as server:
        app = make_app(server.url)
        define(app)
        with WorkerThread(app):
            live = app.start("gated", 1)
            with pytest.raises(PayloadTooLargeError, match="65536") as info:
                app.start("pair", "x" * 100_000)
            assert "max_payload" in str(info.value)
            with pytest.raises(PayloadTooLargeError, match="65536"):
                live.signal("go", "y" * 100_000)
            live.signal("go")
            assert live.result(timeout=30) == 1
