"""Reading a history back on a cache miss (``Store.read_recent``) gives what a full read gives,
by following each record's verified ``prev`` instead of scanning the stream."""

from __future__ import annotations

from typing import Any

import nats

from dfcore.core import _history as h


async def test_read_recent_matches_a_full_read_around_interleaving_and_timers(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()
    store = await app.client.store()
    lay = store.layout
    mine, other = lay.history_subject("default", "mine"), lay.history_subject("default", "other")
    start = {"t": h.WORKFLOW_STARTED, "workflow": "w", "args": [], "ts": 1}
    last = {}
    for subject in (mine, other):
        last[subject] = await store.append(subject, start, msg_id=None, expected_seq=0)

    async def signal(subject: str, n: int) -> None:
        body = {"t": h.SIGNAL_RECEIVED, "name": f"s{n}", "payload": n, "ts": 1}
        last[subject] = await store.append_fact(subject, body, msg_id=None, after_seq=last[subject])

    for n in range(3):
        await signal(mine, n)
        await signal(other, n)
    nc = await nats.connect(nats_url)  # a foreign message in between: read as unreadable
    await nc.jetstream().publish(mine, b"garbage")
    await nc.close()
    # A fired timer carries no prev (the server appends it), as does this copy of one.
    timer = {"t": h.TIMER_FIRED, "timer": "t1", "ts": 1}
    last[mine] = await store.append(mine, timer, msg_id=None)
    for n in range(3, 6):
        await signal(mine, n)

    full, full_seen = await store.read(mine)
    seqs = [r.seq for r in full]
    full_reads = 0
    read = store.read

    async def counted(*args: Any) -> Any:
        nonlocal full_reads
        full_reads += 1
        return await read(*args)

    store.read = counted  # type: ignore[method-assign]
    for after in [0, *seqs]:
        want = [r.seq for r in full if r.seq > after]
        records, seen = await store.read_recent(mine, after)
        assert [r.seq for r in records] == want, after
        assert seen == full_seen
    # Only reads reaching back past the timer (no prev) or the garbage fell back to a scan:
    # from after the timer on, the prev chain was enough.
    timer_at = next(r.seq for r in full if r.type == h.TIMER_FIRED)
    assert full_reads == sum(1 for after in [0, *seqs] if after < timer_at)
    records, _ = await store.read_recent(mine, seqs[-2], walk=1)  # one step back is enough
    assert [r.body["name"] for r in records] == ["s5"]
    assert full_reads == sum(1 for after in [0, *seqs] if after < timer_at)
    assert await store.read_recent(lay.history_subject("default", "none"), 0) == ([], 0)
