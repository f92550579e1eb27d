"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against a real
``dfcore dashboard`` process, a real worker process and nats-server.

Screenshots of the list, a workflow page and the start form go to ``DF_SCREENSHOT_DIR``
(default ``.df/screenshots``); docs/dashboard.md shows the ones taken with
``DF_SCREENSHOT_DIR=docs/images``.
"""

from __future__ import annotations

import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from dfcore import EmbeddedServer

from ..workerkit import spawn_worker, wait_until
from .kit import PASSWORD, SHOTS, USER, Api, chromium, dashboard_process

pytestmark = pytest.mark.timeout(300)
APP = "tests.apps.dashboard_shop:app"
SCRIPT = "<script>alert('owned')</script>"


@pytest.fixture(scope="module")
def shop(
    nats_server: EmbeddedServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A namespace with a worker process and two dashboard processes (one read-only)."""
    chromium()
    nats_url = nats_server.url
    namespace = "tb" + uuid.uuid4().hex[:8]
    logs = tmp_path_factory.mktemp("dashboard")
    worker = spawn_worker(nats_url, namespace, app=APP, log=logs / "worker.log")
    try:
        with (
            dashboard_process(nats_url, namespace, log=logs / "dash.log") as api,
            dashboard_process(nats_url, namespace, "--read-only", log=logs / "ro.log") as ro,
        ):
            yield {"api": api, "ro": ro, "namespace": namespace, "logs": logs}
    finally:
        worker.terminate()
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(
            executable_path=chromium(), headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, shop: dict[str, Any]) -> Iterator[Any]:
    """A logged-in page on the (writable) dashboard; fails the test on a script error or a
    dialog (an injected alert would open one)."""
    context = browser.new_context(
        http_credentials={"username": USER, "password": PASSWORD},
        base_url=shop["api"].base,
        viewport={"width": 1400, "height": 900},
    )
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    tab.on(
        "dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss())
    )
    yield tab
    context.close()
    assert problems == []


def shot(tab: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(SHOTS / f"dashboard-{name}.png"), full_page=True)


def badge(tab: Any) -> Any:
    return tab.locator("main [data-testid=status-badge]").first


def test_start_the_order_from_the_form_and_watch_it_complete_live(page: Any) -> None:
    page.goto("/start/order")
    form = page.get_by_test_id("start-form")
    form.wait_for()
    page.get_by_test_id("param-customer_id").fill("bob")
    page.get_by_test_id("param-amount").fill("1000")
    page.get_by_test_id("param-quantity").fill("2")
    page.get_by_test_id("start-workflow-id").fill("form-order-1")
    shot(page, "start-form")
    page.get_by_test_id("start-submit").click()
    page.wait_for_url("**/workflows/form-order-1")
    loads = page.evaluate("performance.getEntriesByType('navigation').length")
    # The status and the timeline advance without a reload: running, a failed shipping
    # attempt and its retry timer, then the second attempt and completed.
    page.locator("[data-testid=status-badge][data-status=completed]").first.wait_for(timeout=60_000)
    bars = page.locator("[data-testid=timeline-bar][data-kind=activity]")
    failed = bars.and_(page.locator("[data-outcome=failed]"))
    retried = bars.and_(page.locator("[data-attempt='2'][data-outcome=completed]"))
    assert failed.count() == 1 and retried.count() == 1
    assert failed.get_attribute("data-seq") == retried.get_attribute("data-seq")
    timers = page.locator("[data-testid=timeline-bar][data-kind=timer]")
    assert timers.count() >= 1
    assert page.evaluate("performance.getEntriesByType('navigation').length") == loads
    assert '"bob"' in page.get_by_test_id("args").inner_text()
    assert "tracking_id" in page.get_by_test_id("result").inner_text()
    # It ended: signal and cancel are gone, starting it again is not.
    assert page.get_by_test_id("action-signal").is_hidden()
    assert page.get_by_test_id("action-cancel").is_hidden()
    assert page.get_by_test_id("action-restart").is_visible()
    page.get_by_test_id("history-row").first.click()
    assert "order" in page.get_by_test_id("event-details").first.inner_text()
    shot(page, "workflow")


def test_signal_a_waiting_workflow_and_cancel_another(page: Any, shop: dict[str, Any]) -> None:
    api: Api = shop["api"]
    for body in (
        {"workflow_type": "approval", "kwargs": {"customer_id": "ann"}, "workflow_id": "ap-1"},
        {"workflow_type": "long_wait", "kwargs": {"hours": 5}, "workflow_id": "lw-1"},
    ):
        assert api.post("/api/workflows", body)[0] == 201
    page.goto("/workflows/ap-1")
    page.get_by_test_id("action-signal").click()
    page.get_by_test_id("signal-name").fill("approve")
    page.get_by_test_id("signal-payload").fill('{"by": "the boss"}')
    page.get_by_test_id("signal-send").click()
    page.locator("[data-testid=status-badge][data-status=completed]").first.wait_for(timeout=60_000)
    assert "approved by the boss" in page.get_by_test_id("result").inner_text()
    assert page.locator("[data-testid=timeline-bar][data-kind=signal]").count() == 1

    page.goto("/workflows/lw-1")
    page.locator("[data-testid=timeline-bar][data-kind=timer]").first.wait_for()
    page.get_by_test_id("action-cancel").click()
    page.get_by_test_id("cancel-reason").fill("customer changed their mind")
    page.get_by_test_id("cancel-confirm").click()
    page.locator("[data-testid=status-badge][data-status=cancelled]").first.wait_for(timeout=60_000)
    assert page.locator("[data-testid=timeline-bar][data-kind=cancel]").count() == 1
    # The history records both, as the engine records any signal or cancellation.
    status, shown = api.get("/api/workflows/lw-1")
    assert status == 200
    assert [e for e in shown["events"] if e["type"] == "CancelRequested"]
    assert shown["summary"]["status"] == "cancelled"


def test_filter_the_list_and_see_new_workflows_appear(page: Any, shop: dict[str, Any]) -> None:
    api: Api = shop["api"]
    for n in range(3):
        body = {"workflow_type": "long_wait", "kwargs": {"hours": 1}, "workflow_id": f"flt-{n}"}
        assert api.post("/api/workflows", body)[0] == 201
    page.goto("/")
    page.get_by_test_id("workflows-table").wait_for()
    page.get_by_test_id("filter-id-prefix").fill("flt-")
    page.get_by_test_id("filter-apply").click()
    rows = page.get_by_test_id("workflow-row")
    wait_until(lambda: rows.count() == 3, what="the filtered rows")
    assert "id_prefix=flt-" in page.url
    assert {rows.nth(i).get_attribute("data-workflow-id") for i in range(3)} == {
        "flt-0",
        "flt-1",
        "flt-2",
    }
    # A workflow started now appears at the top without a reload.
    page.evaluate("window.__marker = 'same page'")
    body = {"workflow_type": "long_wait", "kwargs": {"hours": 1}, "workflow_id": "flt-new"}
    assert api.post("/api/workflows", body)[0] == 201
    wait_until(lambda: rows.count() == 4, what="the new workflow's row")
    assert rows.first.get_attribute("data-workflow-id") == "flt-new"
    assert page.evaluate("window.__marker") == "same page"
    # Filtering by status: the cancelled one of the test before, not the waiting ones.
    page.goto("/?status=cancelled")
    page.locator("[data-testid=workflow-row][data-workflow-id=lw-1]").wait_for()
    assert all(rows.nth(i).get_attribute("data-status") == "cancelled" for i in range(rows.count()))
    page.goto("/")
    wait_until(lambda: rows.count() >= 7, what="every workflow listed")
    shot(page, "list")


def test_a_script_in_an_argument_is_shown_as_text(page: Any, shop: dict[str, Any]) -> None:
    body = {"workflow_type": "approval", "kwargs": {"customer_id": SCRIPT}, "workflow_id": "xss-1"}
    assert shop["api"].post("/api/workflows", body)[0] == 201
    page.goto("/workflows/xss-1")
    args = page.get_by_test_id("args")
    args.wait_for()
    assert SCRIPT in args.inner_text()
    page.goto("/?id_prefix=xss-")
    page.locator("[data-testid=workflow-row][data-workflow-id=xss-1]").wait_for()
    assert page.locator("main script").count() == 0  # the page fixture fails on any dialog


def test_read_only_mode_hides_the_actions_and_refuses_writes(
    browser: Any, shop: dict[str, Any]
) -> None:
    ro: Api = shop["ro"]
    context = browser.new_context(
        http_credentials={"username": USER, "password": PASSWORD}, base_url=ro.base
    )
    tab = context.new_page()
    try:
        tab.goto("/workflows/ap-1")
        badge(tab).wait_for()
        tab.get_by_test_id("readonly-badge").wait_for()
        for action in ("action-signal", "action-cancel", "action-restart"):
            assert tab.get_by_test_id(action).count() == 0
    finally:
        context.close()
    status, answer = ro.post("/api/workflows/ap-1/restart")
    assert status == 403 and answer["error"]["code"] == "forbidden"


def test_a_request_without_credentials_gets_401(browser: Any, shop: dict[str, Any]) -> None:
    base = shop["api"].base
    for path in ("/", "/api/workflows"):
        request = urllib.request.Request(base + path)
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError(f"{path} answered without credentials")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
            assert exc.headers["WWW-Authenticate"].startswith("Basic ")
    from playwright.sync_api import Error

    context = browser.new_context()  # a browser with no credentials to offer
    try:
        assert context.request.get(base + "/api/session").status == 401
        try:
            response = context.new_page().goto(base + "/")
        except Error as exc:  # headless Chromium gives up on the login prompt at once
            assert "ERR_INVALID_AUTH_CREDENTIALS" in str(exc)
        else:
            assert response is not None and response.status == 401
    finally:
        context.close()
