"""The transactional outbox on the Django ORM.

``start_on_commit`` writes the start into the current transaction; after the commit it is
published at once, and the relay (``manage.py df_relay``, or inside ``df_worker``) publishes
whatever a crash left behind. The shared logic lives in ``dfcore.outbox``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from django.db import DatabaseError, IntegrityError, connections, router, transaction
from django.db.models import F, Q
from django.utils import timezone

from dfcore import WorkflowFunction, WorkflowHandle
from dfcore.outbox import OutboxRelay, OutboxRow

from .conf import DjangoSettings
from .models import OutboxEntry, RelayLease
from .runtime import get_app, get_settings

log = logging.getLogger("dfcore.django.outbox")

R = TypeVar("R")
_LEASE = "outbox-relay"


def start_on_commit(
    workflow: WorkflowFunction[..., R] | str,
    *args: Any,
    workflow_id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: float | None = None,
    using: str | None = None,
) -> WorkflowHandle[R]:
    """Start a workflow if and only if the current database transaction commits.

    Call it inside ``transaction.atomic()``: it writes an outbox row in that transaction and
    returns the workflow's handle at once (its id is known before the commit). After the
    commit the start is published; if the process dies first, the relay publishes it. A
    rollback starts nothing. Outside a transaction (autocommit) the row commits at once.

    Args:
        workflow: the workflow function, or its registered name.
        *args: the workflow's arguments; checked here, so a bad one fails the transaction.
        workflow_id: the id (a new UUID if omitted); starting an id twice runs it once.
        task_queue: the queue whose workers run it.
        execution_timeout: fail the workflow if it runs longer than this many seconds.
        using: the database alias; by default the router's write database for the outbox.

    Raises:
        SerializationError: an argument cannot be encoded.
        PayloadTooLargeError: the arguments are too large for the server.
    """
    app = workflow.app if isinstance(workflow, WorkflowFunction) else get_app()
    start = app.prepare_start(
        workflow,
        *args,
        workflow_id=workflow_id,
        task_queue=task_queue,
        execution_timeout=execution_timeout,
    )
    alias = using or router.db_for_write(OutboxEntry)
    entry = OutboxEntry.from_start(start)
    entry.save(using=alias, force_insert=True)
    if get_settings().publish_on_commit:
        transaction.on_commit(
            lambda: publish_committed(alias, [entry.pk], [start.workflow_id]), using=alias
        )
    if isinstance(workflow, WorkflowFunction):
        return workflow.get_handle(start.workflow_id)
    return app.get_handle(start.workflow_id)


def publish_committed(using: str, keys: Sequence[Any], workflow_ids: Sequence[str]) -> None:
    """The fast path: have rows just committed published, by a thread of this process (the
    request goes on at once). What it cannot publish is left to the relay."""
    make_relay([using]).publish_committed(DjangoOutboxSource(using), keys, workflow_ids)


def make_relay(databases: Sequence[str] | None = None) -> OutboxRelay:
    """A relay over ``databases`` (default: ``DFCORE["OUTBOX_DATABASES"]`` or every database
    the outbox table is migrated to), configured from ``settings.DFCORE``."""
    conf = get_settings()
    aliases = databases or conf.outbox_databases or outbox_databases()
    return OutboxRelay(
        get_app(),
        [DjangoOutboxSource(alias) for alias in aliases],
        interval=conf.relay_interval,
        min_age=conf.relay_min_age,
        retention=conf.outbox_retention,
    )


def outbox_databases() -> list[str]:
    """Every database the router lets the outbox be migrated to, and where it is migrated."""
    aliases = []
    for alias in connections:
        if not router.allow_migrate_model(alias, OutboxEntry):
            continue
        table = OutboxEntry._meta.db_table
        try:
            migrated = table in connections[alias].introspection.table_names()
        except DatabaseError as exc:
            log.warning(
                "database %r is not reachable, so its outbox is not relayed: %s", alias, exc
            )
            continue
        if not migrated:
            log.warning(
                "database %r has no %s table, so its outbox is not relayed; "
                "run `manage.py migrate --database %s`",
                alias,
                table,
                alias,
            )
            continue
        aliases.append(alias)
    return aliases


class DjangoOutboxSource:
    """The ``dfcore_outbox`` table in one database, for :class:`dfcore.outbox.OutboxRelay`."""

    def __init__(self, using: str) -> None:
        self.using = using

    @property
    def name(self) -> str:
        return f"django:{self.using}"

    @property
    def concurrent(self) -> bool:
        return bool(connections[self.using].features.has_select_for_update_skip_locked)

    @contextlib.contextmanager
    def claim(
        self, limit: int, *, keys: Sequence[Any] | None = None, min_age: float = 0.0
    ) -> Iterator[list[OutboxRow]]:
        now = timezone.now()
        rows = OutboxEntry.objects.using(self.using).filter(published_at__isnull=True)
        if keys is not None:
            rows = rows.filter(pk__in=list(keys))
        else:
            rows = rows.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        if min_age:
            rows = rows.filter(created_at__lte=now - timedelta(seconds=min_age))
        rows = rows.order_by("pk")
        if not self.concurrent:  # one relay at a time (lease): no lock to hold
            yield [entry.as_row() for entry in rows[:limit]]
            return
        with transaction.atomic(using=self.using):
            locked = rows.select_for_update(skip_locked=True)[:limit]
            yield [entry.as_row() for entry in locked]

    def mark_published(self, keys: Sequence[Any]) -> None:
        OutboxEntry.objects.using(self.using).filter(pk__in=list(keys)).update(
            published_at=timezone.now(),
            attempts=F("attempts") + 1,
            next_attempt_at=None,
            last_error="",
        )

    def mark_failed(self, key: Any, error: str, retry_in: float) -> None:
        OutboxEntry.objects.using(self.using).filter(pk=key).update(
            attempts=F("attempts") + 1,
            next_attempt_at=timezone.now() + timedelta(seconds=retry_in),
            last_error=error[:4000],
        )

    def take_lease(self, holder: str, ttl: float) -> bool:
        now = timezone.now()
        leases = RelayLease.objects.using(self.using)
        until = now + timedelta(seconds=ttl)
        mine_or_expired = Q(holder=holder) | Q(expires_at__lt=now)
        if leases.filter(Q(name=_LEASE) & mine_or_expired).update(holder=holder, expires_at=until):
            return True
        try:
            with transaction.atomic(using=self.using):
                _, created = leases.get_or_create(
                    name=_LEASE, defaults={"holder": holder, "expires_at": until}
                )
        except IntegrityError:
            return False  # another relay created it first
        return created

    def purge(self, published_before: datetime) -> int:
        rows = OutboxEntry.objects.using(self.using).filter(published_at__lt=published_before)
        return int(rows.delete()[0])

    def release(self) -> None:
        connections[self.using].close()  # the publishing thread's own connection


__all__ = [
    "DjangoOutboxSource",
    "DjangoSettings",
    "make_relay",
    "outbox_databases",
    "publish_committed",
    "start_on_commit",
]
