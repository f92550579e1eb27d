"""A three-node JetStream cluster loses a node mid-run: the other two finish the work.

The streams are created with three replicas. Before the batch starts, the leadership of
everything the engine uses (the history and task streams, and every consumer of the queue: the
pinned workflow partitions, their admission queues, the activity tasks) is moved to one node,
so killing it is the worst single-node crash: every raft group must elect a new leader at once
while workers append, read and pull. The node stays dead until the batch is checked, because a
majority of two must be enough, without an operator and without restarting a worker. Then it is
restarted, and must catch up with the other two.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dfcore.jetstream._naming import PARTITIONS, Layout

from .cluster import ClusterError, LocalCluster
from .harness import OrderBatch

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """Three clustered nats-server nodes on loopback, stopped after the test."""
    with LocalCluster(tmp_path / "cluster") as nodes:
        yield nodes


def test_sigkill_of_the_stream_leader_in_a_three_node_cluster(
    cluster: LocalCluster, tmp_path: Path, namespace: str
) -> None:
    run = OrderBatch(
        "3-node cluster, SIGKILL stream leader",
        tmp_path,
        cluster.urls,
        namespace,
        env={"DF_STREAM_REPLICAS": "3"},
        stream_replicas=3,
    )
    lay = Layout(namespace)
    try:
        for i in (1, 2, 3):  # the partitions split between them, pinned in the cluster
            run.spawn(f"workflows-{i}", "--workflows-only")
        run.spawn("activities", "--activities-only")
        victim = cluster.stream_leader(lay.history_stream)
        # The workers create the consumers at start-up; move_leader waits for them.
        cluster.move_leader(victim, lay.tasks_stream)
        for p in range(PARTITIONS):
            cluster.move_leader(victim, lay.history_stream, lay.workflow_consumer("default", p))
            cluster.move_leader(victim, lay.tasks_stream, lay.admit_consumer("default", p))
        cluster.move_leader(victim, lay.tasks_stream, lay.activity_consumer("default"))
        run.start()
        run.wait_for_progress()
        cluster.kill(victim)
        run.check(run.finish())
        cluster.restart(victim)
        for stream in (lay.history_stream, lay.tasks_stream):
            cluster.wait_current(stream)
    except ClusterError as exc:
        pytest.fail(f"{exc}\n{run.describe()}\n{run.logs()}")
    finally:
        run.stop()
