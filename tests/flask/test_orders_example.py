"""The flask_orders example project itself: its pages with Flask's test client, a real
``flask --app flask_orders df worker`` process, and ``flask --app flask_orders df dev``."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from dfcore.integrations.flask.outbox import outbox_table
from dfcore.jetstream._server import free_port
from tests.flask.conftest import close_flask_app
from tests.workerkit import ROOT, popen, wait_until

PROJECT = ROOT / "example_projects" / "flask_orders"
ORDER = {"customer": "ada", "product": "book", "quantity": "2", "amount": "12.50"}


# -- the project in this process ---------------------------------------------------------------


@pytest.fixture
def orders(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """The project's ``flask_orders`` package, imported from its folder."""
    monkeypatch.syspath_prepend(str(PROJECT))
    package = importlib.import_module("flask_orders")
    assert Path(package.__file__ or "").parent == PROJECT / "flask_orders"
    return package


@pytest.fixture
def database_uri(tmp_path: Path) -> str:
    """The shop's SQLite file, shared by this process and the processes a test starts."""
    return f"sqlite:///{tmp_path / 'orders.sqlite3'}"


@pytest.fixture
def make_shop(
    orders: ModuleType, flask_config: dict[str, Any], database_uri: str
) -> Iterator[Callable[..., Flask]]:
    """``flask_orders.create_app`` on this test's server, namespace and database (config added)."""
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        base = {**flask_config, "SQLALCHEMY_DATABASE_URI": database_uri, "TESTING": True}
        app: Flask = orders.create_app({**base, **config})
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_flask_app(app)


@pytest.fixture
def shop(make_shop: Callable[..., Flask]) -> Flask:
    """The shop on this test's server, namespace and database."""
    return make_shop()


@pytest.fixture
def client(shop: Flask) -> FlaskClient:
    """Flask's test client for the shop."""
    return shop.test_client()


def place_order(client: FlaskClient, **fields: str) -> int:
    """Post the order form; returns the new order's id, from the redirect to its page."""
    response = client.post("/", data={**ORDER, **fields})
    assert response.status_code == 302, response.text
    found = re.fullmatch(r"/orders/(\d+)", response.location)
    assert found is not None, response.location
    return int(found.group(1))


def workflow_on_page(client: FlaskClient, order_id: int) -> str:
    """The workflow status the order page shows."""
    page = client.get(f"/orders/{order_id}")
    assert page.status_code == 200, page.text
    shown = re.search(r'<p id="workflow"[^>]*>\s*<span class="status status-(\w+)">', page.text)
    assert shown is not None, page.text
    return shown.group(1)


def history_events(page: str) -> list[str]:
    """The Event column of the order page's history table."""
    return re.findall(r"<td>((?:Workflow|Activity|Timer)\w+)</td>", page)


def status_json(client: FlaskClient, order_id: int) -> dict[str, Any]:
    response = client.get(f"/orders/{order_id}/status.json")
    assert response.status_code == 200, response.text
    assert response.mimetype == "application/json"
    return dict(response.get_json())


def order_row(shop: Flask, order_id: int) -> Any:
    """The order as the database has it now (activities in other processes change it)."""
    models = sys.modules["flask_orders.models"]
    with shop.app_context():
        return models.db.session.get(models.Order, order_id)


def outbox_rows(shop: Flask) -> list[Any]:
    with shop.app_context():
        db = sys.modules["flask_orders.models"].db
        return list(db.session.execute(select(outbox_table)).all())


# -- real processes ----------------------------------------------------------------------------


def flask_orders(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``flask --app flask_orders ARGS`` run in the project's folder, as its README says, with
    ``env`` added (and no ``DF_*`` or ``ORDERS_*`` variable of this environment); output to
    ``log``."""
    environ = {
        key: value for key, value in os.environ.items() if not key.startswith(("DF_", "ORDERS_"))
    }
    environ.update(PYTHONUNBUFFERED="1", **env)
    command = [sys.executable, "-m", "flask", "--app", "flask_orders", *args]
    return popen(command, environ, log, cwd=PROJECT)


def sigterm(proc: subprocess.Popen[bytes], log: Path) -> str:
    """Stop ``proc`` as a process manager does; it must exit cleanly. Returns its output."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    return output


@pytest.fixture
def worker(
    nats_url: str,
    namespace: str,
    database_uri: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> Iterator[subprocess.Popen[bytes]]:
    """``flask --app flask_orders df worker`` on this test's server, namespace and database; stopped
    with SIGTERM after the test, which it must survive cleanly. Its log is printed (shown when
    the test fails)."""
    log = tmp_path / "worker.log"
    env = {"DF_NATS_URL": nats_url, "DF_NAMESPACE": namespace, "ORDERS_DATABASE_URI": database_uri}
    proc = flask_orders("df", "worker", env=env, log=log)
    processes.append(proc)
    try:
        yield proc
        output = sigterm(proc, log)
        assert f"namespace {namespace!r}" in output  # it served this test's namespace
    finally:
        print(f"--- {log} ---\n{log.read_text()}")


# -- the tests ---------------------------------------------------------------------------------


def test_an_order_from_the_form_is_fulfilled_by_a_real_worker(
    client: FlaskClient, shop: Flask, worker: subprocess.Popen[bytes]
) -> None:
    form = client.get("/").text
    assert '<input id="amount" name="amount"' in form and "No orders yet." in form
    order_id = place_order(client)
    [entry] = outbox_rows(shop)  # written in the order's transaction
    assert (entry.workflow_id, entry.workflow_type) == (f"order-{order_id}", "fulfil_order")

    wait_until(
        lambda: workflow_on_page(client, order_id) == "completed", timeout=60, what="completion"
    )
    order = order_row(shop, order_id)
    assert order.status == "fulfilled"
    assert order.charge_id.startswith("ch_") and order.tracking_id.startswith("trk_")
    page = client.get(f"/orders/{order_id}").text
    events = history_events(page)
    assert events[0] == "WorkflowStarted" and events[-1] == "WorkflowCompleted"
    assert events.count("ActivityCompleted") == 3
    assert f"charge_card({order_id})" in page and order.tracking_id in page
    assert "refreshes itself" not in page  # finished: the page stops polling
    assert f'href="/orders/{order_id}"' in client.get("/").text  # in the recent orders


def test_the_status_view_is_async_and_returns_json(
    orders: ModuleType, client: FlaskClient, worker: subprocess.Popen[bytes]
) -> None:
    assert inspect.iscoroutinefunction(orders.views.order_status)  # an `async def` view
    order_id = place_order(client)
    state = wait_until(
        lambda: (s := status_json(client, order_id))["workflow"]["finished"] and s,
        timeout=60,
        what="completion",
    )
    assert state["workflow"] == {
        "id": f"order-{order_id}",
        "type": "fulfil_order",
        "status": "completed",
        "finished": True,
        "detail": "",
        "last_event_time": state["workflow"]["last_event_time"],
    }
    assert state["order"]["status"] == "fulfilled"  # read after the workflow, never behind it
    assert state["order"]["tracking_id"].startswith("trk_")
    assert client.get("/orders/0/status.json").status_code == 404
    assert client.get("/orders/0").status_code == 404


def test_the_nightly_report_is_a_schedule_whose_parent_runs_a_child_per_status(
    orders: ModuleType, client: FlaskClient, shop: Flask, worker: subprocess.Popen[bytes]
) -> None:
    order_id = place_order(client)
    wait_until(lambda: workflow_on_page(client, order_id) == "completed", timeout=60, what="done")
    schedules = orders.workflows.df.get_app(shop).schedules
    nightly = wait_until(
        lambda: {s.schedule_id: s for s in schedules.list()}.get("nightly-report"),
        what="the worker to create the declared schedule",
    )
    assert nightly.spec.describe() == "cron '0 3 * * *' in Europe/Berlin"
    assert nightly.next_time is not None and nightly.next_time.astimezone().minute == 0
    handle = schedules.trigger("nightly-report")  # now, rather than at 03:00
    report = handle.result(timeout=60)
    assert set(report) == {"day", "fulfilled", "failed"}
    assert (report["fulfilled"], report["failed"]) == (0, 0)  # nothing was ordered yesterday
    kinds = [event.type for event in handle.history()]
    assert kinds.count("ChildWorkflowStarted") == kinds.count("ChildWorkflowEnded") == 2


def test_an_order_of_nothing_fails_after_five_attempts(
    client: FlaskClient, shop: Flask, worker: subprocess.Popen[bytes]
) -> None:
    order_id = place_order(client, amount="0")
    wait_until(lambda: workflow_on_page(client, order_id) == "failed", timeout=60, what="failure")
    page = client.get(f"/orders/{order_id}").text
    events = history_events(page)
    assert events.count("ActivityFailed") == 5 and events[-1] == "WorkflowFailed"
    assert "ActivityCompleted" not in events
    assert f"ValueError: order {order_id} has nothing to charge" in page
    order = order_row(shop, order_id)
    assert (order.status, order.charge_id) == ("placed", "")  # never charged
    assert status_json(client, order_id)["workflow"]["status"] == "failed"


def test_an_invalid_form_saves_nothing(client: FlaskClient, shop: Flask) -> None:
    bad = {"customer": " ", "product": "x" * 101, "quantity": "0", "amount": "-1"}
    response = client.post("/", data=bad)
    assert response.status_code == 200
    for message in (
        "This field is required.",
        "Use at most 100 characters (this has 101).",
        "Enter a quantity from 1 to 1000.",
        "Enter an amount from 0 to 99999999.99.",
    ):
        assert f'<span class="error">{message}</span>' in response.text
    assert 'value="-1"' in response.text  # what was typed is shown again

    response = client.post("/", data={**ORDER, "quantity": "two", "amount": "1.234"})
    assert "Enter a whole number, not &#39;two&#39;." in response.text
    assert "Use at most two decimal places (cents)." in response.text
    with shop.app_context():
        models = sys.modules["flask_orders.models"]
        assert models.db.session.scalar(select(func.count()).select_from(models.Order)) == 0
    assert outbox_rows(shop) == []


def test_a_start_still_in_the_outbox_shows_as_waiting(make_shop: Callable[..., Flask]) -> None:
    shop = make_shop(DF_PUBLISH_ON_COMMIT=False)  # only the relay publishes
    client = shop.test_client()
    order_id = place_order(client)
    assert workflow_on_page(client, order_id) == "waiting"
    assert "waiting to start" in client.get(f"/orders/{order_id}").text
    assert status_json(client, order_id)["workflow"]["status"] == "waiting"
    with shop.app_context():
        assert shop.extensions["dfcore"].make_relay().relay_once() == 1
    assert workflow_on_page(client, order_id) == "running"  # no worker in this test


def test_an_unreachable_workflow_server_is_a_message_not_an_error(
    make_shop: Callable[..., Flask],
) -> None:
    shop = make_shop(DF_NATS_URL=f"nats://127.0.0.1:{free_port()}", DF_CONNECT_TIMEOUT=0.5)
    client = shop.test_client()
    order_id = place_order(client)  # saved all the same; its start stays in the outbox
    [entry] = outbox_rows(shop)
    assert entry.published_at is None
    assert workflow_on_page(client, order_id) == "waiting"
    assert "cannot be reached" in client.get(f"/orders/{order_id}").text

    models = sys.modules["flask_orders.models"]
    with shop.app_context():  # an order whose start is not in the outbox
        other = models.Order(customer="bo", product="pen", amount_cents=100)
        models.db.session.add(other)
        models.db.session.commit()
        other_id = other.id
    assert workflow_on_page(client, other_id) == "unavailable"
    state = status_json(client, other_id)["workflow"]
    assert state["status"] == "unavailable" and "cannot be reached" in state["detail"]


def test_an_order_without_a_workflow_shows_as_missing(client: FlaskClient, shop: Flask) -> None:
    models = sys.modules["flask_orders.models"]
    with shop.app_context():
        order = models.Order(customer="cy", product="cup", amount_cents=300)
        models.db.session.add(order)
        models.db.session.commit()
        order_id = order.id
    assert workflow_on_page(client, order_id) == "missing"
    assert status_json(client, order_id)["workflow"]["status"] == "missing"


def test_flask_df_dev_runs_server_worker_and_site_in_one_command(
    tmp_path: Path, database_uri: str, processes: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "dev.log"
    data = tmp_path / "df"
    env = {"ORDERS_DATABASE_URI": database_uri}
    dev = flask_orders("df", "dev", "--port", "0", "--data-dir", str(data), env=env, log=log)
    processes.append(dev)

    banner = re.compile(r"^NATS JetStream +(nats://\S+).*\n.*\nSite +(http://\S+)", re.M)

    def started() -> re.Match[str] | None:
        assert dev.poll() is None, log.read_text()  # it must not exit
        return banner.search(log.read_text())

    found = wait_until(started, timeout=60, what="flask df dev to serve the site")
    nats_url, site = found.group(1), found.group(2)
    # The dashboard runs beside the site, without a login (local development), where its
    # extra is installed; else the line says how to have it.
    if importlib.util.find_spec("aiohttp") is None:
        assert (
            'Dashboard       not started: pip install "durablefuture[dashboard]"' in log.read_text()
        )
    else:
        shown = re.search(r"^Dashboard +(http://127\.0\.0\.1:\d+/)", log.read_text(), re.M)
        assert shown is not None, log.read_text()
        with urllib.request.urlopen(shown.group(1) + "api/session", timeout=30) as response:
            assert json.load(response)["app"] == "flask_orders"

    form = urllib.parse.urlencode(ORDER).encode()
    with urllib.request.urlopen(site, data=form, timeout=30) as response:  # follows the redirect
        order_url = response.geturl()
        assert "<h2>Order #" in response.read().decode()
    assert re.fullmatch(re.escape(site) + r"orders/\d+", order_url), order_url

    def finished() -> dict[str, Any] | None:
        with urllib.request.urlopen(order_url + "/status.json", timeout=30) as response:
            state: dict[str, Any] = json.load(response)
        return state if state["workflow"]["finished"] else None

    state = wait_until(finished, timeout=60, what="the order's workflow to finish")
    assert state["workflow"]["status"] == "completed"
    assert state["order"]["status"] == "fulfilled"
    assert (data / "nats" / "jetstream").is_dir()

    output = sigterm(dev, log)
    assert "Stopped the web server, the worker and NATS." in output
    assert "reconnecting" not in output  # every connection closed before NATS stopped
    port = int(nats_url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):  # the embedded server stopped with it
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
