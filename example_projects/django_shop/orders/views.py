"""The shop's pages: place an order, then follow the workflow that fulfils it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from dfcore import DFConnectionError, HistoryEvent, WorkflowNotFoundError, WorkflowStatus
from dfcore.integrations.django import start_on_commit
from dfcore.integrations.django.models import OutboxEntry

from .forms import OrderForm
from .models import Order
from .workflows import fulfil_order

log = logging.getLogger(__name__)

#: What asking the workflow server can raise when it is down or slow (not a bug in a view).
SERVER_ERRORS = (DFConnectionError, TimeoutError)
FINISHED = {"completed", "failed", "cancelled", "timed_out"}


@require_http_methods(["GET", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    """The order form and the latest orders. A valid POST saves the order and starts its
    workflow in one transaction: both happen, or neither does."""
    form = OrderForm(request.POST) if request.method == "POST" else OrderForm()
    if form.is_bound and form.is_valid():
        with transaction.atomic():
            order = form.save()
            # Written to the outbox in this transaction, published once it commits.
            start_on_commit(fulfil_order, order.pk, workflow_id=order.workflow_id)
        return redirect("orders:detail", pk=order.pk)
    recent = Order.objects.all()[:10]
    return render(request, "orders/index.html", {"form": form, "orders": recent})


@require_GET
def order_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One order, its workflow's status and the workflow's history."""
    order = get_object_or_404(Order, pk=pk)
    state = workflow_state(order)
    order.refresh_from_db()  # after the workflow: its activities update the order
    context = {"order": order, "workflow": state, "version": state.version(order)}
    return render(request, "orders/order.html", context)


async def order_status(request: HttpRequest, pk: int) -> HttpResponse:
    """The order's and its workflow's status as JSON (an async view; the order page polls it)."""
    if request.method != "GET":  # not @require_GET: it wraps async views only from Django 5.0
        return HttpResponseNotAllowed(["GET"])
    order = await Order.objects.filter(pk=pk).afirst()
    if order is None:
        raise Http404(f"no order {pk}")
    state = await aworkflow_state(order)
    await order.arefresh_from_db()  # after the workflow: its activities update the order
    return JsonResponse(state.as_json(order))


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
        return {
            "order": {
                "id": order.pk,
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
                "last_event_time": self.last_event_time.isoformat()
                if self.last_event_time
                else None,
            },
            "version": self.version(order),
        }


def workflow_state(order: Order) -> WorkflowState:
    """The workflow's state with its history.

    The workflow server is asked first: a workflow it has is shown even when the outbox has
    not recorded its start as published yet (a publish that timed out may still land). Only
    a workflow it does not have is "waiting", if its start is still in the outbox.
    """
    entry = OutboxEntry.objects.filter(workflow_id=order.workflow_id).first()
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
    entry = await OutboxEntry.objects.filter(workflow_id=order.workflow_id).afirst()
    try:
        status = await fulfil_order.get_handle(order.workflow_id).astatus()
    except WorkflowNotFoundError:
        return _not_found(order, entry)
    except SERVER_ERRORS as exc:
        return _unavailable(order, entry, exc)
    return _found(status, [])


def _waiting(order: Order, entry: OutboxEntry, problem: str = "") -> WorkflowState:
    detail = "The order is saved; its workflow starts as soon as the outbox publishes it."
    if entry.last_error:
        detail += f" The last attempt failed ({entry.last_error}); the relay keeps retrying."
    return WorkflowState(order.workflow_id, "waiting", f"{detail} {problem}".strip())


def _not_found(order: Order, entry: OutboxEntry | None) -> WorkflowState:
    if entry is not None and entry.published_at is None:
        return _waiting(order, entry)
    return WorkflowState(order.workflow_id, "missing", "No workflow was started for this order.")


def _unavailable(order: Order, entry: OutboxEntry | None, exc: Exception) -> WorkflowState:
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
