"""Invariant 8 under a generated corpus: hostile messages on every subject, real workflows.

Hypothesis draws corpora of malformed and forged messages for every subject of a namespace:
histories of live and unknown workflows (in their partition and outside it), activity tasks,
admission pointers, cancellation hints, status subjects, worker heartbeats and the dead-letter
subjects, with and without headers that mimic server replies. They are published while real
workflows run. Then:

- every real workflow completes with the right result, and ran each step once;
- every message on a subject the engine consumes is accounted for: it is in the dead-letter
  stream, by subject and stream sequence (or, for a core NATS hint, by subject and body);
- the tools still work: ``list_workflows``, ``dead_letters``, ``dfcore workflow list``,
  ``dfcore dlq list``.

Only messages the engine must refuse are generated for consumed subjects: a well-formed fact
on a live history is indistinguishable from a real one (docs/security.md, "Threat model").
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

import nats
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfcore import App
from dfcore.client._loopthread import run_sync
from dfcore.core import _history as h
from dfcore.jetstream._naming import PARTITIONS, Layout, partition_of

from .test_bad_input import df
from .workerkit import WorkerThread, wait_until

LIVE = [f"live-{i}" for i in range(4)]  # gated workflows the corpus aims at
FACT_TYPES = [t for t in h.FACT_TYPES if t != h.WORKFLOW_STARTED]


@dataclass(frozen=True)
class Hostile:
    """One message of a corpus: where it goes, what it is, how it is sent."""

    target: str  # live | ghost | misplaced | task | admit | cancel | status | workers | dlq
    workflow: int  # which LIVE workflow (or ghost) it concerns
    body: bytes
    headers: tuple[tuple[str, str], ...]


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _not_json(data: bytes) -> bool:
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return True
    return False


garbage = st.binary(max_size=48).filter(_not_json)
not_a_mapping = json_value.filter(lambda v: not isinstance(v, dict)).map(orjson.dumps)


@st.composite
def broken_record(draw: Any) -> bytes:
    """A record the engine must refuse: unknown type, or a field missing or mistyped."""
    kind = draw(st.sampled_from([*FACT_TYPES, "Exploded", ""]))
    body: dict[str, Any] = {"t": kind, "ts": 1, "seq": 1, "attempt": 1, "name": "n"}
    body |= {"timer": "t", "error": {}, "cmds": []}
    if kind in FACT_TYPES:
        required = [*h._REQUIRED[kind], "ts"]  # the engine's own schema
        field = draw(st.sampled_from(required))
        if draw(st.booleans()):
            body.pop(field, None)  # (the child facts' fields are not in the base body)
        else:  # a value of another type than the field's ("x" is a valid name or timer id)
            wanted = h._REQUIRED[kind].get(field, int)
            wrong = [v for v in ["x", 1.5, None, [], True] if not _fits(v, wanted)]
            body[field] = draw(st.sampled_from(wrong))
        if field == "ts" and "ts" not in body:
            return draw(broken_record())  # a record without ts is valid (ts defaults to 0)
    return orjson.dumps(body)


def _fits(value: Any, wanted: type | tuple[type, ...]) -> bool:
    """Whether the engine's schema accepts ``value`` where it wants ``wanted``."""
    return isinstance(value, wanted) and not (wanted is int and isinstance(value, bool))


well_formed_fact = st.sampled_from(
    [
        {"t": h.SIGNAL_RECEIVED, "ts": 1, "name": "go", "payload": "forged"},
        {"t": h.ACTIVITY_COMPLETED, "ts": 1, "seq": 1, "attempt": 1, "result": 0},
        {"t": h.CANCEL_REQUESTED, "ts": 1},
        {"t": h.TIMER_FIRED, "ts": 1, "timer": "x"},
    ]
).map(orjson.dumps)

mimicry = st.lists(
    st.sampled_from(
        [
            ("Status", "404"),
            ("Status", "503"),
            ("Status", "204"),
            ("Df-Event", h.WORKFLOW_STARTED),
            ("Nats-Time-Stamp", "2999-01-01T00:00:00Z"),
            ("Nats-Sequence", "1"),
        ]
    ),
    max_size=2,
    unique_by=lambda pair: pair[0],
).map(tuple)

refused_record = garbage | not_a_mapping | broken_record()


@st.composite
def hostile(draw: Any) -> Hostile:
    target = draw(
        st.sampled_from(
            ["live", "ghost", "misplaced", "task", "admit", "cancel", "status", "workers", "dlq"]
        )
    )
    if target == "live":
        body = draw(refused_record)
    elif target in ("ghost", "misplaced"):
        body = draw(refused_record | well_formed_fact)
    elif target == "task":
        task = st.fixed_dictionaries(
            {"wf": st.just("ghost"), "seq": st.integers(1, 5), "attempt": st.just(1)},
            optional={"activity": st.sampled_from(["nope", 3]), "args": json_value},
        ).map(orjson.dumps)
        body = draw(garbage | not_a_mapping | task)
    elif target == "admit":
        pointer = st.fixed_dictionaries(
            {"h": st.text(max_size=10), "seq": st.integers(10**9, 10**10)}
        ).map(orjson.dumps)
        body = draw(garbage | not_a_mapping | pointer)
    elif target == "cancel":
        # {"seq": <int>} is a well-formed hint, taken as one: only refused shapes here.
        no_seq = well_formed_fact.filter(lambda data: "seq" not in orjson.loads(data))
        body = draw(garbage | not_a_mapping | no_seq)
    else:
        body = draw(garbage | not_a_mapping | well_formed_fact)
    return Hostile(target, draw(st.integers(0, len(LIVE) - 1)), body, draw(mimicry))


def subject_of(message: Hostile, lay: Layout) -> str:
    live = LIVE[message.workflow]
    if message.target == "live":
        return lay.history_subject("default", live)
    if message.target == "ghost":
        return lay.history_subject("default", f"ghost-{message.workflow}")
    if message.target == "misplaced":
        right = partition_of(live)
        return lay.history_subject("default", live).replace(
            f".{right}.", f".{(right + 1) % PARTITIONS}."
        )
    if message.target == "task":
        return lay.task_subject("default")
    if message.target == "admit":
        return lay.admit_subject("default", message.workflow)
    if message.target == "cancel":
        return lay.activity_cancel_subject(live)
    if message.target == "status":
        return lay.status_subject("default", live)
    if message.target == "workers":
        return lay.workers_subject("default")
    return lay.dlq_subject("history")


CONSUMED = {"live", "ghost", "misplaced", "task", "admit"}  # stored, and read by a consumer


def define(app: App) -> Any:
    @app.activity
    def add(a: int, b: int) -> int:
        return a + b

    @app.workflow
    async def pair(ctx: Any, n: int) -> int:
        return await ctx.activity(add, await ctx.activity(add, n, 1), 1)

    @app.workflow
    async def gated(ctx: Any, n: int) -> int:
        # A signal name the corpus never forges, so its well-formed forgeries cannot count.
        return await ctx.activity(add, n, int(await ctx.wait_signal("real-go")))

    return pair, gated


async def publish(nats_url: str, corpus: list[Hostile], lay: Layout) -> list[tuple[str, Any]]:
    """Publish the corpus as a foreign client; what each stored message should leave behind."""
    expected: list[tuple[str, Any]] = []
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for message in corpus:
            subject = subject_of(message, lay)
            headers = dict(message.headers) or None
            if message.target in ("cancel", "workers"):
                await nc.publish(subject, message.body, headers=headers)
                if message.target == "cancel":
                    expected.append((subject, message.body))
                continue
            try:
                ack = await js.publish(subject, message.body, headers=headers)
            except nats.js.errors.APIError:
                continue  # the server refused to store it (a header it checks): nothing to do
            if message.target in CONSUMED:
                expected.append((subject, ack.seq))
        await nc.flush()
    finally:
        await nc.close()
    return expected


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(corpus=st.lists(hostile(), min_size=20, max_size=60))
def test_a_generated_hostile_corpus_harms_no_workflow_and_is_accounted_for(
    nats_url: str, corpus: list[Hostile]
) -> None:
    namespace = "h" + uuid.uuid4().hex[:10]
    lay = Layout(namespace)
    app = App("hostile", nats_url=nats_url, namespace=namespace)
    pair, gated = define(app)
    try:
        with WorkerThread(app):
            live = [gated.start(i, workflow_id=w) for i, w in enumerate(LIVE)]
            before = [pair.start(n) for n in range(10)]
            expected = asyncio.run(publish(nats_url, corpus, lay))
            after = [pair.start(n) for n in range(10, 20)]
            for handle in live:
                handle.signal("real-go", 100)
            results = [hd.result(timeout=60) for hd in before + after + live]
            assert results == [n + 2 for n in range(20)] + [i + 100 for i in range(len(LIVE))]

            def accounted() -> list[Any]:
                letters = app.dead_letters(limit=10_000)
                kept = {(d.subject, d.stream_seq) for d in letters}
                kept |= {(d.subject, d.data) for d in letters}
                return [e for e in expected if e not in kept]

            try:
                wait_until(lambda: not accounted(), timeout=60, what="every message accounted")
            except AssertionError:
                raise AssertionError(f"not in the dead-letter stream: {accounted()[:5]}") from None
            listed = {w.workflow_id: w.status for w in app.list_workflows(limit=1000)}
            for handle in before + after + live:
                assert listed[handle.workflow_id] == "completed"
                events = handle.history()
                kinds = [e.type for e in events]
                assert kinds.count(h.WORKFLOW_STARTED) == 1
                assert kinds.count(h.WORKFLOW_COMPLETED) == 1
                scheduled = [e.attributes["seq"] for e in events if e.type == h.ACTIVITY_SCHEDULED]
                assert len(scheduled) == len(set(scheduled))  # each step decided once
        for args in (("workflow", "list"), ("dlq", "list")):
            df(*args, nats_url=nats_url, namespace=namespace)  # exits 0 whatever the content
    finally:
        run_sync(app.aclose())
