"""The extension: init_app conventions, DF_* config, several apps, activities in app context."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from dfcore import App, ConfigurationError
from dfcore.integrations.flask import DurableFuture, FlaskWorkflow
from dfcore.outbox import flush_committed
from tests.flask.conftest import Factory
from tests.flaskapp import Delivery, db, df, greet
from tests.workerkit import WorkerThread

CORE_KEYS = {
    "DF_NATS_URL",
    "DF_NAMESPACE",
    "DF_TASK_QUEUE",
    "DF_CONNECT_TIMEOUT",
    "DF_ACTIVITY_CONCURRENCY",
    "DF_WORKFLOW_CONCURRENCY",
    "DF_WORKFLOW_CACHE_SIZE",
    "DF_ACTIVITY_ACK_WAIT",
    "DF_WORKFLOW_ACK_WAIT",
    "DF_STREAM_REPLICAS",
    "DF_WORKER_EVENT_LOOP",
    "DF_WORKER_GC_THRESHOLD",
    "DF_STORAGE",
    "DF_CODEC",
    "DF_DEFAULT_ACTIVITY_TIMEOUT",
    "DF_HISTORY_RETENTION",
    "DF_SCHEDULES",
    "DF_NATS_TOKEN",
    "DF_NATS_USER",
    "DF_NATS_PASSWORD",
    "DF_NATS_NKEY_SEED",
    "DF_NATS_NKEY_SEED_FILE",
    "DF_NATS_CREDS_FILE",
    "DF_NATS_TLS_CA_FILE",
    "DF_NATS_TLS_CERT_FILE",
    "DF_NATS_TLS_KEY_FILE",
    "DF_NATS_TLS_HOSTNAME",
}
OWN_KEYS = {
    "DF_OUTBOX_DATABASE_URI",
    "DF_WORKER_RELAY",
    "DF_PUBLISH_ON_COMMIT",
    "DF_RELAY_INTERVAL",
    "DF_RELAY_MIN_AGE",
    "DF_OUTBOX_RETENTION",
}


def test_init_app_sets_every_key_by_default(make_flask_app: Factory) -> None:
    app = make_flask_app()
    assert {key for key in app.config if key.startswith("DF_")} == CORE_KEYS | OWN_KEYS
    assert app.config["DF_TASK_QUEUE"] == "default"
    assert app.config["DF_WORKER_RELAY"] is True


def test_every_key_is_documented() -> None:
    documented = DurableFuture.__doc__ or ""
    for key in CORE_KEYS | OWN_KEYS:
        assert key in documented, key


def test_state_lives_in_app_extensions_not_on_the_extension(make_flask_app: Factory) -> None:
    app = make_flask_app()
    state = app.extensions["dfcore"]
    assert state.extension is df
    assert df.get_app(app) is state.app
    assert not any(isinstance(value, Flask) for value in vars(df).values())


def test_registering_twice_is_an_error(make_flask_app: Factory) -> None:
    app = make_flask_app()
    with pytest.raises(RuntimeError, match="already registered on the Flask app"):
        df.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        DurableFuture(app)


def test_the_config_wins_over_the_environment_which_wins_over_defaults(
    monkeypatch: pytest.MonkeyPatch, make_flask_app: Factory
) -> None:
    monkeypatch.setenv("DF_TASK_QUEUE", "from-env")
    monkeypatch.setenv("DF_ACTIVITY_ACK_WAIT", "12")
    app = make_flask_app(DF_TASK_QUEUE="from-config")
    settings = df.get_app(app).settings
    assert settings.task_queue == "from-config"
    assert settings.activity_ack_wait == 12.0
    assert app.config["DF_ACTIVITY_ACK_WAIT"] == 12.0  # the config shows what is in effect


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"DF_NATS_ULR": "nats://x:4222"},
            r"'DF_NATS_ULR' in the config of Flask app 'tests.flaskapp' is not a DurableFuture "
            r"setting \(did you mean 'DF_NATS_URL'\?\)",
        ),
        (
            {"DF_NATS_URL": "http://x"},
            r"DF_NATS_URL in the config of Flask app 'tests.flaskapp' is invalid: got 'http://x'",
        ),
        ({"DF_ACTIVITY_CONCURRENCY": 0}, r"DF_ACTIVITY_CONCURRENCY in the config .* is invalid"),
        (
            {"DF_WORKER_RELAY": "yes"},
            r"DF_WORKER_RELAY in the config .* is invalid: got 'yes'; expected True or False",
        ),
        ({"DF_RELAY_INTERVAL": -1}, r"DF_RELAY_INTERVAL in the config .* is invalid"),
        ({"DF_OUTBOX_DATABASE_URI": 42}, r"DF_OUTBOX_DATABASE_URI in the config .* is invalid"),
        (
            {"DF_SCHEDULES": {"nightly": {"workflow": "report", "cron": "0 3 * * 8"}}},
            r"DF_SCHEDULES in the config .* is invalid: .*day of week '8': 8 is out of range",
        ),
    ],
)
def test_bad_config_names_the_key(
    config: dict[str, Any], message: str, make_flask_app: Factory
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        make_flask_app(**config)


def test_schedules_are_read_from_the_flask_config(make_flask_app: Factory) -> None:
    nightly = {"workflow": "report", "every": 3600}
    app = make_flask_app(DF_SCHEDULES={"hourly": nightly})
    [spec] = df.get_app(app).settings.schedules
    assert (spec.schedule_id, spec.every_seconds) == ("hourly", 3600)


def test_starting_outside_an_app_context_says_what_to_do() -> None:
    with pytest.raises(RuntimeError, match=r"inside a request.*app_context"):
        greet.start("nobody")


def test_an_app_without_the_extension_says_so(nats_url: str) -> None:
    other = Flask("bare")
    with other.app_context(), pytest.raises(RuntimeError, match=r"df\.init_app"):
        greet.start("nobody")


def test_two_apps_in_one_process_each_use_their_own_settings(
    make_flask_app: Factory, flask_config: dict[str, Any], tmp_path: Any
) -> None:
    first = make_flask_app()
    second = make_flask_app(
        DF_NAMESPACE=flask_config["DF_NAMESPACE"] + "b",
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'second.sqlite3'}",
    )
    apps = {app: df.get_app(app) for app in (first, second)}
    assert apps[first] is not apps[second]
    assert apps[second].settings.namespace == apps[first].settings.namespace + "b"
    assert apps[first].workflows is apps[second].workflows  # one registry
    with WorkerThread(apps[first]), WorkerThread(apps[second]):
        for app in (first, second):
            with app.app_context():
                handle = greet.start("ada", workflow_id="greet-ada")
                expected = f"hello ada from tests.flaskapp ({app.config['DF_NAMESPACE']})"
                assert handle.result(timeout=30) == expected
    for app in (first, second):  # each activity ran in its own app's context and database
        with app.app_context():
            texts = db.session.scalars(select(Delivery.text)).all()
            assert texts == [f"hello ada from tests.flaskapp ({app.config['DF_NAMESPACE']})"]


def test_registering_after_init_app_reaches_every_app(make_flask_app: Factory) -> None:
    app = make_flask_app()

    @df.activity(name="late_activity")
    def late() -> None: ...

    assert "late_activity" in df.get_app(app).activities


def test_workflow_decorator_returns_a_typed_workflow_function() -> None:
    assert isinstance(greet, FlaskWorkflow)
    assert greet.name == "greet"
    assert greet.__name__ == "greet"


def test_views_do_not_connect_per_request(
    make_flask_app: Factory, nats_connects: list[Any]
) -> None:
    """Flask runs an async view with asgiref's async_to_sync: a new loop per request."""
    client = make_flask_app().test_client()
    for name in ("ada", "bo", "cy"):
        assert client.post(f"/greet/{name}").json == {"workflow_id": f"greet-{name}"}
    assert flush_committed()
    for _ in range(3):
        for name in ("ada", "bo", "cy"):  # an async view: a loop per request
            assert client.get(f"/greet/{name}").json == {"status": "running"}
    # The sync views' shared connection, the first async loop's own (closed with its loop);
    # later loops borrow the shared one.
    assert len(nats_connects) <= 2


class TestOwnApp:
    """``DurableFuture(dfapp=App(...))``: the extension serves an App of the user's."""

    def test_the_app_is_configured_from_the_flask_config(
        self, flask_config: dict[str, Any]
    ) -> None:
        own = App("own")
        ext = DurableFuture(dfapp=own)

        @own.workflow
        async def noop(ctx: Any) -> None: ...

        app = Flask("own")
        app.config.update(flask_config)
        ext.init_app(app)
        assert ext.get_app(app) is own
        assert own.settings.namespace == flask_config["DF_NAMESPACE"]
        assert "noop" in own.workflows

    def test_a_second_app_with_other_settings_is_refused(
        self, flask_config: dict[str, Any]
    ) -> None:
        ext = DurableFuture(dfapp=App("own"))
        first, second = Flask("first"), Flask("second")
        first.config.update(flask_config)
        second.config.update({**flask_config, "DF_NAMESPACE": "other"})
        ext.init_app(first)
        with pytest.raises(ConfigurationError, match="already configured by Flask app 'first'"):
            ext.init_app(second)
        assert ext.get_app(first).settings.namespace == flask_config["DF_NAMESPACE"]
        third = Flask("third")
        third.config.update(flask_config)
        ext.init_app(third)  # the same settings: one App serves both
