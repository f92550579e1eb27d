"""The django_shop example project itself: its pages, a real ``manage.py df_worker`` process,
and ``manage.py df_dev`` (embedded NATS + worker + runserver in one command)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction, sync_to_async
from django.test import AsyncClient, Client
from orders import views
from orders.models import Order

from dfcore import App
from dfcore.integrations.django import make_relay
from dfcore.integrations.django.models import OutboxEntry
from dfcore.jetstream._server import free_port
from dfcore.outbox import flush_committed
from tests.django.conftest import SHOP, django_process, manage_py
from tests.workerkit import ROOT, WorkerThread, wait_until

ORDER = {"customer": "ada", "product": "book", "quantity": "2", "amount": "12.50"}

pytestmark = pytest.mark.django_db(transaction=True)  # real commits, seen by other processes


def place_order(client: Client) -> Order:
    response = client.post("/", ORDER)
    order = Order.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/orders/{order.pk}/"
    return order


def workflow_on_page(client: Client, order: Order) -> str:
    """The workflow status the order page shows (checking it renders, not just its context)."""
    response = client.get(f"/orders/{order.pk}/")
    assert response.status_code == 200
    status = response.context["workflow"].status
    shown = "waiting to start" if status == "waiting" else status
    assert f'<span class="status status-{status}">{shown}</span>' in response.content.decode()
    return str(status)


def test_the_form_saves_the_order_and_starts_its_workflow(
    client: Client, worker: WorkerThread
) -> None:
    assert 'name="csrfmiddlewaretoken"' in client.get("/").content.decode()
    order = place_order(client)
    entry = OutboxEntry.objects.get()  # written in the order's transaction
    assert (entry.workflow_id, entry.workflow_type) == (f"order-{order.pk}", "fulfil_order")

    wait_until(lambda: workflow_on_page(client, order) == "completed", what="completion")
    order.refresh_from_db()
    assert order.status == "fulfilled"
    assert order.charge_id.startswith("ch_") and order.tracking_id.startswith("trk_")
    page = client.get(f"/orders/{order.pk}/")
    events = [row.event for row in page.context["workflow"].history]
    assert events[0] == "WorkflowStarted" and events[-1] == "WorkflowCompleted"
    assert events.count("ActivityCompleted") == 3
    assert f"charge_card({order.pk})" in page.content.decode()
    assert f'href="/orders/{order.pk}/"' in client.get("/").content.decode()  # recent orders


def test_an_invalid_form_saves_nothing(client: Client) -> None:
    response = client.post("/", {**ORDER, "quantity": "0", "amount": "-1"})
    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {"quantity", "amount"}
    assert not Order.objects.exists() and not OutboxEntry.objects.exists()


def test_posting_without_a_csrf_token_is_refused() -> None:
    response = Client(enforce_csrf_checks=True).post("/", ORDER)
    assert response.status_code == 403
    assert not Order.objects.exists()


def test_the_status_view_is_async_and_returns_json(client: Client, worker: WorkerThread) -> None:
    assert iscoroutinefunction(views.order_status)  # an `async def` view
    order = place_order(client)
    url = f"/orders/{order.pk}/status.json"

    def status() -> dict[str, Any]:
        response = client.get(url)
        assert response.status_code == 200 and response["Content-Type"] == "application/json"
        return dict(response.json())

    state = wait_until(lambda: (s := status())["workflow"]["finished"] and s, what="completion")
    assert state["workflow"] == {
        "id": order.workflow_id,
        "type": "fulfil_order",
        "status": "completed",
        "finished": True,
        "detail": "",
        "last_event_time": state["workflow"]["last_event_time"],
    }
    assert state["order"]["status"] == "fulfilled"  # read after the workflow, never behind it
    assert client.get("/orders/0/status.json").status_code == 404


def test_the_nightly_report_runs_a_child_per_status_and_its_schedule_is_in_settings(
    worker: WorkerThread, project_app: App
) -> None:
    from orders.workflows import nightly_report

    from dfcore import Settings

    shop_settings = _shop_settings()
    [spec] = Settings(schedules=shop_settings.DFCORE["SCHEDULES"]).schedules
    assert (spec.schedule_id, spec.describe()) == (
        "nightly-report",
        "cron '0 3 * * *' in Europe/Berlin",
    )
    assert spec.workflow in project_app.workflows
    handle = nightly_report.start(workflow_id="report-by-hand")
    report = handle.result(timeout=60)
    assert (report["fulfilled"], report["failed"]) == (0, 0)
    children = [e for e in handle.history() if e.type == "ChildWorkflowEnded"]
    assert [e.attributes["status"] for e in children] == ["completed", "completed"]


def _shop_settings() -> Any:
    import importlib.util

    path = SHOP / "shop" / "settings.py"
    loaded = importlib.util.spec_from_file_location("shop_settings_for_test", path)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


async def test_the_status_view_under_an_async_client(project_app: App) -> None:
    client = AsyncClient()
    response = await client.post("/", ORDER)
    assert response.status_code == 302
    order = await sync_to_async(Order.objects.get)()
    assert await asyncio.to_thread(flush_committed)  # published by the thread after the commit
    state = (await client.get(f"/orders/{order.pk}/status.json")).json()
    # No worker: started, not progressing.
    assert (state["workflow"]["status"], state["order"]["status"]) == ("running", "new")


def test_a_start_still_in_the_outbox_shows_as_waiting(
    client: Client, settings: Any, dfcore_settings: dict[str, Any]
) -> None:
    settings.DFCORE = {**dfcore_settings, "PUBLISH_ON_COMMIT": False}  # only the relay publishes
    order = place_order(client)
    assert workflow_on_page(client, order) == "waiting"
    assert client.get(f"/orders/{order.pk}/status.json").json()["workflow"]["status"] == "waiting"
    assert make_relay(["default"]).relay_once() == 1
    assert workflow_on_page(client, order) == "running"  # no worker in this test


def test_an_unreachable_workflow_server_is_a_message_not_an_error(
    client: Client, settings: Any, dfcore_settings: dict[str, Any]
) -> None:
    settings.DFCORE = {**dfcore_settings, "NATS_URL": f"nats://127.0.0.1:{free_port()}"}
    order = place_order(client)  # saved all the same; its start stays in the outbox
    assert OutboxEntry.objects.get().published_at is None
    assert workflow_on_page(client, order) == "waiting"
    assert "cannot be reached" in client.get(f"/orders/{order.pk}/").content.decode()

    other = Order.objects.create(customer="bo", product="pen", amount=1)  # no outbox row
    assert workflow_on_page(client, other) == "unavailable"
    state = client.get(f"/orders/{other.pk}/status.json").json()
    assert state["workflow"]["status"] == "unavailable"
    assert "cannot be reached" in state["workflow"]["detail"]


def test_an_order_without_a_workflow(client: Client) -> None:
    order = Order.objects.create(customer="cy", product="cup", amount=3)
    assert workflow_on_page(client, order) == "missing"


# -- real processes ---------------------------------------------------------------------------


def sigterm(proc: subprocess.Popen[bytes], log: Path) -> str:
    """Stop ``proc`` as a process manager does; it must exit cleanly. Returns its output."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    output = log.read_text()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert "Task was destroyed" not in output and "never retrieved" not in output, output
    return output


def test_a_real_df_worker_process_fulfils_an_order_from_the_form(
    client: Client,
    nats_url: str,
    namespace: str,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> None:
    order = place_order(client)
    log = tmp_path / "df_worker.log"
    worker = django_process(
        *manage_py("df_worker"), output=log, DF_NATS_URL=nats_url, DF_NAMESPACE=namespace
    )
    processes.append(worker)

    wait_until(
        lambda: workflow_on_page(client, order) == "completed", timeout=60, what="completion"
    )
    order.refresh_from_db()
    assert order.status == "fulfilled"
    output = sigterm(worker, log)
    assert f"namespace {namespace!r}" in output  # it served this test's namespace
    assert "stopping: finishing in-flight work" in output
    # A line per workflow started and ended, and per activity attempt (at INFO, the default).
    name = f"fulfil_order[{order.workflow_id}]"
    assert f"workflow {name} started" in output
    assert re.search(rf"workflow {re.escape(name)} completed in \d+\.\d+s", output)
    assert re.search(
        rf"activity charge_card\[{order.workflow_id} #1\] attempt 1 succeeded in", output
    )


def test_df_dev_runs_server_worker_and_site_in_one_command(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "df_dev.log"
    data = tmp_path / "df"
    dev = django_process(*manage_py("df_dev", "127.0.0.1:0", "--data-dir", str(data)), output=log)
    processes.append(dev)

    banner = re.compile(r"^NATS JetStream +(nats://\S+).*\n.*\nSite +(http://\S+)", re.M)

    def started() -> re.Match[str] | None:
        assert dev.poll() is None, log.read_text()  # it must not exit
        return banner.search(log.read_text())

    found = wait_until(started, timeout=60, what="df_dev to serve the site")
    nats_url, site = found.group(1), found.group(2)

    browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    with browser.open(site) as response:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', response.read().decode())
    assert token is not None
    form = urllib.parse.urlencode({**ORDER, "csrfmiddlewaretoken": token.group(1)}).encode()
    with browser.open(site, data=form) as response:  # follows the redirect to the order page
        order_url = response.geturl()
    assert re.fullmatch(re.escape(site) + r"orders/\d+/", order_url), order_url

    def finished() -> dict[str, Any] | None:
        with browser.open(order_url + "status.json") as response:
            state: dict[str, Any] = json.load(response)
        return state if state["workflow"]["finished"] else None

    state = wait_until(finished, timeout=60, what="the order's workflow to finish")
    assert state["workflow"]["status"] == "completed"
    assert Order.objects.get(pk=state["order"]["id"]).status == "fulfilled"
    assert (data / "nats" / "jetstream").is_dir()

    output = sigterm(dev, log)
    assert "Stopped the web server, the worker and NATS." in output
    assert "reconnecting" not in output  # every connection closed before NATS stopped
    port = int(nats_url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):  # the embedded server stopped with it
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_df_dev_nats_only_serves_where_dfcore_points_so_df_workflow_reaches_it(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    """The advice of df_dev holds for the project: with DFCORE["NATS_URL"] set to a local
    port, the server runs there, and a second terminal's df_workflow finds it."""
    port = free_port()
    (tmp_path / "dev_settings.py").write_text(
        "from tests.django_settings import *  # noqa: F403\n"
        f'DFCORE = {{"NATS_URL": "nats://127.0.0.1:{port}", "NAMESPACE": "devonly"}}\n'
    )
    env = {
        "DJANGO_SETTINGS_MODULE": "dev_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), str(SHOP)]),
    }
    log = tmp_path / "df_dev.log"
    data = tmp_path / "df"
    dev = django_process(
        *manage_py("df_dev", "--nats-only", "--data-dir", str(data)), output=log, **env
    )
    processes.append(dev)

    def announced() -> str | None:
        assert dev.poll() is None, log.read_text()
        text = log.read_text()
        return text if "Ctrl-C stops the server" in text else None

    banner = wait_until(announced, timeout=60, what="df_dev --nats-only to serve")
    assert f"NATS JetStream  nats://127.0.0.1:{port}" in banner
    assert 'reach it through DFCORE["NATS_URL"] in settings.py' in banner
    assert "Run a worker:   `python manage.py df_worker`" in banner
    assert "Run the site:   `python manage.py runserver`" in banner

    second = django_process(*manage_py("df_workflow", "list"), **env)  # another terminal
    out, _ = second.communicate(timeout=60)
    assert second.returncode == 0, out.decode()
    assert "WORKFLOW ID" in out.decode()
    sigterm(dev, log)
