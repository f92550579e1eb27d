"""Activity tasks delivered again (docs/architecture.md, "Activities").

A redelivered task whose outcome is already recorded was only missing its ack (a consumer
leader died with it): it is acked without running. The fault suite covers the others with real
processes: a task whose worker was killed or frozen is run again once, then counted as lost.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
from nats.aio.msg import Msg

from dfcore.client._loopthread import run_sync
from dfcore.core import _history as h

from .workerkit import WorkerThread, wait_until


def test_a_task_redelivered_after_its_outcome_was_recorded_is_acked_unrun(
    make_app: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(activity_ack_wait=1)
    runs = collections.Counter[int]()

    @app.activity
    def double(n: int) -> int:
        runs[n] += 1
        return 2 * n

    @app.workflow
    async def twice(ctx: Any, n: int) -> int:
        return await ctx.activity(double, n)

    dropped: set[int] = set()
    real_ack = Msg.ack

    async def lose_first_task_acks(self: Msg) -> None:
        seq = self.metadata.sequence.stream if self.reply else 0
        if self.subject.startswith(f"{namespace}.task.") and seq not in dropped:
            dropped.add(seq)  # as if the ack went to a consumer leader that died
            return
        await real_ack(self)

    monkeypatch.setattr(Msg, "ack", lose_first_task_acks)
    with WorkerThread(app):
        handles = [twice.start(n) for n in range(5)]
        assert [hd.result(timeout=30) for hd in handles] == [2 * n for n in range(5)]
        # Each task comes back once, after the 1 s ack wait, and is acked this time.
        wait_until(
            lambda: len(dropped) == 5 and _nothing_pending(app),
            what="the five tasks delivered again and acked",
        )
    assert runs == {n: 1 for n in range(5)}  # none ran twice
    for handle in handles:
        kinds = collections.Counter(e.type for e in handle.history())
        assert kinds[h.ACTIVITY_FAILED] == 0  # and none was recorded as lost


def _nothing_pending(app: Any) -> bool:
    """Whether the activity consumer of queue ``default`` has nothing delivered unacked."""

    async def info() -> Any:
        store = await app.client.store()
        lay = store.layout
        return await store.js.consumer_info(lay.tasks_stream, lay.activity_consumer("default"))

    state = run_sync(info())
    return bool(state.num_ack_pending == 0 and state.num_pending == 0)
