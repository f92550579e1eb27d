"""The OpenAPI 3.1 document of the dashboard's JSON API (``GET /api/openapi.json``)."""

from __future__ import annotations

from typing import Any

from ._version import VERSION

_TIME = {"type": ["string", "null"], "format": "date-time"}
_TEXT = {"type": ["string", "null"]}
_STATUS = {
    "type": "string",
    "enum": ["running", "failing", "completed", "failed", "cancelled", "timed_out"],
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(need: list[str] | None = None, /, **properties: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if need:
        schema["required"] = need
    return schema


def _items(name: str) -> dict[str, Any]:
    return _object(["items"], items={"type": "array", "items": _ref(name)})


SCHEMAS: dict[str, Any] = {
    "Error": _object(
        ["error"],
        error=_object(
            ["code", "message"],
            code={
                "type": "string",
                "enum": [
                    "bad_request",
                    "unauthorized",
                    "forbidden",
                    "not_found",
                    "conflict",
                    "unavailable",
                ],
            },
            message={"type": "string"},
        ),
    ),
    "Summary": _object(
        ["workflow_id", "task_queue", "status"],
        workflow_id={"type": "string"},
        workflow_type=_TEXT,
        task_queue={"type": "string"},
        status=_STATUS,
        run={"type": "integer"},
        started_at=_TIME,
        ended_at=_TIME,
        parent_id=_TEXT,
        schedule_id=_TEXT,
        failure=_TEXT,
    ),
    "Event": _object(
        ["index", "seq", "type"],
        index={"type": "integer"},
        seq={"type": "integer"},
        time=_TIME,
        type={"type": "string"},
        summary={"type": "string"},
        details={"type": ["object", "null"]},
    ),
    "Span": _object(
        ["kind", "label", "start"],
        kind={
            "type": "string",
            "enum": ["activity", "timer", "signal", "child", "cancel", "workflow_task_failed"],
        },
        label={"type": "string"},
        name=_TEXT,
        seq={"type": ["integer", "null"]},
        attempt={"type": ["integer", "null"]},
        start=_TIME,
        end=_TIME,
        outcome={"type": "string"},
        child_id=_TEXT,
        error=_TEXT,
    ),
    "Failure": {
        "type": ["object", "null"],
        "properties": {"type": _TEXT, "message": _TEXT, "traceback": _TEXT},
    },
    "Workflow": _object(
        ["summary", "events", "timeline"],
        summary=_ref("Summary"),
        args={"type": ["array", "null"]},
        kwargs={"type": ["object", "null"]},
        args_hidden={"type": "boolean"},
        result={},
        failure=_ref("Failure"),
        recurring_error=_ref("Failure"),
        events={"type": "array", "items": _ref("Event")},
        timeline={"type": "array", "items": _ref("Span")},
        history_seq={"type": "integer"},
    ),
    "Page": _object(
        ["items", "counts", "total"],
        items={"type": "array", "items": _ref("Summary")},
        next_cursor=_TEXT,
        total={"type": "integer"},
        counts={"type": "object", "additionalProperties": {"type": "integer"}},
        loaded={"type": "boolean"},
    ),
    "Parameter": _object(
        ["name", "kind", "required"],
        name={"type": "string"},
        kind={"type": "string", "enum": ["str", "int", "float", "bool", "json"]},
        required={"type": "boolean"},
        default={},
        annotation={"type": "string"},
        nullable={"type": "boolean"},
    ),
    "WorkflowType": _object(
        ["name", "parameters"],
        name={"type": "string"},
        task_queue={"type": "string"},
        doc=_TEXT,
        parameters={"type": "array", "items": _ref("Parameter")},
    ),
    "Start": _object(
        ["workflow_type"],
        workflow_type={"type": "string"},
        args={"type": "array"},
        kwargs={"type": "object"},
        workflow_id={"type": "string"},
        task_queue={"type": "string"},
    ),
    "Started": _object(["workflow_id"], workflow_id={"type": "string"}),
    "Signal": _object(["name"], name={"type": "string"}, payload={}),
    "Cancel": _object(reason={"type": "string"}),
    "DeadLetter": _object(
        ["seq", "source", "subject", "reason"],
        seq={"type": "integer"},
        time=_TIME,
        source={"type": "string"},
        subject={"type": "string"},
        reason={"type": "string"},
        headers={"type": "object", "additionalProperties": {"type": "string"}},
        data={"type": "string"},
        size={"type": "integer"},
        truncated={"type": "boolean"},
    ),
    "Worker": _object(
        ["id", "alive"],
        id={"type": "string"},
        name={"type": "string"},
        host={"type": "string"},
        pid={"type": "integer"},
        version={"type": "string"},
        workflow_queues={"type": "array", "items": {"type": "string"}},
        activity_queues={"type": "array", "items": {"type": "string"}},
        running={"type": "array", "items": {"type": "object"}},
        running_count={"type": "integer"},
        cached_workflows={"type": "integer"},
        started_at=_TIME,
        last_seen=_TIME,
        alive={"type": "boolean"},
    ),
    "Queue": _object(
        ["name"],
        name={"type": "string"},
        activity_backlog={"type": "integer"},
        activity_in_flight={"type": "integer"},
        workflow_backlog={"type": "integer"},
        workflow_in_flight={"type": "integer"},
        starts_waiting={"type": "integer"},
    ),
    "Metrics": _object(
        ["per_minute", "latency_ms"],
        per_minute={"type": "array", "items": {"type": "object"}},
        latency_ms={"type": "object"},
        window_minutes={"type": "integer"},
    ),
    "Schedule": _object(
        ["schedule_id"],
        schedule_id={"type": "string"},
        workflow_type={"type": "string"},
        spec={"type": "string"},
        task_queue=_TEXT,
        paused={"type": "boolean"},
        next_run=_TIME,
        last_workflow_id=_TEXT,
        note=_TEXT,
    ),
}


def _answer(schema: str | None, status: str = "200", description: str = "OK") -> dict[str, Any]:
    content = {"application/json": {"schema": _ref(schema)}} if schema else {}
    return {status: {"description": description, "content": content}}


def _errors(*statuses: str) -> dict[str, Any]:
    words = {
        "400": "bad input",
        "401": "not logged in",
        "403": "read-only, or a write without its CSRF token",
        "404": "unknown",
        "409": "it already ended, or the id is taken",
        "503": "NATS does not answer",
    }
    return {s: _answer("Error", s, words[s])[s] for s in ("401", "503", *statuses)}


def _op(summary: str, answer: dict[str, Any], *errors: str, **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**answer, **_errors(*errors)}, **extra}


def _body(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": {"type": kind}}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_SSE = {"200": {"description": "text/event-stream", "content": {"text/event-stream": {}}}}
_WRITE = "Writes send X-CSRF-Token (from /api/session) unless they carry a bearer token."


def openapi() -> dict[str, Any]:
    """The document, for this version."""
    list_params = [
        _query("status", "running, failing, completed, failed, cancelled, timed_out (repeat)"),
        _query("type", "workflow type"),
        _query("queue", "task queue"),
        _query("id_prefix", "workflow ids that start with this"),
        _query("started_after", "ISO 8601 time with a zone"),
        _query("started_before", "ISO 8601 time with a zone"),
        _query("limit", "page size (at most 500; 50)", "integer"),
        _query("cursor", "next_cursor of the page before"),
    ]
    paths: dict[str, Any] = {
        "/api/session": {"get": _op("Who is logged in, and the CSRF token", _answer(None))},
        "/api/openapi.json": {"get": _op("This document", _answer(None))},
        "/api/workflows": {
            "get": _op("Workflows, newest first", _answer("Page"), "400", parameters=list_params),
            "post": _op(
                "Start a workflow",
                _answer("Started", "201", "started"),
                "400",
                "403",
                "409",
                requestBody=_body("Start"),
                description=_WRITE,
            ),
        },
        "/api/workflows/{id}": {
            "get": _op("A workflow with its history", _answer("Workflow"), "404", parameters=[_ID])
        },
        "/api/workflows/{id}/stream": {
            "get": _op("Its changes as server-sent events (update)", _SSE, "404", parameters=[_ID])
        },
        "/api/workflow-types": {
            "get": {
                "summary": "The workflows this app defines, with their parameters",
                "responses": {**_answer(None), **_errors()},
            }
        },
        "/api/stream": {"get": _op("Server-sent events: workflow, counts, workers, queues", _SSE)},
        "/api/dead-letters": {"get": _op("Dead letters, newest first", _answer(None))},
        "/api/dead-letters/{seq}": {
            "get": _op(
                "One dead letter",
                _answer("DeadLetter"),
                "400",
                "404",
                parameters=[
                    {"name": "seq", "in": "path", "required": True, "schema": {"type": "integer"}}
                ],
            )
        },
        "/api/workers": {"get": _op("Worker processes, alive and lost", _answer(None))},
        "/api/queues": {"get": _op("Task queues: backlog and in flight", _answer(None))},
        "/api/metrics": {
            "get": _op(
                "Started, completed, failed per minute; latency percentiles",
                _answer("Metrics"),
                "400",
                parameters=[_query("minutes", "window (60)", "integer")],
            )
        },
        "/api/schedules": {"get": _op("Schedules", _answer(None))},
    }
    for action, schema, summary in (
        ("signal", "Signal", "Send a signal"),
        ("cancel", "Cancel", "Ask it to cancel"),
        ("restart", None, "Start it again, as a new workflow with the same arguments"),
    ):
        answer = _answer("Started", "201") if action == "restart" else _answer(None, "202")
        op = _op(summary, answer, "400", "403", "404", "409", parameters=[_ID], description=_WRITE)
        if schema:
            op["requestBody"] = _body(schema)
        paths[f"/api/workflows/{{id}}/{action}"] = {"post": op}
    return {
        "openapi": "3.1.0",
        "info": {"title": "DurableFuture dashboard", "version": VERSION},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "token": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"basic": []}, {"token": []}],
    }
