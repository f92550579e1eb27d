"""``--processes N``: one command runs and supervises N worker processes, as Celery's prefork.

Each child re-runs the very command line that started the supervisor (``dfcore worker ...``,
``python manage.py df_worker ...``, ``flask df worker ...``) with ``DF_WORKER_CHILD`` set, so it
loads the project exactly as a worker started by hand would, and imports nothing from the
parent: no event loop, thread or connection is inherited across a fork. The supervisor itself
only starts, watches and stops children:

- a child that exits while the supervisor runs is started again (after a pause that doubles
  while children keep exiting within seconds of starting; five such exits in a row, and the
  supervisor gives up with the children's exit code, since a broken setting will not mend);
- SIGTERM or SIGINT is passed on to every child as SIGTERM, so each drains its in-flight work
  (``--shutdown-timeout``); children still running after that and a grace period are killed.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from dfcore.core._errors import DFError
from dfcore.jetstream._server import _parent_death_signal

log = logging.getLogger("dfcore.supervisor")

CHILD_ENV = "DF_WORKER_CHILD"
"""Set in a supervised child: it runs one worker instead of supervising."""
QUICK_EXIT = 10.0
"""A child that exits within this many seconds of starting counts as failing at start-up."""
GIVE_UP_AFTER = 5
GRACE = 10.0
"""Seconds beyond the shutdown timeout before a child that does not stop is killed."""
_SIGNALS = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)


def is_child() -> bool:
    """Whether this process is a supervised worker child."""
    return os.environ.get(CHILD_ENV) is not None


def child_slot() -> int:
    """This supervised child's number, 0 to N-1 (0 when not supervised)."""
    value = os.environ.get(CHILD_ENV, "0")
    return int(value) if value.isdigit() else 0


def processes_option(value: str) -> int:
    """Parse ``--processes``: a positive number, or ``auto`` for one per CPU core."""
    if value == "auto":
        return os.cpu_count() or 1
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"--processes takes a positive number or 'auto', not {value!r}")
    return number


class Supervisor:
    """Runs ``processes`` copies of ``command`` until SIGTERM/SIGINT; see the module doc."""

    def __init__(
        self, command: Sequence[str], processes: int, *, shutdown_timeout: float = 30.0
    ) -> None:
        self.command = list(command)
        self.processes = processes
        self.shutdown_timeout = shutdown_timeout
        self.children: dict[int, tuple[int, subprocess.Popen[bytes], float]] = {}
        self._quick_exits = 0
        self._pause = 0.5
        self._preexec = _child_setup()

    def run(self) -> int:
        """Supervise until told to stop; the exit status for the command."""
        if not hasattr(signal, "sigtimedwait"):
            raise DFError(
                "--processes needs Linux (or another system with sigtimedwait); here, start "
                "one worker command per process under your process manager instead"
            )
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            for slot in range(self.processes):
                self._start(slot)
            log.info(
                "supervising %d worker processes (pids %s)",
                self.processes,
                ", ".join(str(pid) for pid in self.children),
            )
            return self._watch()
        finally:
            self._stop_all()  # also when starting or watching failed: never orphan children
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _start(self, slot: int) -> None:
        env = {**os.environ, CHILD_ENV: str(slot)}
        proc = subprocess.Popen(self.command, env=env, preexec_fn=self._preexec)
        self.children[proc.pid] = (slot, proc, time.monotonic())

    def _watch(self) -> int:
        """Restart children that exit; return when a signal says stop (or on giving up)."""
        while True:
            info = signal.sigtimedwait(_SIGNALS, 1.0)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                log.info("stopping %d worker processes", len(self.children))
                return 0
            status = self._reap()
            if status is not None:
                return status

    def _reap(self) -> int | None:
        """Restart exited children; an exit status when they keep failing at start-up."""
        for pid, (slot, proc, started) in list(self.children.items()):
            code = proc.poll()
            if code is None:
                continue
            del self.children[pid]
            quick = time.monotonic() - started < QUICK_EXIT
            self._quick_exits = self._quick_exits + 1 if quick else 0
            if self._quick_exits >= GIVE_UP_AFTER:
                log.error(
                    "worker processes keep exiting right after starting (last exit code %s); "
                    "giving up. Their output above says why (a setting, an import, NATS?)",
                    code,
                )
                return code or 1
            pause = self._pause if quick else 0.0
            self._pause = min(self._pause * 2, 30.0) if quick else 0.5
            log.error(
                "worker process %d exited with %s; starting another%s",
                pid,
                code,
                f" in {pause:.1f} s" if pause else "",
            )
            if pause and signal.sigtimedwait([signal.SIGTERM, signal.SIGINT], pause):
                return 0
            self._start(slot)
        return None

    def _stop_all(self) -> None:
        """SIGTERM every child, wait for them to drain, kill what is left."""
        for _, proc, _ in self.children.values():
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout + GRACE
        for _, proc, _ in self.children.values():
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.error("worker process %d did not stop in time; killing it", proc.pid)
                _signal(proc, signal.SIGKILL)
                proc.wait()
        self.children.clear()


def supervise(processes: int, shutdown_timeout: float) -> int:
    """Run this process's own command line as ``processes`` supervised children."""
    return Supervisor(_own_command(), processes, shutdown_timeout=shutdown_timeout).run()


def _own_command() -> list[str]:
    """The command line this process was started with (``python -m dfcore ...`` included)."""
    argv = list(getattr(sys, "orig_argv", []) or [sys.executable, *sys.argv])
    argv[0] = sys.executable
    return argv


def _child_setup() -> Callable[[], None]:
    """The child's set-up between fork and exec: the signals the supervisor blocks for
    itself are unblocked, and (on Linux) the child gets SIGTERM if the supervisor dies."""
    on_parent_death = _parent_death_signal()

    def setup() -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        if on_parent_death is not None:
            on_parent_death()

    return setup


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
