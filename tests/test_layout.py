"""Pins the JetStream layout documented in docs/architecture.md."""

from __future__ import annotations

from collections.abc import Iterator

import nats
import orjson
import pytest
from nats.js import api

from dfcore import App, ConfigurationError
from dfcore.jetstream._naming import (
    PARTITIONS,
    Layout,
    partition_of,
    workflow_id_from_token,
    workflow_token,
)

from .workerkit import WorkerThread


def test_names() -> None:
    lay = Layout("shop")
    assert lay.history_stream == "DF_shop_HISTORY"
    assert lay.tasks_stream == "DF_shop_TASKS"
    assert lay.dlq_stream == "DF_shop_DLQ"
    assert lay.dlq_subject("task") == "shop.dlq.task"
    assert partition_of("order-42") == 10  # crc32, the same in every process and version
    assert lay.history_subject("default", "order-42") == "shop.history.default.10.order-42"
    assert lay.history_any_queue("order-42") == "shop.history.*.10.order-42"
    assert lay.history_filter("gpu", 3) == "shop.history.gpu.3.*"
    assert lay.parse_history_subject("shop.history.gpu.10.order-42") == ("gpu", "order-42")
    assert lay.partition_of_subject("shop.history.gpu.10.order-42") == 10
    assert lay.timer_subject("default", "order-42", "3r2") == "shop.timer.default.order-42.3r2"
    assert lay.task_subject("gpu") == "shop.task.gpu"
    assert lay.status_subject("default", "order-42") == "shop.status.default.order-42"
    assert lay.status_for("shop.history.gpu.10.order-42") == "shop.status.gpu.order-42"
    assert lay.index_subject("gpu", "a.b") == "shop.index.gpu.~YS5i"
    assert lay.index_for("shop.history.gpu.10.order-42") == "shop.index.gpu.order-42"
    assert lay.parse_index_subject("shop.index.gpu.~YS5i") == ("gpu", "a.b")
    assert lay.timers_of("default", "order-42") == "shop.timer.default.order-42.>"
    assert lay.workflow_consumer("gpu", 3) == "wf_gpu_3"
    assert lay.activity_consumer("gpu") == "act_gpu"
    assert lay.admit_subject("gpu", 3) == "shop.admit.gpu.3"
    assert lay.admit_consumer("gpu", 3) == "adm_gpu_3"
    assert lay.workers_subject("gpu") == "shop.workers.gpu"


@pytest.mark.parametrize(
    "subject",
    [
        "shop.history.gpu.order-42",  # no partition (an older layout)
        "shop.history.gpu.3.order-42",  # another partition than the id's
        "shop.history.gpu.x.order-42",
        "other.history.gpu.10.order-42",
        "shop.status.gpu.10.order-42",
    ],
)
def test_subjects_that_are_not_a_history_are_refused(subject: str) -> None:
    with pytest.raises(ValueError):
        Layout("shop").parse_history_subject(subject)


def test_ids_spread_over_the_partitions() -> None:
    counts = [0] * PARTITIONS
    for i in range(12_000):
        counts[partition_of(f"order-{i}")] += 1
    assert min(counts) > 800 and max(counts) < 1200


@pytest.mark.parametrize("wid", ["order-42", "a.b c", "ünï/cødé*>", "~tilde"])
def test_any_workflow_id_maps_to_one_subject_token(wid: str) -> None:
    token = workflow_token(wid)
    assert all(ch not in token for ch in ". *>")
    assert workflow_id_from_token(token) == wid


@pytest.fixture
async def js(nats_url: str) -> Iterator[object]:
    """A raw JetStream context (closed afterwards)."""
    nc = await nats.connect(nats_url)
    yield nc.jetstream()
    await nc.close()


async def test_streams_and_consumers_created_by_a_worker(
    nats_url: str, namespace: str, js: object
) -> None:
    app = App("layout", nats_url=nats_url, namespace=namespace)
    with WorkerThread(app, task_queues=["default", "gpu"]):
        pass
    hist = await js.stream_info(f"DF_{namespace}_HISTORY")  # type: ignore[attr-defined]
    assert hist.config.subjects == [
        f"{namespace}.history.>",
        f"{namespace}.timer.>",
        f"{namespace}.status.>",
        f"{namespace}.index.>",
        f"{namespace}.runs.>",
        f"{namespace}.sched.>",
    ]
    assert hist.config.retention == api.RetentionPolicy.LIMITS
    assert hist.config.storage == api.StorageType.FILE
    assert hist.config.allow_direct and hist.config.allow_msg_schedules
    assert hist.config.allow_msg_ttl  # history retention's marker expires
    tasks = await js.stream_info(f"DF_{namespace}_TASKS")  # type: ignore[attr-defined]
    assert tasks.config.retention == api.RetentionPolicy.WORK_QUEUE
    assert tasks.config.subjects == [f"{namespace}.task.>", f"{namespace}.admit.>"]
    # Durability defaults (docs/architecture.md, "Durability"): file storage, no limits on
    # histories; the task queue refuses new tasks at a limit rather than dropping old ones.
    for stream in (hist, tasks):
        assert stream.config.storage == api.StorageType.FILE
        assert stream.config.num_replicas == 1
    assert hist.config.max_age == 0 and hist.config.max_bytes == -1 and hist.config.max_msgs == -1
    assert tasks.config.discard == api.DiscardPolicy.NEW
    dlq = await js.stream_info(f"DF_{namespace}_DLQ")  # type: ignore[attr-defined]
    assert dlq.config.subjects == [f"{namespace}.dlq.>"]
    assert dlq.config.retention == api.RetentionPolicy.LIMITS
    assert dlq.config.storage == api.StorageType.FILE
    assert dlq.config.max_age == 7 * 24 * 3600  # history_retention
    sched = await js.consumer_info(f"DF_{namespace}_HISTORY", "sched")  # type: ignore[attr-defined]
    assert sched.config.filter_subject == f"{namespace}.sched.*.tick"  # shared by all workers
    assert sched.config.ack_policy == api.AckPolicy.EXPLICIT
    nc = js._nc  # type: ignore[attr-defined]
    for queue in ("default", "gpu"):
        for p in range(PARTITIONS):
            reply = await nc.request(f"$JS.API.CONSUMER.INFO.DF_{namespace}_HISTORY.wf_{queue}_{p}")
            wf = orjson.loads(reply.data)["config"]
            assert wf["filter_subject"] == f"{namespace}.history.{queue}.{p}.*"
            assert wf["ack_policy"] == "explicit"
            # Pinned to one worker at a time; the pin lapses after workflow_ack_wait / 2.
            assert wf["priority_policy"] == "pinned_client" and wf["priority_groups"] == ["df"]
            assert wf["priority_timeout"] == 5_000_000_000
            adm = await js.consumer_info(f"DF_{namespace}_TASKS", f"adm_{queue}_{p}")  # type: ignore[attr-defined]
            assert adm.config.filter_subject == f"{namespace}.admit.{queue}.{p}"
            assert adm.config.ack_policy == api.AckPolicy.EXPLICIT
        act = await js.consumer_info(f"DF_{namespace}_TASKS", f"act_{queue}")  # type: ignore[attr-defined]
        assert act.config.filter_subject == f"{namespace}.task.{queue}"
        assert act.config.max_deliver == -1


async def test_a_task_stream_of_an_older_version_gains_the_admission_subject(
    nats_url: str, namespace: str, js: object
) -> None:
    await js.add_stream(  # type: ignore[attr-defined]
        api.StreamConfig(
            name=f"DF_{namespace}_TASKS",
            subjects=[f"{namespace}.task.>"],
            retention=api.RetentionPolicy.WORK_QUEUE,
            discard=api.DiscardPolicy.NEW,
        )
    )
    app = App("layout", nats_url=nats_url, namespace=namespace)
    with WorkerThread(app):
        pass
    tasks = await js.stream_info(f"DF_{namespace}_TASKS")  # type: ignore[attr-defined]
    assert tasks.config.subjects == [f"{namespace}.task.>", f"{namespace}.admit.>"]


async def test_task_queues_do_not_receive_each_others_tasks(nats_url: str, namespace: str) -> None:
    import threading

    ran_on: dict[str, str] = {}
    both = threading.Event()

    def build(queue: str) -> App:
        app = App("routing", nats_url=nats_url, namespace=namespace)

        @app.activity(name="where", task_queue="gpu")
        def where_gpu() -> str:
            ran_on["gpu"] = queue
            return queue

        @app.activity(name="here")
        def here() -> str:
            ran_on["default"] = queue
            both.set()
            return queue

        @app.workflow
        async def route(ctx: object) -> list[str]:
            return [await ctx.activity(where_gpu), await ctx.activity(here)]  # type: ignore[attr-defined]

        return app

    default_app, gpu_app = build("default"), build("gpu")
    with (
        WorkerThread(default_app, task_queues=["default"]),
        WorkerThread(gpu_app, task_queues=["gpu"], workflows=False),
    ):
        handle = await default_app.astart("route")
        assert await handle.aresult(timeout=30) == ["gpu", "default"]
    assert ran_on == {"gpu": "gpu", "default": "default"}
    await default_app.aclose()


def test_replicas_other_than_the_streams_are_refused_with_what_to_do(
    nats_url: str, namespace: str
) -> None:
    first = App("layout", nats_url=nats_url, namespace=namespace)
    first.list_workflows()  # creates the streams with one replica
    more = App("layout", nats_url=nats_url, namespace=namespace, stream_replicas=3)
    try:
        with pytest.raises(ConfigurationError, match="keep the replicas they were created with"):
            more.list_workflows()
    finally:
        first.close()
        more.close()
