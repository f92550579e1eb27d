"""settings.DFCORE: validated into ImproperlyConfigured naming the key, read again on change."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from dfcore import App
from dfcore.integrations.django import app as builtin_app
from dfcore.integrations.django import get_app, get_settings


@pytest.mark.parametrize(
    ("dfcore", "message"),
    [
        (
            {"NATS_ULR": "nats://x:4222"},
            r'DFCORE\["NATS_ULR"\] is not a DurableFuture setting '
            r"\(did you mean 'NATS_URL'\?\)",
        ),
        ({"NATS_URL": "http://x"}, r"NATS_URL in settings.DFCORE is invalid: got 'http://x'"),
        ({"ACTIVITY_CONCURRENCY": 0}, r"ACTIVITY_CONCURRENCY in settings.DFCORE is invalid"),
        (
            {"WORKER_RELAY": "yes"},
            r'DFCORE\["WORKER_RELAY"\] is invalid: got \'yes\'; expected True',
        ),
        ({"RELAY_INTERVAL": -1}, r'DFCORE\["RELAY_INTERVAL"\] is invalid'),
        (
            {
                "SCHEDULES": {
                    "nightly": {"workflow": "report", "cron": "0 3 * * *", "timezone": "X"}
                }
            },
            r"SCHEDULES in settings.DFCORE is invalid: .*schedule 'nightly': time zone 'X' is "
            "unknown",
        ),
        ({"AUTODISCOVER": "workflows"}, r'DFCORE\["AUTODISCOVER"\] is invalid'),
        ({"APP": "no.such.module.app"}, r'DFCORE\["APP"\] is invalid: cannot import'),
        (
            {"APP": "tests.djangoapp.workflows.greet"},
            r"is an object of type ActivityFunction, not a dfcore.App",
        ),
    ],
)
def test_bad_settings_name_the_key(dfcore: dict[str, Any], message: str) -> None:
    with override_settings(DFCORE=dfcore), pytest.raises(ImproperlyConfigured, match=message):
        get_app()


def test_schedules_are_read_from_dfcore(dfcore_settings: dict[str, Any]) -> None:
    nightly = {"workflow": "report", "cron": "0 3 * * *", "timezone": "Europe/Berlin"}
    with override_settings(DFCORE={**dfcore_settings, "SCHEDULES": {"nightly": nightly}}):
        [spec] = get_app().settings.schedules
    assert (spec.schedule_id, spec.workflow, spec.cron) == ("nightly", "report", "0 3 * * *")


def test_dfcore_app_may_name_a_celery_facade_app(dfcore_settings: dict[str, Any]) -> None:
    from tests.apps import celery_proj

    with override_settings(DFCORE={**dfcore_settings, "APP": "tests.apps.celery_proj:app"}):
        assert get_app() is celery_proj.app.df_app


def test_dfcore_must_be_a_dict() -> None:
    with override_settings(DFCORE=["NATS_URL"]), pytest.raises(ImproperlyConfigured, match="dict"):
        get_settings()


def test_override_settings_reconfigures_the_app(dfcore_settings: dict[str, Any]) -> None:
    assert get_app() is builtin_app
    with override_settings(
        DFCORE={**dfcore_settings, "NAMESPACE": "elsewhere", "TASK_QUEUE": "q2"}
    ):
        # workflows hold the built-in App itself, so it must see the new settings at once
        assert builtin_app.settings.namespace == "elsewhere"
        assert builtin_app.settings.task_queue == "q2"
    assert builtin_app.settings.namespace == dfcore_settings["NAMESPACE"]


def test_own_app_celery_style(dfcore_settings: dict[str, Any]) -> None:
    with override_settings(DFCORE={**dfcore_settings, "APP": "tests.django.own_app:app"}):
        from tests.django.own_app import app as own

        assert get_app() is own
        assert own.settings.namespace == dfcore_settings["NAMESPACE"]


def test_environment_variables_fill_what_dfcore_leaves_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DF_TASK_QUEUE", "from-env")
    with override_settings(DFCORE={"NAMESPACE": "ns1"}):
        assert get_app().settings.task_queue == "from-env"
    with override_settings(DFCORE={"NAMESPACE": "ns1", "TASK_QUEUE": "from-settings"}):
        assert get_app().settings.task_queue == "from-settings"


def test_autodiscovery_registered_workflows_and_activities_modules() -> None:
    app = get_app()
    assert "greeting" in app.workflows  # tests/djangoapp/workflows.py
    assert {"greet", "count_users"} <= set(app.activities)  # ... and activities.py
    assert "fulfil_order" in app.workflows  # the example shop's orders/workflows.py


def test_defaults() -> None:
    with override_settings(DFCORE={}):
        conf = get_settings()
    assert conf.app is None and conf.worker_relay and conf.publish_on_commit
    assert conf.autodiscover == ("workflows", "activities")
    assert isinstance(get_app(), App)
