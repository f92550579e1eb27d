"""The engine's log lines about a workflow carry its id, run and type as record attributes
(activity lines their activity and attempt too), and the worker commands write them as JSON
lines with ``--log-format json``."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import click
import orjson
import pytest

import dfcore.cli
from dfcore.cli import JsonFormatter, setup_logging
from dfcore.client._loopthread import run_sync
from dfcore.core._logfields import log_fields
from dfcore.core._run_state import RunInfo
from dfcore.core._tasks import ActivityTask

from .apps import logged
from .workerkit import ROOT, WorkerThread, on_test_server, wait_until


class Records(logging.Handler):
    """Keeps every record the ``dfcore`` loggers emit, from any thread."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.guard = threading.Lock()  # not `lock`: Handler holds that one around emit
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.records.append(record)

    def about(self, workflow_id: str) -> list[logging.LogRecord]:
        with self.guard:
            return [r for r in self.records if workflow_id in r.getMessage()]

    def saying(self, workflow_id: str, text: str) -> list[logging.LogRecord]:
        return [r for r in self.about(workflow_id) if text in r.getMessage()]


@pytest.fixture
def dfcore_records() -> Iterator[Records]:
    """Every record of the ``dfcore`` loggers, at DEBUG, while the test runs."""
    logger = logging.getLogger("dfcore")
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    names = ("workflow_id", "run", "workflow_type", "activity", "attempt")
    return {name: getattr(record, name) for name in names if hasattr(record, name)}


def test_every_line_about_a_workflow_carries_its_id_run_and_type(
    nats_url: str, namespace: str, dfcore_records: Records
) -> None:
    app = logged.build_app(nats_url=nats_url, namespace=namespace)
    workflow_id = f"logs-{uuid4().hex[:8]}"
    try:
        with WorkerThread(app):
            handle = app.start("logged_order", "k1", workflow_id=workflow_id)
            handle.signal("approve", True)
            assert handle.result(timeout=30) == {"charged": "charged k1", "approved": True}
            wait_until(lambda: dfcore_records.saying(workflow_id, "completed in"), what="the end")
    finally:
        run_sync(app.aclose())

    about = dfcore_records.about(workflow_id)
    wanted = {"workflow_id": workflow_id, "run": 1, "workflow_type": "logged_order"}
    for record in about:
        fields = _fields(record)
        assert {k: fields.get(k) for k in wanted} == wanted, (record.getMessage(), fields)
        if record.getMessage().startswith("activity "):
            assert fields["activity"] == "charge", record.getMessage()
            assert fields["attempt"] == (1 if " attempt 1 " in record.getMessage() else 2)
    # The lines the workflow must have made: each is one of those checked above.
    failed = dfcore_records.saying(workflow_id, "attempt 1 failed")
    passed = dfcore_records.saying(workflow_id, "attempt 2 succeeded")
    assert [_fields(r)["attempt"] for r in failed + passed] == [1, 2]
    assert [r.name for r in dfcore_records.saying(workflow_id, "charging k1")] == [
        "dfcore.workflow"
    ]
    assert dfcore_records.saying(workflow_id, f"logged_order[{workflow_id}] started")


def test_the_lines_of_a_continued_run_carry_its_number(
    nats_url: str, namespace: str, dfcore_records: Records
) -> None:
    app = logged.build_app(nats_url=nats_url, namespace=namespace)
    workflow_id = f"loop-{uuid4().hex[:8]}"
    try:
        with WorkerThread(app):
            assert app.start("logged_loop", 1, workflow_id=workflow_id).result(timeout=30) == 2
            wait_until(lambda: dfcore_records.saying(workflow_id, "completed in"), what="the end")
    finally:
        run_sync(app.aclose())

    continued = dfcore_records.saying(workflow_id, "continued as new (run 2)")
    assert [_fields(r)["run"] for r in continued] == [2]
    runs = {
        text: [_fields(r)["run"] for r in dfcore_records.saying(workflow_id, text)]
        for text in ("started", "attempt 1 succeeded", "completed in")
    }
    assert runs == {"started": [1, 2], "attempt 1 succeeded": [1, 2], "completed in": [2]}
    for record in dfcore_records.about(workflow_id):
        assert _fields(record)["workflow_type"] == "logged_loop", record.getMessage()


def test_the_line_of_a_workflow_task_that_fails_carries_them_too(
    nats_url: str, namespace: str, dfcore_records: Records
) -> None:
    app = logged.build_app(nats_url=nats_url, namespace=namespace)
    workflow_id = f"bug-{uuid4().hex[:8]}"
    try:
        with WorkerThread(app):
            app.start("logged_bug", workflow_id=workflow_id)
            failed = wait_until(
                lambda: dfcore_records.saying(workflow_id, "its code raised KeyError"),
                what="the task failure line",
            )
    finally:
        run_sync(app.aclose())
    assert failed[0].levelno == logging.ERROR
    assert _fields(failed[0]) == {
        "workflow_id": workflow_id,
        "run": 1,
        "workflow_type": "logged_bug",
    }


def test_a_worker_started_with_log_format_json_writes_json_lines(
    nats_url: str, namespace: str, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    err = tmp_path / "stderr.log"
    env = {**os.environ, "DF_NATS_URL": nats_url, "DF_NAMESPACE": namespace}
    env.pop("DF_LOG_FORMAT", None)
    command = [sys.executable, "-m", "dfcore", "worker", "-A", "tests.apps.logged:app"]
    with open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [*command, "--log-format", "json"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    processes.append(proc)
    workflow_id = f"json-{uuid4().hex[:8]}"
    with on_test_server(logged.app, nats_url, namespace) as app:
        handle = app.start("logged_order", "k2", workflow_id=workflow_id)
        handle.signal("approve", "yes")
        assert handle.result(timeout=60)["approved"] == "yes"
    wait_until(lambda: f"{workflow_id}] completed in" in err.read_text(), what="the end line")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0

    lines = [orjson.loads(line) for line in err.read_text().splitlines()]  # all of them
    assert all(line.keys() >= {"time", "level", "logger", "message"} for line in lines)
    assert all(line["time"].endswith("Z") for line in lines)
    assert any(line["message"].startswith("worker for app 'logged'") for line in lines)
    about = [line for line in lines if workflow_id in line["message"]]
    for line in about:
        assert (line["workflow_id"], line["run"], line["workflow_type"]) == (
            workflow_id,
            1,
            "logged_order",
        ), line
    attempts = [(line["activity"], line["attempt"]) for line in about if "activity" in line]
    assert attempts == [("charge", 1), ("charge", 2)]
    assert {line["logger"] for line in about} == {"dfcore.worker", "dfcore.workflow"}


def test_the_json_formatter() -> None:
    formatter = JsonFormatter()

    class Opaque:
        def __str__(self) -> str:
            return "opaque!"

    try:
        raise ValueError("bad value")
    except ValueError:
        record = logging.LogRecord("dfcore.x", logging.ERROR, __file__, 1, "a %s b", ("1",), None)
        record.exc_info = sys.exc_info()
    record.created = 1_700_000_000.123_456
    extra = log_fields("wf-1", run=2, workflow_type="order")
    for key, value in {**extra, "obj": Opaque(), "huge": 2**70, "keys": {1: "x"}}.items():
        setattr(record, key, value)
    line = orjson.loads(formatter.format(record))
    assert "\n" not in formatter.format(record)
    traceback = line.pop("exc_info")
    assert traceback.startswith("Traceback") and traceback.endswith("ValueError: bad value")
    assert line == {
        "time": "2023-11-14T22:13:20.123Z",
        "level": "ERROR",
        "logger": "dfcore.x",
        "message": "a 1 b",
        "workflow_id": "wf-1",
        "run": 2,
        "workflow_type": "order",
        "obj": "opaque!",
        "huge": str(2**70),
        "keys": {"1": "x"},
    }
    plain = logging.LogRecord("x", logging.INFO, __file__, 1, "no extras", (), None)
    assert list(orjson.loads(formatter.format(plain))) == ["time", "level", "logger", "message"]


def test_log_fields_say_what_is_known() -> None:
    info = RunInfo("wf-1", workflow_type="order", run=3)
    assert log_fields(info) == {"workflow_id": "wf-1", "run": 3, "workflow_type": "order"}
    assert log_fields(RunInfo("wf-2")) == {"workflow_id": "wf-2", "run": 1}  # type not read yet
    task = ActivityTask("wf-1", "h", 2, 4, "charge", [], 7, run=3, workflow_type="order")
    assert log_fields(task) == {
        "workflow_id": "wf-1",
        "run": 3,
        "workflow_type": "order",
        "activity": "charge",
        "attempt": 4,
    }
    assert log_fields("wf-1", schedule="nightly") == {"workflow_id": "wf-1", "schedule": "nightly"}
    assert log_fields(None, schedule="nightly") == {"schedule": "nightly"}


def test_an_activity_task_carries_its_workflow_type() -> None:
    task = ActivityTask("wf-1", "h", 2, 1, "charge", [], 7, workflow_type="order")
    assert task.to_wire()["wt"] == "order"
    assert ActivityTask.from_wire(task.to_wire()) == task
    older = {k: v for k, v in task.to_wire().items() if k != "wt"}  # as earlier versions wrote
    assert ActivityTask.from_wire(older).workflow_type == ""
    with pytest.raises(ValueError, match="'wt' must be str"):
        ActivityTask.from_wire({**task.to_wire(), "wt": 5})


def test_setup_logging_leaves_configured_logging_alone_but_the_dfcore_level() -> None:
    root, dfcore_logger = logging.getLogger(), logging.getLogger("dfcore")
    handlers, level = list(root.handlers), dfcore_logger.level
    root.addHandler(configured := logging.NullHandler())
    try:
        setup_logging("warning", "json")
        assert root.handlers == [*handlers, configured]
        assert dfcore_logger.level == logging.WARNING
    finally:
        root.removeHandler(configured)
        dfcore_logger.setLevel(level)
    with pytest.raises(click.UsageError, match="unknown log format 'yaml'"):
        setup_logging("info", "yaml")


def test_the_log_format_comes_from_df_log_format_by_default() -> None:
    code = (
        "import logging; from dfcore.cli import setup_logging; setup_logging('info'); "
        "logging.getLogger('dfcore.x').info('hi', extra={'workflow_id': 'w'})"
    )
    env = {**os.environ, "DF_LOG_FORMAT": "json"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    line = orjson.loads(out.stderr)
    assert (line["level"], line["logger"], line["message"], line["workflow_id"]) == (
        "INFO",
        "dfcore.x",
        "hi",
        "w",
    )
    env["DF_LOG_FORMAT"] = "text"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stderr.rstrip().endswith("INFO    dfcore.x: hi")


def test_the_formatter_is_made_by_name_from_a_logging_configuration() -> None:
    code = (
        "import logging, logging.config; logging.config.dictConfig({'version': 1, "
        "'formatters': {'json': {'()': 'dfcore.cli.JsonFormatter'}}, "
        "'handlers': {'stderr': {'class': 'logging.StreamHandler', 'formatter': 'json'}}, "
        "'root': {'handlers': ['stderr'], 'level': 'INFO'}}); "
        "logging.getLogger('shop').info('made by name')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert orjson.loads(out.stderr)["message"] == "made by name"


def test_the_cli_exports() -> None:
    assert sorted(dfcore.cli.__all__) == [
        "COMMANDS",
        "CONTEXT",
        "Host",
        "JsonFormatter",
        "WorkerThread",
        "cli",
        "current_host",
        "main",
        "setup_logging",
    ]
