"""The dfcore command line, run as a real process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfcore import App
from dfcore.client._loopthread import run_sync
from dfcore.jetstream._server import free_port

from .apps.orders import ORDER_EVENTS, build_app
from .workerkit import ROOT, WorkerThread


def df(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dfcore", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def finished(nats_url: str, namespace: str) -> Iterator[dict[str, str]]:
    """A completed order workflow; yields the env pointing df at its namespace."""
    app: App = build_app(nats_url=nats_url, namespace=namespace)
    with WorkerThread(app):
        app.start("order", "cli", 4.0, 1, workflow_id="cli-order").result(timeout=30)
    run_sync(app.aclose())
    yield {"DF_NATS_URL": nats_url, "DF_NAMESPACE": namespace}


def test_workflow_show_prints_the_event_table(finished: dict[str, str]) -> None:
    out = df("workflow", "show", "cli-order", "-A", "tests.apps.orders:app", env=finished)
    assert out.returncode == 0, out.stderr
    assert "cli-order (order): completed" in out.stdout
    header, *rows = out.stdout.splitlines()[1:]
    assert header.split()[:3] == ["SEQ", "TIME", "EVENT"]
    assert [r.split()[2] for r in rows] == ORDER_EVENTS


def test_an_exported_history_replays_against_changed_code_in_ci(
    finished: dict[str, str], tmp_path: Path
) -> None:
    out = df("workflow", "show", "cli-order", "--json", env=finished)
    assert out.returncode == 0, out.stderr
    exported = tmp_path / "cli-order.json"
    exported.write_text(out.stdout)
    changed = "tests.apps.orders_changed"
    ok = df("-A", f"{changed}:patched_app", "workflow", "replay", str(exported))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == f"{exported}: replays"
    bad = df("-A", f"{changed}:unguarded_app", "workflow", "replay", str(exported))
    assert bad.returncode == 1
    assert "FAILED: workflow 'cli-order' is not deterministic" in bad.stdout
    assert "1 of 1 histories do not replay" in bad.stderr
    missing = df("workflow", "replay", str(tmp_path / "nope.json"))
    assert missing.returncode == 1 and "cannot read" in missing.stdout


def test_workflow_list_shows_status(finished: dict[str, str]) -> None:
    out = df("workflow", "list", env=finished)
    assert out.returncode == 0, out.stderr
    assert any(line.split()[:2] == ["cli-order", "completed"] for line in out.stdout.splitlines())


def test_unknown_workflow_id_is_a_clear_error(finished: dict[str, str]) -> None:
    out = df("workflow", "show", "nope", env=finished)
    assert out.returncode == 1
    assert "no workflow with id 'nope'" in out.stderr


def test_bad_app_path_is_a_clear_error() -> None:
    out = df("worker", "-A", "no_such_module:app")
    assert out.returncode == 1 and "cannot import 'no_such_module'" in out.stderr


def test_bad_setting_names_the_variable() -> None:
    out = df("workflow", "list", env={"DF_NATS_URL": "htp://x"})
    assert out.returncode == 1 and "DF_NATS_URL" in out.stderr


def test_unreachable_server_says_how_to_start_one() -> None:
    from dfcore.jetstream._server import free_port

    out = df(
        "workflow",
        "list",
        env={"DF_NATS_URL": f"nats://127.0.0.1:{free_port()}", "DF_CONNECT_TIMEOUT": "0.5"},
    )
    assert out.returncode == 1 and "`dfcore -A yourmodule:app dev`" in out.stderr


def test_dev_runs_an_embedded_server_and_a_worker(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dfcore",
            "-A",
            "tests.apps.orders:app",
            "dev",
            "--data-dir",
            str(tmp_path / "df"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "DF_NAMESPACE": "devtest"},
    )
    try:
        url = None
        assert proc.stdout is not None
        for line in proc.stdout:
            if found := re.match(r"NATS JetStream +(nats://\S+) ", line):
                url = found.group(1)
            if line.startswith("Try it:"):
                assert "`dfcore -A tests.apps.orders:app workflow list`" in line
                break
        assert url and url.startswith("nats://127.0.0.1:")
        app = build_app(nats_url=url, namespace="devtest")
        assert app.start("order", "dev", 1.0, 1).result(timeout=30)["tracking_id"]
        run_sync(app.aclose())
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, rest
    assert (tmp_path / "df" / "nats" / "jetstream").is_dir()


def dev_nats_only(data: Path, **env: str) -> tuple[str, str]:
    """Run ``dfcore dev --nats-only`` until it serves; stop it; its URL and what it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "dfcore", "dev", "--nats-only", "--data-dir", str(data)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**{k: v for k, v in os.environ.items() if k != "DF_NATS_URL"}, **env},
    )
    printed = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            printed.append(line)
            if line.startswith("Ctrl-C stops the server"):
                break
    finally:
        proc.terminate()
        rest, _ = proc.communicate(timeout=30)
    output = "".join(printed) + rest
    assert proc.returncode == 0, output
    found = re.search(r"^NATS JetStream +(nats://\S+)", output, re.M)
    assert found, output
    return found.group(1), output


def test_dev_keeps_its_port_from_run_to_run_and_can_run_nats_alone(tmp_path: Path) -> None:
    url, output = dev_nats_only(tmp_path / "df")
    assert "Run a worker:   `dfcore -A yourmodule:app worker`" in output
    assert f"after `export DF_NATS_URL={url}`" in output
    again, _ = dev_nats_only(tmp_path / "df")
    assert again == url  # what other terminals were told still holds


def test_dev_serves_on_the_configured_local_url(tmp_path: Path) -> None:
    configured = f"nats://127.0.0.1:{free_port()}"
    url, output = dev_nats_only(tmp_path / "df", DF_NATS_URL=configured)
    assert url == configured
    assert "reach it through DF_NATS_URL" in output


def test_demo_runs_the_order_workflow_with_a_retry(tmp_path: Path) -> None:
    out = df("demo", "--data-dir", str(tmp_path / "demo"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "ActivityFailed" in out.stdout and "TimerFired" in out.stdout
    assert "Result: {'charge_id': 'ch_" in out.stdout


def test_the_command_is_a_click_tree_named_dfcore(finished: dict[str, str]) -> None:
    out = df("--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Usage: dfcore [OPTIONS] COMMAND")
    for command in ("worker", "dev", "workflow", "dlq", "demo"):
        assert re.search(rf"^  {command} ", out.stdout, re.M), out.stdout
    # -A before the command, as Celery's, or after it, as before
    before = df("-A", "tests.apps.orders:app", "workflow", "list", env=finished)
    after = df("workflow", "list", "-A", "tests.apps.orders:app", env=finished)
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert "cli-order" in before.stdout and before.stdout == after.stdout


def test_the_console_script_does_not_shadow_coreutils_df() -> None:
    from importlib.metadata import entry_points

    scripts = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert scripts["dfcore"] == "dfcore.cli._commands:main"
    assert "df" not in scripts or not scripts["df"].startswith("dfcore")
    assert (Path(sys.executable).parent / "dfcore").exists()


def test_shell_completion_completes_commands() -> None:
    env = {"_DFCORE_COMPLETE": "bash_complete", "COMP_WORDS": "dfcore wor", "COMP_CWORD": "1"}
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dfcore")],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["plain,worker", "plain,workflow"]
    source = subprocess.run(
        [str(Path(sys.executable).parent / "dfcore")],
        capture_output=True,
        text=True,
        env={**os.environ, "_DFCORE_COMPLETE": "bash_source"},
        timeout=60,
        check=False,
    )
    assert "_dfcore_completion()" in source.stdout


def test_dev_without_a_web_server_refuses_web_options(tmp_path: Path) -> None:
    out = df("-A", "tests.apps.orders:app", "dev", "--port", "8000")
    assert out.returncode == 2
    assert "--nats-port" in out.stderr  # the NATS server's port has its own option


def test_bad_options_are_usage_errors() -> None:
    out = df("-A", "tests.apps.orders:app", "worker", "--processes", "none")
    assert out.returncode == 2 and "--processes takes a positive number or 'auto'" in out.stderr
    out = df("-A", "tests.apps.orders:app", "worker", "--workflows-only", "--activities-only")
    assert out.returncode == 2 and "exclude each other" in out.stderr


def test_the_argparse_helpers_still_work_with_a_deprecation_warning() -> None:
    import argparse

    from dfcore import cli

    parser = argparse.ArgumentParser()
    with pytest.warns(DeprecationWarning, match=r"dfcore.cli.add_worker_arguments is deprecated"):
        cli.add_worker_arguments(parser)
    with pytest.warns(DeprecationWarning):
        options = cli.worker_options(parser.parse_args(["-Q", "a,b", "--workflows-only"]))
    assert options["task_queues"] == ["a", "b"] and options["activities"] is False
    with pytest.raises(AttributeError):
        cli.no_such_helper  # noqa: B018


def test_the_commands_join_a_click_group_of_ones_own(finished: dict[str, str]) -> None:
    """As docs/cli.md shows: a project's own group, with a Host saying where the App is."""
    import click
    from click.testing import CliRunner

    from dfcore import cli

    app = build_app(nats_url=finished["DF_NATS_URL"], namespace=finished["DF_NAMESPACE"])

    @click.group(context_settings=cli.CONTEXT)
    @click.pass_context
    def proj(ctx: click.Context) -> None:
        ctx.obj = cli.Host(name="proj", get_app=lambda: app)

    for command in cli.COMMANDS:
        proj.add_command(command)
    try:
        result = CliRunner().invoke(proj, ["workflow", "show", "cli-order"])
        assert result.exit_code == 0, result.output
        assert "Workflow cli-order (order): completed" in result.output
        refused = CliRunner().invoke(proj, ["workflow", "list", "-A", "other:app"])
        assert refused.exit_code == 2 and "proj knows its app already" in refused.output
    finally:
        run_sync(app.aclose())
