"""Golden histories recorded from real runs, replayed against today's code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dfcore import NondeterminismError
from dfcore.core import _history as h
from dfcore.core._context import WorkflowContext
from dfcore.core._definitions import ActivityOptions, WorkflowDefinition
from dfcore.core._engine import WorkflowRun

GOLDEN = Path(__file__).parent / "golden"


def charge_credit_card(customer_id: str, amount: float) -> dict[str, Any]: ...
def ship_package(charge: dict[str, Any], quantity: int) -> dict[str, Any]: ...


async def order(ctx: Any, customer_id: str, amount: float, quantity: int) -> dict[str, Any]:
    charge = await ctx.activity(charge_credit_card, customer_id, amount)
    await ctx.sleep(0.1)
    shipped = await ctx.activity(ship_package, charge, quantity)
    return {"charge_id": charge["charge_id"], "tracking_id": shipped["tracking_id"]}


def load(name: str) -> list[h.Record]:
    data = json.loads((GOLDEN / name).read_text())
    return [h.validate_record(item["seq"], item["body"]) for item in data]


def gift_wrap(charge: dict[str, Any]) -> None: ...


async def order_with_gift_wrap(
    ctx: Any, customer_id: str, amount: float, quantity: int
) -> dict[str, Any]:
    """Today's code: the order above, changed behind a patch."""
    charge = await ctx.activity(charge_credit_card, customer_id, amount)
    if ctx.patched("gift-wrap"):
        await ctx.activity(gift_wrap, charge)
    await ctx.sleep(0.1)
    shipped = await ctx.activity(ship_package, charge, quantity)
    return {"charge_id": charge["charge_id"], "tracking_id": shipped["tracking_id"]}


def replay(records: list[h.Record], code: Any = order) -> WorkflowRun:
    def lookup(ref: Any) -> tuple[str, ActivityOptions, Any]:
        return ref.__name__, ActivityOptions(), None

    run = WorkflowRun(
        "order-golden", {"order": WorkflowDefinition("order", code)}.get, activity_lookup=lookup
    )
    WorkflowContext(run)
    run.apply(records)
    return run


def test_completed_order_replays_without_new_commands() -> None:
    run = replay(load("order_completed.json"))
    assert run.closed
    assert run.pending_commands() == []


def test_each_prefix_of_the_history_replays_to_its_recorded_next_decision() -> None:
    records = load("order_completed.json")
    for cut, record in enumerate(records):
        if record.type != h.DECIDED:
            continue
        run = replay(records[:cut])  # everything before this decision
        produced = [_identity(c) for c in run.pending_commands()]
        assert produced == [_identity(c) for c in record.commands], f"before record {record.seq}"


def _identity(cmd: Any) -> tuple[Any, ...]:
    return (*h.command_key(cmd), cmd.get("activity"), repr(cmd.get("args")), cmd.get("result"))


def test_history_from_other_code_fails_with_nondeterminism() -> None:
    with pytest.raises(NondeterminismError) as info:
        replay(load("order_nondeterministic.json"))
    err = info.value
    assert err.workflow_id == "order-golden"
    assert err.step == 3
    assert "'send_receipt'" in err.recorded and "'ship_package'" in err.produced


def test_the_recorded_history_replays_under_code_changed_behind_a_patch() -> None:
    records = load("order_completed.json")
    run = replay(records, order_with_gift_wrap)
    assert run.closed and run.pending_commands() == []  # the old path, as recorded
    # A run recorded only up to the charge's result goes on with the new code.
    charged = next(r for r in records if r.type == h.ACTIVITY_COMPLETED)
    run = replay(records[: records.index(charged) + 1], order_with_gift_wrap)
    produced = run.pending_commands()
    assert [c["t"] for c in produced] == ["PatchRecorded", "ActivityScheduled"]
    assert produced[1]["activity"] == "gift_wrap"


def test_every_stored_event_type_is_a_public_event_type() -> None:
    from dfcore import EventType

    assert {member.value for member in EventType} == h.FACT_TYPES | h.COMMAND_TYPES
    for name in ("order_completed.json", "order_nondeterministic.json"):
        for event in h.flatten(load(name)):
            assert EventType(event.type) == event.type
