"""The transactional outbox on SQLAlchemy (any ``Session``, including Flask-SQLAlchemy's).

:func:`start_in_transaction` inserts the prepared start into the session's transaction. When
the session commits, the start is published at once; a relay (``flask df relay``, or inside
``flask df worker``) publishes whatever a crash left behind. A rollback starts nothing. The
shared logic lives in ``dfcore.outbox``; this module is the SQLAlchemy glue and imports no Flask.

The tables are the Django integration's (``dfcore_outbox``, ``dfcore_relay_lease``), defined on
:data:`metadata`. Create them with :func:`create_outbox_tables` (or ``flask df create-outbox``),
or add :data:`metadata` to Alembic's ``target_metadata``. Times are stored as naive UTC (the
columns need no time zone support) and are aware UTC in Python, as in Django with ``USE_TZ``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    event,
    insert,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from dfcore import App, ConfigurationError, PreparedStart, WorkflowFunction, WorkflowHandle
from dfcore.outbox import (
    OutboxRelay,
    OutboxRow,
    OutboxSettings,
    trace_from_column,
    trace_to_column,
)

log = logging.getLogger("dfcore.flask.outbox")


class UTCDateTime(TypeDecorator[datetime]):
    """A naive-UTC column that Python sees as aware UTC (the convention of both outboxes).

    A naive value bound to it is taken as UTC already, as rows written before this type were.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None or value.tzinfo is None:
            return value
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


#: Holds the outbox tables; add it to Alembic's ``target_metadata`` to migrate them.
metadata = MetaData()

outbox_table = Table(
    "dfcore_outbox",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("workflow_id", String(255), nullable=False, index=True),
    Column("workflow_type", String(255), nullable=False),
    Column("task_queue", String(255), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("published_at", UTCDateTime()),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime()),
    Column("last_error", Text, nullable=False, default=""),
    Column("trace_context", Text, nullable=False, default="", server_default=""),
    Index("dfcore_outbox_published", "published_at"),
)

lease_table = Table(
    "dfcore_relay_lease",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
)

_LEASE = "outbox-relay"
_PENDING = "dfcore.outbox.pending"  # session.info key: rows to publish after the commit
# Dialects whose SELECT ... FOR UPDATE SKIP LOCKED lets relays run side by side.
_SKIP_LOCKED_DIALECTS = {"postgresql", "mysql", "mariadb", "oracle"}


def create_outbox_tables(engine: Engine) -> None:
    """Create the outbox tables in this database if they do not exist, and add the columns
    a later version added to tables an earlier one created."""
    metadata.create_all(engine, checkfirst=True)
    have = {column["name"] for column in inspect(engine).get_columns(outbox_table.name)}
    with engine.begin() as connection:
        for column in outbox_table.columns:
            if column.name not in have:  # each added column has a server default
                kind = column.type.compile(engine.dialect)
                default = "DEFAULT ''" if column.server_default is not None else ""
                connection.exec_driver_sql(
                    f"ALTER TABLE {outbox_table.name} ADD COLUMN {column.name} {kind} "
                    f"NOT NULL {default}"
                )


def start_in_transaction(
    session: Any,
    app: App,
    workflow: WorkflowFunction[..., Any] | str,
    *args: Any,
    workflow_id: str | None = None,
    task_queue: str | None = None,
    execution_timeout: float | None = None,
    settings: OutboxSettings | None = None,
) -> WorkflowHandle[Any]:
    """Start a workflow if and only if ``session``'s transaction commits.

    Inserts an outbox row in the session's transaction (beginning one if needed) and returns
    the handle at once. After the commit the start is published; if the process dies first,
    the relay publishes it; a rollback starts nothing.

    Args:
        session: a SQLAlchemy ``Session`` or ``scoped_session`` (Flask-SQLAlchemy's
            ``db.session``).
        app: the App that publishes the start.
        workflow: the workflow function, or its registered name.
        *args: the workflow's arguments; checked now, so a bad one fails before the commit.
        workflow_id: the id (a new UUID if omitted); starting an id twice runs it once.
        task_queue: the queue whose workers run it.
        execution_timeout: fail the workflow if it runs longer than this many seconds.
        settings: the outbox options (``publish_on_commit``, relay timing).

    Raises:
        SerializationError: an argument cannot be encoded.
        PayloadTooLargeError: the arguments are too large for the server.
        ConfigurationError: the outbox table does not exist (the message says how to create
            it).
    """
    settings = settings or OutboxSettings()
    start = app.prepare_start(
        workflow,
        *args,
        workflow_id=workflow_id,
        task_queue=task_queue,
        execution_timeout=execution_timeout,
    )
    statement = insert(outbox_table).values(
        workflow_id=start.workflow_id,
        workflow_type=start.workflow_type,
        task_queue=start.task_queue,
        payload=start.data,
        created_at=_now(),
        attempts=0,
        last_error="",
        trace_context=trace_to_column(start),
    )
    try:
        key = session.execute(statement).inserted_primary_key[0]
    except DBAPIError as exc:
        if _missing_table(exc):
            raise ConfigurationError(
                f"the outbox table {outbox_table.name} does not exist in this database "
                f"({exc.orig}): create it with `flask df create-outbox`, or add "
                "dfcore.integrations.flask.outbox.metadata to your migrations (Alembic's "
                "target_metadata)"
            ) from exc
        if _missing_column(exc):
            raise ConfigurationError(
                f"the outbox table {outbox_table.name} lacks a column this version writes "
                f"({exc.orig}): run `flask df create-outbox` to add it, or an Alembic "
                "migration of dfcore.integrations.flask.outbox.metadata"
            ) from exc
        raise
    if settings.publish_on_commit:
        engine = _engine_of(session.get_bind(clause=statement))
        _pending(session).add(app, engine, settings, key, start.workflow_id)
    if isinstance(workflow, WorkflowFunction):
        return workflow.get_handle(start.workflow_id)
    return app.get_handle(start.workflow_id)


# -- publishing after the commit ------------------------------------------------------------


@dataclass
class _Pending:
    """Rows a session inserted, grouped by the App and database that publish them."""

    batches: dict[tuple[int, int], _Batch] = field(default_factory=dict)

    def add(
        self, app: App, engine: Engine, settings: OutboxSettings, key: Any, workflow_id: str
    ) -> None:
        batch = self.batches.setdefault((id(app), id(engine)), _Batch(app, engine, settings))
        batch.keys.append(key)
        batch.workflow_ids.append(workflow_id)


@dataclass
class _Batch:
    """The rows of one App and database a session inserted."""

    app: App
    engine: Engine
    settings: OutboxSettings
    keys: list[Any] = field(default_factory=list)
    workflow_ids: list[str] = field(default_factory=list)


def _pending(session: Any) -> _Pending:
    _listen_once()
    info: dict[str, Any] = session.info
    pending = info.get(_PENDING)
    if pending is None:
        pending = info[_PENDING] = _Pending()
    return pending


_listening = False


def _listen_once() -> None:
    global _listening
    if not _listening:
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)
        _listening = True


def _after_commit(session: Session) -> None:
    pending = session.info.pop(_PENDING, None)
    if pending is None:
        return
    for batch in pending.batches.values():
        publish_committed(batch.app, batch.engine, batch.keys, batch.workflow_ids, batch.settings)


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)


def publish_committed(
    app: App,
    engine: Engine,
    keys: Sequence[Any],
    workflow_ids: Sequence[str],
    settings: OutboxSettings | None = None,
) -> None:
    """The fast path: have rows just committed published, by a thread of this process (the
    request goes on at once). What it cannot publish is left to the relay."""
    relay = make_relay(app, [engine], settings)
    relay.publish_committed(SQLAlchemyOutboxSource(engine), keys, workflow_ids)


def make_relay(
    app: App, engines: Sequence[Engine], settings: OutboxSettings | None = None
) -> OutboxRelay:
    """A relay publishing, through ``app``, the outbox of each of these databases."""
    settings = settings or OutboxSettings()
    return OutboxRelay(
        app,
        [SQLAlchemyOutboxSource(engine) for engine in engines],
        interval=settings.relay_interval,
        min_age=settings.relay_min_age,
        retention=settings.outbox_retention,
    )


def relayable(engines: Sequence[Engine]) -> list[Engine]:
    """The databases that have the outbox tables; the others are skipped with a warning."""
    found = []
    for engine in engines:
        where = engine.url.render_as_string(hide_password=True)
        try:
            tables = set(inspect(engine).get_table_names())
        except Exception as exc:
            log.warning(
                "database %s is not reachable, so its outbox is not relayed: %s", where, exc
            )
            continue
        if not {outbox_table.name, lease_table.name} <= tables:
            log.warning(
                "database %s has no %s table, so its outbox is not relayed; run "
                "`flask df create-outbox`, or add dfcore.integrations.flask.outbox.metadata to "
                "your migrations",
                where,
                outbox_table.name,
            )
            continue
        found.append(engine)
    return found


# -- the relay's view of one database -------------------------------------------------------


class SQLAlchemyOutboxSource:
    """The outbox table in one database, for :class:`dfcore.outbox.OutboxRelay`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._claimed = threading.local()  # the connection holding claimed rows, per thread

    @property
    def name(self) -> str:
        return f"sqlalchemy:{self.engine.url.render_as_string(hide_password=True)}"

    @property
    def concurrent(self) -> bool:
        return self.engine.dialect.name in _SKIP_LOCKED_DIALECTS

    @contextlib.contextmanager
    def claim(
        self, limit: int, *, keys: Sequence[Any] | None = None, min_age: float = 0.0
    ) -> Iterator[list[OutboxRow]]:
        now = _now()
        query = select(outbox_table).where(outbox_table.c.published_at.is_(None))
        if keys is not None:
            query = query.where(outbox_table.c.id.in_(list(keys)))
        else:
            due = outbox_table.c.next_attempt_at
            query = query.where(or_(due.is_(None), due <= now))
        if min_age:
            query = query.where(outbox_table.c.created_at <= now - timedelta(seconds=min_age))
        query = query.order_by(outbox_table.c.id).limit(limit)
        if self.concurrent:
            query = query.with_for_update(skip_locked=True)
        with self.engine.begin() as connection:
            rows = [_as_row(row) for row in connection.execute(query).mappings()]
            self._claimed.connection = connection
            try:
                yield rows
            finally:
                self._claimed.connection = None

    def mark_published(self, keys: Sequence[Any]) -> None:
        table = outbox_table
        self._execute(
            update(table)
            .where(table.c.id.in_(list(keys)))
            .values(
                published_at=_now(),
                attempts=table.c.attempts + 1,
                next_attempt_at=None,
                last_error="",
            )
        )

    def mark_failed(self, key: Any, error: str, retry_in: float) -> None:
        table = outbox_table
        self._execute(
            update(table)
            .where(table.c.id == key)
            .values(
                attempts=table.c.attempts + 1,
                next_attempt_at=_now() + timedelta(seconds=retry_in),
                last_error=error[:4000],
            )
        )

    def take_lease(self, holder: str, ttl: float) -> bool:
        now = _now()
        until = now + timedelta(seconds=ttl)
        table = lease_table
        mine_or_expired = or_(table.c.holder == holder, table.c.expires_at < now)
        renew = (
            update(table)
            .where(table.c.name == _LEASE, mine_or_expired)
            .values(holder=holder, expires_at=until)
        )
        with self.engine.begin() as connection:
            if connection.execute(renew).rowcount:
                return True
        try:
            with self.engine.begin() as connection:
                connection.execute(
                    insert(table).values(name=_LEASE, holder=holder, expires_at=until)
                )
        except IntegrityError:
            return False  # another relay holds it
        return True

    def purge(self, published_before: datetime) -> int:
        before = published_before.astimezone(UTC)  # a naive time is local, as in astimezone()
        statement = outbox_table.delete().where(outbox_table.c.published_at < before)
        with self.engine.begin() as connection:
            return int(connection.execute(statement).rowcount)

    def release(self) -> None:
        """Nothing to do: each claim returns its connection to the engine's pool."""

    def _execute(self, statement: Any) -> None:
        """Run an update inside :meth:`claim`'s transaction (which holds the rows' locks), or
        in a transaction of its own outside one."""
        connection = getattr(self._claimed, "connection", None)
        if connection is not None:
            connection.execute(statement)
            return
        with self.engine.begin() as connection:
            connection.execute(statement)


def _as_row(row: Any) -> OutboxRow:
    start = PreparedStart(
        row["workflow_id"],
        row["workflow_type"],
        row["task_queue"],
        bytes(row["payload"]),
        trace_from_column(row["trace_context"]),
    )
    return OutboxRow(row["id"], start, row["attempts"])


def _missing_table(exc: DBAPIError) -> bool:
    """Whether the database said the outbox table is not there (SQLite, PostgreSQL, MySQL)."""
    text = str(exc.orig).lower()
    named = outbox_table.name in text
    return named and (
        "no such table" in text or "does not exist" in text or "doesn't exist" in text
    )


def _missing_column(exc: DBAPIError) -> bool:
    """Whether the database said an outbox column is not there (an older table)."""
    text = str(exc.orig).lower()
    return "column" in text and (
        "no column named" in text or "does not exist" in text or "unknown column" in text
    )


def _engine_of(bind: Any) -> Engine:
    return bind if isinstance(bind, Engine) else bind.engine  # a Connection


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "SQLAlchemyOutboxSource",
    "create_outbox_tables",
    "lease_table",
    "make_relay",
    "metadata",
    "outbox_table",
    "publish_committed",
    "relayable",
    "start_in_transaction",
]
