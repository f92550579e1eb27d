"""The dashboard's JSON API as a script calls it: a dashboard served in this process on a real
port, real HTTP, a real nats-server and worker threads; every endpoint, with bad input."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import urllib.request
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import nats
import pytest

from dfcore import ApplicationError, ConfigurationError, RetryPolicy
from dfcore.jetstream._naming import Layout

from ..workerkit import WorkerThread, wait_until
from .kit import PASSWORD, TOKEN, USER, Api, basic, served


def raw(api: Api, path: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
    """One request as sent (no redirect followed): status, headers and body."""
    where = urlsplit(api.base)
    conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def messages(api: Api, path: str) -> Any:
    """The server-sent events of ``path``, one ``(event, data)`` at a time."""
    request = urllib.request.Request(api.base + path, headers={"Authorization": api.auth or ""})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        for line in response:  # ": keep-alive" is a comment
            key, _, value = line.decode().rstrip("\n").partition(": ")
            if key in ("event", "data"):
                fields[key] = fields.get(key, "") + value
            elif not key and not value and "event" in fields:  # a blank line ends a message
                yield fields.pop("event"), json.loads(fields.pop("data"))


def workflow(api: Api, workflow_id: str) -> dict[str, Any]:
    status, body = api.get("/api/workflows/" + quote(workflow_id, safe=""))
    assert status == 200, body
    return body


def ended(api: Api, workflow_id: str, status: str = "completed") -> dict[str, Any]:
    """The workflow's page once it says ``status``."""
    return wait_until(
        lambda: (body := workflow(api, workflow_id))["summary"]["status"] == status and body,
        what=f"{workflow_id} {status}",
    )


def items(api: Api, path: str) -> list[Any]:
    status, body = api.get(path)
    assert status == 200, body
    return body["items"]


def ids(api: Api, query: str) -> list[str]:
    return [item["workflow_id"] for item in items(api, "/api/workflows?" + query)]


def walk(api: Api, query: str) -> list[list[str]]:
    """The ids of each page of the list, following next_cursor to the end."""
    pages, cursor = [], ""
    while True:
        status, page = api.get(f"/api/workflows?{query}{cursor}")
        assert status == 200, page
        pages.append([item["workflow_id"] for item in page["items"]])
        if page["next_cursor"] is None:
            return pages
        cursor = "&cursor=" + page["next_cursor"]


def totals(metrics: dict[str, Any]) -> bool:
    """Whether the per-minute figures add up to the three workflows the test ran."""
    rows = metrics["per_minute"]
    return [sum(row[k] for row in rows) for k in ("started", "completed", "failed")] == [3, 3, 0]


def pick(mapping: dict[str, Any], *keys: str) -> tuple[Any, ...]:
    return tuple(mapping[key] for key in keys)


def refused(answer: tuple[int, Any], status: int, code: str, phrase: str = "") -> None:
    assert answer[0] == status, answer
    assert answer[1]["error"]["code"] == code, answer
    assert phrase in answer[1]["error"]["message"], answer


async def greet(ctx: Any, name: str, times: int = 1) -> str:
    return " ".join([f"hi {name}"] * times)


def test_session_basic_auth_csrf_and_openapi(make_app: Any) -> None:
    from dfcore.contrib.dashboard import DashboardSettings, create_app

    app = make_app()
    app.workflow(greet)
    with served(app) as api:
        status, session = api.get("/api/session")
        assert status == 200
        assert pick(session, "read_only", "auth", "app") == (False, "basic", "test")
        assert session["namespace"] == app.settings.namespace and session["loaded"] is True
        assert session["csrf_token"] == api.csrf and len(api.csrf or "") >= 16
        anonymous = Api(api.base)
        refused(anonymous.get("/api/session"), 401, "unauthorized")
        for auth in (basic(password="wrong"), basic(user="eve"), "Basic !!", f"Bearer {TOKEN}"):
            assert Api(api.base, auth).get("/api/workflows")[0] == 401, auth
        status, headers, _ = raw(api, "/api/workflows")
        assert status == 401 and headers["WWW-Authenticate"].startswith("Basic ")
        assert raw(api, "/workers")[0] == 401  # a page, too
        # Writes need the CSRF token and, when one is sent, this site's Origin.
        start = {"workflow_type": "greet", "kwargs": {"name": "ann"}}
        no_csrf = Api(api.base, basic())
        refused(no_csrf.post("/api/workflows", start), 403, "forbidden", "X-CSRF-Token")
        wrong = Api(api.base, basic(), csrf="not-the-token")
        refused(wrong.post("/api/workflows", start), 403, "forbidden")
        evil = Api(api.base, basic(), api.csrf, origin="http://evil.example")
        refused(evil.post("/api/workflows", start), 403, "forbidden", "origin")
        same = Api(api.base, basic(), api.csrf, origin=api.base)
        status, started = same.post("/api/workflows", start)
        assert status == 201, started
        assert workflow(api, started["workflow_id"])["summary"]["workflow_type"] == "greet"
        # The OpenAPI document describes every route under /api.
        status, document = api.get("/api/openapi.json")
    assert status == 200 and document["openapi"].startswith("3.1")
    router = create_app(app, DashboardSettings(user=USER, password=PASSWORD)).router
    routes = {
        (r.resource.canonical, r.method.lower())
        for r in router.routes()
        if r.resource and r.resource.canonical.startswith("/api/") and r.method in ("GET", "POST")
    }
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert len(routes) == 17 and documented - routes == set()
    assert routes - documented == set()


def test_every_answer_carries_the_security_headers(make_app: Any) -> None:
    """JSON, errors of every kind, pages, static files, redirects: each has the CSP."""
    with served(make_app()) as api:
        cred = {"Authorization": basic()}
        answers = [
            raw(api, "/api/session", headers=cred),
            raw(api, "/api/session"),  # 401
            raw(api, "/", headers=cred),
            raw(api, "/static/app.js"),
            raw(api, "/api/workflows/x/cancel", "POST", cred, b"{}"),  # 403: no CSRF token
            raw(api, "/api/workflows/nope", headers=cred),  # 404: no such workflow
            raw(api, "/api/workflows?cursor=%21", headers=cred),  # 400
            raw(api, "/api/no-such-route", headers=cred),  # 404 from the router
            raw(api, "/login"),  # 302: basic auth has no login page
        ]
        assert [status for status, _, _ in answers] == [200, 401, 200, 200, 403, 404, 400, 404, 302]
        no_route = json.loads(answers[7][2])["error"]  # JSON, like every other API answer
        assert no_route["code"] == "not_found" and "/api/openapi.json" in no_route["message"]
        missing = [
            status
            for status, headers, _ in answers
            if not (headers.get("Content-Security-Policy") or "").startswith("default-src 'self'")
            or headers.get("X-Content-Type-Options") != "nosniff"
        ]
        assert missing == []


def test_dashboard_settings_refuse_what_cannot_be_served(monkeypatch: pytest.MonkeyPatch) -> None:
    from dfcore.contrib.dashboard import DashboardSettings

    for name in [n for n in os.environ if n.startswith("DF_DASHBOARD_")]:
        monkeypatch.delenv(name)
    with pytest.raises(ConfigurationError, match="DF_DASHBOARD_USER"):
        DashboardSettings.resolve({})
    for settings, phrase in [
        (DashboardSettings(), "set DF_DASHBOARD_USER"),
        (DashboardSettings(auth="none", host="0.0.0.0"), "without authentication"),
        (DashboardSettings(user=USER), "DF_DASHBOARD_PASSWORD"),
        (DashboardSettings(auth="token"), "DF_DASHBOARD_TOKEN"),
        (DashboardSettings(auth="magic", token=TOKEN), "choose one of"),
    ]:
        with pytest.raises(ConfigurationError, match=phrase):
            settings.check()
    DashboardSettings(auth="none", host="::1").check()  # loopback: allowed


def test_token_mode_bearer_and_login_cookie(make_app: Any) -> None:
    app = make_app()
    app.workflow(greet)
    with served(app, user=None, password=None, token=TOKEN) as api:
        status, session = api.get("/api/session")
        assert status == 200 and session["auth"] == "token"
        status, started = api.post("/api/workflows", {"workflow_type": "greet", "args": ["bo"]})
        assert status == 201, started  # a bearer token needs no CSRF token
        refused(Api(api.base, "Bearer wrong-token").get("/api/session"), 401, "unauthorized")
        refused(Api(api.base, basic()).get("/api/session"), 401, "unauthorized")
        status, headers, _ = raw(api, "/api/session")
        assert status == 401 and "WWW-Authenticate" not in headers
        status, headers, _ = raw(api, "/workers")  # a page sends the browser to log in
        assert status == 302 and headers["Location"] == "/login?next=/workers"
        # /login?token= sets a session cookie: HttpOnly, SameSite=Strict, not the token.
        status, headers, _ = raw(api, f"/login?token={TOKEN}&next=/workers")
        assert status == 303 and headers["Location"] == "/workers"
        set_cookie = headers["Set-Cookie"]
        assert set_cookie.startswith("df_dashboard=") and TOKEN not in set_cookie
        attributes = [part.strip().lower() for part in set_cookie.split(";")]
        assert "httponly" in attributes and "samesite=strict" in attributes
        cookie = set_cookie.split(";")[0]
        browser = Api(api.base, extra={"Cookie": cookie})
        status, session = browser.get("/api/session")
        assert status == 200 and session["auth"] == "token"
        # A browser sends the cookie by itself: its writes need the CSRF token.
        start = {"workflow_type": "greet", "args": ["cy"]}
        refused(browser.post("/api/workflows", start), 403, "forbidden", "X-CSRF-Token")
        with_csrf = Api(api.base, csrf=session["csrf_token"], extra={"Cookie": cookie})
        assert with_csrf.post("/api/workflows", start)[0] == 201
        forged = Api(api.base, extra={"Cookie": f"df_dashboard={TOKEN}"})
        assert forged.get("/api/session")[0] == 401
        assert raw(api, "/login?token=wrong")[0] == 401
        status, headers, _ = raw(api, f"/login?token={TOKEN}&next=//evil.example/")
        assert status == 303 and headers["Location"] == "/"  # no open redirect
        form = urlencode({"token": TOKEN, "next": "/metrics"}).encode()
        form_type = {"Content-Type": "application/x-www-form-urlencoded"}
        status, headers, _ = raw(api, "/login", "POST", form_type, form)
        assert status == 303 and headers["Location"] == "/metrics"
        assert headers["Set-Cookie"].split(";")[0] == cookie


def test_read_only_and_no_auth_dashboards(make_app: Any) -> None:
    app = make_app()
    app.workflow(greet)
    handle = app.start("greet", "ann", workflow_id="g-1")  # no worker: it stays running
    body = {"workflow_type": "greet", "args": ["bo"], "name": "go"}  # what each write needs
    with served(app, read_only=True) as api:
        assert api.get("/api/session")[1]["read_only"] is True
        for path in ["", "/g-1/signal", "/g-1/cancel", "/g-1/restart"]:
            refused(api.post("/api/workflows" + path, body), 403, "forbidden", "read-only")
        for path in ["/api/workflows", "/api/workflows/g-1", "/api/workflow-types"]:
            assert api.get(path)[0] == 200, path
    assert len(handle.history()) == 1 and len(app.list_workflows()) == 1  # nothing written

    with served(app, auth="none") as api:
        anonymous = Api(api.base)
        status, session = anonymous.get("/api/session")
        assert status == 200 and pick(session, "auth", "read_only") == ("none", False)
        assert anonymous.get("/api/workflows/g-1")[0] == 200
        # A page of another site could post without credentials: the CSRF token still holds.
        refused(anonymous.post("/api/workflows/g-1/cancel", {}), 403, "forbidden")
        assert api.post("/api/workflows/g-1/cancel", {"reason": "done"})[0] == 202


def test_the_list_filters_counts_pages_and_follows_new_workflows(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def noop(ctx: Any, n: int) -> int:
        return n

    @app.workflow
    async def boom(ctx: Any) -> None:
        raise ApplicationError("no stock", type="OutOfStock")

    with WorkerThread(app):
        # Started one after the other: the ids sort as the starts do, even within one ms.
        handles = [noop.start(n, workflow_id=f"w-{n}") for n in range(4)]
        handles += [boom.start(workflow_id=f"w-{n}") for n in (4, 5)]
        app.start("noop", 6, workflow_id="w-6", task_queue="idle")  # no worker serves "idle"
        for handle, status in zip(handles, ["completed"] * 4 + ["failed"] * 2):
            wait_until(lambda h=handle, s=status: h.status().status == s, what=f"{handle} {status}")
        with served(app) as api:
            wanted = dict(running=1, failing=0, completed=4, failed=2, cancelled=0, timed_out=0)
            page = wait_until(lambda: (p := api.get("/api/workflows")[1])["counts"] == wanted and p)
            every = [f"w-{n}" for n in range(6, -1, -1)]
            assert [item["workflow_id"] for item in page["items"]] == every  # newest first
            assert pick(page, "total", "next_cursor", "loaded") == (7, None, True)
            last = page["items"][-1]
            assert pick(last, "workflow_type", "status", "task_queue") == (
                "noop", "completed", "default"
            )  # fmt: skip
            assert page["items"][1]["failure"] == "OutOfStock: no stock"
            assert ids(api, "status=completed&status=failed") == every[1:]
            assert ids(api, "status=completed,failed") == every[1:]
            assert ids(api, "status=failed&type=boom") == ["w-5", "w-4"]
            assert ids(api, "type=noop&status=running") == ["w-6"]
            assert ids(api, "queue=idle") == ["w-6"]
            assert ids(api, "id_prefix=w-1") == ["w-1"]
            assert api.get("/api/workflows?type=boom")[1]["total"] == 2
            assert api.get("/api/workflows?status=completed")[1]["total"] == 4
            # Times: after is inclusive, before exclusive; Z, an offset, and no zone refused.
            middle = page["items"][3]["started_at"]
            after = ids(api, urlencode({"started_after": middle}))
            moment = datetime.fromisoformat(middle.replace("Z", "+00:00"))
            local = moment.astimezone(timezone(timedelta(hours=2))).isoformat()
            before = ids(api, urlencode({"started_before": local}))
            assert sorted(after + before) == sorted(every)
            times = {item["workflow_id"]: item["started_at"] for item in page["items"]}
            assert after == [i for i in every if times[i] >= middle]
            assert ids(api, urlencode({"started_after": middle, "started_before": middle})) == []
            for bad in ("started_after=2026-01-01T00:00:00", "started_before=yesterday"):
                refused(api.get("/api/workflows?" + bad), 400, "bad_request")
            refused(api.get("/api/workflows?cursor=%21%21"), 400, "bad_request", "cursor")
            refused(api.get("/api/workflows?cursor=bm9wZQ"), 400, "bad_request")  # "nope"
            refused(api.get("/api/workflows?limit=ten"), 400, "bad_request")
            refused(api.get("/api/workflows?status=done"), 400, "bad_request", "'done'")
            # Pages of three reach every workflow once, with or without a filter.
            assert walk(api, "limit=3") == [every[:3], every[3:6], every[6:]]
            assert walk(api, "status=completed&limit=3") == [every[3:6], every[6:]]
            assert walk(api, "limit=7") == [every] and walk(api, "limit=0")[0] == every[:1]
            # A workflow started now is listed without reloading the dashboard, then its end.
            late = noop.start(99, workflow_id="late-1")
            wait_until(lambda: ids(api, "limit=1") == ["late-1"], what="the new workflow")
            assert late.result(timeout=30) == 99
            wait_until(lambda: ids(api, "status=completed&limit=1") == ["late-1"], what="its end")
            assert api.get("/api/workflows")[1]["counts"]["completed"] == 5


def test_a_workflow_page_shows_args_result_failures_timeline_and_streams(make_app: Any) -> None:
    app = make_app()
    attempts: dict[str, int] = {}

    @app.activity(retry=RetryPolicy(max_attempts=3, initial_interval=0.1))
    def ship(customer: str) -> str:
        attempts[customer] = attempts.get(customer, 0) + 1
        if attempts[customer] == 1:
            raise ConnectionError("the carrier timed out")
        return f"tr-{customer}"

    @app.workflow
    async def order(ctx: Any, customer: str, amount: float, quantity: int = 1) -> dict[str, Any]:
        return {"tracking": await ctx.activity(ship, customer), "total": amount * quantity}

    @app.workflow
    async def doomed(ctx: Any, sku: str) -> None:
        raise ApplicationError(f"no stock of {sku}", type="OutOfStock")

    @app.workflow
    async def buggy(ctx: Any) -> None:
        raise KeyError("count")  # a bug: the task is retried, the workflow is failing

    with WorkerThread(app), served(app) as api:
        odd = "order 1/eu ü"
        order.start("bob", 12.5, 2, workflow_id=odd)
        doomed.start("sku-9", workflow_id="doomed-1")
        buggy.start(workflow_id="buggy-1")
        page = ended(api, odd)
        summary = page["summary"]
        assert pick(summary, "workflow_id", "workflow_type", "task_queue") == (
            odd, "order", "default"
        )  # fmt: skip
        assert page["args"] == ["bob", 12.5, 2]
        assert page["result"] == {"tracking": "tr-bob", "total": 25.0}
        assert page["failure"] is None and page["recurring_error"] is None
        events = page["events"]
        assert [e["index"] for e in events] == list(range(1, len(events) + 1))
        assert events[0]["type"] == "WorkflowStarted" and events[-1]["type"] == "WorkflowCompleted"
        assert page["history_seq"] == events[-1]["seq"]
        shipping = [s for s in page["timeline"] if s["kind"] == "activity"]
        assert [pick(s, "name", "attempt", "outcome") for s in shipping] == [
            ("ship", 1, "failed"), ("ship", 2, "completed")
        ]  # fmt: skip
        assert shipping[0]["seq"] == shipping[1]["seq"]
        assert shipping[0]["error"] == "ConnectionError: the carrier timed out"
        timers = [s for s in page["timeline"] if s["kind"] == "timer"]
        assert [pick(t, "name", "outcome") for t in timers] == [("retry", "fired")]
        assert shipping[0]["end"] <= timers[0]["start"] <= shipping[1]["start"]
        failed = ended(api, "doomed-1", "failed")
        assert failed["args"] == ["sku-9"] and failed["result"] is None
        failure = failed["failure"]
        assert pick(failure, "type", "message") == ("OutOfStock", "no stock of sku-9")
        assert 'raise ApplicationError(f"no stock of {sku}"' in failure["traceback"]
        failing = ended(api, "buggy-1", "failing")
        assert failing["failure"] is None and failing["summary"]["ended_at"] is None
        assert failing["recurring_error"]["type"] == "KeyError"
        assert 'raise KeyError("count")' in failing["recurring_error"]["traceback"]
        mix = ("completed", "failed", "failing")
        wait_until(lambda: pick(api.get("/api/workflows")[1]["counts"], *mix) == (1, 1, 1))
        [listed] = items(api, "/api/workflows?status=failing")
        assert listed["workflow_id"] == "buggy-1" and "KeyError" in listed["failure"]
        refused(api.get("/api/workflows/no-such-one"), 404, "not_found")
        refused(api.get("/api/workflows/no-such-one/stream"), 404, "not_found")
        # The stream's first message is the whole workflow, as the page shows it.
        stream = messages(api, f"/api/workflows/{quote(odd, safe='')}/stream")
        event, update = next(stream)
        stream.close()
        assert event == "update" and update["reset"] is True
        assert update["summary"] == summary and update["result"] == page["result"]
        assert update["timeline"] == page["timeline"]
        assert [e["index"] for e in update["events"]] == [e["index"] for e in events]
        # The list's stream begins with the counts, the workers and the queues.
        stream = messages(api, "/api/stream")
        first = [next(stream) for _ in range(3)]
        stream.close()
        assert [name for name, _ in first] == ["counts", "workers", "queues"]
        assert pick(first[0][1], *mix) == (1, 1, 1)


def test_start_checks_its_input_refuses_a_taken_id_and_runs(make_app: Any) -> None:
    app = make_app()

    @app.workflow
    async def order(ctx: Any, customer: str, amount: float, quantity: int = 1) -> str:
        """Charge and ship.

        More text the form does not show."""
        return f"{customer}: {amount * quantity:.2f}"

    @app.workflow
    async def typed(
        ctx: Any, s: str, i: int, f: float, b: bool, data: dict[str, Any], maybe: int | None = None
    ) -> list[Any]:
        return [s, i, f, b, data, maybe]

    def start(body: Any, **options: Any) -> tuple[int, Any]:
        return api.post("/api/workflows", body, **options)

    with WorkerThread(app), served(app) as api:
        status, types = api.get("/api/workflow-types")
        assert status == 200 and [t["name"] for t in types["items"]] == ["order", "typed"]
        assert pick(types["items"][0], "doc", "task_queue") == ("Charge and ship.", "default")
        params = types["items"][1]["parameters"]
        assert [pick(p, "name", "kind", "required", "nullable") for p in params] == [
            ("s", "str", True, False), ("i", "int", True, False), ("f", "float", True, False),
            ("b", "bool", True, False), ("data", "json", True, True), ("maybe", "int", False, True),
        ]  # fmt: skip
        assert [p["default"] for p in types["items"][0]["parameters"]] == [None, None, 1]
        kwargs = {"customer": "bob", "amount": 10, "quantity": 3}
        status, started = start({"workflow_type": "order", "kwargs": kwargs, "workflow_id": "a-1"})
        assert (status, started) == (201, {"workflow_id": "a-1"})
        assert ended(api, "a-1")["result"] == "bob: 30.00"
        assert workflow(api, "a-1")["args"] == ["bob", 10.0, 3]  # in order, the float a float
        again = {"workflow_type": "order", "kwargs": {**kwargs, "amount": 1}, "workflow_id": "a-1"}
        refused(start(again), 409, "conflict")
        status, started = start({"workflow_type": "order", "args": ["cy", 2.5]})
        assert status == 201 and started["workflow_id"] != "a-1"
        assert ended(api, started["workflow_id"])["result"] == "cy: 2.50"
        values = {"s": "a", "i": 1, "f": 2, "b": True, "data": {"k": [1]}}
        started = start({"workflow_type": "typed", "kwargs": values})[1]
        assert ended(api, started["workflow_id"])["result"] == ["a", 1, 2.0, True, {"k": [1]}, None]
        for given, phrase in [
            ({"customer": 5, "amount": 1}, "'customer' must be str"),
            ({"customer": "bob", "amount": "ten"}, "'amount' must be float"),
            ({"customer": "bob", "amount": True}, "'amount' must be float"),
            ({"customer": "bob", "amount": 1, "quantity": 1.5}, "'quantity' must be int"),
            ({"customer": "bob"}, "'amount' is required"),
            ({"customer": "bob", "amount": 1, "colour": "red"}, "unknown parameter 'colour'"),
        ]:
            refused(start({"workflow_type": "order", "kwargs": given}), 400, "bad_request", phrase)
        for body, phrase in [
            ({"workflow_type": "nope"}, "unknown workflow_type 'nope'"),
            ({"workflow_type": "order", "args": ["a", 1, 2, 3]}, "takes 3 arguments"),
            ({"workflow_type": "order", "args": "bob"}, "args must be a JSON array"),
            ({"workflow_type": "order", "kwargs": kwargs, "workflow_id": 7}, "workflow_id"),
            ([kwargs], "must be a JSON object"),
        ]:
            refused(start(body), 400, "bad_request", phrase)
        refused(start(None, raw=b"{nope"), 400, "bad_request", "not valid JSON")
        as_text = start({"workflow_type": "order"}, content_type="text/plain")
        refused(as_text, 400, "bad_request", "Content-Type")
        assert api.get("/api/workflows")[1]["total"] == 3  # nothing refused was started
        # Positional arguments are checked as keyword arguments are.
        refused(start({"workflow_type": "order", "args": [5, 1]}), 400, "bad_request", "'customer'")
        both = {"workflow_type": "order", "args": ["bo"], "kwargs": {"customer": "bo"}}
        refused(start(both), 400, "bad_request", "'customer' is given both")


def test_signal_cancel_and_restart(make_app: Any) -> None:
    app = make_app()
    app.workflow(greet)

    @app.workflow
    async def approval(ctx: Any, who: str) -> str:
        approved = await ctx.wait_signal("approve")
        return f"{who} approved by {approved['by']}"

    with WorkerThread(app), served(app) as api:
        start = {"workflow_type": "approval", "kwargs": {"who": "bob"}, "workflow_id": "ap-1"}
        assert api.post("/api/workflows", start)[0] == 201
        stream = messages(api, "/api/workflows/ap-1/stream")
        event, update = next(stream)
        assert (event, update["summary"]["status"], update["reset"]) == ("update", "running", True)
        for body in [{}, {"name": ""}, {"name": 5}]:
            refused(api.post("/api/workflows/ap-1/signal", body), 400, "bad_request", "name")
        refused(api.post("/api/workflows/ap-1/signal", raw=b"[]"), 400, "bad_request")
        approve = {"name": "approve", "payload": {"by": "ann"}}
        assert api.post("/api/workflows/ap-1/signal", approve) == (202, {})
        # The open stream follows: the signal, then the end, without a reset.
        seen: list[str] = []
        while "WorkflowCompleted" not in seen:
            event, update = next(stream)
            assert event == "update" and update["reset"] is False
            seen += [e["type"] for e in update["events"]]
        stream.close()
        assert "SignalReceived" in seen and update["summary"]["status"] == "completed"
        assert update["result"] == "bob approved by ann"
        assert [s["kind"] for s in update["timeline"]] == ["signal"]
        refused(api.post("/api/workflows/ap-1/signal", approve), 409, "conflict", "completed")
        refused(api.post("/api/workflows/nobody/signal", approve), 404, "not_found")
        assert api.post("/api/workflows", {**start, "workflow_id": "ap-2"})[0] == 201
        refused(api.post("/api/workflows/ap-2/cancel", {"reason": 5}), 400, "bad_request")
        assert api.post("/api/workflows/ap-2/cancel", {"reason": "not needed"}) == (202, {})
        cancelled = ended(api, "ap-2", "cancelled")
        assert "CancelRequested" in [e["type"] for e in cancelled["events"]]
        refused(api.post("/api/workflows/ap-2/cancel", {}), 409, "conflict", "cancelled")
        refused(api.post("/api/workflows/nobody/cancel", {}), 404, "not_found")
        greeting = {"workflow_type": "greet", "args": ["dee", 2], "workflow_id": "g/1"}
        assert api.post("/api/workflows", greeting)[0] == 201
        assert ended(api, "g/1")["result"] == "hi dee hi dee"
        status, restarted = api.post("/api/workflows/g%2F1/restart")
        assert status == 201 and restarted["workflow_id"] != "g/1"
        again = ended(api, restarted["workflow_id"])
        assert (again["summary"]["workflow_type"], again["args"]) == ("greet", ["dee", 2])
        assert again["result"] == "hi dee hi dee"
        status, restarted = api.post("/api/workflows/ap-2/restart")  # a cancelled one, too
        assert status == 201 and workflow(api, restarted["workflow_id"])["args"] == ["bob"]
        refused(api.post("/api/workflows/nobody/restart"), 404, "not_found")


async def publish(nats_url: str, subject: str, body: bytes) -> None:
    """Publish as a foreign client would, onto a stream of the namespace."""
    nc = await nats.connect(nats_url)
    await nc.jetstream().publish(subject, body)
    await nc.close()


def test_dead_letters_workers_queues_metrics_and_schedules(
    make_app: Any, nats_url: str, namespace: str
) -> None:
    app = make_app()
    subject = Layout(namespace).history_subject("default", "who")

    @app.workflow
    async def tick(ctx: Any, n: int) -> int:
        return n

    with WorkerThread(app), served(app) as api:
        # The dashboard asks the workers every 5 s (the first time as it starts).
        workers = wait_until(lambda: items(api, "/api/workers"), what="the worker", timeout=60)
        [worker] = workers
        assert pick(worker, "name", "pid", "alive") == ("test", os.getpid(), True)
        assert "default" in worker["workflow_queues"] and "default" in worker["activity_queues"]
        queues = wait_until(lambda: items(api, "/api/queues"), what="the queues")
        assert "default" in [queue["name"] for queue in queues]
        for n in range(3):
            started = api.post("/api/workflows", {"workflow_type": "tick", "args": [n]})[1]
            assert ended(api, started["workflow_id"])["result"] == n
        metrics = wait_until(lambda: totals(m := api.get("/api/metrics?minutes=5")[1]) and m)
        assert metrics["window_minutes"] == 5 and len(metrics["per_minute"]) == 5
        minutes = [row["minute"] for row in metrics["per_minute"]]
        assert minutes == sorted(minutes) and all(m.endswith(":00.000Z") for m in minutes)
        latency = metrics["latency_ms"]
        assert latency["count"] == 3 and 0 <= latency["p50"] <= latency["p99"]
        assert len(api.get("/api/metrics?minutes=0")[1]["per_minute"]) == 1
        assert api.get("/api/metrics?minutes=100000")[1]["window_minutes"] == 24 * 60
        refused(api.get("/api/metrics?minutes=abc"), 400, "bad_request", "minutes")
        assert api.get("/api/schedules") == (200, {"items": []})
        # Made after the metrics were read: a run of theirs cannot change them.
        app.schedules.create("nightly", tick, cron="0 3 * * *", timezone="Europe/Berlin", args=[1])
        app.schedules.create("hourly", "tick", every=3600, args=[2])  # by name, too
        app.schedules.pause("hourly", note="until the fix ships")
        status, schedules = api.get("/api/schedules")
        by_id = {item["schedule_id"]: item for item in schedules["items"]}
        assert status == 200 and sorted(by_id) == ["hourly", "nightly"]
        nightly, hourly = by_id["nightly"], by_id["hourly"]
        assert pick(nightly, "workflow_type", "spec", "paused", "note") == (
            "tick", "cron '0 3 * * *' in Europe/Berlin", False, None
        )  # fmt: skip
        assert nightly["next_run"].endswith("Z") and nightly["task_queue"] == "default"
        assert pick(hourly, "spec", "paused") == ("every 3600s", True)
        assert hourly["note"] == "until the fix ships"
        # Messages no worker can use are dead letters, with the reason why.
        assert api.get("/api/dead-letters") == (200, {"items": []})
        asyncio.run(publish(nats_url, subject, b'{"t": "Nope"}'))
        asyncio.run(publish(nats_url, subject, b"\xff not json"))
        letters = wait_until(lambda: len(x := items(api, "/api/dead-letters")) == 2 and x)
        assert [letter["data"] for letter in letters] == ["\ufffd not json", '{"t": "Nope"}']
        assert letters[0]["seq"] > letters[1]["seq"]  # newest first
        assert {letter["subject"] for letter in letters} == {subject}
        assert items(api, "/api/dead-letters?limit=1") == letters[:1]
        status, letter = api.get(f"/api/dead-letters/{letters[1]['seq']}")
        assert status == 200 and letter == letters[1]
        assert "unknown record type 'Nope'" in letter["reason"]
        assert pick(letter, "size", "truncated") == (13, False) and letter["time"].endswith("Z")
        refused(api.get("/api/dead-letters/999999"), 404, "not_found")
        refused(api.get("/api/dead-letters/first"), 400, "bad_request")
        refused(api.get("/api/dead-letters?limit=all"), 400, "bad_request")
