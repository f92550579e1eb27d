"""The kombu transport and result backend on JetStream (``dfcore.contrib.kombu``), run by real
``celery worker`` processes of an unmodified Celery app (tests/apps/celery_on_nats.py)."""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

celery = pytest.importorskip("celery")

from kombu import Connection, Exchange, Queue  # noqa: E402

from dfcore.contrib.kombu._bridge import bridge  # noqa: E402
from dfcore.jetstream._server import EmbeddedServer  # noqa: E402
from tests.workerkit import ROOT, wait_until  # noqa: E402


def _dfnats(nats_url: str) -> str:
    return nats_url.replace("nats://", "dfnats://", 1)


class CeleryRun:
    """One test's Celery app, its workers and its side effects."""

    def __init__(self, broker: str, tmp_path: Path, **env: str) -> None:
        self.name = "k" + uuid4().hex[:10]
        self.tmp = tmp_path
        self.effects = tmp_path / "effects"
        self.env = {
            **os.environ,
            "DF_TEST_BROKER": broker,
            "DF_TEST_KOMBU": self.name,
            "DF_TEST_SIDE_EFFECTS": str(self.effects),
            **env,
        }
        self.workers: list[subprocess.Popen[bytes]] = []
        self.closed = False
        self._saved = {key: os.environ.get(key) for key in self.env}
        os.environ.update(self.env)
        sys.modules.pop("tests.apps.celery_on_nats", None)  # made again, with this test's names
        self.module = importlib.import_module("tests.apps.celery_on_nats")
        self.app = self.module.app

    def worker(self, *args: str, name: str = "w1") -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "celery", "-A", "tests.apps.celery_on_nats", "worker"]
        command += ["-n", f"{name}@%h", "-l", "info", *args]
        with open(self.tmp / f"{name}.log", "ab") as log:  # the child keeps its own copy
            proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its pool children are killed with it
            )
        self.workers.append(proc)
        wait_until(
            lambda: self.app.control.ping(destination=[self.node(name)], timeout=0.5),
            timeout=60,
            what=f"worker {name} to answer ping",
        )
        return proc

    def command(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``celery -A <the app> <args>``, as an operator types it."""
        command = [sys.executable, "-m", "celery", "-A", "tests.apps.celery_on_nats", *args]
        return subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=60
        )

    def node(self, name: str) -> str:
        return f"{name}@{os.uname().nodename}"

    def lines(self, kind: str) -> list[str]:
        if not self.effects.exists():
            return []
        return [
            line.split(" ", 1)[1]
            for line in self.effects.read_text().splitlines()
            if line.startswith(kind + " ")
        ]

    def release(self, key: str) -> None:
        (self.tmp / f"release-{key}").touch()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for proc in self.workers:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.app.close()
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module", autouse=True)
def _close_connections() -> Iterator[None]:
    """This process's kombu connections end with this module, before the test server does."""
    yield
    bridge.close()


@pytest.fixture
def run(nats_url: str, tmp_path: Path) -> Iterator[Callable[..., CeleryRun]]:
    made: list[CeleryRun] = []

    def make(broker: str | None = None, **env: str) -> CeleryRun:
        made.append(CeleryRun(broker or _dfnats(nats_url), tmp_path, **env))
        return made[-1]

    yield make
    for one in made:
        one.close()


def _consumer_state(nats_url: str, stream: str, queue: str) -> tuple[int, int]:
    """(ready, unacknowledged) messages of ``queue``, as the server counts them."""
    import nats

    async def read() -> tuple[int, int]:
        nc = await nats.connect(nats_url)
        try:
            info = await nc.jetstream().consumer_info(stream, queue)
            return int(info.num_pending), int(info.num_ack_pending)
        finally:
            await nc.close()

    return asyncio.run(read())


def test_chain_group_and_chord_complete_on_a_real_worker(run: Callable[..., CeleryRun]) -> None:
    one = run()
    one.worker("-c", "2")
    m = one.module
    assert m.add.delay(2, 3).get(timeout=30) == 5
    assert celery.chain(m.add.s(1, 2), m.add.s(3), m.add.s(4)).delay().get(timeout=30) == 10
    assert celery.group(m.add.s(i, i) for i in range(6)).delay().get(timeout=30) == [
        0,
        2,
        4,
        6,
        8,
        10,
    ]
    chord = celery.chord([m.add.s(i, 1) for i in range(5)], m.tsum.s())
    assert chord.delay().get(timeout=30) == 15


def test_celery_inspect_ping_and_control_answer(run: Callable[..., CeleryRun]) -> None:
    one = run()
    one.worker("-c", "1", name="pinged")
    out = one.command("inspect", "ping", "-t", "10", "-d", one.node("pinged"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"{one.node('pinged')}: OK" in out.stdout and "pong" in out.stdout
    registered = one.app.control.inspect([one.node("pinged")], timeout=10).registered()
    assert "tests.apps.celery_on_nats.add" in registered[one.node("pinged")]
    control = one.command("control", "enable_events", "-t", "10", "-d", one.node("pinged"))
    assert control.returncode == 0 and "task events enabled" in control.stdout, control.stdout


def test_kill_9_of_a_worker_mid_task_loses_nothing_with_acks_late(
    run: Callable[..., CeleryRun],
) -> None:
    one = run(DF_TEST_ACKS_LATE="1", DF_TEST_VISIBILITY="3")
    first = one.worker("--pool", "solo", name="doomed")
    results = [one.module.hold.delay(f"k{i}") for i in range(4)]
    started = wait_until(lambda: one.lines("start"), what="the first task to start")
    doomed_pid = started[0].split()[1]
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    one.worker("--pool", "solo", name="heir")
    for i in range(4):
        one.release(f"k{i}")
    assert sorted(r.get(timeout=60) for r in results) == ["k0", "k1", "k2", "k3"]
    assert sorted(one.lines("done")) == ["k0", "k1", "k2", "k3"]
    killed_key = started[0].split()[0]
    starts = [line.split() for line in one.lines("start")]
    assert [pid for key, pid in starts if key == killed_key][:1] == [doomed_pid]
    assert len([key for key, _ in starts if key == killed_key]) == 2  # it ran again, elsewhere


def test_tasks_outliving_the_visibility_timeout_run_once(
    run: Callable[..., CeleryRun], nats_url: str
) -> None:
    one = run(DF_TEST_ACKS_LATE="1", DF_TEST_VISIBILITY="3")
    one.worker("-c", "2", name="a")
    one.worker("-c", "2", name="b")
    eta = one.module.add.apply_async((20, 22), countdown=9)  # three ack waits away
    long = one.module.hold.delay("long")
    wait_until(lambda: one.lines("start"), what="the long task to start")
    assert eta.get(timeout=60) == 42
    one.release("long")
    assert long.get(timeout=60) == "long"
    wait_until(
        lambda: _consumer_state(nats_url, f"KOMBU-{one.name}", "celery") == (0, 0),
        what="the queue to be empty and settled",
    )
    assert one.lines("start") and len(one.lines("start")) == 1
    assert one.lines("done") == ["long"]


def test_the_server_restarting_under_load_loses_no_task(
    run: Callable[..., CeleryRun], tmp_path: Path
) -> None:
    with EmbeddedServer(tmp_path / "nats") as server:
        one = run(_dfnats(server.url), DF_TEST_VISIBILITY="5")
        one.worker("-c", "2")
        sent: list[Any] = []
        stop = threading.Event()

        def send() -> None:
            i = 0
            while not stop.is_set():
                try:
                    sent.append((i, one.module.add.apply_async((i, i), retry=True)))
                    i += 1
                except Exception:
                    stop.wait(0.1)

        sender = threading.Thread(target=send)
        sender.start()
        try:
            wait_until(lambda: len(sent) >= 50, what="50 tasks sent")
            server.restart()
            count = len(sent)
            wait_until(
                lambda: len(sent) >= count + 50, timeout=60, what="50 more sent after the restart"
            )
        finally:
            stop.set()
            sender.join(30)
        assert [result.get(timeout=60) for _, result in sent] == [2 * i for i, _ in sent]
        one.close()
        bridge.close(server.url)


def test_prefetch_bounds_unacked_deliveries_and_rejects_redeliver_or_terminate(
    nats_url: str,
) -> None:
    name = "k" + uuid4().hex[:10]
    options = {"stream": f"S{name}", "prefix": name}
    exchange = Exchange("jobs", type="direct")
    jobs = Queue("jobs", exchange, routing_key="jobs")
    got: list[Any] = []
    with Connection(_dfnats(nats_url), transport_options=options) as conn:
        producer = conn.Producer()
        with conn.Consumer(
            jobs, callbacks=[lambda body, message: got.append((body, message))]
        ) as consumer:
            consumer.qos(prefetch_count=2)
            for n in range(5):
                producer.publish({"n": n}, exchange=exchange, routing_key="jobs", declare=[jobs])
            wait_until(lambda: _drain(conn) or len(got) >= 2, what="two deliveries")
            assert [body["n"] for body, _ in got] == [0, 1]
            with pytest.raises(TimeoutError):
                conn.drain_events(timeout=1)  # a third waits for a settle
            assert _consumer_state(nats_url, options["stream"], "jobs") == (3, 2)
            got[0][1].reject(requeue=True)  # back at once, marked redelivered
            got[1][1].reject(requeue=False)  # gone for good

            def ack_as_they_come() -> bool:
                _drain(conn)
                for _, message in got[2:]:
                    if not message.acknowledged:
                        message.ack()
                return len(got) >= 6

            wait_until(ack_as_they_come, what="0 again, and 2, 3 and 4")
            again = [
                (body["n"], message.delivery_info.get("redelivered", False))
                for body, message in got[2:]
            ]
            assert sorted(again) == [(0, True), (2, False), (3, False), (4, False)]
            wait_until(
                lambda: _consumer_state(nats_url, options["stream"], "jobs") == (0, 0),
                what="everything settled",
            )
            _drain(conn)
            assert len(got) == 6  # the terminated one never came back


def _drain(conn: Connection) -> bool:
    try:
        conn.drain_events(timeout=0.2)
    except TimeoutError:
        pass
    return False


def test_topic_and_fanout_exchanges_route_by_subject(nats_url: str) -> None:
    """Two processes' worth of routing with no shared table: the server routes by subject."""
    name = "k" + uuid4().hex[:10]
    options = {"stream": f"S{name}", "prefix": name}
    topic = Exchange("events", type="topic")
    fanout = Exchange("news", type="fanout")
    queues = {
        "one-word": Queue("one-word", topic, routing_key="order.*"),
        "any-depth": Queue("any-depth", topic, routing_key="order.#"),
        "all-news-1": Queue("all-news-1", fanout),
        "all-news-2": Queue("all-news-2", fanout),
    }
    got: dict[str, list[str]] = {queue: [] for queue in queues}
    with Connection(_dfnats(nats_url), transport_options=options) as conn:
        consumers = [
            conn.Consumer(q, callbacks=[lambda body, m, q=name: (got[q].append(body), m.ack())])
            for name, q in queues.items()
        ]
        for consumer in consumers:
            consumer.consume()
        producer = conn.Producer()
        for key in ("order", "order.paid", "order.paid.late", "invoice.paid"):
            producer.publish(key, exchange=topic, routing_key=key)
        producer.publish("extra", exchange=fanout, routing_key="whatever")

        def all_in() -> bool:
            _drain(conn)
            return sum(map(len, got.values())) >= 6

        wait_until(all_in, what="every routed message")
        _drain(conn)
        for consumer in consumers:
            consumer.cancel()
    assert sorted(got["one-word"]) == ["order.paid"]
    assert sorted(got["any-depth"]) == ["order", "order.paid", "order.paid.late"]  # '#': 0+ words
    assert got["all-news-1"] == got["all-news-2"] == ["extra"]


def test_subject_names_are_one_to_one_and_filters_do_not_overlap() -> None:
    from dfcore.contrib.kombu import _subjects

    assert _subjects.token("celery") == "celery"
    names = ["a.b", "a b", "a*", "=x", "", ">"]
    assert len({_subjects.token(n) for n in names} | {"celery"}) == len(names) + 1
    assert all("." not in _subjects.token(n) for n in names)
    assert _subjects.binding_filters("p", "ex", "topic", "a.#") == ["p.x.ex.a", "p.x.ex.a.>"]
    with pytest.raises(ValueError, match="may only end a pattern"):
        _subjects.binding_filters("p", "ex", "topic", "a.#.b")
    assert _subjects.minimal(["p.x.e.a.b", "p.x.e.a.*", "p.x.e.>", "p.x.f.a"]) == [
        "p.x.e.>",
        "p.x.f.a",
    ]
    assert _subjects.consumer_name("w1@host.celery.pidbox") != _subjects.consumer_name(
        "w1@host.celery_pidbox"
    )


def test_every_queue_of_a_channel_is_consumed_and_a_stray_message_is_set_aside(
    nats_url: str,
) -> None:
    """Two queues on one channel share its prefetch (an idle one does not starve the other);
    a message that is not kombu's is terminated, named in the log, and the queue goes on."""
    import nats

    name = "k" + uuid4().hex[:10]
    options = {"stream": f"S{name}", "prefix": name}
    idle, busy = Queue("idle", routing_key="idle"), Queue("busy", routing_key="busy")
    got: list[str] = []
    with Connection(_dfnats(nats_url), transport_options=options) as conn:
        consumer = conn.Consumer(
            [idle, busy], callbacks=[lambda body, m: (got.append(body), m.ack())]
        )
        with consumer:
            consumer.qos(prefetch_count=2)
            _drain(conn)  # both pull; the idle queue's requests expire empty

            async def stray() -> None:
                nc = await nats.connect(nats_url)
                await nc.jetstream().publish(f"{name}.x.=.busy", b"not json", stream=f"S{name}")
                await nc.close()

            asyncio.run(stray())
            producer = conn.Producer()
            for n in range(5):
                producer.publish(f"job {n}", routing_key="busy", declare=[busy])

            def all_five() -> bool:
                _drain(conn)
                return len(got) >= 5

            wait_until(all_five, what="the busy queue's five messages")
    assert got == [f"job {n}" for n in range(5)]
    assert _consumer_state(nats_url, f"S{name}", "busy") == (0, 0)  # the stray one too


def test_the_result_backend_counts_once_per_increment(nats_url: str) -> None:
    """The chord counter: increments from many threads at once each count once, and a
    deleted counter starts again from one."""
    from dfcore.contrib.kombu.backend import JetStreamBackend

    app = celery.Celery("counting")
    bucket = "b" + uuid4().hex[:10]
    app.conf.result_backend_transport_options = {"bucket": bucket}
    backend = JetStreamBackend(app, url=_dfnats(nats_url))
    values: list[int] = []
    threads = [
        threading.Thread(target=lambda: values.extend(backend.incr(b"chord-1") for _ in range(5)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(values) == list(range(1, 21))
    backend.delete(b"chord-1")
    assert backend.incr(b"chord-1") == 1
    backend.set(b"celery-task-meta-x y", b"{}")  # a key NATS does not allow, encoded
    assert backend.get(b"celery-task-meta-x y") == b"{}"
    assert backend.mget([b"celery-task-meta-x y", b"celery-task-meta-none"]) == [b"{}", None]


def test_the_result_backend_waits_for_a_stream_the_server_has_not_restored(
    nats_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A restarted server answers before its streams are back ("no response from stream"): a
    result written then is written when the bucket returns, not lost as the task's failure."""
    import nats

    from dfcore.contrib.kombu.backend import JetStreamBackend

    app = celery.Celery("restoring")
    bucket = "b" + uuid4().hex[:10]
    app.conf.result_backend_transport_options = {"bucket": bucket}
    backend = JetStreamBackend(app, url=_dfnats(nats_url))
    backend.set(b"celery-task-meta-1", b"first")

    async def on_server(change: Callable[[Any], Any]) -> None:
        nc = await nats.connect(nats_url)
        try:
            await change(nc.jetstream())
        finally:
            await nc.close()

    asyncio.run(on_server(lambda js: js.delete_key_value(bucket)))  # the stream is not there
    written = threading.Thread(target=backend.set, args=(b"celery-task-meta-2", b"second"))
    written.start()
    wait_until(lambda: "trying again" in caplog.text, what="the backend to wait for its bucket")
    asyncio.run(on_server(lambda js: js.create_key_value(bucket=bucket)))
    written.join(30)
    assert not written.is_alive()
    assert backend.get(b"celery-task-meta-2") == b"second"


def test_purge_drops_the_ready_messages_of_one_queue_only(nats_url: str) -> None:
    """``celery purge`` (``queue_purge``): the queue's ready messages go, another queue bound to
    the same key keeps its own."""
    name = "k" + uuid4().hex[:10]
    options = {"stream": f"S{name}", "prefix": name}
    exchange = Exchange("jobs", type="direct")
    first, second = (Queue(q, exchange, routing_key="jobs") for q in ("first", "second"))
    with Connection(
        _dfnats(nats_url),
        transport="dfcore.contrib.kombu.transport:Transport",
        transport_options=options,
    ) as conn:
        producer = conn.Producer()
        for n in range(3):
            producer.publish(
                {"n": n}, exchange=exchange, routing_key="jobs", declare=[first, second]
            )
        channel = conn.default_channel
        assert channel.queue_purge("first") == 3
        assert _consumer_state(nats_url, f"S{name}", "first") == (0, 0)
        assert _consumer_state(nats_url, f"S{name}", "second") == (3, 0)
        producer.publish({"n": 3}, exchange=exchange, routing_key="jobs")
        assert _consumer_state(nats_url, f"S{name}", "first") == (1, 0)  # bound still
