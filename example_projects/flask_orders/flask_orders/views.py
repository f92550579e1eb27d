"""The shop's pages: place an order, then follow the workflow that fulfils it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for
from sqlalchemy import Row, select
from werkzeug.wrappers import Response

from dfcore import DFConnectionError, HistoryEvent, WorkflowNotFoundError, WorkflowStatus
from dfcore.integrations.flask.outbox import outbox_table

from .forms import OrderForm
from .models import Order, db
from .workflows import df, fulfil_order

log = logging.getLogger(__name__)

bp = Blueprint("orders", __name__)

#: What asking the workflow server can raise when it is down or slow (not a bug in a view).
SERVER_ERRORS = (DFConnectionError, TimeoutError)
FINISHED = {"completed", "failed", "cancelled", "timed_out"}


@bp.route("/", methods=["GET", "POST"])
def index() -> str | Response:
    """The order form and the latest orders. A valid POST saves the order and starts its
    workflow in one transaction: both happen, or neither does."""
    form = OrderForm(request.form)
    values = form.clean() if request.method == "POST" else None
    if values is not None:
        order = Order(**values)
        db.session.add(order)
        db.session.flush()  # assigns order.id, which names the workflow
        # Written to the outbox in this transaction, published once it commits.
        df.start_in_transaction(db.session, fulfil_order, order.id, workflow_id=order.workflow_id)
        db.session.commit()
        return redirect(url_for("orders.order_detail", order_id=order.id))
    recent = db.session.scalars(select(Order).order_by(Order.id.desc()).limit(10)).all()
    return render_template("orders/index.html", form=form, orders=recent)


@bp.get("/orders/<int:order_id>")
def order_detail(order_id: int) -> str:
    """One order, its workflow's status and the workflow's history."""
    order = db.get_or_404(Order, order_id, description=f"There is no order {order_id}.")
    state = workflow_state(order)
    db.session.refresh(order)  # after the workflow: its activities update the order
    return render_template(
        "orders/order.html", order=order, workflow=state, version=state.version(order)
    )


@bp.get("/orders/<int:order_id>/status.json")
async def order_status(order_id: int) -> dict[str, Any]:
    """The order's and its workflow's status as JSON (an async view; the order page polls it)."""
    order = db.session.get(Order, order_id)
    if order is None:
        abort(404, description=f"There is no order {order_id}.")
    state = await aworkflow_state(order)
    db.session.refresh(order)  # after the workflow: its activities update the order
    return state.as_json(order)


@dataclass
class HistoryRow:
    index: int
    time: datetime
    event: str
    details: str


@dataclass
class WorkflowState:
    """What the pages show about an order's workflow.

    ``status`` is the workflow's (``running``, ``completed``, ``failed``...), or ``waiting``
    (still in the outbox), ``missing`` (never started) or ``unavailable`` (the workflow
    server could not be asked); ``detail`` explains the last three.
    """

    workflow_id: str
    status: str
    detail: str = ""
    workflow_type: str | None = None
    last_event_time: datetime | None = None
    history: list[HistoryRow] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def version(self, order: Order) -> str:
        """Changes whenever something on the order page would: the page reloads on a change."""
        when = self.last_event_time.isoformat() if self.last_event_time else ""
        return f"{order.status}|{self.status}|{when}"

    def as_json(self, order: Order) -> dict[str, Any]:
        when = self.last_event_time.isoformat() if self.last_event_time else None
        return {
            "order": {
                "id": order.id,
                "status": order.status,
                "charge_id": order.charge_id,
                "tracking_id": order.tracking_id,
            },
            "workflow": {
                "id": self.workflow_id,
                "type": self.workflow_type,
                "status": self.status,
                "finished": self.finished,
                "detail": self.detail,
                "last_event_time": when,
            },
            "version": self.version(order),
        }


def workflow_state(order: Order) -> WorkflowState:
    """The workflow's state with its history.

    The workflow server is asked first: a workflow it has is shown even when the outbox has
    not recorded its start as published yet (a publish that timed out may still land). Only
    a workflow it does not have is "waiting", if its start is still in the outbox. The outbox
    is read before the server, so a start published in between never shows as "missing".
    """
    entry = _outbox_entry(order)
    handle = fulfil_order.get_handle(order.workflow_id)
    try:
        status = handle.status()
        history = handle.history()
    except WorkflowNotFoundError:
        return _not_found(order, entry)
    except SERVER_ERRORS as exc:
        return _unavailable(order, entry, exc)
    return _found(status, history)


async def aworkflow_state(order: Order) -> WorkflowState:
    """The workflow's state without its history, read with the async API."""
    entry = _outbox_entry(order)
    try:
        status = await fulfil_order.get_handle(order.workflow_id).astatus()
    except WorkflowNotFoundError:
        return _not_found(order, entry)
    except SERVER_ERRORS as exc:
        return _unavailable(order, entry, exc)
    return _found(status, [])


def _outbox_entry(order: Order) -> Row[Any] | None:
    """The order's start in the outbox (``published_at``, ``last_error``), if it is there."""
    table = outbox_table
    query = select(table.c.published_at, table.c.last_error).where(
        table.c.workflow_id == order.workflow_id
    )
    return db.session.execute(query).first()


def _waiting(order: Order, entry: Row[Any], problem: str = "") -> WorkflowState:
    detail = "The order is saved; its workflow starts as soon as the outbox publishes it."
    if entry.last_error:
        detail += f" The last attempt failed ({entry.last_error}); the relay keeps retrying."
    return WorkflowState(order.workflow_id, "waiting", f"{detail} {problem}".strip())


def _not_found(order: Order, entry: Row[Any] | None) -> WorkflowState:
    if entry is not None and entry.published_at is None:
        return _waiting(order, entry)
    return WorkflowState(order.workflow_id, "missing", "No workflow was started for this order.")


def _unavailable(order: Order, entry: Row[Any] | None, exc: Exception) -> WorkflowState:
    log.warning("cannot read workflow %s: %s: %s", order.workflow_id, type(exc).__name__, exc)
    problem = f"The workflow server cannot be reached right now ({exc or type(exc).__name__})."
    if entry is not None and entry.published_at is None:
        return _waiting(order, entry, problem)
    return WorkflowState(order.workflow_id, "unavailable", problem)


def _found(status: WorkflowStatus, history: list[HistoryEvent]) -> WorkflowState:
    rows = [
        HistoryRow(
            event.index,
            datetime.fromtimestamp(event.time_ms / 1000, tz=UTC),
            event.type,
            event.summary(),
        )
        for event in history
    ]
    return WorkflowState(
        status.workflow_id,
        status.status,
        workflow_type=status.workflow_type,
        last_event_time=status.last_event_time,
        history=rows,
    )
