"""The acceptance test of the Celery facade: a project written for Celery, laid out as in
Celery's "First steps with Django" (``tests/projects/first_steps``), runs on DurableFuture
once its ``from celery`` imports read ``from dfcore.contrib.celery``.

Besides the imports, DurableFuture's Django app needs two lines in ``settings.py``: the app in
``INSTALLED_APPS`` (for ``manage.py df_worker`` and the outbox's table) and ``DFCORE["APP"]``
naming the Celery app (else ``df_worker`` runs the built-in App, which has none of the tasks).
The test adds those two lines, checks that nothing else changed, then runs the project for
real: ``migrate``, ``df_worker`` and ``runserver`` as processes on the test's server.
"""

from __future__ import annotations

import ast
import difflib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfcore import App, DFError, EventType
from dfcore.client._loopthread import run_sync
from dfcore.jetstream._server import free_port
from tests.workerkit import ROOT, popen, wait_until

PROJECT = ROOT / "tests" / "projects" / "first_steps"
#: What the test adds to the project's settings.py, and all it adds.
SETTINGS_LINES = [
    'INSTALLED_APPS += ["dfcore.integrations.django"]',
    'DFCORE = {"APP": "proj.celery:app"}',
]


def rewrite_imports(project: Path) -> dict[str, list[tuple[str, str]]]:
    """Make every ``from celery...`` import read ``from dfcore.contrib.celery...``; return
    the lines changed, by file."""
    changed: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(project.rglob("*.py")):
        lines = path.read_text().splitlines(keepends=True)
        new = [_rewritten(line) for line in lines]
        if new != lines:
            path.write_text("".join(new))
            name = str(path.relative_to(project))
            changed[name] = [(a.rstrip(), b.rstrip()) for a, b in zip(lines, new) if a != b]
    return changed


def _rewritten(line: str) -> str:
    if line.startswith(("from celery ", "from celery.")):
        return "from dfcore.contrib.celery" + line[len("from celery") :]
    return line


def celery_imports(project: Path) -> list[str]:
    """The modules of ``celery`` that the project's files import."""
    found = []
    for path in project.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found += [a.name for a in node.names if a.name.split(".")[0] == "celery"]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found += [node.module] if node.module.split(".")[0] == "celery" else []
    return found


def test_the_project_is_written_for_celery_and_only_its_imports_change(tmp_path: Path) -> None:
    assert sorted(celery_imports(PROJECT)) == ["celery", "celery", "celery", "celery.schedules"]
    project = _copy(tmp_path)
    assert rewrite_imports(project) == {
        "proj/celery.py": [
            ("from celery import Celery", "from dfcore.contrib.celery import Celery"),
            (
                "from celery.schedules import crontab",
                "from dfcore.contrib.celery.schedules import crontab",
            ),
        ],
        "shop/tasks.py": [
            ("from celery import shared_task", "from dfcore.contrib.celery import shared_task")
        ],
        "shop/views.py": [
            ("from celery import chain, chord", "from dfcore.contrib.celery import chain, chord")
        ],
    }
    assert celery_imports(project) == []
    _add_settings(project)
    before = (PROJECT / "proj" / "settings.py").read_text().splitlines()
    after = (project / "proj" / "settings.py").read_text().splitlines()
    diff = [line for line in difflib.ndiff(before, after) if line[:1] in "+-"]
    assert diff == [f"+ {line}" for line in SETTINGS_LINES]  # two lines added, none changed


def _copy(tmp_path: Path) -> Path:
    project = tmp_path / "first_steps"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__", "*.sqlite3"))
    return project


def _add_settings(project: Path) -> None:
    settings = project / "proj" / "settings.py"
    settings.write_text(settings.read_text() + "".join(f"{line}\n" for line in SETTINGS_LINES))


class Project:
    """The rewritten project in ``root``, run with ``manage.py`` on the test's server."""

    def __init__(self, root: Path, nats_url: str, namespace: str) -> None:
        self.root = root
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DF_", "DJANGO_"))},
            "DJANGO_SETTINGS_MODULE": "proj.settings",
            "CELERY_BROKER_URL": nats_url,  # the facade takes a nats:// broker URL as its server
            "DF_NAMESPACE": namespace,
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.port = free_port()
        self.client = App("first-steps-check", nats_url=nats_url, namespace=namespace)

    def manage(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def start(self, name: str, *args: str) -> Path:
        log = self.root / f"{name}.log"
        command = [sys.executable, "manage.py", *args]
        self.processes.append((popen(command, self.env, log, cwd=self.root), log))
        return log

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for _, log in self.processes)

    def alive(self) -> None:
        for proc, log in self.processes:
            assert proc.poll() is None, f"{log.name} exited:\n{self.logs()}"

    def post(self, path: str, **fields: Any) -> dict[str, Any]:
        data = urllib.parse.urlencode(fields).encode()
        with urllib.request.urlopen(f"{self.url}{path}", data=data, timeout=30) as response:
            return dict(json.loads(response.read()))

    def get(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return dict(json.loads(response.read()))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serving(self) -> bool:
        self.alive()
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def result(self, task_id: str) -> Any:
        try:
            return self.client.get_handle(task_id).result(timeout=60)
        except Exception as exc:
            raise AssertionError(f"task {task_id}: {exc}\n{self.logs()}") from exc

    def stop(self) -> None:
        for proc, _ in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.processes:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        run_sync(self.client.aclose())


@pytest.fixture
def project(tmp_path: Path, nats_url: str, namespace: str) -> Iterator[Project]:
    """The first-steps project with its imports rewritten and the two settings lines added."""
    root = _copy(tmp_path)
    rewrite_imports(root)
    _add_settings(root)
    running = Project(root, nats_url, namespace)
    yield running
    running.stop()


def test_the_first_steps_project_runs_its_tasks_chain_chord_retry_and_beat(
    project: Project,
) -> None:
    project.manage("migrate")
    worker_log = project.start("worker", "df_worker")
    project.start("web", "runserver", f"127.0.0.1:{project.port}", "--noreload")
    wait_until(project.serving, timeout=60, what="runserver to serve")

    added = project.post("/add/", x=2, y=3)
    assert project.result(added["task_id"]) == 5

    rated = project.post("/rate/", currency="EUR")  # fails once, and autoretry_for retries it
    assert project.result(rated["task_id"]) == {"currency": "EUR", "rate": 1.25, "retries": 1}
    events = [e.type for e in project.client.get_handle(rated["task_id"]).history()]
    assert events.count(EventType.ACTIVITY_FAILED) == 1
    assert events.count(EventType.ACTIVITY_COMPLETED) == 1

    started = project.post("/pipeline/", n=3)
    assert project.result(started["chain"]) == (3 + 3) * 10 + 1
    assert project.result(started["chord"]) == 0 + 2 + 4

    order = project.post("/orders/", item="book")  # delay_on_commit, through the outbox
    wait_until(
        lambda: project.get(f"/orders/{order['order']}/")["status"] == "confirmed",
        timeout=60,
        what="the order to be confirmed by its task",
    )

    debug_id = project.manage(
        "shell", "-c", "from proj.celery import debug_task; print(debug_task.delay().id)"
    ).split()[-1]
    project.result(debug_id)
    assert f"Request: Request(id='{debug_id}', task='proj.celery.debug_task'" in (
        worker_log.read_text()
    )

    def beat_started() -> str | None:
        project.alive()
        try:
            return project.client.schedules.get("add-every-2-seconds").last_workflow_id
        except DFError:  # not created yet: the worker creates it when it starts
            return None

    first = wait_until(beat_started, timeout=60, what="the beat entry to start its task")
    assert first.startswith("add-every-2-seconds@") and project.result(first) == 32
    report = project.client.schedules.get("weekday-report").spec
    assert report.describe() == "cron '30 7 * * 1-5' in Australia/Tasmania"


def test_the_same_project_unchanged_runs_on_real_celery_over_dfnats(
    tmp_path: Path, nats_url: str, namespace: str
) -> None:
    """Path 2: the project as written for Celery, imports and settings untouched, on its own
    ``celery worker``, with JetStream as broker and result backend (``dfnats://``)."""
    celery = pytest.importorskip("celery")
    root = _copy(tmp_path)
    dfnats = nats_url.replace("nats://", "dfnats://", 1)
    running = Project(root, nats_url, namespace)
    running.env |= {
        "CELERY_BROKER_URL": f"{dfnats}/{namespace}",
        "CELERY_RESULT_BACKEND": dfnats,
    }
    results = celery.Celery("first-steps-results", backend=dfnats)
    try:
        running.manage("migrate")
        worker = [sys.executable, "-m", "celery", "-A", "proj", "worker", "-l", "info"]
        running.processes.append(
            (popen(worker, running.env, root / "worker.log", cwd=root), root / "worker.log")
        )
        running.start("web", "runserver", f"127.0.0.1:{running.port}", "--noreload")
        wait_until(running.serving, timeout=60, what="runserver to serve")

        def result(task_id: str) -> Any:
            try:
                return results.AsyncResult(task_id).get(timeout=60)
            except Exception as exc:
                raise AssertionError(f"task {task_id}: {exc!r}\n{running.logs()}") from exc

        assert result(running.post("/add/", x=2, y=3)["task_id"]) == 5
        rated = running.post("/rate/", currency="EUR")  # fails once; autoretry_for retries it
        assert result(rated["task_id"]) == {"currency": "EUR", "rate": 1.25, "retries": 1}
        started = running.post("/pipeline/", n=3)
        assert result(started["chain"]) == (3 + 3) * 10 + 1
        assert result(started["chord"]) == 0 + 2 + 4
        order = running.post("/orders/", item="book")  # Celery's own delay_on_commit
        wait_until(
            lambda: running.get(f"/orders/{order['order']}/")["status"] == "confirmed",
            timeout=60,
            what="the order to be confirmed by its task",
        )
        assert "Retry in 1s: ConnectionError" in (root / "worker.log").read_text()
    finally:
        results.close()
        running.stop()
