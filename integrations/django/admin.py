"""The admin: outbox rows and the workflows in JetStream, both read-only, with their status.

* **Outbox** (``OutboxEntry``): a plain, view-only ModelAdmin over the table.
* **Workflows** (the unmanaged ``Workflow`` model): workflows live in JetStream, not in a
  table, so ``WorkflowAdmin`` replaces the changelist and the change page with its own views
  that read ``get_app().list_workflows()`` and a handle's ``status()`` / ``history()``. When
  NATS cannot be reached or ``settings.DFCORE`` is invalid, the pages say so instead of
  failing; an unknown workflow id is a 404.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.contrib import admin
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.templatetags.static import static
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.text import Truncator
from django.views.decorators.http import require_safe

from dfcore import (
    App,
    ConfigurationError,
    DFConnectionError,
    DFError,
    EventType,
    HistoryEvent,
    WorkflowNotFoundError,
    check_workflow_id,
)
from dfcore import WorkflowStatus as CoreStatus

from .conf import SETTING
from .models import OutboxEntry, Workflow
from .runtime import get_app

log = logging.getLogger("dfcore.django.admin")

if TYPE_CHECKING:  # ModelAdmin is generic in the stubs only
    _OutboxAdmin = admin.ModelAdmin[OutboxEntry]
    _WorkflowAdmin = admin.ModelAdmin[Workflow]
else:
    _OutboxAdmin = _WorkflowAdmin = admin.ModelAdmin

#: Admin icon and label of each outbox and workflow status.
_ICONS = {
    "published": "icon-yes.svg",
    "pending": "icon-clock.svg",
    "retrying": "icon-alert.svg",
    "running": "icon-clock.svg",
    "completed": "icon-yes.svg",
    "failed": "icon-no.svg",
    "cancelled": "icon-alert.svg",
    "timed_out": "icon-alert.svg",
}
WORKFLOW_STATUSES = ("running", "completed", "failed", "cancelled", "timed_out")
FAILURE_EVENTS = frozenset(
    {EventType.ACTIVITY_FAILED, EventType.WORKFLOW_FAILED, EventType.WORKFLOW_TIMED_OUT}
)


def status_label(status: str) -> str:
    return status.replace("_", " ")


def status_html(status: str, title: str = "") -> str:
    """The status as an admin icon and its name."""
    icon = _ICONS.get(status, "icon-unknown.svg")
    return format_html(
        '<span class="df-status df-status-{}" title="{}"><img src="{}" alt=""> {}</span>',
        status,
        title,
        static(f"admin/img/{icon}"),
        status_label(status),
    )


def problem_message(exc: BaseException) -> str:
    """What the admin says when it cannot read workflows."""
    if isinstance(exc, ImproperlyConfigured):
        return f"DurableFuture is not configured correctly: {exc}"
    if isinstance(exc, DFConnectionError):
        return (
            f"Cannot read workflows: {exc} In this project the server is set by "
            f'settings.{SETTING}["NATS_URL"] (or the DF_NATS_URL environment variable).'
        )
    return f"Cannot read workflows: {type(exc).__name__}: {exc}"


#: What the templates are told a user may do on the workflow pages: look, nothing else.
_READ_ONLY = {
    "has_add_permission": False,
    "has_change_permission": False,
    "has_delete_permission": False,
    "has_view_permission": True,
}


# -- outbox ---------------------------------------------------------------------------------


class OutboxStatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [
            ("pending", "pending (not published yet)"),
            ("retrying", "retrying (a publish failed)"),
            ("unpublished", "not published (pending or retrying)"),
            ("published", "published"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value == "published":
            return queryset.filter(published_at__isnull=False)
        if value == "unpublished":
            return queryset.filter(published_at__isnull=True)
        if value == "pending":
            return queryset.filter(published_at__isnull=True, attempts=0)
        if value == "retrying":
            return queryset.filter(published_at__isnull=True, attempts__gt=0)
        return queryset


@admin.register(OutboxEntry)
class OutboxEntryAdmin(_OutboxAdmin):
    """The outbox, read-only: rows are written by ``start_on_commit`` and the relay."""

    list_display = (
        "id",
        "workflow",
        "workflow_type",
        "task_queue",
        "status_display",
        "attempts",
        "created_at",
        "published_at",
        "last_error_display",
    )
    list_filter = (OutboxStatusFilter, "created_at", "task_queue")
    search_fields = ("workflow_id",)
    search_help_text = "Search by workflow id."
    ordering = ("-id",)
    actions = None
    fields = (
        "workflow",
        "workflow_type",
        "task_queue",
        "status_display",
        "attempts",
        "created_at",
        "published_at",
        "next_attempt_at",
        "last_error",
        "payload_size",
    )
    readonly_fields = ("workflow", "status_display", "payload_size")

    def get_queryset(self, request: HttpRequest) -> QuerySet[OutboxEntry]:
        # The payload is an encoded start record, up to the server's max_payload per row:
        # never load it for a listing (the change page loads it for its size).
        return super().get_queryset(request).defer("payload")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="workflow id", ordering="workflow_id")
    def workflow(self, entry: OutboxEntry) -> str:
        """The workflow id, linking to its page under Workflows."""
        url = _workflow_url(self.admin_site.name, entry.workflow_id)
        if url is None:
            return entry.workflow_id
        return format_html('<a href="{}">{}</a>', url, entry.workflow_id)

    @admin.display(description="status")
    def status_display(self, entry: OutboxEntry) -> str:
        title = ""
        if entry.status == "retrying" and entry.next_attempt_at is not None:
            when = entry.next_attempt_at
            if timezone.is_aware(when):
                when = timezone.localtime(when)
            title = f"next attempt at {when:%Y-%m-%d %H:%M:%S}"
        return status_html(entry.status, title)

    @admin.display(description="last error")
    def last_error_display(self, entry: OutboxEntry) -> str:
        if not entry.last_error:
            return ""
        short = Truncator(entry.last_error).chars(80)
        return format_html('<span title="{}">{}</span>', entry.last_error, short)

    @admin.display(description="payload")
    def payload_size(self, entry: OutboxEntry) -> str:
        size = len(entry.payload or b"")
        return f"{size} bytes (the encoded start record; not shown)"


def _workflow_url(site_name: str, workflow_id: str) -> str | None:
    try:
        return reverse(f"{site_name}:dfcore_workflow_change", args=[quote(workflow_id)])
    except NoReverseMatch:  # Workflow is not registered on this admin site
        return None


# -- workflows ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowRow:
    """One workflow of the list, ready for the template."""

    workflow_id: str
    workflow_type: str | None
    status: str
    last_event_time: datetime | None
    url: str
    status_html: str


@dataclass(frozen=True)
class EventRow:
    """One history event, ready for the template."""

    index: int
    stream_seq: int
    type: str
    time: str
    summary: str
    attributes: str
    failure: bool


@dataclass(frozen=True)
class FilterChoice:
    label: str
    url: str
    selected: bool


@admin.register(Workflow)
class WorkflowAdmin(_WorkflowAdmin):
    """Workflows, read from JetStream: a list of the most recently active ones and a page per
    workflow with its status and event history. Nothing can be added, changed or deleted."""

    #: How many workflows the list reads by default (``?limit=`` changes it up to the maximum).
    list_limit = 100
    list_max_limit = 1000
    #: Attributes of an event longer than this are cut on the detail page.
    attributes_max_chars = 20_000
    #: Threads reading workflow types for the list (``list_workflows`` does not return them).
    type_lookup_threads = 8

    workflow_list_template = "dfcore/admin/workflow_list.html"
    workflow_detail_template = "dfcore/admin/workflow_detail.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name

        def view(fn: Any) -> Any:  # read-only pages: GET and HEAD only
            return self.admin_site.admin_view(require_safe(fn))

        return [
            path("", view(self.changelist_view), name="{}_{}_changelist".format(*info)),
            path("<path:object_id>/", view(self.detail_view), name="{}_{}_change".format(*info)),
        ]

    # The list ------------------------------------------------------------------------------

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        status = request.GET.get("status", "")
        if status not in WORKFLOW_STATUSES:
            status = ""
        query = request.GET.get("q", "").strip()
        limit = self._limit(request)

        error = ""
        found: list[CoreStatus] = []
        rows: list[WorkflowRow] = []
        try:
            app = get_app()
            found = app.list_workflows(limit=limit)
            shown = [row for row in found if not status or row.status == status]
            shown = self._with_types(app, shown)
        except (ImproperlyConfigured, DFError) as exc:
            log.warning("admin: cannot list workflows: %s", exc)
            error = problem_message(exc)
        else:
            if query:
                needle = query.casefold()
                shown = [
                    row
                    for row in shown
                    if needle in row.workflow_id.casefold()
                    or needle in (row.workflow_type or "").casefold()
                ]
            rows = [self._row(row) for row in shown]

        counts = Counter(row.status for row in found)
        choices = [FilterChoice("All", self._query(request, status=None), not status)]
        for value in WORKFLOW_STATUSES:
            label = status_label(value)
            if found:
                label = f"{label} ({counts.get(value, 0)})"
            choices.append(FilterChoice(label, self._query(request, status=value), value == status))

        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "title": "Workflows",
            "subtitle": None,
            "rows": rows,
            "error": error,
            "read_count": len(found),
            "limit": limit,
            "limit_reached": len(found) >= limit,
            "more_url": self._query(request, limit=min(limit * 10, self.list_max_limit))
            if limit < self.list_max_limit
            else "",
            "status": status,
            "query": query,
            "filter_choices": choices,
            "hidden_params": [
                (name, request.GET[name]) for name in ("status", "limit") if name in request.GET
            ],
            "has_filters": True,
            **_READ_ONLY,
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.workflow_list_template, context)

    def _limit(self, request: HttpRequest) -> int:
        try:
            limit = int(request.GET.get("limit", self.list_limit))
        except ValueError:
            limit = self.list_limit
        return max(1, min(limit, self.list_max_limit))

    @staticmethod
    def _query(request: HttpRequest, **changes: Any) -> str:
        params: dict[str, str] = {key: str(value) for key, value in request.GET.items()}
        for key, value in changes.items():
            if value is None:
                params.pop(key, None)
            else:
                params[key] = str(value)
        return "?" + urlencode(sorted(params.items())) if params else "?"

    def _with_types(self, app: App, rows: Sequence[CoreStatus]) -> list[CoreStatus]:
        """Fill in the workflow types that the listing leaves out, reading them concurrently
        (a handle's ``status()`` each); a type that cannot be read stays blank."""
        missing = [row for row in rows if row.workflow_type is None]
        if not missing:
            return list(rows)
        unreachable = threading.Event()

        def type_of(row: CoreStatus) -> str | None:
            if unreachable.is_set():
                return None
            try:
                return app.get_handle(row.workflow_id).status().workflow_type
            except DFConnectionError:
                unreachable.set()  # do not wait out a timeout per remaining row
            except DFError as exc:
                log.debug("admin: no type for workflow %r: %s", row.workflow_id, exc)
            return None

        with ThreadPoolExecutor(
            max_workers=min(self.type_lookup_threads, len(missing)),
            thread_name_prefix="dfcore-admin",
        ) as pool:
            types = dict(zip((r.workflow_id for r in missing), pool.map(type_of, missing)))
        return [
            replace(row, workflow_type=types.get(row.workflow_id))
            if row.workflow_type is None
            else row
            for row in rows
        ]

    def _row(self, row: CoreStatus) -> WorkflowRow:
        return WorkflowRow(
            workflow_id=row.workflow_id,
            workflow_type=row.workflow_type,
            status=row.status,
            last_event_time=row.last_event_time,
            url=_workflow_url(self.admin_site.name, row.workflow_id) or "",
            status_html=status_html(row.status),
        )

    # One workflow --------------------------------------------------------------------------

    def detail_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        workflow_id = unquote(object_id)
        try:
            check_workflow_id(workflow_id)
        except ConfigurationError as exc:  # no such workflow can exist
            raise Http404(str(exc)) from None
        error = ""
        info: CoreStatus | None = None
        events: list[HistoryEvent] = []
        try:
            handle = get_app().get_handle(workflow_id)
            info = handle.status()
            events = handle.history()
        except WorkflowNotFoundError as exc:
            raise Http404(str(exc)) from exc
        except (ImproperlyConfigured, DFError) as exc:
            log.warning("admin: cannot read workflow %.100r: %s", workflow_id, exc)
            error = problem_message(exc)

        started = (
            events[0].attributes if events and events[0].type == EventType.WORKFLOW_STARTED else {}
        )
        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "title": f"Workflow {workflow_id}",
            "subtitle": None,
            "workflow_id": workflow_id,
            "info": info,
            "status_html": status_html(info.status) if info else "",
            "task_queue": started.get("task_queue", ""),
            "started_at": _event_time(events[0]) if events else "",
            "events": [self._event(event) for event in events],
            "error": error,
            "outbox_url": self._outbox_url(request, workflow_id),
            "changelist_url": reverse(
                f"{self.admin_site.name}:dfcore_workflow_changelist",
            ),
            **_READ_ONLY,
            **(extra_context or {}),
        }
        return TemplateResponse(request, self.workflow_detail_template, context)

    def _event(self, event: HistoryEvent) -> EventRow:
        attributes = json.dumps(
            dict(event.attributes), indent=2, sort_keys=True, default=repr, ensure_ascii=False
        )
        if len(attributes) > self.attributes_max_chars:
            attributes = attributes[: self.attributes_max_chars] + "\n... (cut)"
        return EventRow(
            index=event.index,
            stream_seq=event.stream_seq,
            type=event.type,
            time=_event_time(event),
            summary=event.summary(),
            attributes=attributes,
            failure=event.type in FAILURE_EVENTS,
        )

    def _outbox_url(self, request: HttpRequest, workflow_id: str) -> str:
        """The outbox rows of this workflow, if the user may see the outbox."""
        outbox_admin: admin.ModelAdmin[Any] | None = self.admin_site._registry.get(OutboxEntry)
        if outbox_admin is None or not outbox_admin.has_view_permission(request):
            return ""
        try:
            url = reverse(f"{self.admin_site.name}:dfcore_outboxentry_changelist")
        except NoReverseMatch:
            return ""
        return f"{url}?{urlencode({'q': workflow_id})}"


def _event_time(event: HistoryEvent) -> str:
    if not event.time_ms:
        return ""
    when = timezone.localtime(datetime.fromtimestamp(event.time_ms / 1000, tz=UTC))
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
