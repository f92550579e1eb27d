"""Versioning: ``ctx.patched`` lets changed code replay the histories older code recorded.

A patch is one command in a decision, ``PatchRecorded``, written where new code first asks
``ctx.patched(id)``. Replay answers from the history: the marker there means the run took the
new path, no marker at a point the history already decided means the old one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from dfcore import App, EventType, NondeterminismError, testing
from dfcore.client._loopthread import run_sync
from dfcore.core import _history as h
from dfcore.core._errors import WorkflowCodeError
from tests.enginekit import History, kinds
from tests.workerkit import WorkerThread, wait_until


def charge(amount: float) -> dict[str, Any]: ...
def email_receipt(charge: dict[str, Any]) -> None: ...
def ship(charge: dict[str, Any]) -> str: ...


async def order_v1(ctx: Any, amount: float) -> str:
    paid = await ctx.activity(charge, amount)
    return str(await ctx.activity(ship, paid))


async def order_v2(ctx: Any, amount: float) -> str:
    paid = await ctx.activity(charge, amount)
    if ctx.patched("email-receipt"):
        await ctx.activity(email_receipt, paid)
    return str(await ctx.activity(ship, paid))


async def order_v3(ctx: Any, amount: float) -> str:
    """Every run of v1 has ended: the patch is deprecated, and the new path is the only one."""
    paid = await ctx.activity(charge, amount)
    ctx.deprecate_patch("email-receipt")
    await ctx.activity(email_receipt, paid)
    return str(await ctx.activity(ship, paid))


async def order_v4(ctx: Any, amount: float) -> str:
    """The deprecated patch is gone from the code."""
    paid = await ctx.activity(charge, amount)
    await ctx.activity(email_receipt, paid)
    return str(await ctx.activity(ship, paid))


def run_to_end(history: History, workflow: Any) -> list[list[dict[str, Any]]]:
    """Drive ``workflow`` on a fresh run until it completes, as workers and activities would."""
    run = history.new_run()
    decisions = []
    while not run.closed:
        cmds = history.decide(run)
        decisions.append(cmds)
        for cmd in cmds:
            if cmd["t"] == h.ACTIVITY_SCHEDULED:
                result = {"id": "ch_1"} if cmd["activity"] == "charge" else "done"
                history.fact(h.ACTIVITY_COMPLETED, seq=cmd["seq"], attempt=1, result=result)
    return decisions


def replay(history: History, workflow: Any) -> Any:
    """A fresh worker's replay of the whole history under ``workflow``'s code."""
    replayed = History(workflow, workflow_id=history.workflow_id)
    replayed.defs = {"order": replayed.defs[workflow.__name__]}
    run = replayed.new_run()
    run.apply(history.records)
    return run


def recorded(workflow: Any) -> History:
    history = History(workflow)
    history.defs = {"order": history.defs[workflow.__name__]}
    history.start("order", 10.0)
    run_to_end(history, workflow)
    return history


def activities(history: History) -> list[str]:
    return [
        cmd["activity"]
        for record in history.records
        for cmd in record.commands
        if cmd["t"] == h.ACTIVITY_SCHEDULED
    ]


def test_a_new_run_takes_the_patched_path_and_records_the_patch() -> None:
    history = recorded(order_v2)
    assert activities(history) == ["charge", "email_receipt", "ship"]
    markers = [c for r in history.records for c in r.commands if c["t"] == EventType.PATCH_RECORDED]
    assert markers == [{"t": "PatchRecorded", "patch": "email-receipt"}]
    assert markers[0] in history.records[3].commands  # decided with the email's scheduling


def test_a_history_recorded_before_the_patch_replays_on_the_old_path() -> None:
    history = recorded(order_v1)
    run = replay(history, order_v2)
    assert run.closed and run.pending_commands() == []


def test_a_history_recorded_with_the_patch_replays_on_the_new_path() -> None:
    run = replay(recorded(order_v2), order_v2)
    assert run.closed and run.pending_commands() == []


def test_a_run_that_had_not_reached_the_change_takes_the_new_path() -> None:
    history = History(order_v1)
    history.defs = {"order": history.defs["order_v1"]}
    history.start("order", 10.0)
    first = history.decide(history.new_run())  # v1 scheduled the charge, then the deploy
    history.fact(h.ACTIVITY_COMPLETED, seq=first[0]["seq"], attempt=1, result={"id": "ch_1"})
    run = replay(history, order_v2)
    assert kinds(run.pending_commands()) == [EventType.PATCH_RECORDED, h.ACTIVITY_SCHEDULED]
    assert run.pending_commands()[1]["activity"] == "email_receipt"


def test_a_deprecated_patch_replays_histories_with_the_marker_and_records_one() -> None:
    assert replay(recorded(order_v2), order_v3).pending_commands() == []
    history = recorded(order_v3)
    markers = [c for r in history.records for c in r.commands if c["t"] == EventType.PATCH_RECORDED]
    assert markers == [{"t": "PatchRecorded", "patch": "email-receipt", "deprecated": True}]
    # a worker still on v2 (mid-deploy) reads the deprecated marker as the patch taken
    assert replay(history, order_v2).pending_commands() == []


def test_code_without_the_call_replays_a_deprecated_marker_but_not_a_live_one() -> None:
    assert replay(recorded(order_v3), order_v4).closed
    with pytest.raises(NondeterminismError) as info:
        replay(recorded(order_v2), order_v4)
    assert "patch 'email-receipt'" in info.value.recorded
    assert "deprecate_patch" in str(info.value)


async def asks_twice(ctx: Any) -> list[bool]:
    return [ctx.patched("p"), ctx.patched("p")]


def test_the_answer_holds_for_the_whole_run_and_one_marker_is_recorded() -> None:
    history = History(asks_twice)
    history.start("asks_twice")
    cmds = history.decide(history.new_run())
    assert cmds == [
        {"t": "PatchRecorded", "patch": "p"},
        {"t": h.WORKFLOW_COMPLETED, "result": [True, True]},
    ]


def sync_order(ctx: Any, amount: float) -> str:
    paid = ctx.activity(charge, amount)
    if ctx.patched("email-receipt"):
        ctx.activity(email_receipt, paid)
    return str(ctx.activity(ship, paid))


def test_a_plain_def_workflow_asks_for_patches_the_same_way() -> None:
    history = History(sync_order)
    history.defs = {"order": history.defs["sync_order"]}
    history.start("order", 10.0)
    run_to_end(history, sync_order)
    assert activities(history) == ["charge", "email_receipt", "ship"]


@pytest.mark.parametrize("bad", ["", 7, "x" * 201])
def test_a_patch_id_must_be_a_short_string(bad: Any) -> None:
    async def wf(ctx: Any) -> bool:
        return bool(ctx.patched(bad))

    history = History(wf)
    history.start("wf")
    with pytest.raises(WorkflowCodeError) as info:  # a bug in the code: the task is retried
        history.decide(history.new_run())
    assert "patch id" in str(info.value.__cause__)


# -- on a real server: a deploy between two steps, and checking one before it ships ---------


def test_a_run_recorded_before_a_deploy_goes_on_under_the_patched_code(
    nats_url: str, namespace: str, orders_client: App
) -> None:
    from tests.apps.orders import build_app
    from tests.apps.orders_changed import build_changed_app

    handle = orders_client.start("order_with_approval", "ann", 5.0, workflow_id="deployed")
    with WorkerThread(build_app(nats_url=nats_url, namespace=namespace)):  # yesterday's code
        wait_until(
            lambda: EventType.ACTIVITY_COMPLETED in [e.type for e in handle.history()],
            what="the charge recorded by the old code",
        )
    changed = build_changed_app(True, nats_url=nats_url, namespace=namespace)
    with WorkerThread(changed):  # today's: a fresh worker replays the history
        handle.signal("approve", "bo")
        result = handle.result(timeout=30)
    run_sync(changed.aclose())
    assert result["patches"] == [False, True]  # decided before the deploy / reached after it
    events = handle.history()
    patches = [e.attributes["patch"] for e in events if e.type == EventType.PATCH_RECORDED]
    assert patches == ["wrap-after-approval"]
    scheduled = [e.attributes["activity"] for e in events if e.type == h.ACTIVITY_SCHEDULED]
    assert scheduled == ["charge_credit_card", "gift_wrap", "ship_package"]


def test_an_exported_history_is_checked_against_changed_code(
    nats_url: str, namespace: str, orders_client: App, tmp_path: Path
) -> None:
    from tests.apps.orders_changed import patched_app, unguarded_app

    with WorkerThread(orders_client):
        orders_client.start("order", "cy", 3.0, 1, workflow_id="exported").result(timeout=30)
    exported = orders_client.get_handle("exported").export()
    assert exported["format"] == "dfcore.history/1" and exported["workflow_type"] == "order"
    testing.replay(orders_client, exported)  # the code that recorded it
    testing.replay(patched_app, exported)
    with pytest.raises(NondeterminismError, match="'gift_wrap'"):
        testing.replay(unguarded_app, exported)
    path = tmp_path / "exported.json"
    path.write_bytes(orjson.dumps(exported))
    testing.replay(patched_app, path)
    path.write_text('{"format": "dfcore.history/9", "records": []}')
    with pytest.raises(testing.HistoryFileError, match=r"expected 'dfcore\.history/1'"):
        testing.replay(patched_app, path)
