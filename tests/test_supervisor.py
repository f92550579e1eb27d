"""``--processes N``: one command runs, restarts and drains N real worker processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dfcore import App

from .workerkit import ROOT, sigkill, spawn_worker, wait_until


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (zombies excluded)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids = [int(p) for p in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [p for p in pids if _state(p) not in ("Z", "")]


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):  # gone between the listing and the read
        return ""


def alive(pid: int) -> bool:
    return _state(pid) not in ("Z", "")


@pytest.mark.slow
def test_processes_are_supervised_restarted_and_drained(
    orders_client: App, nats_url: str, namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    proc = spawn_worker(nats_url, namespace, "--processes", "2", log=log)
    try:
        first = wait_until(
            lambda: len(children(proc.pid)) == 2 and children(proc.pid), what="two worker processes"
        )
        handles = [orders_client.start("order", f"c{i}", 5.0, 1) for i in range(10)]
        assert all(hd.result(timeout=60)["tracking_id"] for hd in handles)
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        replaced = wait_until(
            lambda: (pids := children(proc.pid)) and len(pids) == 2 and victim not in pids and pids,
            what="the killed worker process to be replaced",
        )
        handles = [orders_client.start("order", f"d{i}", 5.0, 1) for i in range(10)]
        assert all(hd.result(timeout=60)["tracking_id"] for hd in handles)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        assert not any(alive(pid) for pid in replaced)  # every child drained and exited
    finally:
        if proc.poll() is None:
            sigkill(proc)
    assert "exited with -9; starting another" in log.read_text()


def test_processes_must_be_a_positive_number_or_auto() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "dfcore", "worker", "--processes", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--processes takes a positive number or 'auto', not '0'" in out.stderr


@pytest.mark.slow
def test_a_supervisor_gives_up_when_its_workers_cannot_start(
    namespace: str, tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    # Nothing listens on port 1: every worker process fails to connect and exits at once.
    proc = spawn_worker(
        "nats://127.0.0.1:1",
        namespace,
        "--processes",
        "2",
        log=log,
        env={"DF_CONNECT_TIMEOUT": "0.2"},
    )
    try:
        assert proc.wait(120) != 0
    finally:
        if proc.poll() is None:
            sigkill(proc)
    assert "keep exiting right after starting" in log.read_text()
