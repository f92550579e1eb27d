"""The dashboard's web server (aiohttp): the pages, the JSON API under them, the event streams.

Every action goes through the App's public client API (``astart``, a handle's ``asignal`` and
``acancel``), so it is recorded in the workflow's history like any other. Pages are one static
single-page app shipped in the wheel (``static/``): no Node.js, no CDN.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from importlib import resources
from typing import Any

from aiohttp import web

from dfcore import (
    App,
    ConfigurationError,
    DFConnectionError,
    DFError,
    PayloadError,
    RegistrationError,
    WorkflowAlreadyStartedError,
    WorkflowNotFoundError,
)

from ._auth import COOKIE, DashboardSettings, Guard
from ._forms import FormError, arguments, parameters
from ._live import Live
from ._mirror import Filter
from ._openapi import openapi
from ._version import VERSION
from ._views import WorkflowView, dead_letter_json, event_json, iso, summary_json

log = logging.getLogger("dfcore.dashboard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
LIVE: web.AppKey[Live] = web.AppKey("live", Live)
GUARD: web.AppKey[Guard] = web.AppKey("guard", Guard)
DF_APP: web.AppKey[App] = web.AppKey("df_app", App)
MAX_LIMIT = 500
KEEP_ALIVE = 15.0  # seconds of silence on an event stream before a comment is sent
PAGES: tuple[str, ...] = (
    "/",
    "/workflows/{tail:.*}",
    "/start",
    "/start/{tail:.*}",
    "/workers",
    "/metrics",
)
PAGES += ("/dead-letters", "/dead-letters/{tail:.*}", "/schedules", "/queues")
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


class ApiError(Exception):
    """An answer other than 200, with a message for the user."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def create_app(
    df_app: App, settings: DashboardSettings, live: Live | None = None
) -> web.Application:
    """The dashboard as an aiohttp application for ``df_app``."""
    app = web.Application(middlewares=[_security, _errors])
    app[DF_APP] = df_app
    app[GUARD] = Guard(settings)
    app[LIVE] = live or Live(df_app)
    app.on_startup.append(_start_live)
    app.on_shutdown.append(_end_streams)
    app.on_cleanup.append(_stop_live)
    app.on_response_prepare.append(_secure_headers)
    api = [
        web.get("/api/session", session),
        web.get("/api/openapi.json", openapi_document),
        web.get("/api/workflows", list_workflows),
        web.post("/api/workflows", start_workflow),
        web.get("/api/workflows/{id}", show_workflow),
        web.get("/api/workflows/{id}/stream", workflow_stream),
        web.post("/api/workflows/{id}/signal", signal_workflow),
        web.post("/api/workflows/{id}/cancel", cancel_workflow),
        web.post("/api/workflows/{id}/restart", restart_workflow),
        web.get("/api/workflow-types", workflow_types),
        web.get("/api/stream", stream),
        web.get("/api/dead-letters", dead_letters),
        web.get("/api/dead-letters/{seq}", dead_letter),
        web.get("/api/workers", workers),
        web.get("/api/queues", queues),
        web.get("/api/metrics", metrics),
        web.get("/api/schedules", schedules),
        web.get("/login", login_page),
        web.post("/login", login),
    ]
    app.add_routes(api)
    app.router.add_static("/static", str(resources.files(__package__) / "static"))
    for page in PAGES:
        app.router.add_get(page, index_page)
    return app


async def _start_live(app: web.Application) -> None:
    await app[LIVE].start()


async def _end_streams(app: web.Application) -> None:
    app[LIVE].end_streams()  # open event streams would otherwise hold the server up


async def _stop_live(app: web.Application) -> None:
    await app[LIVE].stop()


async def _secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer, errors and redirects included, carries the same security headers."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


# -- middleware ----------------------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.code, exc.message)
    except WorkflowNotFoundError as exc:
        return _error(404, "not_found", str(exc))
    except DFError as exc:
        log.warning("dashboard: %s %s: %s", request.method, request.path, exc)
        return _error(503, "unavailable", str(exc))
    except web.HTTPException as exc:  # no such route, or not with this method
        if exc.status < 400 or not request.path.startswith("/api/"):
            raise
        message = f"{request.method} {request.path}: {exc.reason}; see /api/openapi.json"
        return _error(exc.status, exc.reason.lower().replace(" ", "_"), message)


@web.middleware
async def _security(request: web.Request, handler: Handler) -> web.StreamResponse:
    guard = request.app[GUARD]
    how = guard.identify(request.headers, request.cookies)
    public = request.path in ("/login",) or request.path.startswith("/static/")
    if how is None and not public:
        if request.path.startswith("/api/"):
            response = _error(401, "unauthorized", "log in first: credentials are required")
        elif guard.settings.mode == "basic":
            response = web.Response(status=401, text="Log in to the DurableFuture dashboard.")
        else:
            raise web.HTTPFound(f"/login?next={request.path_qs}")
        if guard.settings.mode == "basic":
            response.headers["WWW-Authenticate"] = 'Basic realm="DurableFuture", charset="UTF-8"'
        return response
    if request.method == "POST" and request.path.startswith("/api/"):
        own = f"{request.scheme}://{request.host}"
        why = guard.write_allowed(how or "none", request.headers, own)
        if why is not None:
            return _error(403, "forbidden", why)
    return await handler(request)


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message}}, status=status)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    return repr(value)  # a payload JSON cannot carry is shown as text


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ApiError(400, "bad_request", "send the body as JSON (Content-Type: application/json)")
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    return body


# -- pages ---------------------------------------------------------------------------------------


async def index_page(request: web.Request) -> web.StreamResponse:
    page = resources.files(__package__) / "static" / "index.html"
    return web.Response(text=page.read_text(), content_type="text/html")


async def login_page(request: web.Request) -> web.StreamResponse:
    guard = request.app[GUARD]
    if guard.settings.mode != "token":  # basic: the browser asks; none: nothing to ask
        raise web.HTTPFound(_local(request.query.get("next", "/")))
    token = request.query.get("token")
    if token is not None:
        return _log_in(guard, token, request.query.get("next", "/"))
    page = resources.files(__package__) / "static" / "login.html"
    return web.Response(text=page.read_text(), content_type="text/html")


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    return _log_in(request.app[GUARD], str(form.get("token", "")), str(form.get("next", "/")))


def _log_in(guard: Guard, token: str, next_page: str) -> web.StreamResponse:
    if guard.settings.mode != "token" or not guard.token_ok(token):
        return web.Response(status=401, text="Wrong token.")
    response = web.Response(status=303, headers={"Location": _local(next_page)})
    response.set_cookie(COOKIE, guard.session_value(), httponly=True, samesite="Strict")
    return response


def _local(page: str) -> str:
    """``page`` if it is a path on this site, else ``/`` (no open redirects)."""
    return page if page.startswith("/") and not page.startswith(("//", "/\\")) else "/"


async def openapi_document(request: web.Request) -> web.StreamResponse:
    return _json(openapi())


async def session(request: web.Request) -> web.StreamResponse:
    df_app, guard = request.app[DF_APP], request.app[GUARD]
    settings = df_app.settings
    return _json(
        {
            "read_only": guard.settings.read_only,
            "csrf_token": guard.csrf_token,
            "namespace": settings.namespace,
            "app": df_app.name,
            "version": VERSION,
            "auth": guard.settings.mode,
            "loaded": request.app[LIVE].loaded.is_set(),
            "codec": {
                "configured": settings.codec is not None,
                "can_decode": request.app[LIVE].can_decode,
            },
        }
    )


# -- workflows -----------------------------------------------------------------------------------


async def list_workflows(request: web.Request) -> web.StreamResponse:
    live = request.app[LIVE]
    query = request.query
    statuses = {s for value in query.getall("status", []) for s in value.split(",") if s}
    try:
        wanted = Filter(
            statuses=frozenset(statuses),
            workflow_type=query.get("type") or None,
            task_queue=query.get("queue") or None,
            id_prefix=query.get("id_prefix") or None,
            started_after=_time(query.get("started_after")),
            started_before=_time(query.get("started_before")),
        )
        limit = min(int(query.get("limit", 50)), MAX_LIMIT)
        page = live.mirror.page(wanted, max(limit, 1), query.get("cursor") or None)
    except ValueError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return _json(
        {
            "items": [summary_json(entry) for entry in page.items],
            "next_cursor": page.next_cursor,
            "total": page.total,
            "counts": live.mirror.counts(),
            "loaded": live.loaded.is_set(),
        }
    )


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone: add Z for UTC")
    return when


async def _view(request: web.Request) -> WorkflowView:
    workflow_id = request.match_info["id"]
    handle = request.app[DF_APP].get_handle(workflow_id)
    return WorkflowView.of(workflow_id, await handle.ahistory())


async def show_workflow(request: web.Request) -> web.StreamResponse:
    return _json((await _view(request)).to_json())


async def workflow_stream(request: web.Request) -> web.StreamResponse:
    """The workflow's changes as server-sent events: each batch of new history events, with
    the status and the whole timeline recomputed."""
    workflow_id = request.match_info["id"]
    history = request.app[DF_APP].get_handle(workflow_id).awatch_history()
    events = await anext(history)  # raises WorkflowNotFoundError before the stream begins
    response = await _open_stream(request)
    closing: asyncio.Future[Any] = asyncio.ensure_future(request.app[LIVE].closing.wait())
    waiting: asyncio.Future[Any] | None = None
    try:
        await _send_batch(response, workflow_id, events, events)
        while not closing.done():
            waiting = waiting or asyncio.ensure_future(anext(history))
            await asyncio.wait(
                {waiting, closing}, timeout=KEEP_ALIVE, return_when=asyncio.FIRST_COMPLETED
            )
            if not waiting.done():
                if not closing.done():
                    await response.write(b": keep-alive\n\n")  # fails once the browser is gone
                continue
            batch, waiting = waiting.result(), None
            events = batch if batch[0].index == 1 else events + batch
            await _send_batch(response, workflow_id, events, batch)
    except ConnectionResetError:
        pass  # the browser has gone
    finally:
        closing.cancel()
        if waiting is not None:  # the history's generator is still running: stop it first
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
        await history.aclose()
    return response


async def _send_batch(
    response: web.StreamResponse, workflow_id: str, events: list[Any], batch: list[Any]
) -> None:
    view = WorkflowView.of(workflow_id, events)
    update = view.to_json(with_events=False)
    update["events"] = [event_json(event) for event in batch]
    update["reset"] = bool(batch) and batch[0].index == 1
    await _send(response, "update", update)


async def _open_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


async def _send(response: web.StreamResponse, event: str, data: Any) -> None:
    await response.write(f"event: {event}\ndata: {_dumps(data)}\n\n".encode())


async def stream(request: web.Request) -> web.StreamResponse:
    """Changes to the list, the counts, the workers and the queues, as server-sent events."""
    live = request.app[LIVE]
    response = await _open_stream(request)
    async with live.stream() as changes:
        try:
            await _send(response, "counts", live.mirror.counts())
            await _send(response, "workers", {"items": live.workers_json()})
            await _send(response, "queues", {"items": live.queues})
            while True:
                try:
                    event, data = await asyncio.wait_for(changes.get(), KEEP_ALIVE)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if not event:
                    break  # fell behind: the browser reconnects and starts again
                await _send(response, event, data)
        except ConnectionResetError:
            pass  # the browser has gone
    return response


# -- actions (each through the public client API) ------------------------------------------------


async def start_workflow(request: web.Request) -> web.StreamResponse:
    df_app = request.app[DF_APP]
    body = await _body(request)
    name = body.get("workflow_type")
    defn = df_app.workflows.get(name) if isinstance(name, str) else None
    if defn is None:
        known = ", ".join(sorted(df_app.workflows)) or "none"
        raise ApiError(400, "bad_request", f"unknown workflow_type {name!r}; this app has {known}")
    args, kwargs = body.get("args") or [], body.get("kwargs") or {}
    params = parameters(defn.fn)
    try:
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise FormError("args must be a JSON array and kwargs a JSON object")
        if len(args) > len(params):
            raise FormError(f"{defn.name} takes {len(params)} arguments, not {len(args)}")
        named = {param.name: value for param, value in zip(params, args, strict=False)}
        twice = sorted(set(named) & set(kwargs))
        if twice:
            raise FormError(f"parameter {twice[0]!r} is given both in args and in kwargs")
        values = arguments(params, {**named, **kwargs})
    except FormError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    options = {k: body[k] for k in ("workflow_id", "task_queue") if body.get(k)}
    try:
        handle = await df_app.astart(defn.name, *values, if_exists="fail", **options)
    except WorkflowAlreadyStartedError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except (TypeError, ValueError, RegistrationError, ConfigurationError, PayloadError) as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return _json({"workflow_id": handle.workflow_id}, status=201)


async def _open_handle(request: web.Request, action: str) -> Any:
    """The workflow's handle, once it is known to be open (404, 409 otherwise)."""
    workflow_id = request.match_info["id"]
    handle = request.app[DF_APP].get_handle(workflow_id)
    status = await handle.astatus()
    if status.status not in ("running", "failing"):
        raise ApiError(
            409,
            "conflict",
            f"cannot {action} workflow {workflow_id!r}: it already ended ({status.status})",
        )
    return handle


async def signal_workflow(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise ApiError(400, "bad_request", "name: the signal's name is required")
    handle = await _open_handle(request, "signal")
    try:
        await handle.asignal(name, body.get("payload"))
    except PayloadError as exc:
        raise ApiError(400, "bad_request", str(exc)) from None
    return _json({}, status=202)


async def cancel_workflow(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    reason = body.get("reason") or "cancelled from the dashboard"
    if not isinstance(reason, str):
        raise ApiError(400, "bad_request", "reason must be text")
    handle = await _open_handle(request, "cancel")
    await handle.acancel(reason)
    return _json({}, status=202)


async def restart_workflow(request: web.Request) -> web.StreamResponse:
    """Start the workflow again, as a new one, with the same type, arguments and queue."""
    view = await _view(request)
    if view.workflow_type is None or view.args is None:
        raise ApiError(409, "conflict", "its start cannot be read, so it cannot be started again")
    handle = await request.app[DF_APP].astart(
        view.workflow_type, *view.args, task_queue=view.task_queue
    )
    return _json({"workflow_id": handle.workflow_id}, status=201)


# -- the rest ------------------------------------------------------------------------------------


async def workflow_types(request: web.Request) -> web.StreamResponse:
    df_app = request.app[DF_APP]
    items = []
    for name, defn in sorted(df_app.workflows.items()):
        doc = (defn.fn.__doc__ or "").strip().splitlines()
        items.append(
            {
                "name": name,
                "task_queue": defn.task_queue or df_app.settings.task_queue,
                "doc": doc[0] if doc else None,
                "parameters": [p.to_json() for p in parameters(defn.fn)],
            }
        )
    return _json({"items": items})


async def dead_letters(request: web.Request) -> web.StreamResponse:
    try:
        limit = min(int(request.query.get("limit", 50)), MAX_LIMIT)
    except ValueError:
        raise ApiError(400, "bad_request", "limit must be a number") from None
    letters = await request.app[DF_APP].adead_letters(max(limit, 1))
    return _json({"items": [dead_letter_json(letter) for letter in reversed(letters)]})


async def dead_letter(request: web.Request) -> web.StreamResponse:
    try:
        seq = int(request.match_info["seq"])
    except ValueError:
        raise ApiError(400, "bad_request", "a dead letter's sequence is a number") from None
    try:
        letter = await request.app[DF_APP].adead_letter(seq)
    except DFConnectionError:
        raise  # 503, as for every call NATS does not answer
    except DFError as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    return _json(dead_letter_json(letter))


async def workers(request: web.Request) -> web.StreamResponse:
    return _json({"items": request.app[LIVE].workers_json()})


async def queues(request: web.Request) -> web.StreamResponse:
    return _json({"items": request.app[LIVE].queues})


async def metrics(request: web.Request) -> web.StreamResponse:
    try:
        minutes = min(max(int(request.query.get("minutes", 60)), 1), 24 * 60)
    except ValueError:
        raise ApiError(400, "bad_request", "minutes must be a number") from None
    return _json(request.app[LIVE].mirror.metrics(minutes))


async def schedules(request: web.Request) -> web.StreamResponse:
    items = await request.app[DF_APP].schedules.alist()
    return _json(
        {
            "items": [
                {
                    "schedule_id": item.schedule_id,
                    "workflow_type": item.spec.workflow,
                    "spec": item.spec.describe(),
                    "task_queue": item.spec.task_queue,
                    "paused": item.paused,
                    "next_run": iso(item.next_time),
                    "last_workflow_id": item.last_workflow_id,
                    "note": item.note or None,
                }
                for item in items
            ]
        }
    )


async def serve(
    df_app: App,
    settings: DashboardSettings,
    *,
    started: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the dashboard until ``stop`` is set (or the task is cancelled).

    ``started`` is called with the dashboard's URL once it listens.
    """
    settings.check()
    runner = web.AppRunner(create_app(df_app, settings), access_log=None, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = runner.addresses[0][1] if runner.addresses else settings.port
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        if started is not None:
            started(f"http://{host}:{port}/")
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
