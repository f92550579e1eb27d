"""The transactional outbox: start a workflow if and only if a database transaction commits.

A view writes its own rows and an *outbox row* holding a prepared start
(:meth:`dfcore.App.prepare_start`) in one transaction. After the commit the row is published
at once (the fast path) by a thread of the process, so the request never waits on the broker;
a relay publishes whatever that left behind (NATS was down, the process died). Publishing a
start twice starts the workflow once, so the relay may always err on the side of publishing.

The Django and SQLAlchemy integrations each implement :class:`OutboxSource` over their own
table; everything else — which rows to publish, in what order, how failures back off, how
relays share one database — is here, once.

Concurrency: where the database can ``SELECT ... FOR UPDATE SKIP LOCKED`` (PostgreSQL,
MySQL 8, Oracle), a source claims rows under row locks and any number of relays can run. Where
it cannot (SQLite), relays take turns through a lease row: one relays, the others wait.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from dfcore.client._loopthread import SYNC_LOOP, run_sync
from dfcore.client._start import UNSENT, PreparedStart, start_fields
from dfcore.core._definitions import RetryPolicy
from dfcore.core._errors import ConfigurationError, PayloadError
from dfcore.core._observe import trace_headers

if TYPE_CHECKING:
    from dfcore._app import App

__all__ = [
    "OutboxRelay",
    "OutboxRow",
    "OutboxSettings",
    "OutboxSource",
    "flush_committed",
    "retry_delay",
    "trace_from_column",
    "trace_to_column",
]

log = logging.getLogger("dfcore.outbox")

MAX_RETRY_DELAY = 300.0  # seconds between attempts at a row that keeps failing


@dataclass(frozen=True)
class OutboxRow:
    """One pending start, as a source hands it to the relay.

    Attributes:
        key: the row's primary key in its table.
        start: what to publish.
        attempts: how many publishes of it have failed so far.
    """

    key: Any
    start: PreparedStart
    attempts: int = 0


class OutboxSource(Protocol):
    """An outbox table in one database, as an ORM integration exposes it to the relay."""

    @property
    def name(self) -> str:
        """Names the table and database in logs (``"django:default"``)."""
        ...

    @property
    def concurrent(self) -> bool:
        """Whether :meth:`claim` locks the rows it returns, so relays can run side by side."""
        ...

    def claim(
        self, limit: int, *, keys: Sequence[Any] | None = None, min_age: float = 0.0
    ) -> AbstractContextManager[list[OutboxRow]]:
        """Up to ``limit`` unpublished rows, oldest first, held until the context exits.

        Args:
            limit: the batch size.
            keys: only these rows (the fast path after a commit); ``None`` for any row whose
                retry time has come.
            min_age: skip rows younger than this many seconds (their own fast path is
                probably publishing them right now).

        A concurrent source holds the rows with ``FOR UPDATE SKIP LOCKED`` in a transaction
        that commits when the context exits; :meth:`mark_published` and :meth:`mark_failed`
        are called inside it.
        """
        ...

    def mark_published(self, keys: Sequence[Any]) -> None:
        """Record that these rows are published."""
        ...

    def mark_failed(self, key: Any, error: str, retry_in: float) -> None:
        """Record a failed publish; try the row again in ``retry_in`` seconds."""
        ...

    def take_lease(self, holder: str, ttl: float) -> bool:
        """Become (or stay) the one relay of a non-concurrent source for ``ttl`` seconds."""
        ...

    def purge(self, published_before: datetime) -> int:
        """Delete rows published before this time; return how many."""
        ...

    def release(self) -> None:
        """Close what the calling thread holds open for this source (a database connection);
        called by the publishing thread when it has nothing left to do."""
        ...


@dataclass(frozen=True)
class OutboxSettings:
    """The outbox options a framework integration reads from its own settings.

    Attributes:
        worker_relay: run the relay inside the framework's worker command.
        publish_on_commit: publish a row right after its transaction commits, from a thread
            of the committing process (off: only the relay publishes).
        relay_interval: seconds between relay passes.
        relay_min_age: a relay pass leaves rows younger than this to their commit's fast path.
        outbox_retention: seconds published rows are kept; ``None`` keeps them forever.
    """

    worker_relay: bool = True
    publish_on_commit: bool = True
    relay_interval: float = 1.0
    relay_min_age: float = 2.0
    outbox_retention: float | None = 7 * 86400.0

    @staticmethod
    def keys() -> dict[str, Any]:
        """The options as upper-case keys (``RELAY_INTERVAL``) with their defaults."""
        defaults = OutboxSettings()
        return {name.upper(): getattr(defaults, name) for name in _OPTION_CHECKS}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], label: Callable[[str], str]) -> OutboxSettings:
        """Validate options given under upper-case keys; a missing key takes its default.

        Args:
            values: ``{"RELAY_INTERVAL": 0.5, ...}``; other keys are ignored.
            label: names a key as the user wrote it, for error messages
                (``'DF_RELAY_INTERVAL in the config of Flask app "shop"'``).

        Raises:
            ConfigurationError: a value has the wrong type or range; the message names it.
        """
        options: dict[str, Any] = {}
        for name, (check, expected) in _OPTION_CHECKS.items():
            key = name.upper()
            if key not in values:
                continue
            value = values[key]
            if not check(value):
                raise ConfigurationError(
                    f"{label(key)} is invalid: got {value!r}; expected {expected}"
                )
            options[name] = (
                float(value)
                if isinstance(value, int | float) and not isinstance(value, bool)
                else value
            )
        return cls(**options)


def _is_seconds(value: Any, allow_zero: bool = False) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return value > 0 or (allow_zero and value == 0)


_OPTION_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "worker_relay": (lambda v: isinstance(v, bool), "True or False"),
    "publish_on_commit": (lambda v: isinstance(v, bool), "True or False"),
    "relay_interval": (_is_seconds, "a positive number of seconds"),
    "relay_min_age": (lambda v: _is_seconds(v, allow_zero=True), "a number of seconds, 0 or more"),
    "outbox_retention": (
        lambda v: v is None or _is_seconds(v),
        "a positive number of seconds, or None to keep published rows",
    ),
}


#: A row whose publish failed waits 2, 4, 8 ... MAX_RETRY_DELAY seconds before the next try.
_BACKOFF = RetryPolicy(max_attempts=0, initial_interval=2.0, max_interval=MAX_RETRY_DELAY)


def retry_delay(attempts: int) -> float:
    """Seconds before the next publish of a row that has failed ``attempts`` times."""
    return _BACKOFF.delay(attempts)


def trace_to_column(start: PreparedStart) -> str:
    """A start's trace context as the outbox's ``trace_context`` column holds it (JSON text;
    empty when there is none), so the relay sends it in the start's headers."""
    return json.dumps(dict(start.trace), separators=(",", ":")) if start.trace else ""


def trace_from_column(text: str | None) -> dict[str, str]:
    """What :func:`trace_to_column` wrote (a value that is not, is taken as none)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return trace_headers(value) if isinstance(value, dict) else {}


class OutboxRelay:
    """Publishes outbox rows: right after a commit, and in the background for leftovers.

    Args:
        app: the App whose connection publishes the starts.
        sources: the outbox tables to relay from.
        interval: seconds between background passes.
        batch_size: rows claimed per query.
        min_age: a background pass skips rows younger than this (see ``claim``).
        retention: published rows are deleted after this many seconds; ``None`` keeps them.
        lease_ttl: how long a relay of a non-concurrent source holds its turn.
    """

    def __init__(
        self,
        app: App,
        sources: Iterable[OutboxSource],
        *,
        interval: float = 1.0,
        batch_size: int = 100,
        min_age: float = 2.0,
        retention: float | None = 7 * 86400.0,
        lease_ttl: float = 30.0,
    ) -> None:
        self.app = app
        self.sources = list(sources)
        self.interval = interval
        self.batch_size = batch_size
        self.min_age = min_age
        self.retention = retention
        self.lease_ttl = lease_ttl
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._last_purge = 0.0

    # -- publishing -------------------------------------------------------------------------

    def publish(self, source: OutboxSource, keys: Sequence[Any]) -> int:
        """Publish these rows now (the fast path after a commit); return how many went out.

        A row another relay holds is skipped: that relay publishes it.
        """
        with source.claim(len(keys), keys=keys) as rows:
            return self._publish_rows(source, rows)

    def publish_committed(
        self, source: OutboxSource, keys: Sequence[Any], workflow_ids: Sequence[str]
    ) -> None:
        """The fast path right after a commit: have these rows published now, off the calling
        thread, which never waits for the broker (it runs in a web request).

        The process's publishing thread claims and publishes them; what it cannot publish (NATS
        is down, the queue is full) is left to the relay. Until then, this process's handles
        of ``workflow_ids`` (the rows' workflows) wait for the thread rather than report the
        workflows missing. The commit has happened, so this never raises.
        """
        _PUBLISHER.submit(_Committed(self, source, list(keys), list(workflow_ids)))

    def drain(self) -> int:
        """Publish every pending row now, however young (``relay --once``); return how many."""
        min_age, self.min_age = self.min_age, 0.0
        try:
            return self.relay_once()
        finally:
            self.min_age = min_age

    def relay_once(self) -> int:
        """One pass over every source: publish every due row; return how many went out."""
        published = 0
        for source in self.sources:
            if not source.concurrent and not source.take_lease(self.holder, self.lease_ttl):
                continue  # another relay has this database's turn
            published += self._drain(source)
            self._purge(source)
        return published

    def _drain(self, source: OutboxSource) -> int:
        published = 0
        while True:
            with source.claim(self.batch_size, min_age=self.min_age) as rows:
                published += self._publish_rows(source, rows)
            if len(rows) < self.batch_size:
                return published

    def _publish_rows(self, source: OutboxSource, rows: Sequence[OutboxRow]) -> int:
        if not rows:
            return 0
        log.debug("publishing %d workflow start(s) from %s", len(rows), source.name)
        outcomes = run_sync(self._publish_all([row.start for row in rows]))
        done = [row.key for row, error in zip(rows, outcomes) if error is None]
        if done:
            source.mark_published(done)
        for row, error in zip(rows, outcomes):
            if error is not None:
                delay = retry_delay(row.attempts + 1)
                log.warning(
                    "could not publish the start of workflow %r from the outbox (%s, row %s); "
                    "retrying in %.0fs: %s",
                    row.start.workflow_id,
                    source.name,
                    row.key,
                    delay,
                    error,
                    extra=start_fields(row.start),
                )
                source.mark_failed(row.key, error, delay)
        return len(done)

    async def _publish_all(self, starts: Sequence[PreparedStart]) -> list[str | None]:
        """Publish concurrently; each start's error message, or None where it went out."""
        outcomes = await asyncio.gather(
            *(self.app.apublish_start(start) for start in starts), return_exceptions=True
        )
        errors: list[str | None] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # cancellation, KeyboardInterrupt: not a row's fault
            errors.append(_describe(outcome) if isinstance(outcome, Exception) else None)
        return errors

    def _purge(self, source: OutboxSource) -> None:
        if self.retention is None or time.monotonic() - self._last_purge < 60.0:
            return
        self._last_purge = time.monotonic()
        removed = source.purge(datetime.now(UTC) - timedelta(seconds=self.retention))
        if removed:
            log.info("deleted %d published outbox rows from %s", removed, source.name)

    # -- running ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Relay until ``stop`` is set; a failing pass is logged and retried next interval."""
        names = ", ".join(source.name for source in self.sources)
        log.info("outbox relay %s watching %s", self.holder, names or "no databases")
        while not stop.is_set():
            try:
                count = self.relay_once()
                if count:
                    log.info("relayed %d workflow start(s) left in the outbox", count)
            except Exception:
                log.exception("outbox relay pass failed; retrying in %.1fs", self.interval)
            stop.wait(self.interval)

    def run_until_signalled(self) -> None:
        """Run in the foreground until SIGTERM or SIGINT (the ``relay`` commands)."""
        stop = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        self.run(stop)

    def start_thread(self, stop: threading.Event) -> threading.Thread:
        """Run :meth:`run` on a daemon thread (a worker runs its relay this way)."""
        thread = threading.Thread(
            target=self.run, args=(stop,), name="dfcore-outbox-relay", daemon=True
        )
        thread.start()
        return thread


class _Publisher:
    """The thread that publishes rows right after their commit, one per process.

    Commits hand it their rows and go on; it publishes them in batches (all rows that
    arrived meanwhile at once). A batch that fails, fast or after the client's
    ``connect_timeout``, is logged and left to the relay; rows that arrive while more than
    :attr:`LIMIT` wait are left to the relay at once, so a hung broker costs memory for
    :attr:`LIMIT` keys at most. The thread starts on first use (in a forked child, too).
    """

    LIMIT = 10_000
    """Rows that may wait for the thread; beyond that, commits leave theirs to the relay."""

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # the parent's thread is not ours

    def _reset(self) -> None:
        self._lock = threading.Condition()
        self._waiting: collections.deque[_Committed] = collections.deque()
        self._count = 0  # keys waiting
        self._busy = False
        self._started = False
        self._dropped = False  # the limit was hit since the last batch

    def submit(self, rows: _Committed) -> None:
        with self._lock:
            if not self._started:
                self._start()
            if self._count + len(rows.keys) > self.LIMIT:
                if not self._dropped:
                    log.warning(
                        "%d outbox rows are waiting to be published after their commit (is NATS "
                        "answering?); rows committed now are left to the relay",
                        self._count,
                    )
                self._dropped = True
                return
            UNSENT.add(rows.workflow_ids)
            self._waiting.append(rows)
            self._count += len(rows.keys)
            self._lock.notify()

    def flush(self, timeout: float) -> bool:
        """Wait until every row handed over so far was published or left to the relay;
        False if that took longer than ``timeout`` seconds."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._waiting and not self._busy, timeout)

    def _start(self) -> None:
        self._started = True
        # The thread publishes through the sync loop; start that here too, on the committing
        # thread: at interpreter exit (the exit flush) no thread may be started any more.
        _ = SYNC_LOOP.loop
        threading.Thread(target=self._run, name="dfcore-outbox-publisher", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: bool(self._waiting))
                batch, self._count, self._busy = list(self._waiting), 0, True
                self._waiting.clear()
                self._dropped = False
            try:
                self._publish(batch)
            except Exception:  # the thread must outlive any batch: the relay has the rows
                log.exception("publishing outbox rows after their commit failed")
                UNSENT.discard(id_ for rows in batch for id_ in rows.workflow_ids)
            finally:
                with self._lock:
                    self._busy = False
                    self._lock.notify_all()

    def _publish(self, batch: list[_Committed]) -> None:
        merged: dict[tuple[int, str], _Committed] = {}
        for rows in batch:
            group = (id(rows.relay.app), rows.source.name)
            same = merged.setdefault(group, _Committed(rows.relay, rows.source, [], []))
            same.keys.extend(rows.keys)
            same.workflow_ids.extend(rows.workflow_ids)
        for rows in merged.values():
            size = rows.relay.batch_size  # one claim query per batch, as the relay's
            try:
                for first in range(0, len(rows.keys), size):
                    rows.relay.publish(rows.source, rows.keys[first : first + size])
            except Exception as exc:
                log.warning(
                    "could not publish outbox rows %s of %s after their commit (%s: %s); the "
                    "relay will",
                    rows.keys,
                    rows.source.name,
                    type(exc).__name__,
                    exc,
                )
            finally:
                UNSENT.discard(rows.workflow_ids)
                _release(rows.source)


@dataclass(frozen=True)
class _Committed:
    """Rows one commit (or several, merged) hands to the publishing thread."""

    relay: OutboxRelay
    source: OutboxSource
    keys: list[Any]
    workflow_ids: list[str]


def _release(source: OutboxSource) -> None:
    try:
        source.release()
    except Exception as exc:
        log.debug("releasing %s failed: %r", source.name, exc)


_PUBLISHER = _Publisher()

EXIT_FLUSH = 5.0
"""Seconds a process that exits waits for the rows it committed to be published."""


def flush_committed(timeout: float = EXIT_FLUSH) -> bool:
    """Wait until every row this process committed was published, or left to the relay.

    Publishing after a commit happens on a thread of the process. A script that commits and
    exits need not call this (it runs at exit, for at most :data:`EXIT_FLUSH` seconds); a
    test that reads a row's state right after its commit does.

    Returns:
        False if that took longer than ``timeout`` seconds.
    """
    return _PUBLISHER.flush(timeout)


atexit.register(flush_committed)  # before the connections close (atexit runs last-in first)


def _describe(exc: Exception) -> str:
    kind = "payload" if isinstance(exc, PayloadError) else type(exc).__name__
    return f"{kind}: {exc}"
