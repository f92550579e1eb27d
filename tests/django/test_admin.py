"""The admin: outbox rows and workflows, read-only, with their status."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.db import transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from dfcore.integrations.django import start_on_commit
from dfcore.integrations.django.models import OutboxEntry
from tests.djangoapp.workflows import greeting
from tests.workerkit import WorkerThread

OUTBOX = "/admin/dfcore/outboxentry/"
WORKFLOWS = "/admin/dfcore/workflow/"

PAYLOAD = b"\x00start-record\xff"

#: What the admin must say when NATS cannot be reached.
UNREACHABLE = "could not connect to NATS at nats://127.0.0.1:1"


def html(response: Any) -> str:
    return response.content.decode()


def entry(workflow_id: str, **fields: Any) -> OutboxEntry:
    values: dict[str, Any] = {
        "workflow_type": "greeting",
        "task_queue": "default",
        "payload": PAYLOAD,
        **fields,
    }
    return OutboxEntry.objects.create(workflow_id=workflow_id, **values)


def unreachable(settings: Any, dfcore_settings: dict[str, Any]) -> None:
    settings.DFCORE = {**dfcore_settings, "NATS_URL": "nats://127.0.0.1:1", "CONNECT_TIMEOUT": 0.5}


def staff(username: str, *perms: str) -> Client:
    """A client logged in as a staff user with only these permissions."""
    user = User.objects.create_user(username, password="pw", is_staff=True)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    client = Client()
    client.force_login(user)
    return client


# -- outbox ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_outbox_lists_rows_with_their_status(admin_client: Client) -> None:
    pending = entry("order-1")
    retrying = entry(
        "order-2",
        attempts=3,
        last_error="DFConnectionError: could not connect to NATS",
        next_attempt_at=timezone.now() + timedelta(minutes=1),
    )
    published = entry("order-3", attempts=1, published_at=timezone.now())

    page = html(admin_client.get(OUTBOX))
    for row, status in ((pending, "pending"), (retrying, "retrying"), (published, "published")):
        assert f"/admin/dfcore/outboxentry/{row.pk}/change/" in page
        assert f"df-status-{status}" in page
    assert "DFConnectionError: could not connect to NATS" in page
    # Newest first.
    assert page.index("order-3") < page.index("order-2") < page.index("order-1")
    # The workflow id links to the workflow's page.
    assert 'href="/admin/dfcore/workflow/order-1/"' in page
    # The raw payload is not shown.
    assert "start-record" not in page


@pytest.mark.django_db
def test_the_outbox_filters_by_status_and_searches_by_workflow_id(admin_client: Client) -> None:
    entry("order-1")
    entry("order-2", attempts=2, last_error="boom")
    entry("order-3", attempts=1, published_at=timezone.now())

    def ids(query: str) -> set[str]:
        page = html(admin_client.get(OUTBOX + query))
        return {wid for wid in ("order-1", "order-2", "order-3") if f"/{wid}/" in page}

    assert ids("?status=pending") == {"order-1"}
    assert ids("?status=retrying") == {"order-2"}
    assert ids("?status=unpublished") == {"order-1", "order-2"}
    assert ids("?status=published") == {"order-3"}
    assert ids("?q=order-2") == {"order-2"}


@pytest.mark.django_db
def test_the_outbox_is_read_only(admin_client: Client) -> None:
    row = entry("order-1", attempts=2, last_error="boom")
    change = f"{OUTBOX}{row.pk}/change/"

    assert admin_client.get(OUTBOX + "add/").status_code == 403
    assert admin_client.post(OUTBOX + "add/", {"workflow_id": "x"}).status_code == 403
    assert admin_client.get(f"{OUTBOX}{row.pk}/delete/").status_code == 403
    assert admin_client.post(f"{OUTBOX}{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.post(change, {"workflow_id": "changed", "attempts": 0}).status_code == 403
    # No bulk actions: a forged "delete selected" deletes nothing.
    listing = html(admin_client.get(OUTBOX))
    assert "delete_selected" not in listing and 'name="_selected_action"' not in listing
    admin_client.post(
        OUTBOX, {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"}
    )
    # The view page shows the row without a form to save, and the payload only by its size.
    page = admin_client.get(change)
    assert page.status_code == 200
    text = html(page)
    assert 'name="_save"' not in text and "boom" in text
    assert f"{len(PAYLOAD)} bytes" in text and "start-record" not in text
    assert OutboxEntry.objects.get().workflow_id == "order-1"
    assert OutboxEntry.objects.get().attempts == 2


@pytest.mark.django_db(transaction=True)
def test_an_outbox_row_from_start_on_commit_is_shown_pending(
    admin_client: Client, settings: Any, dfcore_settings: dict[str, Any]
) -> None:
    settings.DFCORE = {**dfcore_settings, "PUBLISH_ON_COMMIT": False}
    with transaction.atomic():
        start_on_commit(greeting, "x", workflow_id="from-commit")
    page = html(admin_client.get(OUTBOX))
    assert "from-commit" in page and "df-status-pending" in page


@pytest.mark.django_db
def test_the_index_lists_both_without_add_links(admin_client: Client) -> None:
    page = html(admin_client.get("/admin/"))
    assert f'href="{OUTBOX}"' in page and f'href="{WORKFLOWS}"' in page
    assert f"{OUTBOX}add/" not in page and f"{WORKFLOWS}add/" not in page


# -- workflows ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_the_workflow_list_shows_started_workflows_newest_first(
    admin_client: Client, worker: WorkerThread
) -> None:
    done = greeting.start("ada", workflow_id="w1")
    assert done.result(timeout=30) == "hello ada"
    # No worker serves this queue: the workflow stays running.
    greeting.start("bob", workflow_id="w2", task_queue="nobody")

    response = admin_client.get(WORKFLOWS)
    assert response.status_code == 200
    page = html(response)
    w1, w2 = f'href="{WORKFLOWS}w1/"', f'href="{WORKFLOWS}w2/"'
    assert w1 in page and w2 in page
    assert page.index(w2) < page.index(w1)  # the most recently active first
    assert "df-status-completed" in page and "df-status-running" in page
    assert ">greeting<" in page  # the workflow type

    running = html(admin_client.get(WORKFLOWS + "?status=running"))
    assert w2 in running and w1 not in running
    completed = html(admin_client.get(WORKFLOWS + "?status=completed"))
    assert w1 in completed and w2 not in completed
    searched = html(admin_client.get(WORKFLOWS + "?q=W1"))
    assert w1 in searched and w2 not in searched
    assert w1 not in html(admin_client.get(WORKFLOWS + "?status=failed"))
    assert html(admin_client.get(WORKFLOWS + "?limit=1")).count(f'href="{WORKFLOWS}w') == 1


@pytest.mark.django_db(transaction=True)
def test_the_workflow_page_shows_status_and_history(
    admin_client: Client, worker: WorkerThread
) -> None:
    assert greeting.start("ada", workflow_id="w1").result(timeout=30) == "hello ada"
    OutboxEntry.objects.create(
        workflow_id="w1", workflow_type="greeting", task_queue="default", payload=b""
    )

    response = admin_client.get(WORKFLOWS + "w1/")
    assert response.status_code == 200
    page = html(response)
    assert "df-status-completed" in page and "greeting" in page
    events = ["WorkflowStarted", "ActivityScheduled", "ActivityCompleted", "WorkflowCompleted"]
    positions = [page.index(f">{event}<") for event in events]
    assert positions == sorted(positions)
    assert "&#x27;hello ada&#x27;" in page  # the result, in the event's summary
    assert f"{OUTBOX}?q=w1" in page  # a link to its outbox rows
    assert admin_client.post(WORKFLOWS + "w1/", {"status": "cancelled"}).status_code == 405


@pytest.mark.django_db(transaction=True)
def test_an_odd_workflow_id_round_trips_through_its_url(admin_client: Client) -> None:
    odd = "order/7_a b?"
    greeting.start("cy", workflow_id=odd, task_queue="nobody")
    listing = html(admin_client.get(WORKFLOWS))
    url = reverse("admin:dfcore_workflow_change", args=[quote(odd)])
    assert f'href="{url}"' in listing
    page = admin_client.get(url)
    assert page.status_code == 200 and "WorkflowStarted" in html(page)


@pytest.mark.django_db
def test_an_unknown_workflow_is_404(admin_client: Client) -> None:
    assert admin_client.get(WORKFLOWS + "no-such-workflow/").status_code == 404
    assert admin_client.get(WORKFLOWS + "x" * 500 + "/").status_code == 404  # too long to exist


@pytest.mark.django_db
def test_the_workflow_pages_are_read_only(admin_client: Client) -> None:
    # Nothing beyond the list and the detail page, which only answer GET and HEAD.
    assert admin_client.get(WORKFLOWS + "add/").status_code == 404  # no workflow "add"
    assert admin_client.post(WORKFLOWS + "w1/delete/", {"post": "yes"}).status_code == 405
    assert admin_client.post(WORKFLOWS, {"action": "delete_selected"}).status_code == 405


@pytest.mark.django_db
def test_unreachable_nats_is_an_error_message_not_a_500(
    admin_client: Client, settings: Any, dfcore_settings: dict[str, Any]
) -> None:
    unreachable(settings, dfcore_settings)
    for url in (WORKFLOWS, WORKFLOWS + "?status=running", WORKFLOWS + "w1/"):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        page = html(response)
        assert 'class="errornote df-problem"' in page, url
        assert UNREACHABLE in page, url
        assert "NATS_URL" in page, url
    # The outbox does not need NATS.
    entry("order-1")
    assert "order-1" in html(admin_client.get(OUTBOX))


@pytest.mark.django_db
def test_invalid_settings_are_an_error_message_not_a_500(
    admin_client: Client, settings: Any, dfcore_settings: dict[str, Any]
) -> None:
    settings.DFCORE = {**dfcore_settings, "NATS_URLS": "nats://x"}
    for url in (WORKFLOWS, WORKFLOWS + "w1/"):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        page = html(response)
        assert "not configured correctly" in page and "NATS_URLS" in page, url


@pytest.mark.django_db
def test_workflows_need_the_view_permission(settings: Any, dfcore_settings: dict[str, Any]) -> None:
    unreachable(settings, dfcore_settings)  # the permission is checked before NATS is read
    assert staff("nobody").get(WORKFLOWS).status_code == 403
    allowed = staff("viewer", "dfcore.view_workflow")
    assert allowed.get(WORKFLOWS).status_code == 200
    assert allowed.get(WORKFLOWS + "w1/").status_code == 200
    # Without the outbox permission, neither the outbox nor links to it.
    assert allowed.get(OUTBOX).status_code == 403
